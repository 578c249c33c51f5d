package reconciler

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/meridian-mesh/meridian/controlplane/compile/gateway"
	"github.com/meridian-mesh/meridian/controlplane/gateway/provision"
	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// ListenerSets against a real API server (the CRDs' defaulting, the
// Kubernetes source): one in a namespace the Gateway does not allow is
// NotAllowed and adds no port; allowed, it is accepted with its listener's
// status, its port joins the Gateway's Service, the Gateway counts it in
// attachedListenerSets, and a route naming it gets a parent status for
// the ListenerSet; Programmed waits for the Gateway's (ParentNotProgrammed);
// deleted, its route parent status goes.
func TestListenerSetStatus(t *testing.T) {
	apiserver.Need(t)
	cfg := apiserver.Start(t, apiserver.GatewayAPICRDs())
	cs := kubernetes.NewForConfigOrDie(cfg)
	gc := gwclient.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"edge", "team"} {
		must(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))
	}
	must(cs.CoreV1().Services("team").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{}))
	must(gc.GatewayV1().GatewayClasses().Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "meridian"},
		Spec: gwv1.GatewayClassSpec{ControllerName: gateway.ControllerName}}, metav1.CreateOptions{}))
	same := gwv1.NamespacesFromSame
	must(gc.GatewayV1().Gateways("edge").Create(ctx, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "public", Namespace: "edge"},
		Spec: gwv1.GatewaySpec{GatewayClassName: "meridian", Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}},
			AllowedListeners: &gwv1.AllowedListeners{Namespaces: &gwv1.ListenerNamespaces{From: &same}}}}, metav1.CreateOptions{}))
	gwNS := gwv1.Namespace("edge")
	must(gc.GatewayV1().ListenerSets("team").Create(ctx, &gwv1.ListenerSet{ObjectMeta: metav1.ObjectMeta{Name: "ls", Namespace: "team"},
		Spec: gwv1.ListenerSetSpec{ParentRef: gwv1.ParentGatewayReference{Name: "public", Namespace: &gwNS},
			Listeners: []gwv1.ListenerEntry{{Name: "alt", Port: 8080, Protocol: gwv1.HTTPProtocolType, Hostname: new(gwv1.Hostname("team.example.com"))}}}}, metav1.CreateOptions{}))
	port := gwv1.PortNumber(80)
	lsNS := gwv1.Namespace("team")
	must(gc.GatewayV1().HTTPRoutes("team").Create(ctx, &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team"},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Kind: new(gwv1.Kind("ListenerSet")), Name: "ls", Namespace: &lsNS}}},
			Rules:           []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "web", Port: &port}}}}}},
		}}, metav1.CreateOptions{}))

	st, log := syncedStore(t, ctx, cfg)
	r := New(Options{Store: st, Kube: cs, Gateway: gc, Proxy: inject.DefaultConfig("v1.0.0", "meridian"), Log: log, Pending: 200 * time.Millisecond})
	recCtx, stopRec := context.WithCancel(ctx)
	recDone := make(chan error, 1)
	go func() { recDone <- r.Start(recCtx) }()
	defer func() { stopRec(); <-recDone }()

	lsStatus := func(f func(gwv1.ListenerSetStatus, int64) error) func() error {
		return func() error {
			ls, err := gc.GatewayV1().ListenerSets("team").Get(ctx, "ls", metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, c := range ls.Status.Conditions {
				if c.ObservedGeneration != ls.Generation {
					return fmt.Errorf("%s: observedGeneration %d, generation %d", c.Type, c.ObservedGeneration, ls.Generation)
				}
			}
			return f(ls.Status, ls.Generation)
		}
	}
	svcPorts := func() ([]int32, error) {
		svc, err := cs.CoreV1().Services("edge").Get(ctx, provision.Name("public"), metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		var ps []int32
		for _, p := range svc.Spec.Ports {
			ps = append(ps, p.Port)
		}
		return ps, nil
	}
	eventually(t, "the ListenerSet in another namespace is not allowed", lsStatus(func(s gwv1.ListenerSetStatus, _ int64) error {
		if err := want(s.Conditions, "Accepted", metav1.ConditionFalse, "NotAllowed"); err != nil {
			return err
		}
		return want(s.Conditions, "Programmed", metav1.ConditionFalse, "NotAllowed")
	}))
	eventually(t, "the route naming it is not accepted", func() error {
		rt, err := gc.GatewayV1().HTTPRoutes("team").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(rt.Status.Parents) != 1 || rt.Status.Parents[0].ParentRef.Kind == nil || *rt.Status.Parents[0].ParentRef.Kind != "ListenerSet" {
			return fmt.Errorf("parents %+v", rt.Status.Parents)
		}
		return want(rt.Status.Parents[0].Conditions, "Accepted", metav1.ConditionFalse, "NotAllowedByListeners")
	})
	if ps, err := svcPorts(); err != nil || len(ps) != 1 || ps[0] != 80 {
		t.Fatalf("service ports %v (%v): a ListenerSet not allowed added a port", ps, err)
	}
	g, err := gc.GatewayV1().Gateways("edge").Get(ctx, "public", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if g.Status.AttachedListenerSets == nil || *g.Status.AttachedListenerSets != 0 {
		t.Fatalf("attachedListenerSets %v", g.Status.AttachedListenerSets)
	}

	// The Gateway allows all namespaces.
	all := gwv1.NamespacesFromAll
	g.Spec.AllowedListeners.Namespaces.From = &all
	must(gc.GatewayV1().Gateways("edge").Update(ctx, g, metav1.UpdateOptions{}))
	eventually(t, "the ListenerSet is accepted and waits for its Gateway", lsStatus(func(s gwv1.ListenerSetStatus, _ int64) error {
		if err := want(s.Conditions, "Accepted", metav1.ConditionTrue, "Accepted"); err != nil {
			return err
		}
		if err := want(s.Conditions, "Programmed", metav1.ConditionFalse, "ParentNotProgrammed"); err != nil {
			return err
		}
		if len(s.Listeners) != 1 || s.Listeners[0].Name != "alt" || s.Listeners[0].AttachedRoutes != 1 {
			return fmt.Errorf("listeners %+v", s.Listeners)
		}
		return want(s.Listeners[0].Conditions, "Programmed", metav1.ConditionTrue, "Programmed")
	}))
	eventually(t, "its port joins the Service", func() error {
		ps, err := svcPorts()
		if err != nil {
			return err
		}
		if len(ps) != 2 || ps[0] != 80 || ps[1] != 8080 {
			return fmt.Errorf("ports %v", ps)
		}
		return nil
	})
	eventually(t, "the Gateway counts it and the route is accepted", func() error {
		g, err := gc.GatewayV1().Gateways("edge").Get(ctx, "public", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if g.Status.AttachedListenerSets == nil || *g.Status.AttachedListenerSets != 1 {
			return fmt.Errorf("attachedListenerSets %v", g.Status.AttachedListenerSets)
		}
		rt, err := gc.GatewayV1().HTTPRoutes("team").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(rt.Status.Parents) != 1 {
			return fmt.Errorf("parents %+v", rt.Status.Parents)
		}
		return want(rt.Status.Parents[0].Conditions, "Accepted", metav1.ConditionTrue, "Accepted")
	})

	// No kubelet here: a ready proxy is written by hand.
	dep, err := cs.AppsV1().Deployments("edge").Get(ctx, provision.Name("public"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dep.Status.Replicas, dep.Status.ReadyReplicas = 1, 1
	must(cs.AppsV1().Deployments("edge").UpdateStatus(ctx, dep, metav1.UpdateOptions{}))
	eventually(t, "the ListenerSet is programmed with its Gateway", lsStatus(func(s gwv1.ListenerSetStatus, _ int64) error {
		return want(s.Conditions, "Programmed", metav1.ConditionTrue, "Programmed")
	}))

	// A change to the ListenerSet: observedGeneration follows.
	ls, err := gc.GatewayV1().ListenerSets("team").Get(ctx, "ls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ls.Spec.Listeners[0].Hostname = new(gwv1.Hostname("other.example.com"))
	must(gc.GatewayV1().ListenerSets("team").Update(ctx, ls, metav1.UpdateOptions{}))
	eventually(t, "the new generation is observed", lsStatus(func(s gwv1.ListenerSetStatus, gen int64) error {
		if gen < 2 {
			return fmt.Errorf("generation %d", gen)
		}
		return want(s.Conditions, "Accepted", metav1.ConditionTrue, "Accepted")
	}))

	// Deleted: the route's parent status for it goes, and its port.
	must(nil, gc.GatewayV1().ListenerSets("team").Delete(ctx, "ls", metav1.DeleteOptions{}))
	eventually(t, "the route's ListenerSet parent status is removed", func() error {
		rt, err := gc.GatewayV1().HTTPRoutes("team").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(rt.Status.Parents) != 0 {
			return fmt.Errorf("parents %+v", rt.Status.Parents)
		}
		return nil
	})
	eventually(t, "the port leaves the Service", func() error {
		ps, err := svcPorts()
		if err != nil {
			return err
		}
		if len(ps) != 1 {
			return fmt.Errorf("ports %v", ps)
		}
		return nil
	})

	// A ListenerSet whose Gateway is deleted goes back to Pending: no
	// controller serves its listeners any more.
	must(gc.GatewayV1().ListenerSets("team").Create(ctx, &gwv1.ListenerSet{ObjectMeta: metav1.ObjectMeta{Name: "ls2", Namespace: "team"},
		Spec: gwv1.ListenerSetSpec{ParentRef: gwv1.ParentGatewayReference{Name: "public", Namespace: &gwNS},
			Listeners: []gwv1.ListenerEntry{{Name: "alt", Port: 8081, Protocol: gwv1.HTTPProtocolType}}}}, metav1.CreateOptions{}))
	ls2 := func(f func(gwv1.ListenerSetStatus) error) func() error {
		return func() error {
			ls, err := gc.GatewayV1().ListenerSets("team").Get(ctx, "ls2", metav1.GetOptions{})
			if err != nil {
				return err
			}
			return f(ls.Status)
		}
	}
	eventually(t, "the second ListenerSet is accepted and programmed", ls2(func(s gwv1.ListenerSetStatus) error {
		if err := want(s.Conditions, "Accepted", metav1.ConditionTrue, "Accepted"); err != nil {
			return err
		}
		return want(s.Conditions, "Programmed", metav1.ConditionTrue, "Programmed")
	}))
	must(nil, gc.GatewayV1().Gateways("edge").Delete(ctx, "public", metav1.DeleteOptions{}))
	eventually(t, "its status is reset when the Gateway is deleted", ls2(func(s gwv1.ListenerSetStatus) error {
		if err := want(s.Conditions, "Accepted", metav1.ConditionUnknown, "Pending"); err != nil {
			return err
		}
		if err := want(s.Conditions, "Programmed", metav1.ConditionUnknown, "Pending"); err != nil {
			return err
		}
		if len(s.Listeners) != 0 {
			return fmt.Errorf("listeners %+v", s.Listeners)
		}
		return nil
	}))
}
