package compile_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	splitv1alpha2 "github.com/meridian-mesh/meridian/api/split/v1alpha2"
	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

var t0 = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))

func backend(name string, port int32, weight int32) gwv1.HTTPBackendRef {
	p := gwv1.PortNumber(port)
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: &p}, Weight: &weight}}
}

func serviceParent(name string, port int32) gwv1.ParentReference {
	core, kind := gwv1.Group(""), gwv1.Kind("Service")
	p := gwv1.ParentReference{Group: &core, Kind: &kind, Name: gwv1.ObjectName(name)}
	if port != 0 {
		pn := gwv1.PortNumber(port)
		p.Port = &pn
	}
	return p
}

func gammaRoute(ns, name string, age int, parents []gwv1.ParentReference, rules ...gwv1.HTTPRouteRule) *gwv1.HTTPRoute {
	return &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 3, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Minute))},
		Spec:       gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parents}, Rules: rules},
	}
}

func rule(matches []gwv1.HTTPRouteMatch, backends ...gwv1.HTTPBackendRef) gwv1.HTTPRouteRule {
	return gwv1.HTTPRouteRule{Matches: matches, BackendRefs: backends}
}

func pathMatch(typ gwv1.PathMatchType, v string) []gwv1.HTTPRouteMatch {
	return []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: &typ, Value: &v}}}
}

// echo is a Service with two versions, as the GAMMA conformance tests set
// it up.
func echo(t *testing.T, extra ...runtime.Object) *store.Store {
	t.Helper()
	st := store.New(store.WithClusterDomain("cluster.local"))
	objs := []runtime.Object{
		svc("mesh", "echo", "10.96.4.1", port("http", 80, intstr.FromInt32(8080))),
		svc("mesh", "echo-v1", "10.96.4.2", port("http", 80, intstr.FromInt32(8080))),
		svc("mesh", "echo-v2", "10.96.4.3", port("http", 80, intstr.FromInt32(8080))),
		svc("other", "echo-v3", "10.96.4.4", port("http", 80, intstr.FromInt32(8080))),
		slice("mesh", "echo-v1", "echo-v1-1", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080}, ep{ip: "10.4.0.1"}),
	}
	for _, o := range append(objs, extra...) {
		if err := st.Upsert(o); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

const (
	echoApex = "echo.mesh.svc.cluster.local:80"
	echoV1   = "echo-v1.mesh.svc.cluster.local:80"
	echoV2   = "echo-v2.mesh.svc.cluster.local:80"
)

// routes describes a profile's HTTPRoutes, one line each: name, match,
// filters and timeout, backends ("(apex)" for none, "500" for an invalid
// one).
// nomatch is the route after GAMMA rules none of which matches everything.
const nomatch = compile.NoRouteMatched + " answers 404"

func routes(p compile.DestinationProfile) []string {
	out := []string{}
	for _, r := range p.HTTPRoutes {
		var b strings.Builder
		b.WriteString(r.Name)
		m := r.Match
		if pm := m.GetPath(); pm != nil {
			fmt.Fprintf(&b, " %s %s", pm.GetType(), pm.GetValue())
		}
		for _, h := range m.GetHeaders() {
			op := "="
			if h.GetRegex() {
				op = "~"
			}
			fmt.Fprintf(&b, " %s%s%s", h.GetName(), op, h.GetValue())
		}
		for _, q := range m.GetQueryParams() {
			fmt.Fprintf(&b, " ?%s=%s", q.GetName(), q.GetValue())
		}
		if m.GetMethod() != "" {
			b.WriteString(" " + m.GetMethod())
		}
		if r.RequestHeaders != nil {
			fmt.Fprintf(&b, " req(set %v add %d remove %v)", r.RequestHeaders.GetSet(), len(r.RequestHeaders.GetAdd()), r.RequestHeaders.GetRemove())
		}
		if r.ResponseHeaders != nil {
			fmt.Fprintf(&b, " resp(set %v)", r.ResponseHeaders.GetSet())
		}
		if r.Timeout > 0 {
			fmt.Fprintf(&b, " timeout %s", r.Timeout)
		}
		if r.Status != 0 {
			fmt.Fprintf(&b, " answers %d", r.Status)
			out = append(out, b.String())
			continue
		}
		b.WriteString(" ->")
		if len(r.Backends) == 0 {
			b.WriteString(" (apex)")
		}
		for _, x := range r.Backends {
			a := x.Authority
			if a == "" {
				a = "500"
			}
			fmt.Fprintf(&b, " %s=%d", a, x.Weight)
			if x.RequestHeaders != nil {
				fmt.Fprintf(&b, "+req(set %v)", x.RequestHeaders.GetSet())
			}
		}
		out = append(out, b.String())
	}
	return out
}

// GAMMA HTTPRoutes with a Service parent: every rule's matches become
// HTTPRoutes of the profile, in the Gateway API's precedence, with their
// own backends; the first catch-all rule gives the DstOverrides (the
// split proxies that predate per-route splits apply to everything).
func TestProfileMeshRoutes(t *testing.T) {
	echoParent := []gwv1.ParentReference{serviceParent("echo", 0)}
	catchAll := pathMatch(gwv1.PathMatchPathPrefix, "/")
	grant := &gwv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "g"}, Spec: gwv1.ReferenceGrantSpec{
		From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "HTTPRoute", Namespace: "mesh"}},
		To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Service"}}}}
	for _, tc := range []struct {
		name     string
		objs     []runtime.Object
		asked    string
		want     []string
		warnings []string
		routes   []string // nil: not checked
		deps     []store.Key
	}{
		{name: "no matches: 90/10", objs: []runtime.Object{gammaRoute("mesh", "r", 0, echoParent, rule(nil, backend("echo-v1", 80, 90), backend("echo-v2", 80, 10)))},
			want: []string{echoV1 + "=90", echoV2 + "=10"},
			deps: []store.Key{{Namespace: "mesh", Name: "echo"}, {Namespace: "mesh", Name: "echo-v1"}, {Namespace: "mesh", Name: "echo-v2"}}},
		{name: "catch-all prefix, weight defaults to 1", objs: []runtime.Object{gammaRoute("mesh", "r", 0, echoParent, rule(catchAll, backend("echo-v1", 80, 1), func() gwv1.HTTPBackendRef {
			b := backend("echo-v2", 80, 0)
			b.Weight = nil
			return b
		}()))}, want: []string{echoV1 + "=1", echoV2 + "=1"}},
		{name: "matched rules: routes of their own; the catch-all is the default split", objs: []runtime.Object{gammaRoute("mesh", "r", 0, echoParent,
			rule(pathMatch(gwv1.PathMatchExact, "/v2"), backend("echo-v2", 80, 1)),
			rule(catchAll, backend("echo-v1", 80, 1)))},
			want:   []string{echoV1 + "=1"},
			routes: []string{"HTTPRoute/mesh/r/0 EXACT /v2 -> " + echoV2 + "=1", "HTTPRoute/mesh/r/1 PREFIX / -> " + echoV1 + "=1"}},
		{name: "only matched rules: no default split", objs: []runtime.Object{gammaRoute("mesh", "r", 0, echoParent, rule(pathMatch(gwv1.PathMatchExact, "/v1"), backend("echo-v1", 80, 1)))},
			want: []string{}, routes: []string{"HTTPRoute/mesh/r/0 EXACT /v1 -> " + echoV1 + "=1", nomatch}},
		{name: "a missing backend's share is answered 500, the other keeps serving", objs: []runtime.Object{gammaRoute("mesh", "r", 0, echoParent, rule(nil, backend("echo-v1", 80, 50), backend("nope", 80, 50)))},
			want: []string{echoV1 + "=50"}, warnings: []string{"spec.rules[0].backendRefs[1]: service mesh/nope does not exist: its share is answered 500"},
			routes: []string{"HTTPRoute/mesh/r/0 PREFIX / -> " + echoV1 + "=50 500=50"},
			deps:   []store.Key{{Namespace: "mesh", Name: "echo"}, {Namespace: "mesh", Name: "echo-v1"}, {Namespace: "mesh", Name: "nope"}}},
		{name: "every weight 0: 500", objs: []runtime.Object{gammaRoute("mesh", "r", 0, echoParent, rule(nil, backend("echo-v1", 80, 0)))},
			want: []string{}, warnings: []string{"every backendRef has weight 0"}, routes: []string{"HTTPRoute/mesh/r/0 PREFIX / -> 500=1"}},
		{name: "no backendRefs: the Service itself", objs: []runtime.Object{gammaRoute("mesh", "r", 0, echoParent, rule(pathMatch(gwv1.PathMatchPathPrefix, "/x")))},
			want: []string{}, routes: []string{"HTTPRoute/mesh/r/0 PREFIX /x -> (apex)", nomatch}},
		{name: "precedence across routes and rules (the gateway's)", objs: []runtime.Object{
			gammaRoute("mesh", "old", 0, echoParent, rule(catchAll, backend("echo-v1", 80, 1)), rule(pathMatch(gwv1.PathMatchPathPrefix, "/v2"), backend("echo-v2", 80, 1))),
			gammaRoute("mesh", "young", 5, echoParent,
				rule([]gwv1.HTTPRouteMatch{{Headers: []gwv1.HTTPHeaderMatch{{Name: "version", Value: "two"}}}}, backend("echo-v2", 80, 1)),
				rule(pathMatch(gwv1.PathMatchExact, "/v2"), backend("echo-v1", 80, 1)),
				rule([]gwv1.HTTPRouteMatch{{Method: ptr(gwv1.HTTPMethodPost)}, {QueryParams: []gwv1.HTTPQueryParamMatch{{Name: "v", Value: "2"}}}}, backend("echo-v2", 80, 1)),
				rule(pathMatch(gwv1.PathMatchPathPrefix, "/v2/"), backend("echo-v1", 80, 1)))},
			want: []string{echoV1 + "=1"},
			routes: []string{
				"HTTPRoute/mesh/young/1 EXACT /v2 -> " + echoV1 + "=1",
				"HTTPRoute/mesh/old/1 PREFIX /v2 -> " + echoV2 + "=1",
				"HTTPRoute/mesh/young/3 PREFIX /v2 -> " + echoV1 + "=1",
				"HTTPRoute/mesh/young/2 PREFIX / POST -> " + echoV2 + "=1",
				"HTTPRoute/mesh/young/0 PREFIX / version=two -> " + echoV2 + "=1",
				"HTTPRoute/mesh/young/2 PREFIX / ?v=2 -> " + echoV2 + "=1",
				"HTTPRoute/mesh/old/0 PREFIX / -> " + echoV1 + "=1",
			}},
		{name: "header modifiers (rule and backend) and timeouts are carried", objs: []runtime.Object{gammaRoute("mesh", "r", 0, echoParent, gwv1.HTTPRouteRule{
			Matches: pathMatch(gwv1.PathMatchPathPrefix, "/set"),
			Filters: []gwv1.HTTPRouteFilter{
				{Type: gwv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gwv1.HTTPHeaderFilter{Set: []gwv1.HTTPHeader{{Name: "X-Set", Value: "1"}}, Add: []gwv1.HTTPHeader{{Name: "X-Add", Value: "2"}}, Remove: []string{"X-Gone"}}},
				{Type: gwv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: &gwv1.HTTPHeaderFilter{Set: []gwv1.HTTPHeader{{Name: "X-Resp", Value: "3"}}}}},
			BackendRefs: []gwv1.HTTPBackendRef{func() gwv1.HTTPBackendRef {
				b := backend("echo-v1", 80, 1)
				b.Filters = []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gwv1.HTTPHeaderFilter{Set: []gwv1.HTTPHeader{{Name: "X-Backend", Value: "v1"}}}}}
				return b
			}()},
			Timeouts: &gwv1.HTTPRouteTimeouts{Request: ptr(gwv1.Duration("10s")), BackendRequest: ptr(gwv1.Duration("2s"))},
		})}, want: []string{}, routes: []string{"HTTPRoute/mesh/r/0 PREFIX /set req(set map[X-Set:1] add 1 remove [X-Gone]) resp(set map[X-Resp:3]) timeout 2s -> " + echoV1 + "=1+req(set map[X-Backend:v1])", nomatch}},
		{name: "a filter the mesh cannot honour: the rule's requests answer 500", objs: []runtime.Object{gammaRoute("mesh", "r", 0, echoParent,
			gwv1.HTTPRouteRule{Matches: pathMatch(gwv1.PathMatchPathPrefix, "/old"), Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterCORS, CORS: &gwv1.HTTPCORSFilter{}}}},
			rule(nil, backend("echo-v1", 80, 1)))},
			want: []string{echoV1 + "=1"}, warnings: []string{`spec.rules[0].filters[0].type "CORS" is not supported in the mesh`},
			routes: []string{"HTTPRoute/mesh/r/0 PREFIX /old -> 500=1", "HTTPRoute/mesh/r/1 PREFIX / -> " + echoV1 + "=1"}},
		{name: "an invalid match drops its rule", objs: []runtime.Object{gammaRoute("mesh", "r", 0, echoParent,
			rule(pathMatch(gwv1.PathMatchRegularExpression, "/("), backend("echo-v2", 80, 1)), rule(nil, backend("echo-v1", 80, 1)))},
			want: []string{echoV1 + "=1"}, warnings: []string{`spec.rules[0].matches[0].path.value "/(" is not a valid RE2`},
			routes: []string{"HTTPRoute/mesh/r/1 PREFIX / -> " + echoV1 + "=1"}},
		{name: "a backend port the service lacks is skipped", objs: []runtime.Object{gammaRoute("mesh", "r", 0, echoParent, rule(nil, backend("echo-v1", 80, 50), backend("echo-v2", 81, 50)))},
			want: []string{echoV1 + "=50"}, warnings: []string{"backendRefs[1].port: service mesh/echo-v2 has no TCP port 81"}},
		{name: "cross-namespace backend without a grant", objs: []runtime.Object{gammaRoute("mesh", "r", 0, echoParent, rule(nil, backend("echo-v1", 80, 1), func() gwv1.HTTPBackendRef {
			b := backend("echo-v3", 80, 1)
			ns := gwv1.Namespace("other")
			b.Namespace = &ns
			return b
		}()))}, want: []string{echoV1 + "=1"}, warnings: []string{"no ReferenceGrant there allows HTTPRoute from namespace mesh"}},
		{name: "cross-namespace backend with a grant", objs: []runtime.Object{grant, gammaRoute("mesh", "r", 0, echoParent, rule(nil, backend("echo-v1", 80, 1), func() gwv1.HTTPBackendRef {
			b := backend("echo-v3", 80, 1)
			ns := gwv1.Namespace("other")
			b.Namespace = &ns
			return b
		}()))}, want: []string{echoV1 + "=1", "echo-v3.other.svc.cluster.local:80=1"}},
		{name: "parentRef port: only that port", objs: []runtime.Object{gammaRoute("mesh", "r", 0, []gwv1.ParentReference{serviceParent("echo", 8080)}, rule(nil, backend("echo-v1", 80, 1)))},
			want: []string{}},
		{name: "the oldest route wins", objs: []runtime.Object{
			gammaRoute("mesh", "a-young", 5, echoParent, rule(nil, backend("echo-v2", 80, 1))),
			gammaRoute("mesh", "z-old", 0, echoParent, rule(nil, backend("echo-v1", 80, 1)))},
			want:   []string{echoV1 + "=1"},
			routes: []string{"HTTPRoute/mesh/z-old/0 PREFIX / -> " + echoV1 + "=1", "HTTPRoute/mesh/a-young/0 PREFIX / -> " + echoV2 + "=1"}},
		{name: "a consumer route (another namespace) is not applied", objs: []runtime.Object{func() *gwv1.HTTPRoute {
			p := serviceParent("echo", 0)
			ns := gwv1.Namespace("mesh")
			p.Namespace = &ns
			return gammaRoute("other", "r", 0, []gwv1.ParentReference{p}, rule(nil, backend("echo-v1", 80, 1)))
		}()}, want: []string{}},
		// Precedence: the route over an SMI TrafficSplit on the same apex.
		{name: "route over TrafficSplit", objs: []runtime.Object{
			gammaRoute("mesh", "r", 0, echoParent, rule(nil, backend("echo-v1", 80, 1))),
			&splitv1alpha2.TrafficSplit{ObjectMeta: metav1.ObjectMeta{Namespace: "mesh", Name: "ts"}, Spec: splitv1alpha2.TrafficSplitSpec{Service: "echo", Backends: []splitv1alpha2.TrafficSplitBackend{{Service: "echo-v2", Weight: 1}}}},
		}, want: []string{echoV1 + "=1"}, warnings: []string{"trafficsplit mesh/ts ignored: a mesh route splits mesh/echo"}},
		{name: "GRPCRoute", objs: []runtime.Object{&gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "mesh", Name: "g", CreationTimestamp: t0},
			Spec: gwv1.GRPCRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: echoParent}, Rules: []gwv1.GRPCRouteRule{{BackendRefs: []gwv1.GRPCBackendRef{
				{BackendRef: backend("echo-v1", 80, 3).BackendRef}, {BackendRef: backend("echo-v2", 80, 1).BackendRef}}}}}}},
			want: []string{echoV1 + "=3", echoV2 + "=1"}},
		{name: "GRPCRoute matches, and it wins over an HTTPRoute on the port", objs: []runtime.Object{
			gammaRoute("mesh", "h", 0, echoParent, rule(nil, backend("echo-v1", 80, 1))),
			&gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "mesh", Name: "g", CreationTimestamp: t0},
				Spec: gwv1.GRPCRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: echoParent}, Rules: []gwv1.GRPCRouteRule{
					{Matches: []gwv1.GRPCRouteMatch{{Method: &gwv1.GRPCMethodMatch{Service: ptr("echo.Echo"), Method: ptr("Ping")}, Headers: []gwv1.GRPCHeaderMatch{{Name: "x-v", Value: "2"}}}},
						BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: backend("echo-v2", 80, 1).BackendRef}}},
					{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: backend("echo-v1", 80, 1).BackendRef}}}}}}},
			want: []string{echoV1 + "=1"}, warnings: []string{"httproute mesh/h: ignored: grpcroute mesh/g routes service mesh/echo"},
			routes: []string{"GRPCRoute/mesh/g/0 EXACT /echo.Echo/Ping x-v=2 -> " + echoV2 + "=1", "GRPCRoute/mesh/g/1 -> " + echoV1 + "=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := echo(t, tc.objs...)
			asked := tc.asked
			if asked == "" {
				asked = echoApex
			}
			p := compile.Profile(st, asked, opts)
			if got := dsts(p); !slices.Equal(got, tc.want) {
				t.Errorf("DstOverrides = %v, want %v (warnings %v)", got, tc.want, p.Warnings)
			}
			checkWarnings(t, p.Warnings, tc.warnings)
			if got := routes(p); tc.routes != nil && !slices.Equal(got, tc.routes) {
				t.Errorf("HTTPRoutes:\n got %q\nwant %q", got, tc.routes)
			}
			if tc.deps != nil && !slices.Equal(p.Deps, tc.deps) {
				t.Errorf("Deps = %v, want %v", p.Deps, tc.deps)
			}
		})
	}
}

// Precedence on one Service: a Rollout's own split over a mesh route over
// an SMI TrafficSplit over the ServiceProfile's dstOverrides.
func TestProfileSplitPrecedence(t *testing.T) {
	route := gammaRoute("shop", "r", 0, []gwv1.ParentReference{serviceParent("web-stable", 0)}, rule(nil, backend("web-canary", 80, 1)))
	st := shop(t, route, meridianRollout(weights("aaa", 90, "bbb", 10)))
	if err := st.UpsertTrafficSplit(store.TrafficSplit{Key: store.Key{Namespace: "shop", Name: "ts"}, Service: "web-stable", Backends: []store.Backend{{Service: "web-canary", Weight: 1}}}); err != nil {
		t.Fatal(err)
	}
	p := compile.Profile(st, webStable, opts)
	if got := dsts(p); !slices.Equal(got, []string{subsetA + "=90", subsetB + "=10"}) {
		t.Errorf("rollout + route + split: %v", got)
	}
	checkWarnings(t, p.Warnings, []string{"trafficsplit shop/ts ignored: a rollout splits shop/web-stable"})
	if err := st.Delete(meridianRollout(nil)); err != nil {
		t.Fatal(err)
	}
	if got := dsts(compile.Profile(st, webStable, opts)); !slices.Equal(got, []string{"web-canary.shop.svc.cluster.local:80=1"}) {
		t.Errorf("route + split: %v", got)
	}
}

func conds(ps []gwv1.RouteParentStatus) []string {
	var out []string
	for _, p := range ps {
		var cs []string
		for _, c := range p.Conditions {
			if c.ObservedGeneration != 3 {
				cs = append(cs, fmt.Sprintf("%s: observedGeneration %d", c.Type, c.ObservedGeneration))
			}
			cs = append(cs, fmt.Sprintf("%s=%s/%s", c.Type, c.Status, c.Reason))
		}
		out = append(out, string(p.ParentRef.Name)+"["+string(p.ControllerName)+"] "+strings.Join(cs, " "))
	}
	return out
}

// The parent statuses of a mesh route's Service parents, as GAMMA says:
// Accepted and ResolvedRefs with observedGeneration, a bad backend in
// ResolvedRefs while the route stays accepted.
func TestMeshRouteParents(t *testing.T) {
	st := echo(t)
	echoParent := []gwv1.ParentReference{serviceParent("echo", 0)}
	redirect := gwv1.HTTPRouteRule{Matches: pathMatch(gwv1.PathMatchPathPrefix, "/old"),
		Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterCORS, CORS: &gwv1.HTTPCORSFilter{}}}}
	const ctl = "[meridian.io/mesh-controller] "
	for _, tc := range []struct {
		name  string
		route *gwv1.HTTPRoute
		want  []string
		msg   string // in some condition's message
	}{
		{"accepted", gammaRoute("mesh", "r", 0, echoParent, rule(nil, backend("echo-v1", 80, 1))),
			[]string{"echo" + ctl + "Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs"}, "routes the mesh traffic of service mesh/echo"},
		{"bad backend", gammaRoute("mesh", "r", 0, echoParent, rule(nil, backend("echo-v1", 80, 1), backend("nope", 80, 1))),
			[]string{"echo" + ctl + "Accepted=True/Accepted ResolvedRefs=False/BackendNotFound"}, "spec.rules[0].backendRefs[1]: service mesh/nope does not exist (the other backends keep serving)"},
		{"bad kind", gammaRoute("mesh", "r", 0, echoParent, rule(nil, func() gwv1.HTTPBackendRef {
			b := backend("x", 80, 1)
			k := gwv1.Kind("Pod")
			b.Kind = &k
			return b
		}())), []string{"echo" + ctl + "Accepted=True/Accepted ResolvedRefs=False/InvalidKind"}, `group "" kind "Pod": only core Services are supported`},
		{"matches are carried", gammaRoute("mesh", "r", 0, echoParent, rule(pathMatch(gwv1.PathMatchExact, "/v2"), backend("echo-v2", 80, 1)), rule(nil, backend("echo-v1", 80, 1))),
			[]string{"echo" + ctl + "Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs"}, "routes the mesh traffic of service mesh/echo"},
		{"partially carried", gammaRoute("mesh", "r", 0, echoParent, redirect, rule(nil, backend("echo-v1", 80, 1))),
			[]string{"echo" + ctl + "Accepted=True/Accepted PartiallyInvalid=True/UnsupportedValue ResolvedRefs=True/ResolvedRefs"}, `spec.rules[0].filters[0].type "CORS" is not supported in the mesh (allowed: RequestHeaderModifier, ResponseHeaderModifier, and on a rule RequestRedirect and URLRewrite): the rule's requests are answered 500`},
		{"an invalid match", gammaRoute("mesh", "r", 0, echoParent, rule(pathMatch(gwv1.PathMatchRegularExpression, "/("), backend("echo-v2", 80, 1)), rule(nil, backend("echo-v1", 80, 1))),
			[]string{"echo" + ctl + "Accepted=True/Accepted PartiallyInvalid=True/UnsupportedValue ResolvedRefs=True/ResolvedRefs"}, `spec.rules[0].matches[0].path.value "/(" is not a valid RE2 regular expression`},
		{"nothing carried", gammaRoute("mesh", "r", 0, echoParent, redirect),
			[]string{"echo" + ctl + "Accepted=False/UnsupportedValue ResolvedRefs=True/ResolvedRefs"}, "no rule the mesh carries"},
		{"retry is not honoured", gammaRoute("mesh", "r", 0, echoParent, gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backend("echo-v1", 80, 1)}, Retry: &gwv1.HTTPRouteRetry{Attempts: ptr(2)}}),
			[]string{"echo" + ctl + "Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs"}, "spec.rules[0].retry is not honoured in the mesh"},
		{"missing parent, and a Gateway parent left to the gateway", gammaRoute("mesh", "r", 0, []gwv1.ParentReference{serviceParent("gone", 0), {Name: "gw"}, serviceParent("echo", 81)}, rule(nil, backend("echo-v1", 80, 1))),
			[]string{"gone" + ctl + "Accepted=False/NoMatchingParent ResolvedRefs=True/ResolvedRefs", "echo" + ctl + "Accepted=False/NoMatchingParent ResolvedRefs=True/ResolvedRefs"}, "parent service mesh/echo has no port 81"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := compile.MeshRouteParents(st, tc.route, opts)
			if got := conds(ps); !slices.Equal(got, tc.want) {
				t.Errorf("statuses:\n got %q\nwant %q", got, tc.want)
			}
			found := false
			for _, p := range ps {
				for _, c := range p.Conditions {
					found = found || strings.Contains(c.Message, tc.msg)
				}
			}
			if !found {
				t.Errorf("no condition message contains %q: %+v", tc.msg, ps)
			}
		})
	}
}

// GAMMA (GEP-1294): one route type per Service port, GRPCRoute first: an
// HTTPRoute beside a GRPCRoute on the same Service is Accepted False,
// Conflicted.
func TestMeshRouteParentsConflicted(t *testing.T) {
	echoParent := []gwv1.ParentReference{serviceParent("echo", 0)}
	g := &gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "mesh", Name: "g", Generation: 3, CreationTimestamp: t0},
		Spec: gwv1.GRPCRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{serviceParent("echo", 80)}}, Rules: []gwv1.GRPCRouteRule{
			{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: backend("echo-v1", 80, 1).BackendRef}}}}}}
	h := gammaRoute("mesh", "h", 0, echoParent, rule(nil, backend("echo-v1", 80, 1)))
	st := echo(t, g, h)
	const ctl = "[meridian.io/mesh-controller] "
	if got, want := conds(compile.MeshRouteParents(st, h, opts)), []string{"echo" + ctl + "Accepted=False/Conflicted ResolvedRefs=True/ResolvedRefs"}; !slices.Equal(got, want) {
		t.Errorf("HTTPRoute: %q, want %q", got, want)
	}
	if got, want := conds(compile.MeshRouteParents(st, g, opts)), []string{"echo" + ctl + "Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs"}; !slices.Equal(got, want) {
		t.Errorf("GRPCRoute: %q, want %q", got, want)
	}
}
