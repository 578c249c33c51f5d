package httpproxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/httpproxytest"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// The forwarder alone, a target given: what reaches the client and what is
// counted, for each way an exchange with upstream can go.
func TestForwarder(t *testing.T) {
	status := func(code int) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(code)
			io.WriteString(w, "from the app")
		})
	}
	hangUp := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close() // no response at all
		}
	})
	for _, c := range []struct {
		name      string
		addrs     func(t *testing.T) []string
		grpc      bool
		status    int
		reason    string // ErrorHeader; "" for the application's own answer
		grpcCode  string
		responses map[string]string // response_total labels that must be counted once
		unavail   string            // endpoint_unavailable_total reason counted once
	}{
		{name: "200 passed through", addrs: func(t *testing.T) []string { return []string{httpproxytest.App(t, status(200))} },
			status: 200, responses: map[string]string{"status_code": "200", "classification": "success"}},
		{name: "404 passed through", addrs: func(t *testing.T) []string { return []string{httpproxytest.App(t, status(404))} },
			status: 404, responses: map[string]string{"status_code": "404", "classification": "success"}},
		{name: "500 passed through", addrs: func(t *testing.T) []string { return []string{httpproxytest.App(t, status(500))} },
			status: 500, responses: map[string]string{"status_code": "500", "classification": "failure"}},
		{name: "connect fails: another endpoint", addrs: func(t *testing.T) []string {
			return []string{httpproxytest.DeadAddr(t), httpproxytest.App(t, status(200))}
		}, status: 200, responses: map[string]string{"status_code": "200"}},
		{name: "connect fails everywhere", addrs: func(t *testing.T) []string { return []string{httpproxytest.DeadAddr(t)} },
			status: 503, reason: "connect", responses: map[string]string{"error": "connect"}},
		{name: "connect fails everywhere, gRPC", addrs: func(t *testing.T) []string { return []string{httpproxytest.DeadAddr(t)} },
			grpc: true, status: 200, reason: "connect", grpcCode: "14", responses: map[string]string{"error": "connect"}},
		{name: "no response", addrs: func(t *testing.T) []string { return []string{httpproxytest.App(t, hangUp)} },
			status: 502, reason: "upstream", responses: map[string]string{"error": "upstream"}},
		{name: "no endpoints", addrs: func(*testing.T) []string { return nil },
			status: 503, reason: "no_endpoints", unavail: "no_endpoints"},
		{name: "no endpoints, gRPC", addrs: func(*testing.T) []string { return nil },
			grpc: true, status: 200, reason: "no_endpoints", grpcCode: "14", unavail: "no_endpoints"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := metrics.New()
			target := httpproxytest.Target(t, "web.test:80", nil, c.addrs(t)...)
			h := httpproxytest.Routed("outbound", target)(httpproxy.New(httpproxy.Options{Direction: "outbound", Metrics: m, Log: httpproxytest.Log()}))
			req := httptest.NewRequest(http.MethodPost, "http://web.test/x", strings.NewReader("hello"))
			if c.grpc {
				req.Header.Set("Content-Type", "application/grpc")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Errorf("status %d, want %d (%s)", rec.Code, c.status, rec.Body)
			}
			if got := rec.Header().Get(httpproxy.ErrorHeader); got != c.reason {
				t.Errorf("%s %q, want %q", httpproxy.ErrorHeader, got, c.reason)
			}
			if got := rec.Header().Get("Grpc-Status"); got != c.grpcCode {
				t.Errorf("grpc-status %q, want %q", got, c.grpcCode)
			}
			if c.reason == "" && rec.Body.String() != "from the app" {
				t.Errorf("body %q, want the application's", rec.Body)
			}
			if c.responses != nil {
				labels := map[string]string{"direction": "outbound", "authority": "web.test:80"}
				for k, v := range c.responses {
					labels[k] = v
				}
				if got := httpproxytest.Sum(t, m, "response_total", labels); got != 1 {
					t.Errorf("response_total%v = %v, want 1", labels, got)
				}
			}
			if c.unavail != "" {
				if got := httpproxytest.Sum(t, m, "endpoint_unavailable_total", map[string]string{"reason": c.unavail}); got != 1 {
					t.Errorf("endpoint_unavailable_total{reason=%q} = %v, want 1", c.unavail, got)
				}
			}
		})
	}
}

// A request that reaches the forwarder without a target is a chain
// assembled without routing: an internal error, not a crash.
func TestForwarderWithoutTarget(t *testing.T) {
	h := httpproxy.New(httpproxy.Options{Direction: "outbound", Metrics: metrics.New(), Log: httpproxytest.Log()})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://web.test/", nil))
	if rec.Code != 500 || rec.Header().Get(httpproxy.ErrorHeader) != "no_target" {
		t.Errorf("%d %q, want 500 no_target", rec.Code, rec.Header().Get(httpproxy.ErrorHeader))
	}
}

// The direction's options: a peer proxy's headers are honoured only with
// AcceptPeerHeaders (an HTTP/1 request carried over HTTP/2 goes to the
// application as HTTP/1 again), and never reach the application.
func TestForwarderPeerHeaders(t *testing.T) {
	type seen struct {
		proto      string
		origProto  string
		expectPeer string
	}
	for _, c := range []struct {
		name      string
		accept    bool
		wantProto string
	}{{"inbound", true, "HTTP/1.1"}, {"outbound", false, "HTTP/2.0"}} {
		t.Run(c.name, func(t *testing.T) {
			got := make(chan seen, 1)
			app := httpproxytest.App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got <- seen{r.Proto, r.Header.Get(httpproxy.OrigProtoHeader), r.Header.Get(httpproxy.ExpectHeader)}
			}))
			target := httpproxytest.Target(t, "web.test:80", nil, app)
			h := httpproxytest.Routed(c.name, target)(httpproxy.New(httpproxy.Options{
				Direction: c.name, AcceptPeerHeaders: c.accept, Metrics: metrics.New(), Log: httpproxytest.Log()}))
			req := httptest.NewRequest(http.MethodGet, "http://web.test/", nil)
			req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0 // as from a peer proxy
			req.Header.Set(httpproxy.OrigProtoHeader, "HTTP/1.1")
			req.Header.Set(httpproxy.ExpectHeader, "100-continue")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			s := <-got
			if s.origProto != "" || s.expectPeer != "" {
				t.Errorf("the application saw %s %q, %s %q", httpproxy.OrigProtoHeader, s.origProto, httpproxy.ExpectHeader, s.expectPeer)
			}
			if s.proto != c.wantProto {
				t.Errorf("the application was spoken %s, want %s", s.proto, c.wantProto)
			}
		})
	}
}

// LabelTargetTLS: the tls and server_id labels come from the target, and a
// request to this pod's own application loses its HopHeader; without it,
// from the client's connection, and the header stays (the inbound side's
// router removes it).
func TestForwarderTargetTLS(t *testing.T) {
	for _, c := range []struct {
		name     string
		label    bool
		tls      string // the target says
		wantTLS  string
		wantID   string
		wantHops bool
	}{
		{"outbound to a meshed peer", true, metrics.TLSTrue, metrics.TLSTrue, "spiffe://test/peer", true},
		{"outbound to its own application", true, metrics.TLSLoopback, metrics.TLSLoopback, "spiffe://test/peer", false},
		{"inbound", false, metrics.TLSTrue, "", "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			hops := make(chan bool, 1)
			app := httpproxytest.App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hops <- r.Header.Get(httpproxy.HopHeader) != ""
			}))
			target := httpproxytest.Target(t, "web.test:80", nil, app)
			target.TLS = func(string) (string, string) { return c.tls, "spiffe://test/peer" }
			m := metrics.New()
			h := httpproxytest.Routed("outbound", target)(httpproxy.New(httpproxy.Options{
				Direction: "outbound", LabelTargetTLS: c.label, Metrics: m, Log: httpproxytest.Log()}))
			req := httptest.NewRequest(http.MethodGet, "http://web.test/", nil)
			req.Header.Set(httpproxy.HopHeader, "abc")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if got := <-hops; got != c.wantHops {
				t.Errorf("the application saw %s: %v, want %v", httpproxy.HopHeader, got, c.wantHops)
			}
			labels := map[string]string{"tls": c.wantTLS, "server_id": c.wantID}
			if got := httpproxytest.Sum(t, m, "request_total", labels); got != 1 {
				t.Errorf("request_total%v = %v, want 1", labels, got)
			}
		})
	}
}
