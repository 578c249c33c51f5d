package kube

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// Without WithGatewayAPI the store still reads the mesh's kinds: GAMMA
// routes (a Service parent's topic wakes), ReferenceGrants, and Rollouts
// with their status (Meridian's own split is compiled from it).
func TestRunMeshKinds(t *testing.T) {
	sharedAPIServer(t) // skips without KUBEBUILDER_ASSETS
	// An API server of its own, whose Gateway API CRDs go with it: deleting
	// them from the shared one (the CRD cleanup deletes every object first)
	// took over two minutes under CI's load.
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the test's own API server: %v", err)
		}
	})
	if err := convSrv.Install(cfg, crdDir()); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, cfg)
	ctx := context.Background()
	ns := createNamespace(t, c, "meshkinds")
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{apiserver.GatewayAPICRDs()}, ErrorIfPathMissing: true}); err != nil {
		t.Fatal(err)
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Gateway API in discovery", func() bool {
		mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
		if err != nil {
			return false
		}
		objs, missing, err := servedGatewayKinds(mapper, meshKinds)
		return err == nil && len(missing) == 0 && len(objs) == len(meshKinds)
	})

	st := start(t, cfg)
	web := store.Key{Namespace: ns, Name: "web"}
	changed, cancel := st.Watch(store.ServiceTopic(web))
	defer cancel()

	core, kind := gwv1.Group(""), gwv1.Kind("Service")
	port := gwv1.PortNumber(80)
	route := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "split"}, Spec: gwv1.HTTPRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Group: &core, Kind: &kind, Name: "web"}}},
		Rules:           []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "web-v2", Port: &port}}}}}}}}
	if err := c.Create(ctx, route); err != nil {
		t.Fatal(err)
	}
	woken(t, "the route's Service parent", changed)
	eventually(t, "the mesh route in the store", func() bool { return len(st.MeshHTTPRoutes(web)) == 1 })

	ro := &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}, Spec: v1alpha1.RolloutSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "web:1"}}}},
		Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{StableService: "web", CanaryService: "web-canary",
			TrafficRouting: &v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{}}}}}}
	if err := c.Create(ctx, ro); err != nil {
		t.Fatal(err)
	}
	drain(changed)
	ro.Status.Canary.Weights = &v1alpha1.TrafficWeights{Stable: v1alpha1.WeightDestination{ServiceName: "web", PodTemplateHash: "aaa", Weight: 90},
		Canary: v1alpha1.WeightDestination{ServiceName: "web-canary", PodTemplateHash: "bbb", Weight: 10}}
	if err := c.Status().Update(ctx, ro); err != nil {
		t.Fatal(err)
	}
	woken(t, "the stable Service, by the Rollout's status", changed)
	eventually(t, "the Rollout's weights in the store", func() bool {
		ros := st.Rollouts(web)
		return len(ros) == 1 && ros[0].Status.Canary.Weights != nil && ros[0].Status.Canary.Weights.Canary.Weight == 10
	})
}
