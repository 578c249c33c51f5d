package gateway

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// manyHosts is a snapshot of one HTTP port whose listener has n hosts
// (half exact names, half wildcards) of one prefix rule each, and a
// catch-all host.
func manyHosts(port uint32, n int) *gatewaypb.Snapshot {
	var hosts []*gatewaypb.Host
	for i := range n {
		name := fmt.Sprintf("app-%d.example.com", i)
		if i%2 == 1 {
			name = fmt.Sprintf("*.team-%d.example.com", i)
		}
		hosts = append(hosts, hostOf(name, ruleTo(fmt.Sprintf("route-%d", i), prefix(fmt.Sprintf("/api-%d", i%10)), to(fmt.Sprintf("svc-%d.ns.svc:80", i), 1))))
	}
	hosts = append(hosts, hostOf("", ruleTo("any", prefix("/"), to("web.svc:80", 1))))
	return snap("v1", httpPort(port, httpListener("l", "", hosts...)))
}

// BenchmarkCompile is the cost of applying a large snapshot: compiling
// 1,000 and 10,000 routes, and the heap the compiled table holds.
func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			g, err := New(Config{AdminAddr: "127.0.0.1:0", Log: discardLog()})
			if err != nil {
				b.Fatal(err)
			}
			s := manyHosts(1, n)
			var held uint64
			b.ReportAllocs()
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				t, err := compile(s, &builder{g: g, caches: g.caches})
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				held = after.HeapAlloc - min(before.HeapAlloc, after.HeapAlloc)
				runtime.KeepAlive(t)
			}
			b.ReportMetric(float64(held)/(1<<20), "MiB-held")
		})
	}
}

// BenchmarkRoute is the cost of finding a request's rule among 10,000
// hosts: an exact name, a wildcard and the catch-all.
func BenchmarkRoute(b *testing.B) {
	g, err := New(Config{AdminAddr: "127.0.0.1:0", Log: discardLog()})
	if err != nil {
		b.Fatal(err)
	}
	t, err := compile(manyHosts(1, 10000), &builder{g: g, caches: g.caches})
	if err != nil {
		b.Fatal(err)
	}
	l := t.ports[1].listeners[0]
	for _, c := range []struct{ name, host, path string }{
		{"exact", "app-9998.example.com", "/api-8/x"},
		{"wildcard", "x.team-9999.example.com", "/api-9/x"},
		{"any", "other.test", "/x"},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := httptest.NewRequest("GET", "http://"+c.host+c.path, nil)
			b.ReportAllocs()
			for b.Loop() {
				h := l.hostFor(requestHost(r.Host))
				if h == nil || h.rule(r) == nil {
					b.Fatal("no rule")
				}
			}
		})
	}
}

// BenchmarkRequest is a request through the gateway to a loopback backend
// over HTTP/1.1 keep-alive and over h2c, compared with the same request straight to the
// backend.
func BenchmarkRequest(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer backend.Close()
	pn := freePort(b)
	startGatewayB(b, dsts(b, map[string][]string{"web.svc:80": {backend.Listener.Addr().String()}}), manyHosts(pn, 1000))
	// h2c: one HTTP/2 connection carries every request, as the h2 load of
	// bench/gateway.sh; the backend stays HTTP/1.1.
	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	for _, c := range []struct {
		name, url string
		protos    *http.Protocols
	}{
		{"direct", backend.URL + "/", nil},
		{"gateway", "http://127.0.0.1:" + itoa(pn) + "/", nil},
		{"gateway-h2c", "http://127.0.0.1:" + itoa(pn) + "/", h2c},
	} {
		b.Run(c.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, Protocols: c.protos}}
			defer client.CloseIdleConnections()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(c.url)
					if err != nil {
						b.Error(err)
						return
					}
					if c.protos != nil && resp.ProtoMajor != 2 {
						b.Errorf("%s: answered over %s, want HTTP/2", c.name, resp.Proto)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}

// BenchmarkRequestTLS is BenchmarkRequest over TLS: HTTP/1.1 keep-alive
// (ALPN http/1.1) and h2 (one connection) through an HTTPS listener.
func BenchmarkRequestTLS(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer backend.Close()
	pn := freePort(b)
	chain, key := certPEM(b, "web.test")
	s := snap("v1", tlsPort(pn, &gatewaypb.Listener{Name: "web", Hostname: "web.test", Mode: gatewaypb.Listener_HTTPS, Certificates: []string{"ns/web"},
		Hosts: []*gatewaypb.Host{hostOf("", ruleTo("web", nil, to("web.svc:80", 1)))}}))
	s.Certificates = []*gatewaypb.Certificate{{Name: "ns/web", CertChain: chain, PrivateKey: key}}
	startGatewayB(b, dsts(b, map[string][]string{"web.svc:80": {backend.Listener.Addr().String()}}), s)
	for _, c := range []struct {
		name string
		h2   bool
	}{{"https", false}, {"h2", true}} {
		b.Run(c.name, func(b *testing.B) {
			tr := &http.Transport{MaxIdleConnsPerHost: 64, ForceAttemptHTTP2: c.h2,
				TLSClientConfig: &tls.Config{ServerName: "web.test", InsecureSkipVerify: true}}
			client := &http.Client{Transport: tr}
			defer client.CloseIdleConnections()
			url := "https://127.0.0.1:" + itoa(pn) + "/"
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest("GET", url, nil)
					req.Host = "web.test"
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					if (resp.ProtoMajor == 2) != c.h2 || resp.StatusCode != http.StatusOK {
						b.Errorf("%s: %s over %s", c.name, resp.Status, resp.Proto)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}

// BenchmarkRequestFeatures is BenchmarkRequest/gateway through a rule with
// what HTTPRoutes commonly carry: a request timeout, a request header set
// and a response header added.
func BenchmarkRequestFeatures(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer backend.Close()
	pn := freePort(b)
	rl := ruleTo("web", prefix("/"), to("web.svc:80", 1))
	rl.Timeouts = &gatewaypb.Timeouts{Request: dur(10 * time.Second)}
	rl.Filters = []*gatewaypb.Filter{
		{Filter: &gatewaypb.Filter_RequestHeaders{RequestHeaders: &gatewaypb.HeaderModifier{Set: map[string]string{"X-Route": "web"}}}},
		{Filter: &gatewaypb.Filter_ResponseHeaders{ResponseHeaders: &gatewaypb.HeaderModifier{Add: []*gatewaypb.Header{{Name: "X-Served-By", Value: "gateway"}}}}},
	}
	startGatewayB(b, dsts(b, map[string][]string{"web.svc:80": {backend.Listener.Addr().String()}}), snap("v1", httpPort(pn, httpListener("l", "", hostOf("", rl)))))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	url := "http://127.0.0.1:" + itoa(pn) + "/"
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			if resp.Header.Get("X-Served-By") != "gateway" {
				b.Errorf("%s without the response filter's header", resp.Status)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
