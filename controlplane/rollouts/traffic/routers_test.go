package traffic_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	splitv1alpha1 "github.com/meridian-mesh/meridian/api/split/v1alpha1"
	splitv1alpha2 "github.com/meridian-mesh/meridian/api/split/v1alpha2"
	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/steps"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/traffic"
)

func w(canary int32) steps.Weights {
	return steps.Weights{Canary: canary, Stable: 100 - canary, CanaryHash: "bbb", StableHash: "aaa"}
}

func routerFor(t *testing.T, e *env, ro *v1alpha1.Rollout) traffic.Router {
	t.Helper()
	r, err := traffic.New(traffic.Options{Client: e.client, Store: e.store}).For(ro)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// smi: a TrafficSplit the Rollout owns, v1alpha2 (served by Meridian's
// CRD), apex the stable Service by default; idempotent; verified once the
// store compiles it; another owner's split is an error; Remove deletes it.
func TestSMIRouter(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()
	ns := e.namespace(t, "smi", "web-stable", "web-canary", "web")
	ro := e.rollout(t, ns, &v1alpha1.RolloutTrafficRouting{SMI: &v1alpha1.SMITrafficRouting{}})
	r := routerFor(t, e, ro)
	if err := r.SetWeights(ctx, ro, w(20)); err != nil {
		t.Fatal(err)
	}
	var ts splitv1alpha2.TrafficSplit
	if err := e.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "web"}, &ts); err != nil {
		t.Fatal(err)
	}
	if ts.Spec.Service != "web-stable" || len(ts.Spec.Backends) != 2 || ts.Spec.Backends[0] != (splitv1alpha2.TrafficSplitBackend{Service: "web-canary", Weight: 20}) ||
		ts.Spec.Backends[1] != (splitv1alpha2.TrafficSplitBackend{Service: "web-stable", Weight: 80}) {
		t.Fatalf("TrafficSplit spec = %+v", ts.Spec)
	}
	if len(ts.OwnerReferences) != 1 || ts.OwnerReferences[0].UID != ro.UID || !*ts.OwnerReferences[0].Controller {
		t.Fatalf("ownerReferences = %+v", ts.OwnerReferences)
	}
	rv := ts.ResourceVersion
	if err := r.SetWeights(ctx, ro, w(20)); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "web"}, &ts); err != nil || ts.ResourceVersion != rv {
		t.Fatalf("the same weights again wrote the split (resourceVersion %s → %s, %v)", rv, ts.ResourceVersion, err)
	}
	eventually(t, "Verify(20)", func() (bool, error) { return r.Verify(ctx, ro, w(20)) })
	if ok, err := r.Verify(ctx, ro, w(50)); ok || err != nil {
		t.Fatalf("Verify(50) = %v, %v with 20 set", ok, err)
	}
	if err := r.SetWeights(ctx, ro, w(50)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Verify(50)", func() (bool, error) { return r.Verify(ctx, ro, w(50)) })
	if err := r.SetHeaderRoute(ctx, ro, &v1alpha1.SetHeaderRoute{Name: "h", Match: []v1alpha1.HeaderRoutingMatch{{HeaderName: "x", HeaderValue: &v1alpha1.StringMatch{Exact: "1"}}}}); !errors.Is(err, traffic.ErrHeaderRouteUnsupported) {
		t.Fatalf("SetHeaderRoute = %v", err)
	}
	if err := r.SetHeaderRoute(ctx, ro, nil); err != nil {
		t.Fatal(err)
	}

	// Someone else's split under the name.
	other := &splitv1alpha2.TrafficSplit{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "theirs"}, Spec: splitv1alpha2.TrafficSplitSpec{Service: "web", Backends: []splitv1alpha2.TrafficSplitBackend{{Service: "web-stable", Weight: 1}}}}
	if err := e.client.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	ro2 := ro.DeepCopy()
	ro2.Spec.Strategy.Canary.TrafficRouting.SMI = &v1alpha1.SMITrafficRouting{TrafficSplitName: "theirs", RootService: "web"}
	if err := r.SetWeights(ctx, ro2, w(10)); err == nil || !strings.Contains(err.Error(), "TrafficSplit "+ns+"/theirs (spec.strategy.canary.trafficRouting.smi.trafficSplitName) exists and is not controlled by Rollout web") {
		t.Fatalf("SetWeights on another's split = %v", err)
	}
	if err := r.Remove(ctx, ro2); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "theirs"}, &ts); err != nil {
		t.Fatalf("Remove deleted a split it does not own: %v", err)
	}

	if err := r.Remove(ctx, ro); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "web"}, &ts); !apierrors.IsNotFound(err) {
		t.Fatalf("after Remove: %v", err)
	}
	if err := r.Remove(ctx, ro); err != nil {
		t.Fatalf("Remove again: %v", err)
	}
}

// meridian: {trafficSplit}: the canary and stable weights of the user's
// split (written as v1alpha1, as Argo writes them), other backends left
// alone; a missing backend is an error naming it; Remove returns it to
// all-stable.
func TestUserSplitRouter(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()
	ns := e.namespace(t, "usersplit", "web-stable", "web-canary", "web", "web-other")
	mine := &splitv1alpha1.TrafficSplit{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mine"}, Spec: splitv1alpha1.TrafficSplitSpec{Service: "web",
		Backends: []splitv1alpha1.TrafficSplitBackend{{Service: "web-stable", Weight: resource.MustParse("100")}, {Service: "web-canary", Weight: resource.MustParse("0")}, {Service: "web-other", Weight: resource.MustParse("5")}}}}
	if err := e.client.Create(ctx, mine); err != nil {
		t.Fatal(err)
	}
	ro := e.rollout(t, ns, &v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{TrafficSplit: "mine"}})
	r := routerFor(t, e, ro)
	if err := r.SetWeights(ctx, ro, w(30)); err != nil {
		t.Fatal(err)
	}
	weights := func() map[string]int64 {
		var got splitv1alpha1.TrafficSplit
		if err := e.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "mine"}, &got); err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for _, b := range got.Spec.Backends {
			out[b.Service] = b.Weight.Value()
		}
		return out
	}
	if got := weights(); got["web-canary"] != 30 || got["web-stable"] != 70 || got["web-other"] != 5 {
		t.Fatalf("weights = %v", got)
	}
	eventually(t, "Verify(30)", func() (bool, error) { return r.Verify(ctx, ro, w(30)) })

	bad := ro.DeepCopy()
	bad.Spec.Strategy.Canary.CanaryService = "absent"
	if err := r.SetWeights(ctx, bad, w(30)); err == nil || !strings.Contains(err.Error(), `TrafficSplit `+ns+`/mine: spec.backends has no service "absent" (the Rollout's spec.strategy.canary.canaryService)`) {
		t.Fatalf("missing backend: %v", err)
	}
	gone := ro.DeepCopy()
	gone.Spec.Strategy.Canary.TrafficRouting.Meridian.TrafficSplit = "nope"
	if err := r.SetWeights(ctx, gone, w(30)); err == nil || !strings.Contains(err.Error(), "spec.strategy.canary.trafficRouting.meridian.trafficSplit: TrafficSplit "+ns+"/nope") {
		t.Fatalf("missing split: %v", err)
	}
	if err := r.Remove(ctx, gone); err != nil {
		t.Fatalf("Remove of a missing split: %v", err)
	}
	if err := r.Remove(ctx, ro); err != nil {
		t.Fatal(err)
	}
	if got := weights(); got["web-canary"] != 0 || got["web-stable"] != 100 || got["web-other"] != 5 {
		t.Fatalf("after Remove: %v", got)
	}
}

func backendRef(name string, weight int32) gwv1.HTTPBackendRef {
	p := gwv1.PortNumber(80)
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: &p}, Weight: &weight}}
}

// meridian: {httpRoute}: the weights of the route's canary and stable
// backendRefs (a GAMMA route: the mesh's status writer accepts it), other
// rules left alone; header routes as rules of their own; verified once
// the route's parents report its generation; Remove returns it to
// all-stable.
func TestHTTPRouteRouter(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()
	ns := e.namespace(t, "route", "web-stable", "web-canary", "web")
	core, kind := gwv1.Group(""), gwv1.Kind("Service")
	prefix, api := gwv1.PathMatchPathPrefix, "/api"
	route := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}, Spec: gwv1.HTTPRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Group: &core, Kind: &kind, Name: "web"}}},
		Rules: []gwv1.HTTPRouteRule{
			{BackendRefs: []gwv1.HTTPBackendRef{backendRef("web-stable", 100), backendRef("web-canary", 0)}},
			{Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: &prefix, Value: &api}}}, BackendRefs: []gwv1.HTTPBackendRef{backendRef("web-stable", 1)}},
		}}}
	if err := e.client.Create(ctx, route); err != nil {
		t.Fatal(err)
	}
	ro := e.rollout(t, ns, &v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{HTTPRoute: "web"}})
	r := routerFor(t, e, ro)
	get := func() *gwv1.HTTPRoute {
		var got gwv1.HTTPRoute
		if err := e.client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "web"}, &got); err != nil {
			t.Fatal(err)
		}
		return &got
	}
	if err := r.SetWeights(ctx, ro, w(40)); err != nil {
		t.Fatal(err)
	}
	got := get()
	if b := got.Spec.Rules[0].BackendRefs; *b[0].Weight != 60 || *b[1].Weight != 40 {
		t.Fatalf("rule 0 weights = %d/%d", *b[0].Weight, *b[1].Weight)
	}
	if b := got.Spec.Rules[1].BackendRefs; len(b) != 1 || *b[0].Weight != 1 {
		t.Fatalf("rule 1 changed: %+v", b)
	}
	eventually(t, "Verify(40)", func() (bool, error) { return r.Verify(ctx, ro, w(40)) })
	if ok, _ := r.Verify(ctx, ro, w(41)); ok {
		t.Fatal("Verify(41) with 40 set")
	}

	hdr := &v1alpha1.SetHeaderRoute{Name: "beta", Match: []v1alpha1.HeaderRoutingMatch{
		{HeaderName: "x-beta", HeaderValue: &v1alpha1.StringMatch{Exact: "yes"}},
		{HeaderName: "x-user", HeaderValue: &v1alpha1.StringMatch{Prefix: "qa."}}}}
	if err := r.SetHeaderRoute(ctx, ro, hdr); err != nil {
		t.Fatal(err)
	}
	got = get()
	if len(got.Spec.Rules) != 3 {
		t.Fatalf("rules after SetHeaderRoute: %d", len(got.Spec.Rules))
	}
	hr := got.Spec.Rules[2]
	if hr.Name == nil || *hr.Name != "rollout-web-beta" || len(hr.Matches) != 1 || len(hr.Matches[0].Headers) != 2 ||
		hr.Matches[0].Headers[0].Value != "yes" || *hr.Matches[0].Headers[1].Type != gwv1.HeaderMatchRegularExpression || hr.Matches[0].Headers[1].Value != `^qa\..*` ||
		len(hr.BackendRefs) != 1 || hr.BackendRefs[0].Name != "web-canary" || *hr.BackendRefs[0].Port != 80 {
		t.Fatalf("header rule = %+v", hr)
	}
	gen := got.Generation // not resourceVersion: the status writer moves it
	if err := r.SetHeaderRoute(ctx, ro, hdr); err != nil {
		t.Fatal(err)
	}
	if err := r.SetWeights(ctx, ro, w(40)); err != nil {
		t.Fatal(err)
	}
	if got = get(); got.Generation != gen {
		t.Fatal("the same header route and weights again rewrote the route")
	}
	// The mesh carries the header rule (GAMMA rules with matches): the
	// route is accepted whole at its generation.
	eventually(t, "Accepted without PartiallyInvalid", func() (bool, error) {
		rt := get()
		for _, p := range rt.Status.Parents {
			accepted, partial := false, false
			for _, c := range p.Conditions {
				accepted = accepted || c.Type == "Accepted" && c.Status == metav1.ConditionTrue && c.ObservedGeneration == rt.Generation
				partial = partial || c.Type == "PartiallyInvalid"
			}
			if accepted && !partial {
				return true, nil
			}
		}
		return false, nil
	})
	if err := r.SetHeaderRoute(ctx, ro, nil); err != nil {
		t.Fatal(err)
	}
	if got = get(); len(got.Spec.Rules) != 2 {
		t.Fatalf("rules after removing the header route: %d", len(got.Spec.Rules))
	}

	bad := ro.DeepCopy()
	bad.Spec.Strategy.Canary.CanaryService = "absent"
	if err := r.SetWeights(ctx, bad, w(10)); err == nil || !strings.Contains(err.Error(), `spec.strategy.canary.trafficRouting.meridian.httpRoute: HTTPRoute `+ns+`/web: no rule has backendRefs to both the canaryService "absent" and the stableService "web-stable"`) {
		t.Fatalf("missing backend: %v", err)
	}
	if err := r.SetHeaderRoute(ctx, ro, hdr); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(ctx, ro); err != nil {
		t.Fatal(err)
	}
	got = get()
	if b := got.Spec.Rules[0].BackendRefs; len(got.Spec.Rules) != 2 || *b[0].Weight != 100 || *b[1].Weight != 0 {
		t.Fatalf("after Remove: %d rules, %+v", len(got.Spec.Rules), b)
	}
}

func TestFor(t *testing.T) {
	rs := traffic.New(traffic.Options{})
	ro := func(tr *v1alpha1.RolloutTrafficRouting) *v1alpha1.Rollout {
		return &v1alpha1.Rollout{Spec: v1alpha1.RolloutSpec{Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{StableService: "s", CanaryService: "c", TrafficRouting: tr}}}}
	}
	for _, tc := range []struct {
		tr      *v1alpha1.RolloutTrafficRouting
		wantErr string
	}{
		{&v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{}}, ""},
		{&v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{HTTPRoute: "r"}}, ""},
		{&v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{TrafficSplit: "t"}}, ""},
		{&v1alpha1.RolloutTrafficRouting{SMI: &v1alpha1.SMITrafficRouting{}}, ""},
		{&v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{HTTPRoute: "r", TrafficSplit: "t"}}, "httpRoute and trafficSplit are both set"},
		{&v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{}, SMI: &v1alpha1.SMITrafficRouting{}}, "meridian and smi are both set"},
		{&v1alpha1.RolloutTrafficRouting{Plugins: map[string]json.RawMessage{"argoproj-labs/gatewayAPI": json.RawMessage("{}")}}, "plugins: Meridian runs no traffic-router plugins"},
		{&v1alpha1.RolloutTrafficRouting{}, "no router set"},
		{nil, "trafficRouting is not set"},
	} {
		_, err := rs.For(ro(tc.tr))
		if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("For(%+v) = %v, want %q", tc.tr, err, tc.wantErr)
		}
	}
}
