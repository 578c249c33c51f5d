package split_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/httpproxytest"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/middleware/split"
	"github.com/meridian-mesh/meridian/proxy/profile"
)

type backends map[string]*httpproxy.Target

func (b backends) Backend(_ context.Context, authority string) (*httpproxy.Target, error) {
	if t, ok := b[authority]; ok {
		return t, nil
	}
	return nil, fmt.Errorf("%s: %w", authority, discover.ErrNotFound)
}

// The backend a request goes to: a split's, by weight, or the apex when
// there is no split or its backend cannot be resolved.
func TestSplit(t *testing.T) {
	canary := &httpproxy.Target{Authority: "web-canary.test:80"}
	for _, c := range []struct {
		name   string
		splits []profile.Split // nil: no profile
		want   string          // the backend's authority
	}{
		{name: "no profile", want: "web.test:80"},
		{name: "no split", splits: []profile.Split{}, want: "web.test:80"},
		{name: "all to the canary", splits: []profile.Split{{Authority: "web-canary.test:80", Weight: 1}, {Authority: "web.test:80", Weight: 0}}, want: "web-canary.test:80"},
		{name: "every weight 0", splits: []profile.Split{{Authority: "web-canary.test:80", Weight: 0}}, want: "web.test:80"},
		{name: "a broken backend: the apex", splits: []profile.Split{{Authority: "gone.test:80", Weight: 1}}, want: "web.test:80"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var prof *profile.Profile
			if c.splits != nil {
				prof = &profile.Profile{Splits: c.splits}
			}
			apex := &httpproxy.Target{Authority: "web.test:80"}
			if prof != nil {
				apex.Profile = func() *profile.Profile { return prof }
			}
			var got *httpproxy.Exchange
			h := httpproxytest.Routed("outbound", apex)(split.New(split.Options{Direction: "outbound", Backends: backends{"web-canary.test:80": canary}, Log: httpproxytest.Log()})(
				http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got, _ = httpproxy.ExchangeFor(w, r, "outbound") })))
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "http://web.test/", nil))
			if got == nil {
				t.Fatal("next not called")
			}
			if got.Backend.Authority != c.want || got.Target != apex || got.Labels.Authority != "web.test:80" {
				t.Errorf("backend %s, target %s, authority label %s; want backend %s, the apex's target and label",
					got.Backend.Authority, got.Target.Authority, got.Labels.Authority, c.want)
			}
		})
	}
}

// A request an HTTP route matched goes by the route's own backends, not the
// profile's split, through the route's then the backend's header filters;
// an invalid backend answers 500 (counted), a route with a status answers
// it (404 to gRPC: UNIMPLEMENTED), and a route without backends leaves the
// apex serving.
func TestRouteSplit(t *testing.T) {
	set := func(k, v string) *gatewaypb.HeaderModifier {
		return &gatewaypb.HeaderModifier{Set: map[string]string{k: v}}
	}
	prof, err := profile.FromProto(&pb.DestinationProfile{
		DstOverrides: []*pb.WeightedDst{{Authority: "web-v1.test:80", Weight: 1}},
		HttpRoutes: []*pb.HttpRoute{
			{Match: &gatewaypb.Match{Headers: []*gatewaypb.HeaderMatch{{Name: "x-canary", Value: "1"}}}, MetricsLabels: map[string]string{"route": "canary"},
				RequestHeaders: set("X-Route", "canary"), ResponseHeaders: set("X-Served-By", "route"),
				Backends: []*pb.RouteBackend{{Authority: "web-canary.test:80", Weight: 1, RequestHeaders: set("X-Backend", "canary")}}},
			{Match: &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: "/bad"}}, MetricsLabels: map[string]string{"route": "bad"},
				Backends: []*pb.RouteBackend{{Weight: 1}}},
			{Match: &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: "/gone"}}, MetricsLabels: map[string]string{"route": "gone"},
				Backends: []*pb.RouteBackend{{Authority: "gone.test:80", Weight: 1}}},
			{Match: &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_EXACT, Value: "/self"}}, MetricsLabels: map[string]string{"route": "self"}},
			{Match: &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: "/api"}}, MetricsLabels: map[string]string{"route": "api"},
				Backends: []*pb.RouteBackend{{Authority: "web-v1.test:80", Weight: 1}}},
			{MetricsLabels: map[string]string{"route": "none"}, Status: 404},
		}})
	if err != nil {
		t.Fatal(err)
	}
	apex := &httpproxy.Target{Authority: "web.test:80", Profile: func() *profile.Profile { return prof }}
	known := backends{"web-canary.test:80": {Authority: "web-canary.test:80"}, "web-v1.test:80": {Authority: "web-v1.test:80"}}
	reg := metrics.New()
	for _, c := range []struct {
		name, path, canary, ctype string
		status                    int
		backend                   string // "" not forwarded
		reqHeaders, respHeader    string
		grpcStatus                string
	}{
		{name: "header route", path: "/api", canary: "1", status: 200, backend: "web-canary.test:80", reqHeaders: "canary/canary", respHeader: "route"},
		{name: "path route", path: "/api/x", status: 200, backend: "web-v1.test:80"},
		{name: "no backends: the apex", path: "/self", status: 200, backend: "web.test:80"},
		{name: "invalid backend", path: "/bad", status: 500},
		{name: "unknown backend", path: "/gone", status: 500},
		{name: "no rule matches", path: "/other", status: 404},
		{name: "no rule matches, gRPC", path: "/pkg.Svc/M", ctype: "application/grpc", status: 200, grpcStatus: "12"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got *httpproxy.Exchange
			var req http.Header
			h := httpproxytest.Routed("outbound", apex)(split.New(split.Options{Direction: "outbound", Backends: known, Log: httpproxytest.Log(), Metrics: reg})(
				http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					got, _ = httpproxy.ExchangeFor(w, r, "outbound")
					req = r.Header.Clone()
				})))
			r := httptest.NewRequest(http.MethodGet, "http://web.test"+c.path, nil)
			if c.canary != "" {
				r.Header.Set("X-Canary", c.canary)
			}
			if c.ctype != "" {
				r.Header.Set("Content-Type", c.ctype)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != c.status || rec.Header().Get("Grpc-Status") != c.grpcStatus {
				t.Fatalf("status %d grpc-status %q, want %d %q", rec.Code, rec.Header().Get("Grpc-Status"), c.status, c.grpcStatus)
			}
			if c.backend == "" {
				if got != nil {
					t.Fatalf("forwarded to %s", got.Backend.Authority)
				}
				return
			}
			if got == nil || got.Backend.Authority != c.backend {
				t.Fatalf("backend %v, want %s", got, c.backend)
			}
			if c.reqHeaders != "" && req.Get("X-Route")+"/"+req.Get("X-Backend") != c.reqHeaders {
				t.Errorf("request headers X-Route/X-Backend = %s/%s, want %s", req.Get("X-Route"), req.Get("X-Backend"), c.reqHeaders)
			}
			if rec.Header().Get("X-Served-By") != c.respHeader {
				t.Errorf("response header X-Served-By = %q, want %q", rec.Header().Get("X-Served-By"), c.respHeader)
			}
		})
	}
	if n := httpproxytest.Sum(t, reg, "endpoint_unavailable_total", map[string]string{"reason": "invalid_backend"}); n != 2 {
		t.Errorf("endpoint_unavailable_total{reason=invalid_backend} = %v, want 2", n)
	}
}
