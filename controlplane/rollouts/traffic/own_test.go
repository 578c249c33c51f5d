package traffic_test

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
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
	if err := r.SetHeaderRoute(ctx, ro, &v1alpha1.SetHeaderRoute{Name: "h", Match: []v1alpha1.HeaderRoutingMatch{{HeaderName: "x", HeaderValue: &v1alpha1.StringMatch{Exact: "1"}}}}); !errors.Is(err, traffic.ErrHeaderRouteUnsupported) {
		t.Fatalf("SetHeaderRoute = %v", err)
	}
	if err := r.SetHeaderRoute(ctx, ro, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(ctx, ro); err != nil {
		t.Fatal(err)
	}
}
