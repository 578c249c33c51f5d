package check

import (
	"bytes"
	"context"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/controlplane/inject/webhook"
	"github.com/meridian-mesh/meridian/internal/names"
)

// The dry-run check sees what the API server does with a user's pod: with
// the real injector answering, the pod comes back with the proxy; with it
// gone and failurePolicy Ignore, the pod comes back unmeshed and the check
// fails; with failurePolicy Fail, the API server's refusal is the error.
// The webhook is on a URL (loopback): the API server here cannot reach a
// Service.
func TestWebhookDryRun(t *testing.T) {
	_, cfg := sharedEnv(t)
	kube := kubernetes.NewForConfigOrDie(cfg)
	ctx := testCtx(t)
	ns, app := uniq("dry-cp"), uniq("dry-app")
	createNS(t, kube, ns)
	_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: app, Labels: map[string]string{"check-dry-run": app}}}, metav1.CreateOptions{})
	must(t, err)

	selector := map[string]string{"check-dry-run": "nothing-yet"}
	policy := admissionv1.Ignore
	var url string
	configure := func() {
		t.Helper()
		// The injector patches the caBundle meanwhile: retry on a conflict.
		must(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
			c, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, names.WebhookConfigName, metav1.GetOptions{})
			if err != nil {
				c = &admissionv1.MutatingWebhookConfiguration{
					ObjectMeta: metav1.ObjectMeta{Name: names.WebhookConfigName},
					Webhooks: []admissionv1.MutatingWebhook{{
						Name: names.WebhookName,
						Rules: []admissionv1.RuleWithOperations{{
							Operations: []admissionv1.OperationType{admissionv1.Create},
							Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
						}},
						SideEffects:             ptr.To(admissionv1.SideEffectClassNone),
						AdmissionReviewVersions: []string{"v1"},
					}},
				}
			}
			wh := &c.Webhooks[0]
			wh.ClientConfig.URL = ptr.To(url)
			wh.NamespaceSelector = &metav1.LabelSelector{MatchLabels: selector}
			wh.FailurePolicy = ptr.To(policy)
			if c.ResourceVersion == "" {
				_, err = kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, c, metav1.CreateOptions{})
			} else {
				_, err = kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, c, metav1.UpdateOptions{})
			}
			return err
		}))
	}
	t.Cleanup(func() {
		_ = kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), names.WebhookConfigName, metav1.DeleteOptions{})
	})

	o := Options{RESTConfig: cfg, Namespace: ns}
	checks, err := Groups(o, GroupWebhook)
	must(t, err)
	var dry []Check
	for _, c := range checks {
		if c.Description == dryRunCheck {
			dry = append(dry, c)
		}
	}
	if len(dry) != 1 {
		t.Fatalf("no check %q in group %s", dryRunCheck, GroupWebhook)
	}

	// Nothing listens on this URL yet.
	url = "https://127.0.0.1:1/inject"
	configure()
	expect(t, runChecks(t, o, Runner{}, dry), dryRunCheck, Warning, "no namespace matches the namespaceSelector", "check-dry-run=nothing-yet")

	selector = map[string]string{"check-dry-run": app}
	configure()
	expect(t, runChecks(t, o, Runner{}, dry), dryRunCheck, Error,
		"a dry-run pod in namespace "+app+" annotated meridian.io/inject=enabled came back without the meridian-proxy container", "failurePolicy Ignore")

	// The real injector, which writes its serving certificate's CA into
	// the configuration's caBundle.
	now := time.Now()
	anchor := newCert(t, "root.meridian.cluster.local", nil, true, now.Add(-day), now.Add(3650*day))
	icfg := inject.DefaultConfig("v1.2.3", ns)
	icfg.TrustAnchorsPEM = string(anchor.certPEM())
	addr := make(chan string, 1)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- webhook.Run(runCtx, webhook.Options{Addr: "127.0.0.1:0", Client: kube, Namespace: ns,
			Secret: names.WebhookSecretName, Config: names.WebhookConfigName, Hosts: []string{"127.0.0.1"}, Inject: icfg}, func(a string) { addr <- a })
	}()
	stopped := false
	stopInjector := func() {
		if !stopped {
			stopped = true
			stop()
			must(t, <-done)
		}
	}
	defer stopInjector()
	select {
	case a := <-addr:
		url = "https://" + a + "/inject"
	case err := <-done:
		t.Fatalf("webhook: %v", err)
	}
	configure()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, names.WebhookConfigName, metav1.GetOptions{})
		must(t, err)
		sec, err := kube.CoreV1().Secrets(ns).Get(ctx, names.WebhookSecretName, metav1.GetOptions{})
		if err == nil && len(c.Webhooks[0].ClientConfig.CABundle) > 0 && bytes.Equal(c.Webhooks[0].ClientConfig.CABundle, sec.Data["ca.crt"]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the injector did not write its caBundle")
		}
		time.Sleep(50 * time.Millisecond)
	}
	expect(t, runChecks(t, o, Runner{}, dry), dryRunCheck, Success)
	// A dry run stores nothing.
	pods, err := kube.CoreV1().Pods(app).List(ctx, metav1.ListOptions{})
	must(t, err)
	if len(pods.Items) != 0 {
		t.Fatalf("the dry run left %d pods in %s", len(pods.Items), app)
	}

	// The injector gone, and failurePolicy Fail: the API server refuses.
	stopInjector()
	policy = admissionv1.Fail
	configure()
	expect(t, runChecks(t, o, Runner{}, dry), dryRunCheck, Error, "a dry-run pod in namespace "+app+" was refused", "failed calling webhook")
}
