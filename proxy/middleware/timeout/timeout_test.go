package timeout_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/httpproxytest"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/middleware/timeout"
)

// The route timeout bounds the wait for the response's headers (504, gRPC
// DEADLINE_EXCEEDED, counted as error="timeout"), not the body that
// follows them.
func TestTimeout(t *testing.T) {
	// Generous, so that a loaded machine answers "in time" in time; the
	// late cases are late by far more than scheduling noise, and those
	// that never answer are released when the subtest ends.
	const limit = 500 * time.Millisecond
	const past = limit + 300*time.Millisecond
	for _, c := range []struct {
		name       string
		route      string // the request's path: /slow routes have the timeout
		headers    time.Duration
		body       time.Duration // after the headers
		grpc       bool
		status     int
		grpcStatus string
		timedOut   bool
	}{
		{name: "in time", route: "/slow", status: 200},
		{name: "headers late", route: "/slow", headers: time.Minute, status: 504, timedOut: true},
		{name: "headers late, gRPC", route: "/slow", headers: time.Minute, grpc: true, status: 200, grpcStatus: "4", timedOut: true},
		{name: "body late", route: "/slow", body: past, status: 200},
		{name: "no timeout on the route", route: "/other", headers: past, status: 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			stop := make(chan struct{})
			defer close(stop)
			wait := func(d time.Duration) {
				select {
				case <-time.After(d):
				case <-stop:
				}
			}
			app := httpproxytest.App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				wait(c.headers)
				w.WriteHeader(200)
				io.WriteString(w, "head,")
				http.NewResponseController(w).Flush()
				wait(c.body)
				io.WriteString(w, "tail")
			}))
			prof := httpproxytest.Profile(t, httpproxytest.Route{Name: "slow", Path: "/slow", Timeout: limit}, httpproxytest.Route{Name: "other"})
			m := metrics.New()
			h := httpproxytest.Routed("outbound", httpproxytest.Target(t, "web.test:80", prof, app))(
				timeout.New(timeout.Options{Direction: "outbound"})(
					httpproxy.New(httpproxy.Options{Direction: "outbound", Metrics: m, Log: httpproxytest.Log()})))
			req := httptest.NewRequest(http.MethodGet, "http://web.test"+c.route, nil)
			if c.grpc {
				req.Header.Set("Content-Type", "application/grpc")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.status || rec.Header().Get("Grpc-Status") != c.grpcStatus {
				t.Fatalf("%d grpc-status %q, want %d %q (%s)", rec.Code, rec.Header().Get("Grpc-Status"), c.status, c.grpcStatus, rec.Body)
			}
			if c.timedOut {
				if got := rec.Header().Get(httpproxy.ErrorHeader); got != "timeout" {
					t.Errorf("%s %q, want timeout", httpproxy.ErrorHeader, got)
				}
				if got := httpproxytest.Sum(t, m, "response_total", map[string]string{"error": "timeout", "route": "slow"}); got != 1 {
					t.Errorf("response_total{error=timeout} = %v, want 1", got)
				}
				return
			}
			if rec.Body.String() != "head,tail" {
				t.Errorf("body %q, want all of it", rec.Body)
			}
		})
	}
}
