package retry_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/httpproxytest"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/middleware/retry"
	"github.com/meridian-mesh/meridian/proxy/middleware/timeout"
	"github.com/meridian-mesh/meridian/proxy/profile"
)

// Failures of a retryable route are sent again, body included, while the
// retries and the budget last; what cannot be retried goes through once.
func TestRetry(t *testing.T) {
	small := "hello"
	large := strings.Repeat("x", retry.BufferSize+1)
	for _, c := range []struct {
		name     string
		path     string // /retry is retryable
		body     string
		header   http.Header
		grpc     bool
		failures int32 // the application fails this many first
		budget   profile.BudgetSpec
		status   int
		attempts int32
		outcomes map[string]float64 // retry_total by outcome
		// response_total: every attempt once (it counted the last failure
		// twice when the retries or the budget ran out).
		responses float64
	}{
		{name: "success at once", path: "/retry", body: small, status: 200, attempts: 1, responses: 1},
		{name: "two failures retried", path: "/retry", body: small, failures: 2, status: 200, attempts: 3,
			outcomes: map[string]float64{"retried": 2}, responses: 3},
		{name: "no body", path: "/retry", failures: 1, status: 200, attempts: 2, outcomes: map[string]float64{"retried": 1}, responses: 2},
		{name: "retries used up", path: "/retry", body: small, failures: 10, status: 500, attempts: 1 + retry.MaxRetries,
			outcomes: map[string]float64{"retried": retry.MaxRetries, "budget_exhausted": 1}, responses: 1 + retry.MaxRetries},
		{name: "budget used up", path: "/retry", body: small, failures: 10, budget: profile.BudgetSpec{Ratio: 0, MinPerSecond: 0, TTL: 10e9},
			status: 500, attempts: 1, outcomes: map[string]float64{"budget_exhausted": 1}, responses: 1},
		{name: "body too large", path: "/retry", body: large, failures: 1, status: 500, attempts: 1,
			outcomes: map[string]float64{"body_too_large": 1}, responses: 1},
		{name: "not a retryable route", path: "/once", body: small, failures: 1, status: 500, attempts: 1, responses: 1},
		{name: "waits for 100 Continue", path: "/retry", body: small, header: http.Header{"Expect": {"100-continue"}}, failures: 1,
			status: 500, attempts: 1, responses: 1},
		{name: "gRPC", path: "/retry", body: small, grpc: true, failures: 1, status: 500, attempts: 1, responses: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			var attempts atomic.Int32
			app := httpproxytest.App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := attempts.Add(1)
				b, _ := io.ReadAll(r.Body)
				if string(b) != c.body {
					t.Errorf("attempt %d: body of %d bytes, want %d", n, len(b), len(c.body))
				}
				if c.grpc {
					w.Header().Set("Content-Type", "application/grpc")
				}
				if n <= c.failures {
					w.WriteHeader(500)
					return
				}
				w.WriteHeader(200)
			}))
			prof := httpproxytest.Profile(t, httpproxytest.Route{Name: "retry", Path: "/retry", Retryable: true}, httpproxytest.Route{Name: "once"})
			if c.budget.TTL > 0 {
				prof.BudgetSpec = c.budget
			}
			m := metrics.New()
			h := httpproxytest.Routed("outbound", httpproxytest.Target(t, "web.test:80", prof, app))(
				retry.New(retry.Options{Direction: "outbound", Metrics: m, Log: httpproxytest.Log()})(
					httpproxy.New(httpproxy.Options{Direction: "outbound", Metrics: m, Log: httpproxytest.Log()})))
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			req := httptest.NewRequest(http.MethodPost, "http://web.test"+c.path, body)
			for k, v := range c.header {
				req.Header[k] = v
			}
			if c.grpc {
				req.Header.Set("Content-Type", "application/grpc")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Errorf("status %d, want %d", rec.Code, c.status)
			}
			if got := attempts.Load(); got != c.attempts {
				t.Errorf("%d attempts, want %d", got, c.attempts)
			}
			for _, o := range []string{"retried", "budget_exhausted", "body_too_large"} {
				if got := httpproxytest.Sum(t, m, "retry_total", map[string]string{"outcome": o}); got != c.outcomes[o] {
					t.Errorf("retry_total{outcome=%q} = %v, want %v", o, got, c.outcomes[o])
				}
			}
			if got := httpproxytest.Sum(t, m, "response_total", nil); got != c.responses {
				t.Errorf("response_total = %v, want %v", got, c.responses)
			}
		})
	}
}

// A failure passed on when the retries are used up is the client's
// response like any other: the route timeout bounds the wait for its
// headers, not its body (it cut that body short before).
func TestRetryUsedUpKeepsItsBody(t *testing.T) {
	const body = "the application's own error page"
	app := httpproxytest.App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(500)
		w.(http.Flusher).Flush()
		time.Sleep(400 * time.Millisecond) // the body outlives the route timeout
		io.WriteString(w, body)
	}))
	prof := httpproxytest.Profile(t, httpproxytest.Route{Name: "retry", Retryable: true, Timeout: 200 * time.Millisecond})
	prof.BudgetSpec = profile.BudgetSpec{Ratio: 0, MinPerSecond: 0, TTL: 10e9} // no retry: passed on at once
	m := metrics.New()
	h := httpproxytest.Routed("outbound", httpproxytest.Target(t, "web.test:80", prof, app))(
		timeout.New(timeout.Options{})(
			retry.New(retry.Options{Direction: "outbound", Metrics: m, Log: httpproxytest.Log()})(
				httpproxy.New(httpproxy.Options{Direction: "outbound", Metrics: m, Log: httpproxytest.Log()}))))
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", strings.NewReader("x"))
	req.Host = "web.test"
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || err != nil || string(got) != body {
		t.Fatalf("%d %q (%v), want 500 %q", resp.StatusCode, got, err, body)
	}
	if n := httpproxytest.Sum(t, m, "response_total", nil); n != 1 {
		t.Errorf("response_total = %v, want 1", n)
	}
}
