package gateway

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"google.golang.org/protobuf/proto"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

func httpGW() *gwv1.Gateway {
	return gw(from(lis("http", 80, gwv1.HTTPProtocolType, ""), gwv1.NamespacesFromAll, nil))
}

func TestBackends(t *testing.T) {
	ref := func(group, kind, ns, name string, port int32, weight int32) gwv1.HTTPBackendRef {
		b := bref(name, port)
		if group != "-" {
			b.Group = ptr(gwv1.Group(group))
		}
		if kind != "" {
			b.Kind = ptr(gwv1.Kind(kind))
		}
		if ns != "" {
			b.Namespace = ptr(gwv1.Namespace(ns))
		}
		if weight >= 0 {
			b.Weight = ptr(weight)
		}
		return b
	}
	grant := &gwv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "g"}, Spec: gwv1.ReferenceGrantSpec{
		From: []gwv1.ReferenceGrantFrom{{Group: Group, Kind: "HTTPRoute", Namespace: "gw"}},
		To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Service", Name: ptr(gwv1.ObjectName("granted"))}},
	}}
	extra := []any{svc("other", "granted", 80, ""), svc("other", "notgranted", 80, ""), svc("gw", "h2c", 80, "kubernetes.io/h2c"), svc("gw", "ws", 80, "kubernetes.io/ws"), svc("gw", "wss", 80, "kubernetes.io/wss"), grant}
	tests := []struct {
		name      string
		ref       gwv1.HTTPBackendRef
		reason    string // ResolvedRefs reason
		authority string
		weight    uint32
		protocol  gatewaypb.Backend_Protocol
	}{
		{"service", ref("-", "", "", "a", 80, -1), "ResolvedRefs", "a.gw.svc.cluster.local:80", 1, 0},
		{"explicit core Service, weight", ref("", "Service", "", "a", 80, 7), "ResolvedRefs", "a.gw.svc.cluster.local:80", 7, 0},
		{"weight 0 kept", ref("-", "", "", "a", 80, 0), "ResolvedRefs", "a.gw.svc.cluster.local:80", 0, 0},
		{"unknown kind", ref("example.com", "Bucket", "", "a", 80, 3), "InvalidKind", "", 3, 0},
		{"missing service", ref("-", "", "", "nope", 80, -1), "BackendNotFound", "", 1, 0},
		{"missing port", ref("-", "", "", "a", 81, -1), "BackendNotFound", "", 1, 0},
		{"cross-namespace granted", ref("-", "", "other", "granted", 80, -1), "ResolvedRefs", "granted.other.svc.cluster.local:80", 1, 0},
		{"cross-namespace, grant names another service", ref("-", "", "other", "notgranted", 80, 2), "RefNotPermitted", "", 2, 0},
		{"h2c", ref("-", "", "", "h2c", 80, -1), "ResolvedRefs", "h2c.gw.svc.cluster.local:80", 1, gatewaypb.Backend_H2C},
		{"websocket", ref("-", "", "", "ws", 80, -1), "ResolvedRefs", "ws.gw.svc.cluster.local:80", 1, gatewaypb.Backend_WEBSOCKET},
		{"wss unsupported", ref("-", "", "", "wss", 80, -1), "UnsupportedProtocol", "", 1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			route := hroute("gw", "r", nil, gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{tc.ref, bref("b", 80)}})
			r := compile(base(t, append([]any{httpGW(), route}, extra...)...))
			p := parent(t, r, "HTTPRoute", "gw", "r")
			wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
			wantCond(t, "route", p.Conditions, "ResolvedRefs", tc.reason == "ResolvedRefs", tc.reason)
			bs := host(t, r.Snapshot, "http", "").Rules[0].Backends
			if len(bs) != 2 {
				t.Fatalf("backends %v: an invalid backend must stay with its weight", bs)
			}
			b := bs[0]
			if b.Authority != tc.authority || b.Weight != tc.weight || b.Protocol != tc.protocol {
				t.Errorf("backend %v, want %s weight %d %v", b, tc.authority, tc.weight, tc.protocol)
			}
			if bs[1].Authority != "b.gw.svc.cluster.local:80" || bs[1].Name != "gw/b:80" {
				t.Errorf("the valid backend beside it: %v", bs[1])
			}
		})
	}
	// The cluster domain is an option.
	r := Compile(base(t, httpGW(), hroute("gw", "r", nil)), key("gw", "gw"), Options{ClusterDomain: "corp.example"})
	if a := host(t, r.Snapshot, "http", "").Rules[0].Backends[0].Authority; a != "a.gw.svc.corp.example:80" {
		t.Errorf("authority %s", a)
	}
}

func TestPrecedence(t *testing.T) {
	at := func(r *gwv1.HTTPRoute, sec int64) *gwv1.HTTPRoute {
		r.CreationTimestamp = metav1.Unix(sec, 0)
		return r
	}
	exact := gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchExact), Value: ptr("/foo")}}
	regex := gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchRegularExpression), Value: ptr("/f.o")}}
	method := prefix("/foo")
	method.Method = ptr(gwv1.HTTPMethod("GET"))
	hdrs := prefix("/foo")
	hdrs.Headers = []gwv1.HTTPHeaderMatch{{Name: "a", Value: "1"}, {Name: "b", Value: "2"}}
	hdr := prefix("/foo")
	hdr.Headers = []gwv1.HTTPHeaderMatch{{Name: "a", Value: "1"}, {Name: "A", Value: "dup: only the first counts"}}
	query := prefix("/foo")
	query.QueryParams = []gwv1.HTTPQueryParamMatch{{Name: "q", Value: "1"}}
	rule := func(ms ...gwv1.HTTPRouteMatch) gwv1.HTTPRouteRule {
		return gwv1.HTTPRouteRule{Matches: ms, BackendRefs: []gwv1.HTTPBackendRef{bref("a", 80)}}
	}
	routes := []any{
		at(hroute("gw", "old", []string{"x.com"}, rule(prefix("/")), rule(prefix("/foo/"))), 10),
		at(hroute("gw", "new", []string{"x.com"}, rule(prefix("/foo"), exact, query), rule(hdr, regex)), 20),
		at(hroute("gw", "same-time-b", []string{"x.com"}, rule(method)), 30),
		at(hroute("gw", "same-time-a", []string{"x.com"}, rule(hdrs)), 30),
		at(hroute("gw", "longer", []string{"x.com"}, rule(prefix("/foo/bar"))), 40),
		at(hroute("gw", "wild", []string{"*.com"}, rule(prefix("/only-wild"))), 1),
		at(hroute("gw", "any", nil, rule(prefix("/any"))), 1),
	}
	r := compile(base(t, append([]any{httpGW()}, routes...)...))
	got := routesOf(host(t, r.Snapshot, "http", "x.com"))
	want := []string{
		"new/0 EXACT /foo",          // Exact first
		"longer/0 PREFIX /foo/bar",  // then the longest path
		"same-time-b/0 PREFIX /foo", // a method match
		"same-time-a/0 PREFIX /foo", // two headers
		"new/1 PREFIX /foo",         // one header (its duplicate ignored)
		"new/0 PREFIX /foo",         // a query param
		"old/1 PREFIX /foo",         // the older of the two bare /foo
		"new/0 PREFIX /foo",         // then the newer one
		"new/1 REGEX /f.o",          // a regex after a prefix of its length
		"old/0 PREFIX /",            //
		"wild/0 PREFIX /only-wild",  // then the wildcard hostname's rules
		"any/0 PREFIX /any",         // then the catch-all's
	}
	if !slices.Equal(got, want) {
		t.Errorf("x.com rules\n got %q\nwant %q", got, want)
	}
	// The query match is the one on "new/0 PREFIX /foo".
	if q := host(t, r.Snapshot, "http", "x.com").Rules[5].Match.QueryParams; len(q) != 1 {
		t.Errorf("rule 5 %v", host(t, r.Snapshot, "http", "x.com").Rules[5])
	}
	if h := host(t, r.Snapshot, "http", "x.com").Rules[4].Match.Headers; len(h) != 1 {
		t.Errorf("duplicate header names must collapse to the first: %v", h)
	}
	// Hosts: exact, then wildcards, then any.
	var hosts []string
	for _, h := range snapListener(t, r.Snapshot, "http").Hosts {
		hosts = append(hosts, h.Hostname)
	}
	if !slices.Equal(hosts, []string{"x.com", "*.com", ""}) {
		t.Errorf("hosts %q", hosts)
	}
	if got := routesOf(host(t, r.Snapshot, "http", "*.com")); !slices.Equal(got, []string{"wild/0 PREFIX /only-wild", "any/0 PREFIX /any"}) {
		t.Errorf("*.com rules %q", got)
	}
	// Ties beyond creation time go to namespace/name; input order never matters.
	slices.Reverse(routes[:5])
	r2 := compile(base(t, append([]any{httpGW()}, routes...)...))
	if r2.Snapshot.Version != r.Snapshot.Version {
		t.Error("the order of the input changed the snapshot")
	}
}

func TestMatches(t *testing.T) {
	m := func(f func(*gwv1.HTTPRouteMatch)) gwv1.HTTPRouteMatch {
		x := gwv1.HTTPRouteMatch{}
		f(&x)
		return x
	}
	tests := []struct {
		name   string
		match  gwv1.HTTPRouteMatch
		want   *gatewaypb.Match
		reason string // route Accepted reason when rejected
	}{
		{"default is prefix /", gwv1.HTTPRouteMatch{}, &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: "/"}}, ""},
		{"trailing slash of a prefix", prefix("/foo/"), &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: "/foo"}}, ""},
		{"regex", m(func(x *gwv1.HTTPRouteMatch) {
			x.Path = &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchRegularExpression), Value: ptr("/v[0-9]+/.*")}
		}), &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_REGEX, Value: "/v[0-9]+/.*"}}, ""},
		{"invalid regex", m(func(x *gwv1.HTTPRouteMatch) {
			x.Path = &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchRegularExpression), Value: ptr("/(")}
		}), nil, "UnsupportedValue"},
		{"relative path", m(func(x *gwv1.HTTPRouteMatch) { x.Path = &gwv1.HTTPPathMatch{Value: ptr("foo")} }), nil, "UnsupportedValue"},
		{"headers, query, method", m(func(x *gwv1.HTTPRouteMatch) {
			x.Headers = []gwv1.HTTPHeaderMatch{{Name: "X-A", Value: "1"}, {Name: "x-b", Type: ptr(gwv1.HeaderMatchRegularExpression), Value: "a.*"}}
			x.QueryParams = []gwv1.HTTPQueryParamMatch{{Name: "q", Value: "v"}, {Name: "Q", Value: "case-sensitive names"}}
			x.Method = ptr(gwv1.HTTPMethodPost)
		}), &gatewaypb.Match{
			Path:        &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: "/"},
			Headers:     []*gatewaypb.HeaderMatch{{Name: "X-A", Value: "1"}, {Name: "x-b", Regex: true, Value: "a.*"}},
			QueryParams: []*gatewaypb.QueryMatch{{Name: "q", Value: "v"}, {Name: "Q", Value: "case-sensitive names"}},
			Method:      "POST",
		}, ""},
		{"invalid header regex", m(func(x *gwv1.HTTPRouteMatch) {
			x.Headers = []gwv1.HTTPHeaderMatch{{Name: "a", Type: ptr(gwv1.HeaderMatchRegularExpression), Value: "[["}}
		}), nil, "UnsupportedValue"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bad := hroute("gw", "r", []string{"r.com"}, gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{tc.match}, BackendRefs: []gwv1.HTTPBackendRef{bref("a", 80)}})
			good := hroute("gw", "good", []string{"good.com"})
			r := compile(base(t, httpGW(), bad, good))
			p := parent(t, r, "HTTPRoute", "gw", "r")
			if tc.reason != "" {
				wantCond(t, "route", p.Conditions, "Accepted", false, tc.reason)
				if !rejected(r.Snapshot, "HTTPRoute", "gw", "r", tc.reason) {
					t.Errorf("not in snapshot.rejected: %v", r.Snapshot.Rejected)
				}
				if msg := find(t, p.Conditions, "Accepted").Message; !strings.Contains(msg, "HTTPRoute gw/r: spec.rules[0].matches[0]") {
					t.Errorf("message %q does not name the object and field", msg)
				}
				for _, h := range snapListener(t, r.Snapshot, "http").Hosts {
					if h.Hostname == "r.com" {
						t.Error("a rejected route is in the snapshot")
					}
				}
				// The rest keeps serving.
				host(t, r.Snapshot, "http", "good.com")
				return
			}
			wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
			if got := host(t, r.Snapshot, "http", "r.com").Rules[0].Match; !proto.Equal(got, tc.want) {
				t.Errorf("match %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFilters(t *testing.T) {
	redirect := func(f gwv1.HTTPRequestRedirectFilter) gwv1.HTTPRouteFilter {
		return gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &f}
	}
	rewrite := func(f gwv1.HTTPURLRewriteFilter) gwv1.HTTPRouteFilter {
		return gwv1.HTTPRouteFilter{Type: gwv1.HTTPRouteFilterURLRewrite, URLRewrite: &f}
	}
	replacePrefix := &gwv1.HTTPPathModifier{Type: gwv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr("/new")}
	exact := gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchExact), Value: ptr("/x")}}
	tests := []struct {
		name    string
		matches []gwv1.HTTPRouteMatch
		filters []gwv1.HTTPRouteFilter
		want    []*gatewaypb.Filter
		reason  string
	}{
		{"header modifiers", nil, []gwv1.HTTPRouteFilter{
			{Type: gwv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gwv1.HTTPHeaderFilter{Set: []gwv1.HTTPHeader{{Name: "A", Value: "1"}}, Add: []gwv1.HTTPHeader{{Name: "B", Value: "2"}}, Remove: []string{"C"}}},
			{Type: gwv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: &gwv1.HTTPHeaderFilter{Add: []gwv1.HTTPHeader{{Name: "D", Value: "4"}}}},
		}, []*gatewaypb.Filter{
			{Filter: &gatewaypb.Filter_RequestHeaders{RequestHeaders: &gatewaypb.HeaderModifier{Set: map[string]string{"A": "1"}, Add: []*gatewaypb.Header{{Name: "B", Value: "2"}}, Remove: []string{"C"}}}},
			{Filter: &gatewaypb.Filter_ResponseHeaders{ResponseHeaders: &gatewaypb.HeaderModifier{Add: []*gatewaypb.Header{{Name: "D", Value: "4"}}}}},
		}, ""},
		{"redirect", []gwv1.HTTPRouteMatch{prefix("/old")}, []gwv1.HTTPRouteFilter{redirect(gwv1.HTTPRequestRedirectFilter{Scheme: ptr("https"), Hostname: ptr(gwv1.PreciseHostname("x.com")), Port: ptr(gwv1.PortNumber(8443)), StatusCode: ptr(301), Path: replacePrefix})},
			[]*gatewaypb.Filter{{Filter: &gatewaypb.Filter_Redirect{Redirect: &gatewaypb.Redirect{Scheme: "https", Hostname: "x.com", Port: 8443, StatusCode: 301, Path: &gatewaypb.PathModifier{Modifier: &gatewaypb.PathModifier_ReplacePrefix{ReplacePrefix: "/new"}}}}}}, ""},
		{"redirect default 302", nil, []gwv1.HTTPRouteFilter{redirect(gwv1.HTTPRequestRedirectFilter{Path: &gwv1.HTTPPathModifier{Type: gwv1.FullPathHTTPPathModifier, ReplaceFullPath: ptr("/full")}})},
			[]*gatewaypb.Filter{{Filter: &gatewaypb.Filter_Redirect{Redirect: &gatewaypb.Redirect{StatusCode: 302, Path: &gatewaypb.PathModifier{Modifier: &gatewaypb.PathModifier_FullPath{FullPath: "/full"}}}}}}, ""},
		{"rewrite", []gwv1.HTTPRouteMatch{prefix("/old")}, []gwv1.HTTPRouteFilter{rewrite(gwv1.HTTPURLRewriteFilter{Hostname: ptr(gwv1.PreciseHostname("in.com")), Path: replacePrefix})},
			[]*gatewaypb.Filter{{Filter: &gatewaypb.Filter_Rewrite{Rewrite: &gatewaypb.Rewrite{Hostname: "in.com", Path: &gatewaypb.PathModifier{Modifier: &gatewaypb.PathModifier_ReplacePrefix{ReplacePrefix: "/new"}}}}}}, ""},
		{"replacePrefixMatch needs a prefix match", []gwv1.HTTPRouteMatch{prefix("/a"), exact}, []gwv1.HTTPRouteFilter{rewrite(gwv1.HTTPURLRewriteFilter{Path: replacePrefix})}, nil, "UnsupportedValue"},
		{"redirect and rewrite", nil, []gwv1.HTTPRouteFilter{redirect(gwv1.HTTPRequestRedirectFilter{}), rewrite(gwv1.HTTPURLRewriteFilter{})}, nil, "IncompatibleFilters"},
		{"bad status code", nil, []gwv1.HTTPRouteFilter{redirect(gwv1.HTTPRequestRedirectFilter{StatusCode: ptr(304)})}, nil, "UnsupportedValue"},
		{"extensionRef", nil, []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterExtensionRef, ExtensionRef: &gwv1.LocalObjectReference{Group: "x", Kind: "Y", Name: "z"}}}, nil, "UnsupportedValue"},
		{"mirror, percent", nil, []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestMirror, RequestMirror: &gwv1.HTTPRequestMirrorFilter{BackendRef: gwv1.BackendObjectReference{Name: "b", Port: ptr(gwv1.PortNumber(80))}, Percent: ptr(int32(25))}}},
			[]*gatewaypb.Filter{{Filter: &gatewaypb.Filter_Mirror{Mirror: &gatewaypb.Mirror{Backend: &gatewaypb.Backend{Authority: "b.gw.svc.cluster.local:80", Name: "gw/b:80"}, Numerator: 25, Denominator: 100}}}}, ""},
		{"mirror, fraction", nil, []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestMirror, RequestMirror: &gwv1.HTTPRequestMirrorFilter{BackendRef: gwv1.BackendObjectReference{Name: "b", Port: ptr(gwv1.PortNumber(80))}, Fraction: &gwv1.Fraction{Numerator: 1, Denominator: ptr(int32(3))}}}},
			[]*gatewaypb.Filter{{Filter: &gatewaypb.Filter_Mirror{Mirror: &gatewaypb.Mirror{Backend: &gatewaypb.Backend{Authority: "b.gw.svc.cluster.local:80", Name: "gw/b:80"}, Numerator: 1, Denominator: 3}}}}, ""},
		{"cors", nil, []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterCORS, CORS: &gwv1.HTTPCORSFilter{AllowOrigins: []gwv1.CORSOrigin{"https://*.x.com"}, AllowMethods: []gwv1.HTTPMethodWithWildcard{"GET"}, AllowHeaders: []gwv1.HTTPHeaderName{"x-a"}, ExposeHeaders: []gwv1.HTTPHeaderName{"x-b"}, MaxAge: 60, AllowCredentials: ptr(true)}}},
			[]*gatewaypb.Filter{{Filter: &gatewaypb.Filter_Cors{Cors: &gatewaypb.CORS{AllowOrigins: []string{"https://*.x.com"}, AllowMethods: []string{"GET"}, AllowHeaders: []string{"x-a"}, ExposeHeaders: []string{"x-b"}, MaxAgeSeconds: 60, AllowCredentials: true}}}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			route := hroute("gw", "r", nil, gwv1.HTTPRouteRule{Matches: tc.matches, Filters: tc.filters, BackendRefs: []gwv1.HTTPBackendRef{bref("a", 80)}})
			r := compile(base(t, httpGW(), route))
			p := parent(t, r, "HTTPRoute", "gw", "r")
			if tc.reason != "" {
				wantCond(t, "route", p.Conditions, "Accepted", false, tc.reason)
				return
			}
			wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
			for _, rl := range host(t, r.Snapshot, "http", "").Rules {
				if len(rl.Filters) != len(tc.want) {
					t.Fatalf("filters %v, want %v", rl.Filters, tc.want)
				}
				for i := range tc.want {
					if !proto.Equal(rl.Filters[i], tc.want[i]) {
						t.Errorf("filter %d: %v, want %v", i, rl.Filters[i], tc.want[i])
					}
				}
			}
		})
	}
}

func TestTimeoutsRetrySession(t *testing.T) {
	rule := gwv1.HTTPRouteRule{
		BackendRefs:        []gwv1.HTTPBackendRef{bref("a", 80)},
		Timeouts:           &gwv1.HTTPRouteTimeouts{Request: ptr(gwv1.Duration("10s")), BackendRequest: ptr(gwv1.Duration("500ms"))},
		Retry:              &gwv1.HTTPRouteRetry{Attempts: ptr(2), Codes: []gwv1.HTTPRouteRetryStatusCode{503, 504}, Backoff: ptr(gwv1.Duration("100ms"))},
		SessionPersistence: &gwv1.SessionPersistence{SessionName: ptr("s"), AbsoluteTimeout: ptr(gwv1.Duration("1h")), CookieConfig: &gwv1.CookieConfig{LifetimeType: ptr(gwv1.PermanentCookieLifetimeType)}},
	}
	r := compile(base(t, httpGW(), hroute("gw", "r", nil, rule)))
	rl := host(t, r.Snapshot, "http", "").Rules[0]
	if rl.Timeouts.Request.AsDuration() != 10*time.Second || rl.Timeouts.BackendRequest.AsDuration() != 500*time.Millisecond {
		t.Errorf("timeouts %v", rl.Timeouts)
	}
	if rl.Retry.Attempts != 2 || !slices.Equal(rl.Retry.Codes, []uint32{503, 504}) || rl.Retry.Backoff.AsDuration() != 100*time.Millisecond {
		t.Errorf("retry %v", rl.Retry)
	}
	// attempts left out: the implementation's default, not none.
	rule.Retry = &gwv1.HTTPRouteRetry{Codes: []gwv1.HTTPRouteRetryStatusCode{503}}
	if rt := host(t, compile(base(t, httpGW(), hroute("gw", "r", nil, rule))).Snapshot, "http", "").Rules[0].Retry; rt.Attempts != DefaultRetryAttempts || !slices.Equal(rt.Codes, []uint32{503}) {
		t.Errorf("retry without attempts: %v, want %d attempts", rt, DefaultRetryAttempts)
	}
	sp := rl.SessionPersistence
	if sp.Type != gatewaypb.SessionPersistence_COOKIE || sp.Name != "s" || !sp.PermanentCookie || sp.AbsoluteTimeout.AsDuration() != time.Hour {
		t.Errorf("session %v", sp)
	}
	for name, rule := range map[string]gwv1.HTTPRouteRule{
		"bad duration":           {Timeouts: &gwv1.HTTPRouteTimeouts{Request: ptr(gwv1.Duration("soon"))}},
		"backendRequest>request": {Timeouts: &gwv1.HTTPRouteTimeouts{Request: ptr(gwv1.Duration("1s")), BackendRequest: ptr(gwv1.Duration("2s"))}},
		"retry code":             {Retry: &gwv1.HTTPRouteRetry{Codes: []gwv1.HTTPRouteRetryStatusCode{200}}},
		"permanent no timeout":   {SessionPersistence: &gwv1.SessionPersistence{CookieConfig: &gwv1.CookieConfig{LifetimeType: ptr(gwv1.PermanentCookieLifetimeType)}}},
	} {
		r := compile(base(t, httpGW(), hroute("gw", "r", nil, rule)))
		wantCond(t, name, parent(t, r, "HTTPRoute", "gw", "r").Conditions, "Accepted", false, "UnsupportedValue")
	}
	// "0s" disables a timeout.
	r = compile(base(t, httpGW(), hroute("gw", "r", nil, gwv1.HTTPRouteRule{Timeouts: &gwv1.HTTPRouteTimeouts{Request: ptr(gwv1.Duration("0s"))}})))
	if tm := host(t, r.Snapshot, "http", "").Rules[0].Timeouts; tm != nil {
		t.Errorf("0s: %v", tm)
	}
}

func TestGRPCRoute(t *testing.T) {
	method := func(typ gwv1.GRPCMethodMatchType, svc, meth string) gwv1.GRPCRouteMatch {
		m := &gwv1.GRPCMethodMatch{Type: &typ}
		if svc != "" {
			m.Service = &svc
		}
		if meth != "" {
			m.Method = &meth
		}
		return gwv1.GRPCRouteMatch{Method: m}
	}
	tests := []struct {
		name   string
		match  gwv1.GRPCRouteMatch
		path   *gatewaypb.PathMatch
		reason string
	}{
		{"service and method", method(gwv1.GRPCMethodMatchExact, "pkg.Svc", "Get"), &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_EXACT, Value: "/pkg.Svc/Get"}, ""},
		{"service", method(gwv1.GRPCMethodMatchExact, "pkg.Svc", ""), &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: "/pkg.Svc"}, ""},
		{"method", method(gwv1.GRPCMethodMatchExact, "", "Get.x"), &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_REGEX, Value: `/[^/]+/Get\.x`}, ""},
		{"regex", method(gwv1.GRPCMethodMatchRegularExpression, "pkg\\..*", ""), &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_REGEX, Value: `/(?:pkg\..*)/(?:[^/]+)`}, ""},
		{"bad regex", method(gwv1.GRPCMethodMatchRegularExpression, "(", ""), nil, "UnsupportedValue"},
		{"no match: everything", gwv1.GRPCRouteMatch{}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gr := &gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "g", Generation: 1}}
			gr.Spec.ParentRefs = []gwv1.ParentReference{{Name: "gw"}}
			gr.Spec.Rules = []gwv1.GRPCRouteRule{{Matches: []gwv1.GRPCRouteMatch{tc.match}, BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "a", Port: ptr(gwv1.PortNumber(80))}}}}}}
			r := compile(base(t, httpGW(), gr))
			p := parent(t, r, "GRPCRoute", "gw", "g")
			if tc.reason != "" {
				wantCond(t, "route", p.Conditions, "Accepted", false, tc.reason)
				return
			}
			wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
			rl := host(t, r.Snapshot, "http", "").Rules[0]
			if !proto.Equal(rl.Match.GetPath(), tc.path) || !rl.Grpc || rl.Backends[0].Protocol != gatewaypb.Backend_H2C || rl.Route.Kind != "GRPCRoute" {
				t.Errorf("rule %v, want path %v", rl, tc.path)
			}
		})
	}
}

func TestBackendTLSPolicy(t *testing.T) {
	crt, _ := certPEM(t, "a.example.com")
	policy := func(name string, created int64, section string, refs ...gwv1.LocalObjectReference) *gwv1.BackendTLSPolicy {
		p := &gwv1.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: name, Generation: 4, CreationTimestamp: metav1.Unix(created, 0)}}
		tr := gwv1.LocalPolicyTargetReferenceWithSectionName{LocalPolicyTargetReference: gwv1.LocalPolicyTargetReference{Kind: "Service", Name: "a"}}
		if section != "" {
			tr.SectionName = ptr(gwv1.SectionName(section))
		}
		p.Spec.TargetRefs = []gwv1.LocalPolicyTargetReferenceWithSectionName{tr}
		p.Spec.Validation = gwv1.BackendTLSPolicyValidation{Hostname: "a.example.com", CACertificateRefs: refs, SubjectAltNames: []gwv1.SubjectAltName{{Type: gwv1.URISubjectAltNameType, URI: "spiffe://x/y"}}}
		return p
	}
	ca := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "ca"}, Data: map[string]string{"ca.crt": string(crt)}}
	cmRef := func(name string) gwv1.LocalObjectReference {
		return gwv1.LocalObjectReference{Kind: "ConfigMap", Name: gwv1.ObjectName(name)}
	}
	system := policy("sys", 1, "")
	system.Spec.Validation.WellKnownCACertificates = ptr(gwv1.WellKnownCACertificatesSystem)
	custom := policy("custom", 1, "")
	custom.Spec.Validation.WellKnownCACertificates = ptr(gwv1.WellKnownCACertificatesType("example.com/roots"))
	tests := []struct {
		name     string
		policies []any
		want     *gatewaypb.BackendTLS // nil with authority: no TLS; nil without: 500
		invalid  bool
		accepted string // the policy status: Accepted reason
		refs     string // ResolvedRefs reason
	}{
		{"none", nil, nil, false, "", ""},
		{"ca from configmap", []any{policy("p", 1, "", cmRef("ca"))}, &gatewaypb.BackendTLS{ServerName: "a.example.com", CaCertificates: crt, SubjectAltNames: []string{"spiffe://x/y"}}, false, "Accepted", "ResolvedRefs"},
		{"system roots", []any{system}, &gatewaypb.BackendTLS{ServerName: "a.example.com", SubjectAltNames: []string{"spiffe://x/y"}}, false, "Accepted", "ResolvedRefs"},
		// The spec: an unrecognized set is Accepted False, Invalid.
		{"unknown well-known set", []any{custom}, nil, true, "Invalid", "ResolvedRefs"},
		{"missing configmap", []any{policy("p", 1, "", cmRef("nope"))}, nil, true, "NoValidCACertificate", "InvalidCACertificateRef"},
		{"invalid kind", []any{policy("p", 1, "", gwv1.LocalObjectReference{Kind: "Secret", Name: "ca"})}, nil, true, "NoValidCACertificate", "InvalidKind"},
		{"section name wins over age", []any{policy("old", 1, "", cmRef("nope")), policy("new", 2, "p", cmRef("ca"))}, &gatewaypb.BackendTLS{ServerName: "a.example.com", CaCertificates: crt, SubjectAltNames: []string{"spiffe://x/y"}}, false, "Accepted", "ResolvedRefs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := compile(base(t, append([]any{httpGW(), hroute("gw", "r", nil), ca}, tc.policies...)...))
			b := host(t, r.Snapshot, "http", "").Rules[0].Backends[0]
			if tc.invalid {
				if b.Authority != "" {
					t.Errorf("a backend behind an invalid policy must answer 500, got %v", b)
				}
			} else if b.Authority == "" || !proto.Equal(b.Tls, tc.want) {
				t.Errorf("backend %v, want tls %v", b, tc.want)
			}
			if tc.accepted == "" {
				if len(r.Policies) != 0 {
					t.Errorf("policies %v", r.Policies)
				}
				return
			}
			var ps PolicyStatus
			for _, x := range r.Policies {
				if x.Policy.Name == tc.policies[len(tc.policies)-1].(*gwv1.BackendTLSPolicy).Name {
					ps = x
				}
			}
			if ps.Ancestor.AncestorRef.Name != "gw" || ps.Ancestor.ControllerName != ControllerName {
				t.Errorf("ancestor %+v", ps.Ancestor)
			}
			wantCond(t, ps.Policy.String(), ps.Ancestor.Conditions, "Accepted", tc.accepted == "Accepted", tc.accepted)
			wantCond(t, ps.Policy.String(), ps.Ancestor.Conditions, "ResolvedRefs", tc.refs == "ResolvedRefs", tc.refs)
			if len(tc.policies) > 1 && len(r.Policies) != 1 {
				// The whole-Service policy is shadowed on the only port, not
				// in conflict: no status from this Gateway.
				t.Errorf("policies %v", r.Policies)
			}

		})
	}
}

func TestTLSRoutes(t *testing.T) {
	tr := func(name string, created int64, hostnames ...string) *gwv1.TLSRoute {
		r := &gwv1.TLSRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: name, Generation: 1, CreationTimestamp: metav1.Unix(created, 0)}}
		r.Spec.ParentRefs = []gwv1.ParentReference{{Name: "gw"}}
		for _, h := range hostnames {
			r.Spec.Hostnames = append(r.Spec.Hostnames, gwv1.Hostname(h))
		}
		r.Spec.Rules = []gwv1.TLSRouteRule{{BackendRefs: []gwv1.BackendRef{{BackendObjectReference: gwv1.BackendObjectReference{Name: "a", Port: ptr(gwv1.PortNumber(80))}}}}}
		return r
	}
	g := gw(lis("tls", 443, gwv1.TLSProtocolType, "*.example.com"), lis("http", 80, gwv1.HTTPProtocolType, ""))
	r := compile(base(t, g, tr("wild", 1, "*.example.com"), tr("exact", 2, "a.example.com", "z.example.com"), tr("none", 3, "x.org"), hroute("gw", "h", nil)))
	l := snapListener(t, r.Snapshot, "tls")
	var got []string
	for _, x := range l.TlsRoutes {
		got = append(got, x.Route.Name+" "+strings.Join(x.Hostnames, ","))
	}
	if want := []string{"exact a.example.com,z.example.com", "wild *.example.com"}; !slices.Equal(got, want) {
		t.Errorf("tls routes %q, want %q", got, want)
	}
	if l.TlsRoutes[0].Backends[0].Authority != "a.gw.svc.cluster.local:80" {
		t.Errorf("backends %v", l.TlsRoutes[0].Backends)
	}
	wantCond(t, "none", parent(t, r, "TLSRoute", "gw", "none").Conditions, "Accepted", false, "NoMatchingListenerHostname")
	if ls := listenerStatus(t, r, "tls"); ls.AttachedRoutes != 2 {
		t.Errorf("attachedRoutes %d", ls.AttachedRoutes)
	}
	// The HTTPRoute does not attach to the TLS listener, only to http.
	if ls := listenerStatus(t, r, "http"); ls.AttachedRoutes != 1 {
		t.Errorf("http attachedRoutes %d", ls.AttachedRoutes)
	}
	if p := r.Snapshot.Ports; len(p) != 2 || p[0].Port != 80 || p[0].Protocol != gatewaypb.Port_HTTP || p[1].Protocol != gatewaypb.Port_TLS {
		t.Errorf("ports %v", p)
	}
}

func TestVersion(t *testing.T) {
	in := base(t, httpGW(), hroute("gw", "r", []string{"a.com"}))
	v1 := compile(in).Snapshot.Version
	if v1 == "" || compile(in).Snapshot.Version != v1 {
		t.Fatal("equal inputs give different versions")
	}
	in2 := base(t, httpGW(), hroute("gw", "r", []string{"b.com"}))
	if compile(in2).Snapshot.Version == v1 {
		t.Error("a different route table has the same version")
	}
	if !strings.Contains(compile(in).Snapshot.Gateway, "gw/gw") {
		t.Error("snapshot.gateway")
	}
	s := Compile(in, key("gw", "gw"), Options{TrustedHops: 2, MaxRequestHeaderBytes: 1 << 20}).Snapshot
	if s.TrustedHops != 2 || s.MaxRequestHeaderBytes != 1<<20 || s.Version == v1 {
		t.Errorf("options not in the snapshot (or its version): %v", s)
	}
}

// An HTTPRoute and a GRPCRoute whose hostnames intersect on a listener:
// the older is kept, the other is not accepted; on distinct hostnames
// both are.
func TestHTTPAndGRPCShareNoHostname(t *testing.T) {
	grpc := func(created int64, hostnames ...string) *gwv1.GRPCRoute {
		g := &gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "g", Generation: 1, CreationTimestamp: metav1.Unix(created, 0)}}
		g.Spec.ParentRefs = []gwv1.ParentReference{{Name: "gw"}}
		for _, h := range hostnames {
			g.Spec.Hostnames = append(g.Spec.Hostnames, gwv1.Hostname(h))
		}
		g.Spec.Rules = []gwv1.GRPCRouteRule{{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "a", Port: ptr(gwv1.PortNumber(80))}}}}}}
		return g
	}
	http := func(created int64, hostnames ...string) *gwv1.HTTPRoute {
		h := hroute("gw", "h", hostnames)
		h.CreationTimestamp = metav1.Unix(created, 0)
		return h
	}
	tests := []struct {
		name       string
		http       *gwv1.HTTPRoute
		grpc       *gwv1.GRPCRoute
		httpOK     bool
		grpcOK     bool
		grpcReason string
	}{
		{"http older, same hostname", http(1, "x.com"), grpc(2, "x.com"), true, false, "NotAllowedByListeners"},
		{"grpc older, same hostname", http(2, "x.com"), grpc(1, "x.com"), false, true, "Accepted"},
		{"wildcard intersects", http(1, "*.x.com"), grpc(2, "a.x.com"), true, false, "NotAllowedByListeners"},
		{"no hostnames intersect everything", http(1), grpc(2, "a.x.com"), true, false, "NotAllowedByListeners"},
		{"distinct hostnames", http(1, "x.com"), grpc(2, "y.com"), true, true, "Accepted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := compile(base(t, httpGW(), tc.http, tc.grpc))
			hp := parent(t, r, "HTTPRoute", "gw", "h")
			gp := parent(t, r, "GRPCRoute", "gw", "g")
			if tc.httpOK {
				wantCond(t, "http", hp.Conditions, "Accepted", true, "Accepted")
			} else {
				wantCond(t, "http", hp.Conditions, "Accepted", false, "NotAllowedByListeners")
			}
			wantCond(t, "grpc", gp.Conditions, "Accepted", tc.grpcOK, tc.grpcReason)
			want := 0
			if tc.httpOK {
				want++
			}
			if tc.grpcOK {
				want++
			}
			if got := listenerStatus(t, r, "http").AttachedRoutes; got != int32(want) {
				t.Errorf("attachedRoutes %d, want %d", got, want)
			}
		})
	}
}

// Compile only reads its input: concurrent compiles of shared objects (as
// the store hands them out) race with nothing.
func TestCompileConcurrently(t *testing.T) {
	in := add(load(t, "conformance/manifests.yaml", "conformance/httproute-matching-across-routes.yaml", "conformance/httproute-hostname-intersection.yaml", "conformance/tlsroute-simple-same-namespace.yaml"),
		tlsSecret(t, infra, "tls-validity-checks-certificate"))
	want := map[string]string{}
	for _, g := range in.Gateways {
		want[g.Name] = Compile(in, key(g.Namespace, g.Name), Options{}).Snapshot.Version
	}
	done := make(chan string, len(in.Gateways)*4)
	for range 4 {
		for _, g := range in.Gateways {
			go func() {
				if v := Compile(in, key(g.Namespace, g.Name), Options{}).Snapshot.Version; v != want[g.Name] {
					done <- g.Name
					return
				}
				done <- ""
			}()
		}
	}
	for range len(in.Gateways) * 4 {
		if bad := <-done; bad != "" {
			t.Errorf("%s compiled differently concurrently", bad)
		}
	}
}

// The input's order never shows in the result.
func TestInputOrder(t *testing.T) {
	in := add(load(t, "conformance/manifests.yaml", "conformance/httproute-matching-across-routes.yaml", "conformance/httproute-hostname-intersection.yaml", "conformance/grpcroute-exact-method-matching.yaml"),
		tlsSecret(t, infra, "tls-validity-checks-certificate"))
	for _, g := range []string{"same-namespace", "httproute-hostname-intersection"} {
		a := Compile(in, key(infra, g), Options{})
		rev := in
		rev.HTTPRoutes = slices.Clone(in.HTTPRoutes)
		slices.Reverse(rev.HTTPRoutes)
		rev.Services = slices.Clone(in.Services)
		slices.Reverse(rev.Services)
		b := Compile(rev, key(infra, g), Options{})
		if !proto.Equal(a.Snapshot, b.Snapshot) || !reflect.DeepEqual(a.Routes, b.Routes) || !reflect.DeepEqual(a.Gateway, b.Gateway) || !reflect.DeepEqual(a.Dependencies, b.Dependencies) {
			t.Errorf("%s: the input's order changed the result", g)
		}
	}
}

// Of two policies on the same Service, the younger is Conflicted; its
// references are still judged, so ResolvedRefs says what is wrong with
// them rather than claiming they resolve.
func TestBackendTLSPolicyConflictedRefs(t *testing.T) {
	crt, _ := certPEM(t, "a.example.com")
	ca := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "ca"}, Data: map[string]string{"ca.crt": string(crt)}}
	policy := func(name string, created int64, cm string) *gwv1.BackendTLSPolicy {
		p := &gwv1.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: name, Generation: 2, CreationTimestamp: metav1.Unix(created, 0)}}
		p.Spec.TargetRefs = []gwv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gwv1.LocalPolicyTargetReference{Kind: "Service", Name: "a"}}}
		p.Spec.Validation = gwv1.BackendTLSPolicyValidation{Hostname: "a.example.com", CACertificateRefs: []gwv1.LocalObjectReference{{Kind: "ConfigMap", Name: gwv1.ObjectName(cm)}}}
		return p
	}
	r := compile(base(t, httpGW(), hroute("gw", "r", nil), ca, policy("old", 1, "ca"), policy("young", 2, "missing")))
	got := map[string][]metav1.Condition{}
	for _, ps := range r.Policies {
		got[ps.Policy.Name] = ps.Ancestor.Conditions
	}
	wantCond(t, "old", got["old"], "Accepted", true, "Accepted")
	wantCond(t, "old", got["old"], "ResolvedRefs", true, "ResolvedRefs")
	wantCond(t, "young", got["young"], "Accepted", false, "Conflicted")
	wantCond(t, "young", got["young"], "ResolvedRefs", false, "InvalidCACertificateRef")
}

// A TLSRoute attached to a Terminate and a Passthrough listener: the
// terminating one originates the backend's BackendTLSPolicy TLS (the
// spec's re-encryption), the passthrough one sends the client's TLS as is.
func TestTLSRouteTerminateAndPassthrough(t *testing.T) {
	crt, _ := certPEM(t, "a.example.com")
	ca := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "ca"}, Data: map[string]string{"ca.crt": string(crt)}}
	p := &gwv1.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "p", Generation: 1}}
	p.Spec.TargetRefs = []gwv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gwv1.LocalPolicyTargetReference{Kind: "Service", Name: "a"}}}
	p.Spec.Validation = gwv1.BackendTLSPolicyValidation{Hostname: "a.example.com", CACertificateRefs: []gwv1.LocalObjectReference{{Kind: "ConfigMap", Name: "ca"}}}
	term := lis("term", 443, gwv1.TLSProtocolType, "t.example.com")
	term.TLS = &gwv1.ListenerTLSConfig{Mode: ptr(gwv1.TLSModeTerminate), CertificateRefs: []gwv1.SecretObjectReference{{Name: "cert"}}}
	pass := lis("pass", 443, gwv1.TLSProtocolType, "p.example.com")
	r := &gwv1.TLSRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "r", Generation: 1}}
	r.Spec.ParentRefs = []gwv1.ParentReference{{Name: "gw"}}
	r.Spec.Rules = []gwv1.TLSRouteRule{{BackendRefs: []gwv1.BackendRef{{BackendObjectReference: gwv1.BackendObjectReference{Name: "a", Port: ptr(gwv1.PortNumber(80))}}}}}
	res := compile(base(t, gw(term, pass), r, p, ca))
	wantCond(t, "route", parent(t, res, "TLSRoute", "gw", "r").Conditions, "Accepted", true, "Accepted")
	tl, pl := snapListener(t, res.Snapshot, "term"), snapListener(t, res.Snapshot, "pass")
	if tl.Mode != gatewaypb.Listener_TLS_TERMINATE || len(tl.TlsRoutes) != 1 || !slices.Equal(tl.TlsRoutes[0].Hostnames, []string{"t.example.com"}) {
		t.Fatalf("terminate listener %v", tl)
	}
	if b := tl.TlsRoutes[0].Backends[0]; b.Tls == nil || b.Tls.ServerName != "a.example.com" || b.Protocol != gatewaypb.Backend_PROTOCOL_UNSPECIFIED {
		t.Errorf("terminate backend %v: the policy's TLS expected", b)
	}
	if pl.Mode != gatewaypb.Listener_TLS_PASSTHROUGH || len(pl.TlsRoutes) != 1 || pl.TlsRoutes[0].Backends[0].Tls != nil || pl.TlsRoutes[0].Backends[0].Authority == "" {
		t.Errorf("passthrough listener %v: its backend carries no TLS of its own", pl)
	}
	if len(res.Snapshot.Ports) != 1 || len(res.Snapshot.Ports[0].Listeners) != 2 {
		t.Errorf("ports %v", res.Snapshot.Ports)
	}
}
