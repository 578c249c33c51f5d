package controller

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/meridian-mesh/meridian/controlplane/identity"
	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// The proxy injector end to end against a real kube-apiserver: the
// controller makes its serving Secret and writes its CA into the
// MutatingWebhookConfiguration (shaped as docs/kubernetes.md says, but
// pointing at the webhook on loopback); the API server then calls it for
// every pod created, and pods in an annotated namespace come out injected.
func TestControllerProxyInjector(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	cfg := apiserver.Start(t, filepath.Join(filepath.Dir(file), "..", "..", "api", "crds"))
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "meridian", Labels: map[string]string{"meridian.io/is-control-plane": "true"},
			Annotations: map[string]string{names.AnnotationInject: names.InjectDisabled}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: map[string]string{
			names.AnnotationInject: names.InjectEnabled, names.AnnotationProxyLogLevel: "debug"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
	} {
		_, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
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
			Webhook: WebhookOptions{
				Addr:                "127.0.0.1:0",
				Namespace:           "meridian",
				ControlPlaneVersion: "v0.9.0",
				ExtraHosts:          []string{"127.0.0.1"},
				Ready:               func(a string) { hookAddr <- a },
			}}, nil)
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

	// The configuration as the chart writes it, but with a URL: the API
	// server cannot reach a Service here. No caBundle: the controller's.
	_, err = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "meridian-proxy-injector"},
		Webhooks: []admissionregv1.MutatingWebhook{{
			Name:         "inject.meridian.io",
			ClientConfig: admissionregv1.WebhookClientConfig{URL: ptr.To("https://" + addr + "/inject")},
			Rules: []admissionregv1.RuleWithOperations{{
				Operations: []admissionregv1.OperationType{admissionregv1.Create},
				Rule:       admissionregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system"}},
				{Key: "meridian.io/is-control-plane", Operator: metav1.LabelSelectorOpDoesNotExist},
			}},
			FailurePolicy:           ptr.To(admissionregv1.Ignore),
			SideEffects:             ptr.To(admissionregv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}, metav1.CreateOptions{})
	must(err)

	// The serving Secret, made by the controller, and its CA in the
	// caBundle.
	var sec *corev1.Secret
	for {
		sec, err = cs.CoreV1().Secrets("meridian").Get(ctx, "meridian-proxy-injector-tls", metav1.GetOptions{})
		if err == nil {
			wc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "meridian-proxy-injector", metav1.GetOptions{})
			must(err)
			if bytes.Equal(wc.Webhooks[0].ClientConfig.CABundle, sec.Data["ca.crt"]) {
				break
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no serving Secret and caBundle (last error %v)", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The leaf is for the Service's names.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(sec.Data["ca.crt"])
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "meridian-controller.meridian.svc"})
	must(err)
	conn.Close()

	// envtest turns the ServiceAccount admission plugin off; in a cluster
	// it sets serviceAccountName before webhooks run (and a projected
	// token needs one).
	pod := func(name string, ann map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann},
			Spec: corev1.PodSpec{
				ServiceAccountName: "default",
				InitContainers:     []corev1.Container{{Name: "migrate", Image: "migrate:1"}},
				Containers:         []corev1.Container{{Name: "web", Image: "web:1"}},
			},
		}
	}
	// The API server picks the new caBundle up shortly: dry-run until it
	// calls the webhook successfully.
	for {
		p, err := cs.CoreV1().Pods("shop").Create(ctx, pod("probe", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		must(err)
		if len(p.Spec.InitContainers) > 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the API server never injected a pod")
		case <-time.After(100 * time.Millisecond):
		}
	}

	web, err := cs.CoreV1().Pods("shop").Create(ctx, pod("web", nil), metav1.CreateOptions{})
	must(err)
	var containers []string
	for _, c := range web.Spec.InitContainers {
		containers = append(containers, c.Name)
	}
	if !slices.Equal(containers, []string{"meridian-init", "meridian-proxy", "migrate"}) {
		t.Fatalf("init containers %v", containers)
	}
	proxy := web.Spec.InitContainers[1]
	if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways ||
		proxy.Image != "ghcr.io/meridian-mesh/proxy:v0.9.0" || web.Spec.InitContainers[0].Image != "ghcr.io/meridian-mesh/proxy-init:v0.9.0" {
		t.Fatalf("meridian-proxy %+v", proxy)
	}
	for _, want := range []string{"--destination-addr=meridian-controller.meridian.svc.cluster.local:8086", "--log-level=debug", "--identity-trust-domain=cluster.local"} {
		if !slices.Contains(proxy.Args, want) {
			t.Fatalf("proxy args %q lack %q", proxy.Args, want)
		}
	}
	if len(proxy.Env) != 1 || proxy.Env[0].Name != names.EnvTrustAnchors || proxy.Env[0].Value != string(ca.RootsPEM()) {
		t.Fatalf("proxy env %+v", proxy.Env)
	}
	if web.Annotations[names.AnnotationProxyVersion] != "v0.9.0" {
		t.Fatalf("annotations %v", web.Annotations)
	}
	if !slices.ContainsFunc(web.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == inject.TokenVolumeName && v.Projected != nil && v.Projected.Sources[0].ServiceAccountToken.Audience == "identity.meridian.io"
	}) {
		t.Fatalf("volumes %+v", web.Spec.Volumes)
	}

	// Left alone: a pod annotated disabled, a pod in a namespace that does
	// not ask, and the control plane's own namespace.
	for ns, p := range map[string]*corev1.Pod{
		"shop":     pod("opted-out", map[string]string{names.AnnotationInject: names.InjectDisabled}),
		"plain":    pod("plain", nil),
		"meridian": pod("controller", map[string]string{names.AnnotationInject: names.InjectEnabled}),
	} {
		got, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		must(err)
		if len(got.Spec.InitContainers) != 1 || got.Annotations[names.AnnotationProxyVersion] != "" {
			t.Fatalf("%s/%s was injected", ns, p.Name)
		}
	}

	// A pod that asks with a bad annotation value is refused, with why.
	_, err = cs.CoreV1().Pods("shop").Create(ctx, pod("bad", map[string]string{names.AnnotationProxyCPULimit: "lots"}), metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), names.AnnotationProxyCPULimit) || !strings.Contains(err.Error(), `"lots"`) {
		t.Fatalf("bad annotation: %v", err)
	}
}
