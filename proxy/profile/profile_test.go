package profile

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

func path(re string) *pb.RequestMatch {
	return &pb.RequestMatch{Match: &pb.RequestMatch_Path{Path: &pb.PathMatch{Regex: re}}}
}
func method(m string) *pb.RequestMatch {
	return &pb.RequestMatch{Match: &pb.RequestMatch_Method{Method: &pb.MethodMatch{Method: m}}}
}
func all(ms ...*pb.RequestMatch) *pb.RequestMatch {
	return &pb.RequestMatch{Match: &pb.RequestMatch_All{All: &pb.RequestMatchAll{Matches: ms}}}
}
func not(m *pb.RequestMatch) *pb.RequestMatch {
	return &pb.RequestMatch{Match: &pb.RequestMatch_Not{Not: &pb.RequestMatchNot{Match: m}}}
}
func status(lo, hi uint32) *pb.ResponseMatch {
	return &pb.ResponseMatch{Match: &pb.ResponseMatch_Status{Status: &pb.StatusRange{Min: lo, Max: hi}}}
}

func TestRouteMatching(t *testing.T) {
	p, err := FromProto(&pb.DestinationProfile{Routes: []*pb.Route{
		{Condition: all(method("GET"), path("/api/list")), MetricsLabels: map[string]string{"route": "GET /api/list"},
			IsRetryable: true, Timeout: durationpb.New(250 * time.Millisecond)},
		{Condition: all(method("POST"), path("/api/vote.*")), MetricsLabels: map[string]string{"route": "POST /api/vote"}},
		{Condition: not(path("/healthz")), MetricsLabels: map[string]string{"route": "other"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, url, want string }{
		{"GET", "/api/list", "GET /api/list"},
		{"GET", "/api/list/x", "other"}, // regexes are anchored at both ends
		{"POST", "/api/vote?choice=:joy:", "POST /api/vote"},
		{"GET", "/api/vote", "other"},
		{"GET", "/healthz", ""},
	} {
		rt := p.Match(httptest.NewRequest(c.method, c.url, nil))
		got := ""
		if rt != nil {
			got = rt.Name
		}
		if got != c.want {
			t.Errorf("%s %s matched %q, want %q", c.method, c.url, got, c.want)
		}
	}
	rt := p.Match(httptest.NewRequest("GET", "/api/list", nil))
	if !rt.Retryable || rt.Timeout != 250*time.Millisecond {
		t.Errorf("route fields lost: %+v", rt)
	}
}

func TestResponseClasses(t *testing.T) {
	p, err := FromProto(&pb.DestinationProfile{Routes: []*pb.Route{{
		MetricsLabels: map[string]string{"route": "r"},
		ResponseClasses: []*pb.ResponseClass{
			{Condition: status(404, 404), IsFailure: true},
			{Condition: status(500, 503), IsFailure: false}, // e.g. an expected maintenance answer
		},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	rt := p.Routes[0]
	for code, want := range map[int]bool{200: false, 404: true, 500: false, 503: false, 504: true, 400: false} {
		if got := rt.IsFailure(code); got != want {
			t.Errorf("IsFailure(%d) = %v, want %v", code, got, want)
		}
	}
	var none *Route
	if !none.IsFailure(502) || none.IsFailure(200) {
		t.Error("without a route, 5xx is failure and 2xx is not")
	}
}

func TestBadRegexIsRejected(t *testing.T) {
	_, err := FromProto(&pb.DestinationProfile{Routes: []*pb.Route{{Condition: path("("), MetricsLabels: map[string]string{"route": "bad"}}}})
	if err == nil {
		t.Fatal("a bad regex compiled")
	}
	if want := "routes[0] (bad).condition"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name %q", err, want)
	}
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestBudget(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	b := NewBudget(BudgetSpec{Ratio: 0.2, MinPerSecond: 0, TTL: 10 * time.Second}, c.now)
	if b.Withdraw() {
		t.Fatal("an empty budget allowed a retry")
	}
	for i := 0; i < 10; i++ {
		b.Deposit()
	}
	// 10 requests × 0.2 = 2 retries.
	for range 2 {
		if !b.Withdraw() {
			t.Fatal("budget of 2 refused a retry")
		}
	}
	if b.Withdraw() {
		t.Fatal("a third retry passed a budget of 2")
	}
	// Deposits expire after the TTL.
	for i := 0; i < 10; i++ {
		b.Deposit()
	}
	c.t = c.t.Add(11 * time.Second)
	if b.Withdraw() {
		t.Fatal("expired deposits still paid for a retry")
	}
}

func TestBudgetReserve(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	b := NewBudget(BudgetSpec{Ratio: 0.2, MinPerSecond: 2, TTL: 5 * time.Second}, c.now)
	n := 0
	for b.Withdraw() && n < 100 {
		n++
	}
	if n != 10 { // 2/s × 5 s
		t.Fatalf("reserve allowed %d retries, want 10", n)
	}
}

// HTTP routes are matched first, in order, with the gateway's match
// semantics (routematch); the profile's routes classify the rest. A bad
// HTTP route is an error naming it: the previous profile keeps serving.
func TestHTTPRoutes(t *testing.T) {
	p, err := FromProto(&pb.DestinationProfile{
		Routes: []*pb.Route{{Condition: path("/.*"), MetricsLabels: map[string]string{"route": "sp"}, IsRetryable: true}},
		HttpRoutes: []*pb.HttpRoute{
			{Match: &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: "/v2"}}, MetricsLabels: map[string]string{"route": "v2"},
				Timeout: durationpb.New(time.Second), Backends: []*pb.RouteBackend{{Authority: "a:80", Weight: 3}, {Authority: "b:80", Weight: 0}}},
			{Match: &gatewaypb.Match{Headers: []*gatewaypb.HeaderMatch{{Name: "x-v", Regex: true, Value: "t.o"}}}, MetricsLabels: map[string]string{"route": "hdr"}},
		}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		url, hdr, want string
		own            bool
	}{
		{"/v2/x", "", "v2", true}, {"/v2x", "", "sp", false}, {"/", "two", "hdr", true}, {"/", "twoo", "sp", false},
	} {
		r := httptest.NewRequest("GET", "http://x"+c.url, nil)
		if c.hdr != "" {
			r.Header.Set("X-V", c.hdr)
		}
		rt := p.Match(r)
		if rt == nil || rt.Name != c.want || rt.OwnsSplit() != c.own {
			t.Errorf("%s %s: route %+v, want %s (own split %v)", c.url, c.hdr, rt, c.want, c.own)
		}
	}
	v2 := p.HTTPRoutes[0]
	for range 20 {
		if b, ok := v2.Pick(); !ok || b.Authority != "a:80" {
			t.Fatalf("Pick = %+v, %v: weight 0 picked", b, ok)
		}
	}
	if v2.Timeout != time.Second || v2.Retryable {
		t.Errorf("timeout %v retryable %v", v2.Timeout, v2.Retryable)
	}
	if b, ok := p.HTTPRoutes[1].Pick(); b != nil || !ok {
		t.Errorf("no backends: Pick = %+v, %v; want the apex", b, ok)
	}
	_, err = FromProto(&pb.DestinationProfile{HttpRoutes: []*pb.HttpRoute{{MetricsLabels: map[string]string{"route": "r"},
		Match: &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_REGEX, Value: "("}}}}})
	if err == nil || !strings.Contains(err.Error(), "http_routes[0] (r).match.path.value") {
		t.Errorf("bad regex: %v", err)
	}
}

// A GAMMA rule's redirect or rewrite the proxy cannot apply refuses the
// profile, naming the field: the last good profile keeps serving.
func TestHTTPRouteRedirectRewriteRefused(t *testing.T) {
	prefix := &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: "/old"}}
	exact := &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_EXACT, Value: "/old"}}
	replace := &gatewaypb.PathModifier{Modifier: &gatewaypb.PathModifier_ReplacePrefix{ReplacePrefix: "/new"}}
	for _, c := range []struct {
		route *pb.HttpRoute
		want  string
	}{
		{&pb.HttpRoute{Match: prefix, Redirect: &gatewaypb.Redirect{StatusCode: 200}}, "redirect: redirect: statusCode 200"},
		{&pb.HttpRoute{Match: prefix, Redirect: &gatewaypb.Redirect{Scheme: "ftp"}}, `redirect: redirect: scheme "ftp"`},
		{&pb.HttpRoute{Match: exact, Redirect: &gatewaypb.Redirect{Path: replace}}, "redirect.path.replace_prefix: the route's match has no PREFIX path"},
		{&pb.HttpRoute{Match: exact, Rewrite: &gatewaypb.Rewrite{Path: replace}}, "rewrite.path.replace_prefix: the route's match has no PREFIX path"},
		{&pb.HttpRoute{Match: prefix, Redirect: &gatewaypb.Redirect{}, Rewrite: &gatewaypb.Rewrite{}}, "redirect, rewrite: one of them, not both"},
	} {
		c.route.MetricsLabels = map[string]string{"route": "r"}
		_, err := FromProto(&pb.DestinationProfile{HttpRoutes: []*pb.HttpRoute{c.route}})
		if err == nil || !strings.Contains(err.Error(), "http_routes[0] (r)."+c.want) {
			t.Errorf("%v: %v, want %q", c.route, err, c.want)
		}
	}
}
