package meshroute_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/meshroute"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/controlplane/store/kube"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

func svc(name string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "mesh", Name: name}, Spec: corev1.ServiceSpec{
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
}

func backend(name string, weight int32) gwv1.HTTPBackendRef {
	p := gwv1.PortNumber(80)
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: &p}, Weight: &weight}}
}

// describe is a route's Service-parent statuses: "parent ctl cond=status/reason@gen ...".
func describe(r *gwv1.HTTPRoute) string {
	var out []string
	for _, p := range r.Status.Parents {
		s := string(p.ParentRef.Name) + " " + string(p.ControllerName)
		for _, c := range p.Conditions {
			s += fmt.Sprintf(" %s=%s/%s@%d", c.Type, c.Status, c.Reason, c.ObservedGeneration)
		}
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}

// The writer against a real API server, fed by the Kubernetes store: a
// GAMMA route gets Accepted and ResolvedRefs with observedGeneration, an
// edit moves observedGeneration, a bad backend shows in ResolvedRefs, and
// another controller's entry is kept.
func TestWriter(t *testing.T) {
	cfg := apiserver.Start(t, apiserver.GatewayAPICRDs())
	scheme, err := kube.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mesh"}}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"echo", "echo-v1", "echo-v2"} {
		if err := c.Create(ctx, svc(n)); err != nil {
			t.Fatal(err)
		}
	}
	st := store.New()
	synced := make(chan struct{})
	done := make(chan error, 2)
	go func() { done <- kube.Run(ctx, cfg, st, kube.WithReady(func() { close(synced) })) }()
	w := meshroute.New(meshroute.Options{Store: st, Client: gwclient.NewForConfigOrDie(cfg), Synced: synced, Retry: 100 * time.Millisecond})
	go func() { done <- w.Start(ctx) }()
	defer func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("stopped with %v", err)
			}
		}
	}()

	core, kind := gwv1.Group(""), gwv1.Kind("Service")
	route := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "mesh", Name: "split"}, Spec: gwv1.HTTPRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Group: &core, Kind: &kind, Name: "echo"}}},
		Rules:           []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{backend("echo-v1", 90), backend("echo-v2", 10)}}}}}
	if err := c.Create(ctx, route); err != nil {
		t.Fatal(err)
	}
	const ctl = string(compile.MeshControllerName)
	eventually := func(what, want string) *gwv1.HTTPRoute {
		t.Helper()
		var got gwv1.HTTPRoute
		deadline := time.Now().Add(20 * time.Second)
		for {
			if err := c.Get(ctx, client.ObjectKeyFromObject(route), &got); err != nil {
				t.Fatal(err)
			}
			if describe(&got) == want {
				return &got
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: status %q, want %q", what, describe(&got), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	cur := eventually("created", "echo "+ctl+" Accepted=True/Accepted@1 ResolvedRefs=True/ResolvedRefs@1")

	// Another controller's entry (a gateway's) is kept as it is.
	other := gwv1.RouteParentStatus{ParentRef: gwv1.ParentReference{Name: "gw"}, ControllerName: "example.com/gateway",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", ObservedGeneration: 1, LastTransitionTime: metav1.Now()}}}
	cur.Status.Parents = append(cur.Status.Parents, other)
	if err := c.Status().Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	// A bad backend: reflected in ResolvedRefs, at the new generation.
	cur.Spec.Rules[0].BackendRefs = append(cur.Spec.Rules[0].BackendRefs, backend("missing", 1))
	if err := c.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	eventually("bad backend", "gw example.com/gateway Accepted=True/Accepted@1; echo "+ctl+" Accepted=True/Accepted@2 ResolvedRefs=False/BackendNotFound@2")
	// The backend appears: the route resolves without being edited.
	if err := c.Create(ctx, svc("missing")); err != nil {
		t.Fatal(err)
	}
	eventually("backend appeared", "gw example.com/gateway Accepted=True/Accepted@1; echo "+ctl+" Accepted=True/Accepted@2 ResolvedRefs=True/ResolvedRefs@2")
}
