package httpproxy

// ViaReverseProxy makes f send every request through httputil.ReverseProxy
// instead of forward, for the tests that compare the two.
func ViaReverseProxy(f *Forwarder) { f.viaReverseProxy = true }
