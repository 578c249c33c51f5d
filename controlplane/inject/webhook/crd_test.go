package webhook

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apiextensionsfake "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meridian-mesh/meridian/test/apiserver"
)

const testCRD = "trafficsplits.split.smi-spec.io"

// convertingCRD is a CRD named name that converts with a webhook (strategy
// Webhook) or not (None).
func convertingCRD(name string, strategy apiextensionsv1.ConversionStrategyType) *apiextensionsv1.CustomResourceDefinition {
	crd := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{Conversion: &apiextensionsv1.CustomResourceConversion{Strategy: strategy}}}
	if strategy == apiextensionsv1.WebhookConverter {
		port := int32(443)
		crd.Spec.Conversion.Webhook = &apiextensionsv1.WebhookConversion{
			ClientConfig: &apiextensionsv1.WebhookClientConfig{Service: &apiextensionsv1.ServiceReference{
				Namespace: testNS, Name: "meridian-controller", Path: ptrTo("/convert/trafficsplits"), Port: &port}},
			ConversionReviewVersions: []string{"v1"},
		}
	}
	return crd
}

// newCRDClient is a fake clientset of objs. NewClientset's tracker cannot
// apply JSON patches to CRDs (no structured-merge schema for the type in
// the fake), hence the older constructor.
func newCRDClient(objs ...runtime.Object) *apiextensionsfake.Clientset {
	return apiextensionsfake.NewSimpleClientset(objs...)
}

func ptrTo[T any](v T) *T { return &v }

func crdBundle(t *testing.T, ctx context.Context, cs apiextensionsclient.Interface, name string) []byte {
	t.Helper()
	crd, err := cs.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := crd.Spec.Conversion; c != nil && c.Webhook != nil && c.Webhook.ClientConfig != nil {
		return c.Webhook.ClientConfig.CABundle
	}
	return nil
}

// Sync gives the CA to the CRDs' conversion webhooks too, only when it
// differs, and leaves alone a CRD that is missing or converts otherwise.
func TestCertsPatchCRD(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(webhookConfig(1))
	crds := newCRDClient(convertingCRD(testCRD, apiextensionsv1.WebhookConverter), convertingCRD("others.example.com", apiextensionsv1.NoneConverter))
	c := keeper(cs)
	c.CRDClient, c.CRDs = crds, []string{testCRD, "others.example.com", "missing.example.com"}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	checkServing(t, ctx, cs, c)
	if got := crdBundle(t, ctx, crds, testCRD); !bytes.Equal(got, c.CABundle()) {
		t.Fatalf("CRD caBundle %q, want the CA", got)
	}
	if crd, _ := crds.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, "others.example.com", metav1.GetOptions{}); crd.Spec.Conversion.Strategy != apiextensionsv1.NoneConverter || crd.Spec.Conversion.Webhook != nil {
		t.Fatalf("a CRD without a conversion webhook was changed: %+v", crd.Spec.Conversion)
	}
	patches := func() (n int) {
		for _, a := range crds.Actions() {
			if a.GetVerb() == "patch" {
				n++
			}
		}
		return n
	}
	if n := patches(); n != 1 {
		t.Fatalf("%d patches, want 1", n)
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := patches(); n != 1 {
		t.Fatalf("a Sync in steady state patched the CRD (%d patches)", n)
	}

	// A CRD that cannot be read is Sync's error, not hidden behind a
	// missing webhook configuration (Run waits quietly for that one only).
	broken := newCRDClient()
	broken.PrependReactor("get", "customresourcedefinitions", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("etcd is down")
	})
	c3 := keeper(fake.NewClientset())
	c3.CRDClient, c3.CRDs = broken, []string{testCRD}
	if err := c3.Sync(ctx); err == nil || err == ErrNoWebhookConfig || !strings.Contains(err.Error(), "reading CustomResourceDefinition "+testCRD+": etcd is down") {
		t.Fatalf("Sync with an unreadable CRD: %v", err)
	}

	// The CRD patched even while the webhook configuration is missing.
	cs2 := fake.NewClientset()
	crds2 := newCRDClient(convertingCRD(testCRD, apiextensionsv1.WebhookConverter))
	c2 := keeper(cs2)
	c2.CRDClient, c2.CRDs = crds2, []string{testCRD}
	if err := c2.Sync(ctx); !errors.Is(err, ErrNoWebhookConfig) {
		t.Fatalf("Sync: %v, want ErrNoWebhookConfig", err)
	}
	if got := crdBundle(t, ctx, crds2, testCRD); !bytes.Equal(got, c2.CABundle()) {
		t.Fatal("CRD caBundle not patched without a webhook configuration")
	}
}

// Against a real kube-apiserver, with the TrafficSplit CRD as api/crds has
// it: Run patches its conversion caBundle in, and back after a re-apply
// that dropped it.
func TestCertsKubeCRD(t *testing.T) {
	_, file, _, _ := goruntime.Caller(0)
	cfg := apiserver.Start(t)
	// Installed after the start: the Environment's own CRD options would
	// drop the conversion (see conversiontest.Server.Install).
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{
		Paths:              []string{filepath.Join(filepath.Dir(file), "..", "..", "..", "api", "crds", "split.smi-spec.io_trafficsplits.yaml")},
		ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	crds := apiextensionsclient.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, webhookConfig(1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if crd, err := crds.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, testCRD, metav1.GetOptions{}); err != nil ||
		crd.Spec.Conversion.Strategy != apiextensionsv1.WebhookConverter || len(crd.Spec.Conversion.Webhook.ClientConfig.CABundle) != 0 {
		t.Fatalf("the generated CRD should convert with a webhook and have no caBundle: %v", err)
	}
	c := keeper(cs)
	c.CRDClient, c.CRDs = crds, []string{testCRD}
	if err := c.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(runCtx, 100*time.Millisecond) }()
	defer func() { stop(); <-done }()
	waitBundle := func(what string) {
		t.Helper()
		for {
			if b := c.CABundle(); b != nil && bytes.Equal(crdBundle(t, ctx, crds, testCRD), b) {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: the CRD's conversion caBundle was not patched", what)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	waitBundle("at start")
	checkServing(t, ctx, cs, c)
	// An update of the CRD as the file has it (no caBundle), as a
	// re-install that replaces it would do.
	crd, err := crds.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, testCRD, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	crd.Spec.Conversion.Webhook.ClientConfig.CABundle = nil
	if _, err := crds.ApiextensionsV1().CustomResourceDefinitions().Update(ctx, crd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(crdBundle(t, ctx, crds, testCRD)) != 0 {
		t.Fatal("the update kept the caBundle")
	}
	waitBundle("after the update")
}
