package compile_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

var opts = compile.Options{ClusterDomain: "cluster.local", TrustDomain: "cluster.local"}

func hashedPod(name, hash string) *corev1.Pod {
	p := pod("shop", name, "web", true, nil)
	p.Labels = map[string]string{compile.PodTemplateHashLabel: hash, "app": "web"}
	return p
}

// meridianRollout routes web-stable/web-canary with Meridian's own split.
func meridianRollout(w *v1alpha1.TrafficWeights) *v1alpha1.Rollout {
	return &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: v1alpha1.RolloutSpec{
		Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{StableService: "web-stable", CanaryService: "web-canary",
			TrafficRouting: &v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{}}}}},
		Status: v1alpha1.RolloutStatus{Canary: v1alpha1.CanaryStatus{Weights: w}}}
}

func weights(stableHash string, stable int32, canaryHash string, canary int32) *v1alpha1.TrafficWeights {
	return &v1alpha1.TrafficWeights{
		Stable: v1alpha1.WeightDestination{ServiceName: "web-stable", PodTemplateHash: stableHash, Weight: stable},
		Canary: v1alpha1.WeightDestination{ServiceName: "web-canary", PodTemplateHash: canaryHash, Weight: canary}}
}

// shop is a Rollout's two Services with Argo's selectors injected: the
// stable Service's slice holds the pods of hash "aaa", the canary's those of
// "bbb".
func shop(t *testing.T, extra ...runtime.Object) *store.Store {
	t.Helper()
	st := store.New(store.WithClusterDomain("cluster.local"))
	objs := []runtime.Object{
		svc("shop", "web-stable", "10.96.3.1", port("http", 80, intstr.FromInt32(8080))),
		svc("shop", "web-canary", "10.96.3.2", port("http", 80, intstr.FromInt32(8080))),
		hashedPod("s1", "aaa"), hashedPod("s2", "aaa"), hashedPod("c1", "bbb"),
		slice("shop", "web-stable", "web-stable-1", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080}, ep{ip: "10.3.0.1", pod: "s1"}, ep{ip: "10.3.0.2", pod: "s2"}),
		slice("shop", "web-canary", "web-canary-1", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080}, ep{ip: "10.3.0.3", pod: "c1"}),
	}
	for _, o := range append(objs, extra...) {
		if err := st.Upsert(o); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

const (
	webStable = "web-stable.shop.svc.cluster.local:80"
	subsetA   = "aaa.web-stable.shop.svc.cluster.local:80"
	subsetB   = "bbb.web-stable.shop.svc.cluster.local:80"
)

func addrs(es compile.EndpointSet) []string {
	out := []string{}
	for _, e := range es.Endpoints {
		out = append(out, e.Addr.String())
	}
	return out
}

// Meridian's own split: the stable Service's profile splits its traffic
// between the pods of the stable and the canary hashes by the Rollout's
// status.canary.weights.
func TestProfileRolloutSplit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		w        *v1alpha1.TrafficWeights
		want     []string
		warnings []string
	}{
		{name: "no weights yet: the service itself", w: nil, want: []string{}},
		{name: "steady: all to the stable hash", w: weights("aaa", 100, "aaa", 0), want: []string{subsetA + "=100"}},
		{name: "90/10", w: weights("aaa", 90, "bbb", 10), want: []string{subsetA + "=90", subsetB + "=10"}},
		{name: "setWeight 100", w: weights("aaa", 0, "bbb", 100), want: []string{subsetB + "=100"}},
		// The stable Service's selector still names aaa: bbb's pods come
		// from the canary Service's slice, so the switch does not wait
		// for the selector.
		{name: "promoted", w: weights("bbb", 100, "bbb", 0), want: []string{subsetB + "=100"}},
		{name: "aborted", w: weights("aaa", 100, "bbb", 0), want: []string{subsetA + "=100"}},
		{name: "canary without ready pods: its weight stays on the stable", w: weights("aaa", 80, "ccc", 20), want: []string{subsetA + "=100"},
			warnings: []string{"canary pods (rollouts-pod-template-hash ccc) of service shop/web-stable have no ready endpoint: their weight 20 goes to the stable"}},
		{name: "neither side ready: the service itself", w: weights("ddd", 80, "ccc", 20), want: []string{},
			warnings: []string{"stable pods", "canary pods", "neither side"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := shop(t, meridianRollout(tc.w))
			p := compile.Profile(st, webStable, opts)
			if got := dsts(p); !slices.Equal(got, tc.want) {
				t.Errorf("DstOverrides = %v, want %v", got, tc.want)
			}
			checkWarnings(t, p.Warnings, tc.warnings)
			if !slices.Contains(p.Deps, store.Key{Namespace: "shop", Name: "web-canary"}) {
				t.Errorf("Deps = %v, want the canary Service", p.Deps)
			}
		})
	}
}

func checkWarnings(t *testing.T, got, want []string) {
	t.Helper()
	i := 0
	for _, w := range got {
		if i < len(want) && strings.Contains(w, want[i]) {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("warnings %q lack %q (in order)", got, want[i:])
	}
}

// A subset authority's endpoints are the pods of its hash from both
// Services' slices; it exists only while a Rollout routes the Service.
func TestSubsetEndpoints(t *testing.T) {
	st := shop(t, meridianRollout(weights("aaa", 90, "bbb", 10)))
	for _, tc := range []struct {
		authority string
		want      []string
	}{
		{subsetA, []string{"10.3.0.1:8080", "10.3.0.2:8080"}},
		{subsetB, []string{"10.3.0.3:8080"}},
		{"zzz.web-stable.shop.svc.cluster.local:80", []string{}},
		{"aaa.web-stable.shop.svc.cluster.local:81", []string{}},
	} {
		es := compile.Endpoints(st, tc.authority, opts)
		if !es.Exists || !slices.Equal(addrs(es), tc.want) {
			t.Errorf("Endpoints(%s) = %v (exists %v), want %v; warnings %v", tc.authority, addrs(es), es.Exists, tc.want, es.Warnings)
		}
		if strings.HasSuffix(tc.authority, ":81") {
			continue // no such port: nothing more to depend on
		}
		if !slices.Contains(es.Deps, store.Key{Namespace: "shop", Name: "web-canary"}) || es.Deps[0] != (store.Key{Namespace: "shop", Name: "web-stable"}) {
			t.Errorf("Endpoints(%s).Deps = %v", tc.authority, es.Deps)
		}
	}
	// A subset is never split again.
	if p := compile.Profile(st, subsetA, opts); len(p.DstOverrides) != 0 || !p.Exists {
		t.Errorf("Profile(subset) = %v, exists %v", dsts(p), p.Exists)
	}
	// A pod that loses readiness leaves its subset.
	notReady := false
	if err := st.Upsert(slice("shop", "web-canary", "web-canary-1", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 8080}, ep{ip: "10.3.0.3", pod: "c1", ready: &notReady})); err != nil {
		t.Fatal(err)
	}
	if es := compile.Endpoints(st, subsetB, opts); len(es.Endpoints) != 0 {
		t.Errorf("Endpoints(bbb) = %v with c1 not ready", addrs(es))
	}
	if got := dsts(compile.Profile(st, webStable, opts)); !slices.Equal(got, []string{subsetA + "=100"}) {
		t.Errorf("profile with the canary not ready = %v", got)
	}

	// Without a Rollout routing the Service, <x>.<svc>.<ns>.svc is a
	// headless pod name, not served.
	for _, ro := range []*v1alpha1.Rollout{nil, func() *v1alpha1.Rollout {
		ro := meridianRollout(weights("aaa", 90, "bbb", 10))
		ro.Spec.Strategy.Canary.TrafficRouting = &v1alpha1.RolloutTrafficRouting{SMI: &v1alpha1.SMITrafficRouting{}}
		return ro
	}()} {
		var extra []runtime.Object
		if ro != nil {
			extra = append(extra, ro)
		}
		st := shop(t, extra...)
		es := compile.Endpoints(st, subsetA, opts)
		if es.Exists {
			t.Errorf("Endpoints(%s) exists without Meridian's routing (rollout %v)", subsetA, ro != nil)
		}
		if _, err := compile.Resolve(st, "s1.web-stable.shop.svc.cluster.local:80", opts); !errors.Is(err, compile.ErrNotFound) {
			t.Errorf("Resolve(headless pod name) = %v, want ErrNotFound", err)
		}
		if p := compile.Profile(st, webStable, opts); len(p.DstOverrides) != 0 {
			t.Errorf("Profile(stable) = %v without Meridian's routing", dsts(p))
		}
	}
}

// A setHeaderRoute step with Meridian's own split: the stable Service's
// profile routes the matching requests to the canary subset (exact as is,
// prefix and regex as anchored expressions), ahead of the weights, and
// ToProto carries it; a canary without ready pods gets no header route,
// and GAMMA routes beside the Rollout are ignored (reported).
func TestProfileRolloutHeaderRoute(t *testing.T) {
	ro := func(canary string, hr ...v1alpha1.HeaderRoutingMatch) *v1alpha1.Rollout {
		r := meridianRollout(weights("aaa", 100, canary, 0))
		r.Spec.Strategy.Canary.Steps = []v1alpha1.CanaryStep{{SetHeaderRoute: &v1alpha1.SetHeaderRoute{Name: "beta", Match: hr}}, {SetWeight: ptr(int32(10))}}
		r.Status.CurrentStepIndex = ptr(int32(0))
		return r
	}
	m := func(name string, v v1alpha1.StringMatch) v1alpha1.HeaderRoutingMatch {
		return v1alpha1.HeaderRoutingMatch{HeaderName: name, HeaderValue: &v}
	}
	const hdr = "Rollout/shop/web/beta"
	for _, tc := range []struct {
		name     string
		ro       *v1alpha1.Rollout
		extra    []runtime.Object
		want     []string
		warnings []string
	}{
		{"exact, prefix and regex", ro("bbb", m("X-Beta", v1alpha1.StringMatch{Exact: "1"}), m("User", v1alpha1.StringMatch{Prefix: "qa."}), m("Ver", v1alpha1.StringMatch{Regex: "v[0-9]+"})), nil,
			[]string{hdr + " X-Beta=1 User~qa\\..* Ver~v[0-9]+ -> " + subsetB + "=1"}, nil},
		{"a canary without ready pods: no header route", ro("ccc", m("X-Beta", v1alpha1.StringMatch{Exact: "1"})), nil,
			[]string{}, []string{`the canary pods (rollouts-pod-template-hash ccc) of service shop/web-stable have no ready endpoint: header route "beta" left out`}},
		{"an invalid match: no header route", ro("bbb", m("X-Beta", v1alpha1.StringMatch{Exact: "1", Prefix: "2"})), nil,
			[]string{}, []string{`setHeaderRoute "beta": match[0].headerValue: exactly one of exact, prefix and regex is required`}},
		{"a GAMMA route beside the Rollout is ignored", ro("bbb", m("X-Beta", v1alpha1.StringMatch{Exact: "1"})),
			[]runtime.Object{gammaRoute("shop", "r", 0, []gwv1.ParentReference{serviceParent("web-stable", 0)}, rule(pathMatch(gwv1.PathMatchExact, "/x"), backend("web-canary", 80, 1)))},
			[]string{hdr + " X-Beta=1 -> " + subsetB + "=1"}, []string{"httproute shop/r ignored: a rollout routes shop/web-stable"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := shop(t, append(tc.extra, tc.ro)...)
			p := compile.Profile(st, webStable, opts)
			if got := routes(p); !slices.Equal(got, tc.want) {
				t.Errorf("HTTPRoutes:\n got %q\nwant %q", got, tc.want)
			}
			checkWarnings(t, p.Warnings, tc.warnings)
			if got := dsts(p); !slices.Equal(got, []string{subsetA + "=100"}) {
				t.Errorf("DstOverrides = %v", got)
			}
			if len(p.HTTPRoutes) > 0 {
				pb := p.ToProto()
				if len(pb.GetHttpRoutes()) != 1 || pb.GetHttpRoutes()[0].GetBackends()[0].GetAuthority() != subsetB || pb.GetHttpRoutes()[0].GetMetricsLabels()["route"] != hdr {
					t.Errorf("ToProto: %v", pb.GetHttpRoutes())
				}
			}
		})
	}
}
