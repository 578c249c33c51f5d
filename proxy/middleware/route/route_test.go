package route_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/httpproxytest"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/middleware/route"
	"github.com/meridian-mesh/meridian/proxy/profile"
)

type routeFunc func(*http.Request) (*httpproxy.Target, error)

func (f routeFunc) Route(r *http.Request) (*httpproxy.Target, error) { return f(r) }

// The proxy's own answers: an HTTP status for HTTP clients, a trailers-only
// gRPC status for gRPC clients, both marked with the error header.
// (Moved from proxy/httpproxy with the routing it tests.)
func TestProxyAnswers(t *testing.T) {
	empty := &httpproxy.Target{Authority: "empty.test:80", Balancer: balance.New(balance.Options[*httpproxy.Upstream]{})}
	for _, c := range []struct {
		name       string
		route      error
		target     *httpproxy.Target
		grpc       bool
		status     int
		grpcStatus string
		reason     string
	}{
		{"no endpoints", nil, empty, false, 503, "", "no_endpoints"},
		{"no endpoints, gRPC", nil, empty, true, 200, "14", "no_endpoints"},
		{"route error", &httpproxy.RouteError{Status: 400, Reason: "bad_authority", Err: errors.New("bad")}, nil, false, 400, "", "bad_authority"},
		{"route error, gRPC", &httpproxy.RouteError{Status: 400, Reason: "bad_authority", Err: errors.New("bad")}, nil, true, 200, "14", "bad_authority"},
		{"other router error", errors.New("boom"), nil, false, 502, "", "route"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := metrics.New()
			h := route.New(route.Options{Direction: "outbound", Metrics: m, Router: routeFunc(func(*http.Request) (*httpproxy.Target, error) {
				if c.route != nil {
					return nil, c.route
				}
				return c.target, nil
			})})(httpproxy.New(httpproxy.Options{Direction: "outbound", Metrics: m, Log: httpproxytest.Log()}))
			req := httptest.NewRequest(http.MethodPost, "http://web.test/pkg.Svc/Method", strings.NewReader("x"))
			if c.grpc {
				req.Header.Set("Content-Type", "application/grpc")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Errorf("status %d, want %d", rec.Code, c.status)
			}
			if got := rec.Header().Get("Grpc-Status"); got != c.grpcStatus {
				t.Errorf("grpc-status %q, want %q", got, c.grpcStatus)
			}
			if got := rec.Header().Get(httpproxy.ErrorHeader); got != c.reason {
				t.Errorf("%s %q, want %q", httpproxy.ErrorHeader, got, c.reason)
			}
		})
	}
}

// What the router and the profile said is in the exchange for the next
// handler, and what could not be routed is counted under the canonical
// authority: unavailable, or the client's when it went away.
func TestRoute(t *testing.T) {
	prof := httpproxytest.Profile(t, httpproxytest.Route{Name: "get-books", Path: "/books"})
	withProfile := &httpproxy.Target{Authority: "books.test:80", Profile: func() *profile.Profile { return prof }}
	bare := &httpproxy.Target{Authority: "web.test:80"}
	probe := func(r *http.Request) bool { return r.URL.Path == "/healthz" }
	for _, c := range []struct {
		name     string
		target   *httpproxy.Target
		err      error
		cancel   bool
		path     string
		probe    bool
		route    string // the label; "-" when the request is refused
		status   int
		counted  string // the metric counted once, with authority
		authorit string
	}{
		{name: "matched route", target: withProfile, path: "/books", route: "get-books"},
		{name: "no route matched", target: withProfile, path: "/authors", route: ""},
		{name: "no profile", target: bare, path: "/books", route: ""},
		{name: "a probe", target: bare, path: "/healthz", probe: true, route: metrics.RouteProbe},
		{name: "a probe path on a profile route", target: withProfile, path: "/books", probe: true, route: "get-books"},
		{name: "unavailable", err: &httpproxy.RouteError{Status: 503, Reason: "resolve", Authority: "x.test:80", Err: errors.New("down")},
			path: "/", route: "-", status: 503, counted: "endpoint_unavailable_total", authorit: "x.test:80"},
		{name: "unavailable, Host made canonical", err: &httpproxy.RouteError{Status: 503, Reason: "unknown_authority", Err: errors.New("?")},
			path: "/", route: "-", status: 503, counted: "endpoint_unavailable_total", authorit: "web.test:80"},
		{name: "client went away", err: &httpproxy.RouteError{Status: 503, Reason: "resolve", Err: context.Canceled}, cancel: true,
			path: "/", route: "-", status: 499, counted: "request_client_error_total", authorit: "web.test:80"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := metrics.New()
			var got *httpproxy.Exchange
			next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got, _ = httpproxy.ExchangeFor(w, r, "outbound")
				w.WriteHeader(299)
			})
			h := route.New(route.Options{Direction: "outbound", Metrics: m, Router: routeFunc(func(*http.Request) (*httpproxy.Target, error) {
				return c.target, c.err
			})})(next)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if c.probe {
				ctx = httpproxy.WithPeer(ctx, httpproxy.Peer{Probe: probe})
			}
			if c.cancel {
				cancel()
			}
			req := httptest.NewRequest(http.MethodGet, "http://web.test"+c.path, nil).WithContext(ctx)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if c.route == "-" {
				if got != nil || rec.Code != c.status {
					t.Fatalf("refused request: %d, next called: %v; want %d", rec.Code, got != nil, c.status)
				}
				if n := httpproxytest.Sum(t, m, c.counted, map[string]string{"authority": c.authorit}); n != 1 {
					t.Errorf("%s{authority=%q} = %v, want 1", c.counted, c.authorit, n)
				}
				return
			}
			if got == nil {
				t.Fatalf("next not called: %d %s", rec.Code, rec.Body)
			}
			if got.Target != c.target || got.Backend != c.target || got.Labels.Authority != c.target.Authority || got.Start.IsZero() {
				t.Errorf("exchange: target %v backend %v authority %q start %v", got.Target, got.Backend, got.Labels.Authority, got.Start)
			}
			if got.Labels.Route != c.route {
				t.Errorf("route label %q, want %q", got.Labels.Route, c.route)
			}
			if (got.Route != nil) != (c.route != "" && c.route != metrics.RouteProbe) {
				t.Errorf("route %v for label %q", got.Route, c.route)
			}
		})
	}
}
