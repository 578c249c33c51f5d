package traffic_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/steps"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/traffic"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

func ownRollout(w steps.Weights) *v1alpha1.Rollout {
	return &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "own", Name: "web"}, Spec: v1alpha1.RolloutSpec{
		Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{StableService: "web-stable", CanaryService: "web-canary",
			TrafficRouting: &v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{}}}}},
		Status: v1alpha1.RolloutStatus{Canary: v1alpha1.CanaryStatus{Weights: &v1alpha1.TrafficWeights{
			Stable: v1alpha1.WeightDestination{ServiceName: "web-stable", PodTemplateHash: w.StableHash, Weight: w.Stable},
			Canary: v1alpha1.WeightDestination{ServiceName: "web-canary", PodTemplateHash: w.CanaryHash, Weight: w.Canary}}}}}
}

// meridian: {}: nothing to write; Verify says whether the store compiles
// the Rollout's status into the stable Service's profile (both sides with
// ready pods, in w's proportions).
func TestOwnRouter(t *testing.T) {
	st := store.New()
	p, name, tcp := int32(8080), "http", corev1.ProtocolTCP
	slice := func(svc, pod, ip string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "own", Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &p, Protocol: &tcp}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "own", Name: pod}}}}
	}
	for _, o := range []runtime.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "own", Name: "web-stable"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "own", Name: "web-canary"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "own", Name: "s", Labels: map[string]string{v1alpha1.DefaultRolloutUniqueLabelKey: "aaa"}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "own", Name: "c", Labels: map[string]string{v1alpha1.DefaultRolloutUniqueLabelKey: "bbb"}}},
		slice("web-stable", "s", "10.0.0.1"), slice("web-canary", "c", "10.0.0.2"),
	} {
		if err := st.Upsert(o); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	ro := ownRollout(w(20))
	r, err := traffic.New(traffic.Options{Store: st}).For(ro)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetWeights(ctx, ro, w(20)); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Verify(ctx, ro, w(20)); ok || err != nil {
		t.Fatalf("Verify before the store has the Rollout = %v, %v", ok, err)
	}
	if err := st.Upsert(ro); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Verify(ctx, ro, w(20)); !ok || err != nil {
		t.Fatalf("Verify(20) = %v, %v", ok, err)
	}
	if ok, _ := r.Verify(ctx, ro, w(50)); ok {
		t.Fatal("Verify(50) with the store at 20")
	}
	// A canary hash without ready pods: the data plane keeps the stable.
	noPods := steps.Weights{Canary: 20, Stable: 80, CanaryHash: "ccc", StableHash: "aaa"}
	if err := st.Upsert(ownRollout(noPods)); err != nil {
		t.Fatal(err)
	}
	if ok, _ := r.Verify(ctx, ro, noPods); ok {
		t.Fatal("Verify with a canary without ready pods")
	}
	if err := r.SetHeaderRoute(ctx, ro, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(ctx, ro); err != nil {
		t.Fatal(err)
	}
}

// meridian: {} with a setHeaderRoute step: nothing is written; the stable
// Service's profile gets a route matching the headers whose only backend is
// the canary subset, derived from the Rollout's steps and status, and it
// goes with the step that removes it, at promotion and at abort.
func TestOwnRouterHeaderRoute(t *testing.T) {
	st := store.New()
	p, name, tcp := int32(8080), "http", corev1.ProtocolTCP
	slice := func(svc, pod, ip string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "own", Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &p, Protocol: &tcp}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "own", Name: pod}}}}
	}
	for _, o := range []runtime.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "own", Name: "web-stable"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "own", Name: "web-canary"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "own", Name: "s", Labels: map[string]string{v1alpha1.DefaultRolloutUniqueLabelKey: "aaa"}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "own", Name: "c", Labels: map[string]string{v1alpha1.DefaultRolloutUniqueLabelKey: "bbb"}}},
		slice("web-stable", "s", "10.0.0.1"), slice("web-canary", "c", "10.0.0.2"),
	} {
		if err := st.Upsert(o); err != nil {
			t.Fatal(err)
		}
	}
	hr := &v1alpha1.SetHeaderRoute{Name: "beta", Match: []v1alpha1.HeaderRoutingMatch{{HeaderName: "X-Beta", HeaderValue: &v1alpha1.StringMatch{Exact: "1"}}}}
	at := func(step int32, w steps.Weights) *v1alpha1.Rollout {
		ro := ownRollout(w)
		ro.Spec.Strategy.Canary.TrafficRouting.ManagedRoutes = []v1alpha1.MangedRoutes{{Name: "beta"}}
		ro.Spec.Strategy.Canary.Steps = []v1alpha1.CanaryStep{
			{SetHeaderRoute: hr}, {Pause: &v1alpha1.RolloutPause{}}, {SetWeight: ptr(int32(20))},
			{SetHeaderRoute: &v1alpha1.SetHeaderRoute{Name: "beta"}}, {SetWeight: ptr(int32(50))}}
		ro.Status.CurrentStepIndex = &step
		return ro
	}
	ctx := context.Background()
	routes := func() []string {
		t.Helper()
		prof := compile.Profile(st, "web-stable.own.svc.cluster.local:80", compile.Options{ClusterDomain: "cluster.local"})
		var out []string
		for _, r := range prof.HTTPRoutes {
			for _, b := range r.Backends {
				for _, h := range r.Match.GetHeaders() {
					out = append(out, fmt.Sprintf("%s %s=%s -> %s", r.Name, h.GetName(), h.GetValue(), b.Authority))
				}
			}
		}
		return out
	}
	const want = `Rollout/own/web/beta X-Beta=1 -> bbb.web-stable.own.svc.cluster.local:80`
	for _, tc := range []struct {
		name string
		ro   *v1alpha1.Rollout
		want []string
	}{
		{"before the step", at(0, steps.Weights{Stable: 100, StableHash: "aaa", CanaryHash: "aaa"}), nil},
		{"setHeaderRoute at weight 0", at(0, steps.Weights{Stable: 100, StableHash: "aaa", CanaryHash: "bbb"}), []string{want}},
		{"kept by setWeight", at(2, w(20)), []string{want}},
		{"removed by its step", at(3, w(20)), nil},
		{"aborted", func() *v1alpha1.Rollout { ro := at(2, w(0)); ro.Status.Abort = true; return ro }(), nil},
		{"promoted", at(5, steps.Weights{Stable: 100, StableHash: "bbb", CanaryHash: "bbb"}), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := st.Upsert(tc.ro); err != nil {
				t.Fatal(err)
			}
			if got := routes(); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("routes = %q, want %q", got, tc.want)
			}
		})
	}
	ro := at(2, w(20))
	r, err := traffic.New(traffic.Options{Store: st}).For(ro)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetHeaderRoute(ctx, ro, hr); err != nil {
		t.Fatalf("SetHeaderRoute = %v", err)
	}
	if err := r.SetHeaderRoute(ctx, at(3, w(20)), hr); err == nil || !strings.Contains(err.Error(), `the header route "beta" the steps ask for is not the one its status.currentStepIndex (3)`) {
		t.Fatalf("SetHeaderRoute of a route the status does not give = %v", err)
	}
	bad := &v1alpha1.SetHeaderRoute{Name: "beta", Match: []v1alpha1.HeaderRoutingMatch{{HeaderName: "X-Beta", HeaderValue: &v1alpha1.StringMatch{Regex: "("}}}}
	if err := r.SetHeaderRoute(ctx, ro, bad); err == nil || !strings.Contains(err.Error(), `match[0].headerValue.regex "(" is not a valid RE2`) {
		t.Fatalf("SetHeaderRoute with a bad regex = %v", err)
	}
}

func ptr[T any](v T) *T { return &v }
