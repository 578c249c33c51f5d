// Package httpproxytest helps test the forwarder and the middlewares in
// front of it: targets over real loopback endpoints, a stand-in for the
// route middleware, and metric readings. As net/http/httptest, it is for
// tests only.
package httpproxytest

import (
	"context"
	"io"
	"log/slog"
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
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/profile"
)

// Log discards what it is given.
func Log() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// App starts an application on loopback that speaks HTTP/1 and HTTP/2
// with prior knowledge, closed when the test ends, and returns its address
// (host:port).
func App(tb testing.TB, h http.Handler) string {
	tb.Helper()
	s := httptest.NewUnstartedServer(h)
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetHTTP1(true)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Start()
	tb.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// DeadAddr is a loopback address nothing listens on: connecting fails.
func DeadAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Target is authority with the endpoints at addrs (plain TCP), and prof as
// its profile when not nil. Its balancer is closed when the test ends.
func Target(tb testing.TB, authority string, prof *profile.Profile, addrs ...string) *httpproxy.Target {
	tb.Helper()
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	b := balance.New(balance.Options[*httpproxy.Upstream]{
		New:   func(s balance.Spec) *httpproxy.Upstream { return httpproxy.NewUpstream(s.Addr, false, dial) },
		Close: (*httpproxy.Upstream).Close,
	})
	specs := make([]balance.Spec, 0, len(addrs))
	for _, a := range addrs {
		specs = append(specs, balance.Spec{Addr: a, Weight: 1})
	}
	b.Update(specs)
	tb.Cleanup(b.Close)
	t := &httpproxy.Target{Authority: authority, Balancer: b}
	if prof != nil {
		t.Profile = func() *profile.Profile { return prof }
	}
	return t
}

// Routed stands in for middleware/route in a test of what comes after it:
// every request goes to t, on the route of its profile it matches.
func Routed(direction string, t *httpproxy.Target) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			x, r := httpproxy.ExchangeFor(w, r, direction)
			x.SetTarget(t)
			if t.Profile != nil {
				x.Profile = t.Profile()
				if x.Route = x.Profile.Match(r); x.Route != nil {
					x.Labels.Route = x.Route.Name
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// Sum is the sum of the samples of the counter or gauge name whose labels
// include labels.
func Sum(tb testing.TB, m *metrics.Registry, name string, labels map[string]string) float64 {
	tb.Helper()
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	samples:
		for _, s := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range s.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue samples
				}
			}
			switch {
			case s.GetCounter() != nil:
				sum += s.GetCounter().GetValue()
			case s.GetGauge() != nil:
				sum += s.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// Route is a profile route, as the destination API sends it.
type Route struct {
	Name      string
	Path      string // a path regex; "": every request
	Timeout   time.Duration
	Retryable bool
}

// Profile compiles routes as the proxy does the destination API's; the
// caller may add Splits.
func Profile(tb testing.TB, routes ...Route) *profile.Profile {
	tb.Helper()
	m := &pb.DestinationProfile{}
	for _, r := range routes {
		rt := &pb.Route{MetricsLabels: map[string]string{"route": r.Name}, IsRetryable: r.Retryable}
		if r.Path != "" {
			rt.Condition = &pb.RequestMatch{Match: &pb.RequestMatch_Path{Path: &pb.PathMatch{Regex: r.Path}}}
		}
		if r.Timeout > 0 {
			rt.Timeout = durationpb.New(r.Timeout)
		}
		m.Routes = append(m.Routes, rt)
	}
	p, err := profile.FromProto(m)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}
