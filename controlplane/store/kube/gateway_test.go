package kube

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

func startGateway(t *testing.T, cfg *rest.Config) *store.Store {
	t.Helper()
	st := store.New()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	log := testLogger(t)
	go func() {
		done <- Run(ctx, cfg, st, WithReady(func() { close(ready) }), WithLogger(log), WithGatewayAPI())
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run returned before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("Run not ready after 60s")
	}
	return st
}

// TestRunGatewayAPI: without the Gateway API CRDs the store syncs (and
// still reads certificates); with them it reads every kind, TLS Secrets
// only and the ca.crt of ConfigMaps, and a route wakes its Gateway.
func TestRunGatewayAPI(t *testing.T) {
	cfg := sharedAPIServer(t)
	c := newClient(t, cfg)
	ctx := context.Background()
	ns := createNamespace(t, c, "gwapi")
	tlsSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cert"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": []byte("c"), "tls.key": []byte("k")}}
	opaque := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "opaque"}, StringData: map[string]string{"k": "v"}}
	ca := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ca"}, Data: map[string]string{"ca.crt": "pem", "other": "dropped"}}
	for _, o := range []client.Object{tlsSecret, opaque, ca} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("without the CRDs", func(t *testing.T) {
		st := startGateway(t, cfg)
		if _, ok := st.Secret(store.Key{Namespace: ns, Name: "cert"}); !ok {
			t.Error("the TLS secret is not read")
		}
		if len(st.Gateways()) != 0 {
			t.Error("gateways without a CRD")
		}
	})

	crds, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{apiserver.GatewayAPICRDs()}, ErrorIfPathMissing: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := envtest.UninstallCRDs(cfg, envtest.CRDInstallOptions{CRDs: crds}); err != nil {
			t.Errorf("uninstalling the Gateway API CRDs: %v", err)
		}
	})
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Gateway API in discovery", func() bool {
		mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
		if err != nil {
			return false
		}
		objs, missing, err := gatewayObjects(mapper)
		return err == nil && len(missing) == 0 && len(objs) == len(gatewayKinds)
	})

	t.Run("with the CRDs", func(t *testing.T) {
		st := startGateway(t, cfg)
		if _, ok := st.Secret(store.Key{Namespace: ns, Name: "opaque"}); ok {
			t.Error("an Opaque secret is read")
		}
		cm, ok := st.ConfigMap(store.Key{Namespace: ns, Name: "ca"})
		if !ok || cm.Data["ca.crt"] != "pem" || len(cm.Data) != 1 {
			t.Errorf("ca configmap %v, %v: only ca.crt is kept", cm, ok)
		}
		gwKey := store.Key{Namespace: ns, Name: "gw"}
		changed, cancel := st.Watch(store.GatewayTopic(gwKey))
		defer cancel()
		gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"}, Spec: gwv1.GatewaySpec{
			GatewayClassName: "meridian",
			Listeners:        []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}},
		}}
		if err := c.Create(ctx, gw); err != nil {
			t.Fatal(err)
		}
		woken(t, "gateway created", changed)
		route := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r"}}
		route.Spec.ParentRefs = []gwv1.ParentReference{{Name: "gw"}}
		if err := c.Create(ctx, route); err != nil {
			t.Fatal(err)
		}
		woken(t, "route created", changed)
		eventually(t, "the route in the store", func() bool { return len(st.HTTPRoutes()) == 1 })
		if err := c.Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "meridian"}, Spec: gwv1.GatewayClassSpec{ControllerName: "meridian.io/gateway-controller"}}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the class in the store", func() bool { return len(st.GatewayClasses()) == 1 })
		if err := c.Delete(ctx, route); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the route deleted", func() bool { return len(st.HTTPRoutes()) == 0 })
	})
}
