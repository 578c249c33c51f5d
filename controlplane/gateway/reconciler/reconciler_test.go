package reconciler

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/meridian-mesh/meridian/controlplane/compile/gateway"
	"github.com/meridian-mesh/meridian/controlplane/gateway/provision"
	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/controlplane/store/kube"
	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// eventually polls f until it returns nil, for up to 30s.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func condition(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

func want(cs []metav1.Condition, typ string, s metav1.ConditionStatus, reason string) error {
	c := condition(cs, typ)
	if c == nil {
		return fmt.Errorf("no %s condition in %+v", typ, cs)
	}
	if c.Status != s || c.Reason != reason {
		return fmt.Errorf("%s is %s/%s (%s), want %s/%s", typ, c.Status, c.Reason, c.Message, s, reason)
	}
	return nil
}

// The writer against a real API server, fed by the Kubernetes source as in
// the controller: a Gateway of Meridian's class gets its ServiceAccount,
// Deployment and Service, owned by it; its status says Accepted, its
// address, and Programmed once a proxy is ready; its route's parent status
// is written, and removed when the route leaves the Gateway; bad
// parameters are refused in the Gateway's status.
func TestReconciler(t *testing.T) {
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
	must(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}, metav1.CreateOptions{}))
	must(cs.CoreV1().Services("edge").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "edge"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{}))
	must(gc.GatewayV1().GatewayClasses().Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "meridian"},
		Spec: gwv1.GatewayClassSpec{ControllerName: gateway.ControllerName}}, metav1.CreateOptions{}))
	must(gc.GatewayV1().GatewayClasses().Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "theirs"},
		Spec: gwv1.GatewayClassSpec{ControllerName: "example.com/other"}}, metav1.CreateOptions{}))
	must(gc.GatewayV1().Gateways("edge").Create(ctx, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "public", Namespace: "edge"},
		Spec: gwv1.GatewaySpec{GatewayClassName: "meridian", Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}}}}, metav1.CreateOptions{}))
	must(gc.GatewayV1().Gateways("edge").Create(ctx, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "edge"},
		Spec: gwv1.GatewaySpec{GatewayClassName: "theirs", Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}}}}, metav1.CreateOptions{}))
	port := gwv1.PortNumber(80)
	must(gc.GatewayV1().HTTPRoutes("edge").Create(ctx, &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "edge"},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "public"}}},
			Rules:           []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "web", Port: &port}}}}}},
		}}, metav1.CreateOptions{}))

	st, log := syncedStore(t, ctx, cfg)
	proxy := inject.DefaultConfig("v1.0.0", "meridian")
	proxy.TrustAnchorsPEM = "anchors"
	// The reconciler's clients count the requests about Gateway public.
	var aboutPublic atomic.Int64
	counted := rest.CopyConfig(cfg)
	counted.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			if strings.Contains(req.URL.Path, "/public") {
				aboutPublic.Add(1)
			}
			return rt.RoundTrip(req)
		})
	}
	r := New(Options{Store: st, Kube: kubernetes.NewForConfigOrDie(counted), Gateway: gwclient.NewForConfigOrDie(counted), Proxy: proxy, Log: log, Pending: 200 * time.Millisecond})
	recCtx, stopRec := context.WithCancel(ctx)
	recDone := make(chan error, 1)
	go func() { recDone <- r.Start(recCtx) }()
	defer func() { stopRec(); <-recDone }()

	name := provision.Name("public")
	eventually(t, "the GatewayClass is accepted", func() error {
		c, err := gc.GatewayV1().GatewayClasses().Get(ctx, "meridian", metav1.GetOptions{})
		if err != nil {
			return err
		}
		return want(c.Status.Conditions, "Accepted", metav1.ConditionTrue, "Accepted")
	})
	eventually(t, "the Gateway is provisioned", func() error {
		svc, err := cs.CoreV1().Services("edge").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if _, err := cs.AppsV1().Deployments("edge").Get(ctx, name, metav1.GetOptions{}); err != nil {
			return err
		}
		if _, err := cs.CoreV1().ServiceAccounts("edge").Get(ctx, name, metav1.GetOptions{}); err != nil {
			return err
		}
		if len(svc.OwnerReferences) != 1 || svc.OwnerReferences[0].Name != "public" {
			return fmt.Errorf("service owners %+v", svc.OwnerReferences)
		}
		return nil
	})
	var clusterIP string
	eventually(t, "the Gateway is accepted, addressed and pending", func() error {
		g, err := gc.GatewayV1().Gateways("edge").Get(ctx, "public", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if err := want(g.Status.Conditions, "Accepted", metav1.ConditionTrue, "Accepted"); err != nil {
			return err
		}
		if err := want(g.Status.Conditions, "Programmed", metav1.ConditionFalse, "Pending"); err != nil {
			return err
		}
		if len(g.Status.Addresses) != 1 {
			return fmt.Errorf("addresses %+v", g.Status.Addresses)
		}
		clusterIP = g.Status.Addresses[0].Value
		return nil
	})
	svc, err := cs.CoreV1().Services("edge").Get(ctx, name, metav1.GetOptions{})
	if err != nil || svc.Spec.ClusterIP != clusterIP {
		t.Fatalf("address %s, the Service's cluster IP %s (%v)", clusterIP, svc.Spec.ClusterIP, err)
	}
	eventually(t, "the route is accepted", func() error {
		rt, err := gc.GatewayV1().HTTPRoutes("edge").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(rt.Status.Parents) != 1 {
			return fmt.Errorf("parents %+v", rt.Status.Parents)
		}
		return want(rt.Status.Parents[0].Conditions, "Accepted", metav1.ConditionTrue, "Accepted")
	})

	// No kubelet here: a ready proxy is written by hand.
	dep, err := cs.AppsV1().Deployments("edge").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dep.Status.Replicas, dep.Status.ReadyReplicas = 1, 1
	must(cs.AppsV1().Deployments("edge").UpdateStatus(ctx, dep, metav1.UpdateOptions{}))
	eventually(t, "the Gateway is programmed", func() error {
		g, err := gc.GatewayV1().Gateways("edge").Get(ctx, "public", metav1.GetOptions{})
		if err != nil {
			return err
		}
		return want(g.Status.Conditions, "Programmed", metav1.ConditionTrue, "Programmed")
	})

	// Another Gateway comes and is reconciled (many rounds, while it is
	// pending): Gateway public, unchanged, costs no API request.
	before := aboutPublic.Load()
	must(gc.GatewayV1().Gateways("edge").Create(ctx, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "second", Namespace: "edge"},
		Spec: gwv1.GatewaySpec{GatewayClassName: "meridian", Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}}}}, metav1.CreateOptions{}))
	eventually(t, "the second Gateway is accepted and pending", func() error {
		g, err := gc.GatewayV1().Gateways("edge").Get(ctx, "second", metav1.GetOptions{})
		if err != nil {
			return err
		}
		return want(g.Status.Conditions, "Programmed", metav1.ConditionFalse, "Pending")
	})
	time.Sleep(500 * time.Millisecond) // a few more pending rounds (Pending is 200ms)
	if n := aboutPublic.Load() - before; n != 0 {
		t.Fatalf("reconciling other Gateways made %d requests about the unchanged Gateway public", n)
	}

	// The route leaves the Gateway: its parent status goes.
	rt, err := gc.GatewayV1().HTTPRoutes("edge").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rt.Spec.ParentRefs = []gwv1.ParentReference{{Name: "other"}}
	must(gc.GatewayV1().HTTPRoutes("edge").Update(ctx, rt, metav1.UpdateOptions{}))
	eventually(t, "the route's parent status is removed", func() error {
		rt, err := gc.GatewayV1().HTTPRoutes("edge").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(rt.Status.Parents) != 0 {
			return fmt.Errorf("parents %+v", rt.Status.Parents)
		}
		return nil
	})

	// The admin port's default inbound policy: the namespace's annotation
	// over the cluster's, the Gateway's own parameters over both; the
	// connection bound from the parameters.
	args := func(want ...string) func() error {
		return func() error {
			d, err := cs.AppsV1().Deployments("edge").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			a := strings.Join(d.Spec.Template.Spec.Containers[0].Args, " ")
			for _, w := range want {
				if !strings.Contains(a, w) {
					return fmt.Errorf("args %s: no %s", a, w)
				}
			}
			return nil
		}
	}
	annotateNS := func(v string) {
		t.Helper()
		ns, err := cs.CoreV1().Namespaces().Get(ctx, "edge", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ns.Annotations = map[string]string{names.AnnotationDefaultInbound: v}
		must(cs.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}))
	}
	annotateNS("deny")
	eventually(t, "the namespace's default inbound policy", args("--default-inbound-policy=deny"))
	must(cs.CoreV1().ConfigMaps("edge").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "public-params", Namespace: "edge"},
		Data: map[string]string{provision.ParamDefaultInboundPolicy: "cluster-authenticated", provision.ParamMaxConnections: "1000"}}, metav1.CreateOptions{}))
	g, err := gc.GatewayV1().Gateways("edge").Get(ctx, "public", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g.Spec.Infrastructure = &gwv1.GatewayInfrastructure{ParametersRef: &gwv1.LocalParametersReference{Kind: "ConfigMap", Name: "public-params"}}
	must(gc.GatewayV1().Gateways("edge").Update(ctx, g, metav1.UpdateOptions{}))
	eventually(t, "the Gateway's parameters", args("--default-inbound-policy=cluster-authenticated", "--max-connections=1000"))
	annotateNS("nobody")
	eventually(t, "a bad namespace annotation is refused", func() error {
		g, err := gc.GatewayV1().Gateways("edge").Get(ctx, "public", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if err := want(g.Status.Conditions, "Accepted", metav1.ConditionFalse, "InvalidParameters"); err != nil {
			return err
		}
		if c := condition(g.Status.Conditions, "Accepted"); !strings.Contains(c.Message, "Namespace edge: metadata.annotations[config.meridian.io/default-inbound-policy]") {
			return fmt.Errorf("message %q does not name the annotation", c.Message)
		}
		return nil
	})
	annotateNS("deny")

	// Bad parameters: refused in the status, nothing else changes.
	g, err = gc.GatewayV1().Gateways("edge").Get(ctx, "public", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g.Annotations = map[string]string{provision.AnnotationServiceType: "Public"}
	must(gc.GatewayV1().Gateways("edge").Update(ctx, g, metav1.UpdateOptions{}))
	eventually(t, "bad parameters are refused", func() error {
		g, err := gc.GatewayV1().Gateways("edge").Get(ctx, "public", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if err := want(g.Status.Conditions, "Accepted", metav1.ConditionFalse, "InvalidParameters"); err != nil {
			return err
		}
		if c := condition(g.Status.Conditions, "Accepted"); !strings.Contains(c.Message, "gateway.meridian.io/service-type") {
			return fmt.Errorf("message %q does not name the annotation", c.Message)
		}
		return nil
	})

	// The other class's Gateway is left alone.
	if _, err := cs.CoreV1().Services("edge").Get(ctx, provision.Name("other"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the other controller's Gateway was provisioned: %v", err)
	}
	if o, _ := gc.GatewayV1().Gateways("edge").Get(ctx, "other", metav1.GetOptions{}); len(o.Status.Conditions) > 0 && condition(o.Status.Conditions, "Accepted").Reason != "Pending" {
		t.Fatalf("the other controller's Gateway status was written: %+v", o.Status.Conditions)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// syncedStore runs the Kubernetes source (with the Gateway API) into a new
// store until the test ends, and returns it once synced, with the
// discarding logger the tests give the reconciler.
func syncedStore(t *testing.T, ctx context.Context, cfg *rest.Config) (*store.Store, *slog.Logger) {
	t.Helper()
	st := store.New()
	log := slog.New(slog.DiscardHandler)
	srcCtx, stopSrc := context.WithCancel(ctx)
	srcDone := make(chan error, 1)
	synced := make(chan struct{})
	go func() {
		srcDone <- kube.Run(srcCtx, cfg, st, kube.WithGatewayAPI(), kube.WithLogger(log), kube.WithReady(func() { close(synced) }))
	}()
	t.Cleanup(func() { stopSrc(); <-srcDone })
	select {
	case <-synced:
	case <-ctx.Done():
		t.Fatal("the store did not sync")
	}
	return st, log
}
