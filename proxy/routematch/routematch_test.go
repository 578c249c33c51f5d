package routematch

import (
	"net/http/httptest"
	"strings"
	"testing"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// The Gateway API's match semantics, as the gateway and the mesh apply
// them: path-element prefixes, anchored regular expressions, header names
// case-insensitive and repeated fields joined, the first query value.
func TestMatches(t *testing.T) {
	prefix := func(v string) *gatewaypb.PathMatch {
		return &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: v}
	}
	for _, c := range []struct {
		name   string
		m      *gatewaypb.Match
		method string
		url    string
		hdr    [][2]string
		want   bool
	}{
		{"nil matches all", nil, "GET", "/x", nil, true},
		{"prefix element", &gatewaypb.Match{Path: prefix("/v2")}, "GET", "/v2/x", nil, true},
		{"prefix itself", &gatewaypb.Match{Path: prefix("/v2/")}, "GET", "/v2", nil, true},
		{"prefix not an element", &gatewaypb.Match{Path: prefix("/v2")}, "GET", "/v2x", nil, false},
		{"exact", &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_EXACT, Value: "/a"}}, "GET", "/a/", nil, false},
		{"regex anchored", &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_REGEX, Value: "/r/[a-z]+"}}, "GET", "/r/abc/d", nil, false},
		{"header any case", &gatewaypb.Match{Headers: []*gatewaypb.HeaderMatch{{Name: "version", Value: "two"}}}, "GET", "/", [][2]string{{"VERSION", "two"}}, true},
		{"header lines joined", &gatewaypb.Match{Headers: []*gatewaypb.HeaderMatch{{Name: "x", Value: "a,b"}}}, "GET", "/", [][2]string{{"X", "a"}, {"X", "b"}}, true},
		{"header regex", &gatewaypb.Match{Headers: []*gatewaypb.HeaderMatch{{Name: "x", Regex: true, Value: "qa\\..*"}}}, "GET", "/", [][2]string{{"X", "qa.1"}}, true},
		{"header missing", &gatewaypb.Match{Headers: []*gatewaypb.HeaderMatch{{Name: "x", Value: ""}}}, "GET", "/", nil, false},
		{"host header", &gatewaypb.Match{Headers: []*gatewaypb.HeaderMatch{{Name: "host", Value: "example.com"}}}, "GET", "/", nil, true},
		{"query first value", &gatewaypb.Match{QueryParams: []*gatewaypb.QueryMatch{{Name: "animal", Value: "whale"}}}, "GET", "/?animal=whale&animal=dog", nil, true},
		{"query not a prefix", &gatewaypb.Match{QueryParams: []*gatewaypb.QueryMatch{{Name: "animal", Value: "whale"}}}, "GET", "/?animal=whaledolphin", nil, false},
		{"method", &gatewaypb.Match{Method: "POST"}, "GET", "/", nil, false},
	} {
		m, err := Compile(c.m)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		r := httptest.NewRequest(c.method, "http://example.com"+c.url, nil)
		for _, h := range c.hdr {
			r.Header.Add(h[0], h[1])
		}
		if got := m.Matches(r); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for _, c := range []struct {
		m    *gatewaypb.Match
		want string
	}{
		{&gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_REGEX, Value: "("}}, "path.value: \"(\" is not a valid RE2"},
		{&gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: "v2"}}, "must start with '/'"},
		{&gatewaypb.Match{Headers: []*gatewaypb.HeaderMatch{{Value: "x"}}}, "headers[0].name: empty"},
		{&gatewaypb.Match{QueryParams: []*gatewaypb.QueryMatch{{Name: "q", Regex: true, Value: "["}}}, "query_params[0] (q).value"},
	} {
		if _, err := Compile(c.m); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Compile(%v) = %v, want %q", c.m, err, c.want)
		}
	}
}
