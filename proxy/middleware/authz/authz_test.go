package authz_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	policy "github.com/meridian-mesh/meridian/proxy/authz"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/httpproxytest"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/middleware/authz"
)

// A request the policy refuses is answered 403 (gRPC PERMISSION_DENIED)
// and counted with its port and its connection's labels; the others, and
// those whose client is unknown, go on.
func TestAuthz(t *testing.T) {
	meshed := policy.Config{Default: policy.AllAuthenticated, Probes: []policy.Probe{{Port: 8080, Path: "/ready"}}}
	for _, c := range []struct {
		name       string
		cfg        policy.Config
		client     policy.Client
		known      bool
		path       string
		grpc       bool
		status     int
		grpcStatus string
	}{
		{name: "allowed: meshed client", cfg: meshed, client: policy.Client{ID: "spiffe://test/ns/a/sa/b"}, known: true, path: "/", status: 299},
		{name: "allowed: a probe", cfg: meshed, known: true, path: "/ready", status: 299},
		{name: "allowed: unknown client", cfg: meshed, known: false, path: "/", status: 299},
		{name: "allowed: no policy", cfg: policy.Config{}, known: true, path: "/", status: 299},
		{name: "refused", cfg: meshed, known: true, path: "/", status: 403},
		{name: "refused, gRPC", cfg: meshed, known: true, path: "/", grpc: true, status: 200, grpcStatus: "7"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := metrics.New()
			c.client.Addr = netip.MustParseAddr("192.0.2.1")
			h := authz.New(authz.Options{Policy: c.cfg, Direction: "inbound", Metrics: m,
				Client: func(*http.Request) (policy.Client, uint16, bool) { return c.client, 8080, c.known }})(
				http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) }))
			ctx := httpproxy.WithPeer(t.Context(), httpproxy.Peer{TLS: metrics.TLSNotProvidedByRemote})
			req := httptest.NewRequest(http.MethodGet, "http://app.test"+c.path, nil).WithContext(ctx)
			if c.grpc {
				req.Header.Set("Content-Type", "application/grpc")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.status || rec.Header().Get("Grpc-Status") != c.grpcStatus {
				t.Errorf("%d grpc-status %q, want %d %q", rec.Code, rec.Header().Get("Grpc-Status"), c.status, c.grpcStatus)
			}
			refused := c.status == 403 || c.grpcStatus == "7"
			want := 0.0
			if refused {
				want = 1
				if got := rec.Header().Get(httpproxy.ErrorHeader); got != "unauthorized" {
					t.Errorf("%s %q, want unauthorized", httpproxy.ErrorHeader, got)
				}
			}
			labels := map[string]string{"protocol": "http", "policy": c.cfg.Name(), "target_port": "8080", "tls": metrics.TLSNotProvidedByRemote}
			if got := httpproxytest.Sum(t, m, "inbound_authz_deny_total", labels); got != want {
				t.Errorf("inbound_authz_deny_total%v = %v, want %v", labels, got, want)
			}
		})
	}
}
