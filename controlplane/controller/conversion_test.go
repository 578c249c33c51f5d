package controller

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meridian-mesh/meridian/controlplane/conversion"
	"github.com/meridian-mesh/meridian/controlplane/identity"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// The TrafficSplit conversion webhook served by the controller against a
// real kube-apiserver: the controller writes its serving CA into the
// generated CRD's conversion caBundle, and (pointed at the controller on
// loopback, as the API server cannot reach a Service here) the API server
// converts a v1alpha1 split with string weights to v1alpha4 integers
// through it.
func TestControllerConvertsTrafficSplits(t *testing.T) {
	cfg := apiserver.Start(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// After the start: the Environment's CRD options would drop the
	// conversion (see conversiontest.Server.Install).
	_, file, _, _ := runtime.Caller(0)
	_, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{filepath.Join(filepath.Dir(file), "..", "..", "api", "crds")}, ErrorIfPathMissing: true})
	must(err)
	cs := kubernetes.NewForConfigOrDie(cfg)
	crds := apiextensionsclient.NewForConfigOrDie(cfg).ApiextensionsV1().CustomResourceDefinitions()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, ns := range []string{"meridian", "shop"} {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		must(err)
	}
	issuerDir := t.TempDir()
	ca, err := identity.Generate(spiffeid.RequireTrustDomainFromString("cluster.local"))
	must(err)
	must(ca.WriteDir(issuerDir))

	hookAddr := make(chan string, 1)
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	go func() {
		done <- Run(runCtx, Options{Store: "kube", RestConfig: cfg, DestinationAddr: "127.0.0.1:0", ShutdownGrace: time.Second,
			IdentityIssuerDir: issuerDir,
			Webhook: WebhookOptions{Addr: "127.0.0.1:0", Namespace: "meridian", ExtraHosts: []string{"127.0.0.1"},
				Ready: func(a string) { hookAddr <- a }},
		}, nil)
	}()
	defer func() { stop(); <-done }()
	var addr string
	select {
	case addr = <-hookAddr:
	case err := <-done:
		t.Fatalf("controller: %v", err)
	case <-ctx.Done():
		t.Fatal("the webhook did not start")
	}

	// The CA in the CRD, with no MutatingWebhookConfiguration installed.
	for {
		sec, err := cs.CoreV1().Secrets("meridian").Get(ctx, "meridian-proxy-injector-tls", metav1.GetOptions{})
		crd, err2 := crds.Get(ctx, conversion.CRDName, metav1.GetOptions{})
		must(err2)
		if err == nil && bytes.Equal(crd.Spec.Conversion.Webhook.ClientConfig.CABundle, sec.Data["ca.crt"]) {
			crd.Spec.Conversion.Webhook.ClientConfig.Service = nil
			crd.Spec.Conversion.Webhook.ClientConfig.URL = ptr.To("https://" + addr + conversion.Path)
			_, err = crds.Update(ctx, crd, metav1.UpdateOptions{})
			must(err)
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the CRD's conversion caBundle is not the serving CA (secret: %v)", err)
		case <-time.After(50 * time.Millisecond):
		}
	}

	splits := dynamic.NewForConfigOrDie(cfg).Resource(schema.GroupVersionResource{Group: "split.smi-spec.io", Version: "v1alpha1", Resource: "trafficsplits"}).Namespace("shop")
	v1 := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
		"metadata": map[string]any{"name": "web"},
		"spec": map[string]any{"service": "web", "backends": []any{
			map[string]any{"service": "web-stable", "weight": "80"}, map[string]any{"service": "web-canary", "weight": "20"}}},
	}}
	// The API server picks the CRD's new client configuration up shortly.
	for {
		_, err := splits.Create(ctx, v1, metav1.CreateOptions{})
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("creating a v1alpha1 split: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	v4, err := dynamic.NewForConfigOrDie(cfg).Resource(schema.GroupVersionResource{Group: "split.smi-spec.io", Version: "v1alpha4", Resource: "trafficsplits"}).Namespace("shop").Get(ctx, "web", metav1.GetOptions{})
	must(err)
	bs, _, _ := unstructured.NestedSlice(v4.Object, "spec", "backends")
	if got := fmt.Sprintf("%#v %#v", bs[0].(map[string]any)["weight"], bs[1].(map[string]any)["weight"]); got != "80 20" {
		t.Fatalf("v1alpha4 weights %s, want integers 80 20", got)
	}
}
