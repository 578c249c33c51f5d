package profile

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
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
