package kube

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
	cfg := sharedAPIServer(t)
	c := newClient(t, cfg)
	ctx := context.Background()
	ns := createNamespace(t, c, "meshkinds")
	crds, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{apiserver.GatewayAPICRDs()}, ErrorIfPathMissing: true})
	if err != nil {
		t.Fatal(err)
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := envtest.UninstallCRDs(cfg, envtest.CRDInstallOptions{CRDs: crds}); err != nil {
			t.Errorf("uninstalling the Gateway API CRDs: %v", err)
		}
		// Gone before the next test (or -count's next run) installs them
		// again: a CRD still terminating cannot be created anew.
		waitCRDsGone(t, cfg, crds)
	})
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

// waitCRDsGone waits until crds are deleted. Deleting a CRD deletes its
// objects first: allow for a slow, loaded API server (-race), well beyond
// eventually's 20 s.
func waitCRDsGone(t *testing.T, cfg *rest.Config, crds []*apiextensionsv1.CustomResourceDefinition) {
	t.Helper()
	api := apiextensionsclient.NewForConfigOrDie(cfg).ApiextensionsV1().CustomResourceDefinitions()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		gone := true
		for _, crd := range crds {
			if _, err := api.Get(context.Background(), crd.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				gone = false
			}
		}
		if gone {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("CRDs not deleted after 2 minutes")
		}
	}
}
