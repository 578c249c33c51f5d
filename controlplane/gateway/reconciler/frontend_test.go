package reconciler

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/meridian-mesh/meridian/controlplane/compile/gateway"
	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/controlplane/store/kube"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// The Gateway's spec.tls.frontend against a real API server (the CRD's
// validation and defaulting, the Kubernetes source's CA ConfigMaps): an
// HTTPS listener whose CA ConfigMap is missing is refused
// (NoValidCACertificate, InvalidCACertificateRef) and accepted once the
// ConfigMap exists; AllowInsecureFallback puts
// InsecureFrontendValidationMode on the Gateway, and AllowValidOnly
// removes it.
func TestFrontendValidationStatus(t *testing.T) {
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
	const ns = "fe"
	must(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))
	crt, key := certAndKey(t)
	must(cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cert", Namespace: ns}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}}, metav1.CreateOptions{}))
	must(gc.GatewayV1().GatewayClasses().Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "meridian"},
		Spec: gwv1.GatewayClassSpec{ControllerName: gateway.ControllerName}}, metav1.CreateOptions{}))
	must(gc.GatewayV1().Gateways(ns).Create(ctx, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: ns},
		Spec: gwv1.GatewaySpec{
			GatewayClassName: "meridian",
			TLS: &gwv1.GatewayTLSConfig{Frontend: &gwv1.FrontendTLSConfig{Default: gwv1.TLSConfig{Validation: &gwv1.FrontendTLSValidation{
				CACertificateRefs: []gwv1.ObjectReference{{Kind: "ConfigMap", Name: "clients-ca"}},
			}}}},
			Listeners: []gwv1.Listener{{Name: "https", Port: 443, Protocol: gwv1.HTTPSProtocolType,
				TLS: &gwv1.ListenerTLSConfig{CertificateRefs: []gwv1.SecretObjectReference{{Name: "cert"}}}}},
		}}, metav1.CreateOptions{}))

	st := store.New()
	log := slog.New(slog.DiscardHandler)
	srcCtx, stopSrc := context.WithCancel(ctx)
	srcDone := make(chan error, 1)
	synced := make(chan struct{})
	go func() {
		srcDone <- kube.Run(srcCtx, cfg, st, kube.WithGatewayAPI(), kube.WithLogger(log), kube.WithReady(func() { close(synced) }))
	}()
	defer func() { stopSrc(); <-srcDone }()
	proxy := inject.DefaultConfig("v1.0.0", "meridian")
	proxy.TrustAnchorsPEM = "anchors"
	r := New(Options{Store: st, Kube: cs, Gateway: gc, Proxy: proxy, Log: log, Synced: synced, Pending: 200 * time.Millisecond})
	recCtx, stopRec := context.WithCancel(ctx)
	recDone := make(chan error, 1)
	go func() { recDone <- r.Start(recCtx) }()
	defer func() { stopRec(); <-recDone }()

	get := func() *gwv1.Gateway {
		t.Helper()
		g, err := gc.GatewayV1().Gateways(ns).Get(ctx, "edge", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	listener := func(g *gwv1.Gateway) []metav1.Condition {
		for _, l := range g.Status.Listeners {
			if l.Name == "https" {
				return l.Conditions
			}
		}
		return nil
	}
	if m := get().Spec.TLS.Frontend.Default.Validation.Mode; m != gwv1.AllowValidOnly {
		t.Errorf("the CRD defaulted mode to %q, want AllowValidOnly", m)
	}
	eventually(t, "a missing CA ConfigMap refuses the listener", func() error {
		cs := listener(get())
		if err := want(cs, "Accepted", metav1.ConditionFalse, "NoValidCACertificate"); err != nil {
			return err
		}
		return want(cs, "ResolvedRefs", metav1.ConditionFalse, "InvalidCACertificateRef")
	})
	must(cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "clients-ca", Namespace: ns},
		Data: map[string]string{"ca.crt": caPEM(t)}}, metav1.CreateOptions{}))
	eventually(t, "the CA ConfigMap's creation accepts the listener", func() error {
		cs := listener(get())
		if err := want(cs, "Accepted", metav1.ConditionTrue, "Accepted"); err != nil {
			return err
		}
		return want(cs, "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")
	})
	if c := condition(get().Status.Conditions, "InsecureFrontendValidationMode"); c != nil {
		t.Errorf("InsecureFrontendValidationMode %+v under AllowValidOnly", c)
	}

	setMode := func(m gwv1.FrontendValidationModeType) {
		t.Helper()
		g := get()
		g.Spec.TLS.Frontend.Default.Validation.Mode = m
		must(gc.GatewayV1().Gateways(ns).Update(ctx, g, metav1.UpdateOptions{}))
	}
	setMode(gwv1.AllowInsecureFallback)
	eventually(t, "AllowInsecureFallback marks the Gateway", func() error {
		g := get()
		if err := want(g.Status.Conditions, "InsecureFrontendValidationMode", metav1.ConditionTrue, "ConfigurationChanged"); err != nil {
			return err
		}
		if c := condition(g.Status.Conditions, "InsecureFrontendValidationMode"); c.ObservedGeneration != g.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", c.ObservedGeneration, g.Generation)
		}
		return nil
	})
	setMode(gwv1.AllowValidOnly)
	eventually(t, "AllowValidOnly removes the mark", func() error {
		if c := condition(get().Status.Conditions, "InsecureFrontendValidationMode"); c != nil {
			return fmt.Errorf("still %+v", c)
		}
		return nil
	})
}

// certAndKey is a self-signed server certificate and its key, PEM.
func certAndKey(t *testing.T) (crt, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "edge"}, DNSNames: []string{"edge.example.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}
