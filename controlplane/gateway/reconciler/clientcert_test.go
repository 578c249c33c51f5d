package reconciler

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
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

// The Gateway's spec.tls.backend.clientCertificateRef against a real API
// server: a missing Secret makes the Gateway's ResolvedRefs False
// (InvalidClientCertificateRef) while it stays Accepted; the Secret's
// creation, seen through the Kubernetes source, turns it True.
func TestGatewayBackendClientCertificateStatus(t *testing.T) {
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
	const ns = "edge"
	must(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))
	must(gc.GatewayV1().GatewayClasses().Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "meridian"},
		Spec: gwv1.GatewayClassSpec{ControllerName: gateway.ControllerName}}, metav1.CreateOptions{}))
	must(gc.GatewayV1().Gateways(ns).Create(ctx, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: ns},
		Spec: gwv1.GatewaySpec{GatewayClassName: "meridian", Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}},
			TLS: &gwv1.GatewayTLSConfig{Backend: &gwv1.GatewayBackendTLS{ClientCertificateRef: &gwv1.SecretObjectReference{Name: "client"}}}}}, metav1.CreateOptions{}))

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

	gwConds := func(typ string, s metav1.ConditionStatus, reason string) func() error {
		return func() error {
			g, err := gc.GatewayV1().Gateways(ns).Get(ctx, "gw", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if err := want(g.Status.Conditions, "Accepted", metav1.ConditionTrue, "Accepted"); err != nil {
				return err
			}
			return want(g.Status.Conditions, typ, s, reason)
		}
	}
	eventually(t, "missing client certificate Secret", gwConds("ResolvedRefs", metav1.ConditionFalse, "InvalidClientCertificateRef"))

	crt, key := clientKeyPair(t)
	must(cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "client", Namespace: ns}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}}, metav1.CreateOptions{}))
	eventually(t, "client certificate Secret created", gwConds("ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs"))
}

func clientKeyPair(t *testing.T) (crt, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gateway client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
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
