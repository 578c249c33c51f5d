package kube

import (
	"context"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	splitv1alpha1 "github.com/meridian-mesh/meridian/api/split/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// The store reads TrafficSplits without the conversion webhook: the
// controller serves that webhook, behind a Service that has no endpoint
// until a controller is ready, and it is ready once this store has synced.
// With the webhook unreachable, Run still syncs and holds every split,
// including one stored as SMI's CRD (strategy None) left it: v1alpha1's
// string weights under v1alpha4.
func TestRunReadsSplitsWithoutTheWebhook(t *testing.T) {
	cfg := sharedAPIServer(t)
	c := newClient(t, cfg)
	ns := createNamespace(t, c, "nowebhook")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	crds := apiextensionsclient.NewForConfigOrDie(cfg).ApiextensionsV1().CustomResourceDefinitions()
	// Not ctx: the cleanup runs after it is cancelled.
	setConversion := func(conv *apiextensionsv1.CustomResourceConversion) {
		t.Helper()
		ctx := context.Background()
		crd, err := crds.Get(ctx, "trafficsplits.split.smi-spec.io", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		crd.Spec.Conversion = conv
		if _, err := crds.Update(ctx, crd, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	working := testCRDs(t)
	for _, crd := range working {
		if crd.Name == "trafficsplits.split.smi-spec.io" {
			t.Cleanup(func() { setConversion(crd.Spec.Conversion) })
		}
	}
	split := func(name string, weights ...string) *splitv1alpha1.TrafficSplit {
		return &splitv1alpha1.TrafficSplit{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: splitv1alpha1.TrafficSplitSpec{
			Service: "web", Backends: []splitv1alpha1.TrafficSplitBackend{
				{Service: "web-stable", Weight: resource.MustParse(weights[0])}, {Service: "web-canary", Weight: resource.MustParse(weights[1])}}}}
	}
	// Converted by the webhook, as the CRD says.
	if err := c.Create(ctx, split("converted", "80", "20")); err != nil {
		t.Fatal(err)
	}
	// Stored without conversion, as SMI's CRD did.
	setConversion(&apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.NoneConverter})
	v4 := dynamic.NewForConfigOrDie(cfg).Resource(schema.GroupVersionResource{Group: "split.smi-spec.io", Version: "v1alpha4", Resource: "trafficsplits"}).Namespace(ns)
	eventually(t, "a split stored with v1alpha1's string weights", func() bool {
		_ = c.Delete(ctx, split("legacy", "750m", "250m"))
		if err := c.Create(ctx, split("legacy", "750m", "250m")); err != nil {
			return false
		}
		u, err := v4.Get(ctx, "legacy", metav1.GetOptions{})
		if err != nil {
			return false
		}
		bs, _, _ := unstructured.NestedSlice(u.Object, "spec", "backends")
		_, isString := bs[0].(map[string]any)["weight"].(string)
		return isString // else the API server still converted: again
	})
	// A webhook nobody answers.
	conv := working[0].Spec.Conversion
	for _, crd := range working {
		if crd.Name == "trafficsplits.split.smi-spec.io" {
			conv = crd.Spec.Conversion.DeepCopy()
		}
	}
	conv.Webhook.ClientConfig.URL = ptr.To("https://127.0.0.1:1/convert/trafficsplits")
	setConversion(conv)
	eventually(t, "v1alpha1 reads to fail", func() bool {
		var got splitv1alpha1.TrafficSplit
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "converted"}, &got) != nil
	})

	st := start(t, cfg)
	web := store.Key{Namespace: ns, Name: "web"}
	eventually(t, "both splits", func() bool {
		splits := st.TrafficSplits(web)
		if len(splits) != 2 {
			return false
		}
		w1, w2 := splits[0].Backends, splits[1].Backends // by name: converted, legacy
		return len(w1) == 2 && len(w2) == 2 && w1[0].Weight == 4*w1[1].Weight && w1[1].Weight > 0 &&
			w2[0].Weight == 3*w2[1].Weight && w2[1].Weight > 0
	})
}
