package httpproxy_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/httpproxytest"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/middleware/inflight"
	"github.com/meridian-mesh/meridian/proxy/middleware/retry"
	"github.com/meridian-mesh/meridian/proxy/middleware/route"
	"github.com/meridian-mesh/meridian/proxy/middleware/split"
	"github.com/meridian-mesh/meridian/proxy/middleware/timeout"
	"github.com/meridian-mesh/meridian/proxy/profile"
)

// benchTarget is a target with one endpoint, an HTTP/1 application on
// loopback that answers every request with a short body.
func benchTarget(b *testing.B, prof *profile.Profile) *httpproxy.Target {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	}))
	b.Cleanup(app.Close)
	addr := strings.TrimPrefix(app.URL, "http://")
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	bal := balance.New(balance.Options[*httpproxy.Upstream]{
		New:   func(s balance.Spec) *httpproxy.Upstream { return httpproxy.NewUpstream(s.Addr, false, dial) },
		Close: (*httpproxy.Upstream).Close,
	})
	bal.Update([]balance.Spec{{Addr: addr, Weight: 1}})
	b.Cleanup(bal.Close)
	t := &httpproxy.Target{Authority: "web.test:80", Balancer: bal}
	if prof != nil {
		t.Profile = func() *profile.Profile { return prof }
	}
	return t
}

// BenchmarkRequest is one request through the handler of a direction
// (route, forward, record), the application on loopback: what the
// pipeline costs per request, in time and allocations.
func BenchmarkRequest(b *testing.B) {
	retryable, err := profile.FromProto(&pb.DestinationProfile{Routes: []*pb.Route{{
		MetricsLabels: map[string]string{"route": "all"}, IsRetryable: true, Timeout: durationpb.New(time.Minute)}}})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		prof *profile.Profile
		body string
	}{
		{"get", nil, ""},
		{"post", nil, "hello"},
		{"route_timeout_retry", retryable, "hello"},
	} {
		b.Run(c.name, func(b *testing.B) {
			h := benchHandler(b, benchTarget(b, c.prof), metrics.New())
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				var body io.Reader
				if c.body != "" {
					body = strings.NewReader(c.body)
				}
				req := httptest.NewRequest(http.MethodPost, "http://web.test/x", body)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	}
}

type fixedRouter struct{ t *httpproxy.Target }

func (r fixedRouter) Route(*http.Request) (*httpproxy.Target, error)             { return r.t, nil }
func (r fixedRouter) Backend(context.Context, string) (*httpproxy.Target, error) { return r.t, nil }

// benchHandler is the outbound side's chain (as proxy/sidecar assembles
// it), every request routed to t.
func benchHandler(b *testing.B, t *httpproxy.Target, m *metrics.Registry) http.Handler {
	log := httpproxytest.Log()
	var h http.Handler = httpproxy.New(httpproxy.Options{Direction: "outbound", LabelTargetTLS: true, Metrics: m, Log: log})
	h = retry.New(retry.Options{Direction: "outbound", Metrics: m, Log: log})(h)
	h = timeout.New(timeout.Options{Direction: "outbound"})(h)
	h = split.New(split.Options{Direction: "outbound", Backends: fixedRouter{t}, Log: log})(h)
	h = route.New(route.Options{Direction: "outbound", Router: fixedRouter{t}, Metrics: m})(h)
	return inflight.New(inflight.Options{Direction: "outbound", Max: 10000, Metrics: m})(h)
}
