package inflight_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/httpproxytest"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/middleware/inflight"
)

// With held requests in flight, the next one is shed at once (503, gRPC
// UNAVAILABLE, counted) or let through, as the limit says; the gauge shows
// the requests held.
func TestInFlight(t *testing.T) {
	for _, c := range []struct {
		name       string
		max        int64
		held       int
		grpc       bool
		status     int
		grpcStatus string
		shed       float64
	}{
		{name: "under the limit", max: 2, held: 1, status: 299},
		{name: "at the limit", max: 2, held: 2, status: 503, shed: 1},
		{name: "at the limit, gRPC", max: 1, held: 1, grpc: true, status: 200, grpcStatus: "14", shed: 1},
		{name: "no limit", max: 0, held: 3, status: 299},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := metrics.New()
			release := make(chan struct{})
			var arrived sync.WaitGroup
			next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/hold" {
					arrived.Done()
					<-release
				}
				w.WriteHeader(299)
			})
			h := inflight.New(inflight.Options{Max: c.max, Direction: "inbound", Metrics: m})(next)
			var done sync.WaitGroup
			for range c.held {
				arrived.Add(1)
				done.Add(1)
				go func() {
					defer done.Done()
					h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/hold", nil))
				}()
			}
			arrived.Wait()
			if got := httpproxytest.Sum(t, m, "request_in_flight", map[string]string{"direction": "inbound"}); got != float64(c.held) {
				t.Errorf("request_in_flight = %v, want %d", got, c.held)
			}
			req := httptest.NewRequest(http.MethodPost, "/next", nil)
			if c.grpc {
				req.Header.Set("Content-Type", "application/grpc")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			close(release)
			done.Wait()
			if rec.Code != c.status || rec.Header().Get("Grpc-Status") != c.grpcStatus {
				t.Errorf("%d grpc-status %q, want %d %q", rec.Code, rec.Header().Get("Grpc-Status"), c.status, c.grpcStatus)
			}
			if c.shed > 0 && rec.Header().Get(httpproxy.ErrorHeader) != "max_in_flight" {
				t.Errorf("%s %q, want max_in_flight", httpproxy.ErrorHeader, rec.Header().Get(httpproxy.ErrorHeader))
			}
			if got := httpproxytest.Sum(t, m, "request_shed_total", map[string]string{"direction": "inbound"}); got != c.shed {
				t.Errorf("request_shed_total = %v, want %v", got, c.shed)
			}
			if got := httpproxytest.Sum(t, m, "request_in_flight", nil); got != 0 {
				t.Errorf("request_in_flight = %v once all are done, want 0", got)
			}
		})
	}
}
