package webhook

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"sync"
	"testing"
	"time"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/meridian-mesh/meridian/test/apiserver"
)

const (
	testNS     = "meridian"
	testSecret = "meridian-proxy-injector-tls"
	testConfig = "meridian-proxy-injector"
)

var testHosts = Hosts("meridian-controller", testNS, "cluster.local")

func webhookConfig(n int) *admissionregv1.MutatingWebhookConfiguration {
	cfg := &admissionregv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: testConfig}}
	for i := range n {
		cfg.Webhooks = append(cfg.Webhooks, admissionregv1.MutatingWebhook{
			Name:                    []string{"inject.meridian.io", "other.meridian.io"}[i],
			ClientConfig:            admissionregv1.WebhookClientConfig{URL: ptr.To("https://127.0.0.1:1/inject")},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregv1.Ignore),
		})
	}
	return cfg
}

func keeper(cs kubernetes.Interface) *Certs {
	return &Certs{Client: cs, Namespace: testNS, Secret: testSecret, WebhookConfig: testConfig, Hosts: testHosts}
}

func certsOf(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

// checkServing verifies that c serves a leaf for the hosts that chains to
// the Secret's ca.crt, and that every webhook trusts that CA.
func checkServing(t *testing.T, ctx context.Context, cs kubernetes.Interface, c *Certs) *corev1.Secret {
	t.Helper()
	sec, err := cs.CoreV1().Secrets(testNS).Get(ctx, testSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sec.Type != corev1.SecretTypeTLS || len(sec.Data["tls.key"]) == 0 {
		t.Fatalf("secret type %s, keys %d", sec.Type, len(sec.Data))
	}
	crt, err := c.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(crt.Certificate[0])
	if !bytes.Equal(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}), sec.Data["tls.crt"]) {
		t.Fatal("the served leaf is not the Secret's")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(sec.Data["ca.crt"]) {
		t.Fatal("ca.crt has no certificate")
	}
	for _, h := range testHosts {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: h}); err != nil {
			t.Fatalf("leaf for %s: %v", h, err)
		}
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Fatalf("leaf lifetime %v", d)
	}
	cfg, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, testConfig, metav1.GetOptions{})
	if err == nil {
		for _, w := range cfg.Webhooks {
			if !bytes.Equal(w.ClientConfig.CABundle, sec.Data["ca.crt"]) {
				t.Fatalf("webhook %s caBundle is not ca.crt", w.Name)
			}
		}
	}
	if !bytes.Equal(c.CABundle(), sec.Data["ca.crt"]) {
		t.Fatal("CABundle() is not ca.crt")
	}
	return sec
}

func writes(cs *fake.Clientset) (n int) {
	for _, a := range cs.Actions() {
		switch a.GetVerb() {
		case "create", "update", "patch":
			n++
		}
	}
	return n
}

func TestCertsCreateAndPatch(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(webhookConfig(2))
	c := keeper(cs)
	if _, err := c.GetCertificate(nil); err == nil {
		t.Fatal("a certificate before Sync")
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	checkServing(t, ctx, cs, c)
	// In sync: a second Sync writes nothing.
	before := writes(cs)
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := writes(cs); n != before {
		t.Fatalf("a Sync in steady state wrote %d times", n-before)
	}
	// A re-applied configuration without the caBundle gets it back.
	cfg := webhookConfig(2)
	cfg.ResourceVersion = ""
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, cfg, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	checkServing(t, ctx, cs, c)
}

func TestCertsNoWebhookConfig(t *testing.T) {
	cs := fake.NewClientset()
	c := keeper(cs)
	if err := c.Sync(context.Background()); !errors.Is(err, ErrNoWebhookConfig) {
		t.Fatalf("Sync without a configuration: %v", err)
	}
	checkServing(t, context.Background(), cs, c)
	c.WebhookConfig = ""
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Another replica creates the Secret between our Get and our Create: we
// use theirs.
func TestCertsCreateRace(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(webhookConfig(1))
	other := keeper(fake.NewClientset())
	other.WebhookConfig = ""
	if err := other.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	theirs, _ := other.Client.CoreV1().Secrets(testNS).Get(ctx, testSecret, metav1.GetOptions{})
	raced := false
	cs.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if raced {
			return false, nil, nil
		}
		raced = true
		if err := cs.Tracker().Add(theirs.DeepCopy()); err != nil {
			t.Fatal(err)
		}
		return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "secrets"}, testSecret)
	})
	c := keeper(cs)
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	sec := checkServing(t, ctx, cs, c)
	if !raced || !bytes.Equal(sec.Data["tls.crt"], theirs.Data["tls.crt"]) {
		t.Fatal("did not adopt the other replica's certificate")
	}
}

// A certificate within 30 days of expiry is renewed; ca.crt keeps the old
// CA after the new one, so that replicas still serving the old leaf stay
// trusted. A conflict on the update is retried.
func TestCertsRenew(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(webhookConfig(1))
	old := keeper(cs)
	old.Now = func() time.Time { return time.Now().Add(-355 * 24 * time.Hour) } // expires in 10 days
	if err := old.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	oldSec, _ := cs.CoreV1().Secrets(testNS).Get(ctx, testSecret, metav1.GetOptions{})
	conflicted := false
	cs.PrependReactor("update", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if conflicted {
			return false, nil, nil
		}
		conflicted = true
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, testSecret, nil)
	})
	c := keeper(cs)
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	sec := checkServing(t, ctx, cs, c)
	if !conflicted || bytes.Equal(sec.Data["tls.crt"], oldSec.Data["tls.crt"]) {
		t.Fatal("not renewed")
	}
	cas := certsOf(t, sec.Data["ca.crt"])
	oldCA := certsOf(t, oldSec.Data["ca.crt"])[0]
	if len(cas) != 2 || !cas[1].Equal(oldCA) {
		t.Fatalf("ca.crt has %d certificates; want the new CA, then the old", len(cas))
	}
	// A leaf that does not cover the hosts (the namespace changed) is
	// replaced too.
	moved := keeper(cs)
	moved.Hosts = Hosts("meridian-controller", "elsewhere", "cluster.local")
	if err := moved.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	crt, _ := moved.GetCertificate(nil)
	leaf, _ := x509.ParseCertificate(crt.Certificate[0])
	if leaf.VerifyHostname("meridian-controller.elsewhere.svc") != nil {
		t.Fatalf("leaf names %v", leaf.DNSNames)
	}
}

// Against a real API server: replicas racing to create the Secret end up
// serving one certificate, and Run keeps the caBundle of a configuration
// created (and later overwritten) after it started, polling (a short
// resync here; a minute by default).
func TestCertsKube(t *testing.T) {
	cfg := apiserver.Start(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	replicas := make([]*Certs, 4)
	var wg sync.WaitGroup
	errs := make([]error, len(replicas))
	for i := range replicas {
		replicas[i] = keeper(cs)
		wg.Go(func() { errs[i] = replicas[i].Sync(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil && !errors.Is(err, ErrNoWebhookConfig) {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	first, _ := replicas[0].GetCertificate(nil)
	for i, r := range replicas {
		crt, _ := r.GetCertificate(nil)
		if !bytes.Equal(crt.Certificate[0], first.Certificate[0]) {
			t.Fatalf("replica %d serves another certificate", i)
		}
		checkServing(t, ctx, cs, r)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); replicas[0].Run(runCtx, 100*time.Millisecond) }()
	defer func() { stop(); <-done }()
	waitBundle := func(what string) {
		t.Helper()
		for {
			cfg, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, testConfig, metav1.GetOptions{})
			if err == nil && len(cfg.Webhooks) > 0 && bytes.Equal(cfg.Webhooks[0].ClientConfig.CABundle, replicas[0].CABundle()) {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: the caBundle was not patched", what)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, webhookConfig(2), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBundle("created after start")
	// kubectl apply of a manifest with an empty caBundle.
	wc, _ := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, testConfig, metav1.GetOptions{})
	for i := range wc.Webhooks {
		wc.Webhooks[i].ClientConfig.CABundle = nil
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, wc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBundle("overwritten")
	checkServing(t, ctx, cs, replicas[0])
}
