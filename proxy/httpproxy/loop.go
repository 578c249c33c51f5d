package httpproxy

import (
	"net/http"

	"golang.org/x/net/http/httpguts"
)

// PrepareOutgoing makes r, an HTTP/1 request without a body that the
// caller owns, the request forward sends for it, in place: hop-by-hop
// fields removed (those Connection names too, forwarding headers among
// them), TE: trailers kept, unparsable query parameters dropped, the
// destination override and the peer proxies' fields removed, an empty
// User-Agent when there was none (not Go's default). For a caller that
// forwards on an event loop; proxy/gateway's
// TestEventLoopMatchesGoroutinePath compares the requests the two send.
func PrepareOutgoing(r *http.Request) {
	te := httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers")
	removeHopByHopHeaders(r.Header)
	if te {
		r.Header["Te"] = []string{"trailers"}
	}
	r.URL.RawQuery = cleanQueryParams(r.URL.RawQuery)
	delete(r.Header, http.CanonicalHeaderKey(DstOverrideHeader))
	delete(r.Header, http.CanonicalHeaderKey(OrigProtoHeader))
	delete(r.Header, http.CanonicalHeaderKey(ExpectHeader))
	if _, ok := r.Header["User-Agent"]; !ok {
		r.Header["User-Agent"] = emptyUA
	}
	r.Close = false
}

// emptyUA is shared: a header value nobody writes in place.
var emptyUA = []string{""}

// RemoveHopByHop removes a response's hop-by-hop fields (and those its
// Connection names), as forward does before passing it on.
func RemoveHopByHop(h http.Header) { removeHopByHopHeaders(h) }
