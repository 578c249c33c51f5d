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

func caPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "backend CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// ancestor finds the entry of controller for Gateway ns/name.
func ancestor(p *gwv1.BackendTLSPolicy, controller gwv1.GatewayController, ns, name string) *gwv1.PolicyAncestorStatus {
	for i, a := range p.Status.Ancestors {
		if a.ControllerName == controller && string(a.AncestorRef.Name) == name && a.AncestorRef.Namespace != nil && string(*a.AncestorRef.Namespace) == ns {
			return &p.Status.Ancestors[i]
		}
	}
	return nil
}

// BackendTLSPolicy statuses against a real API server: each policy a
// Gateway's backends use gets an ancestor entry for that Gateway (Accepted
// and ResolvedRefs as the Gateway API's BackendTLSPolicy conformance tests
// expect, observedGeneration the policy's), next to another controller's
// entry, which is kept; the entry is written only on change (its
// transition times survive a spec change that keeps the conditions'
// statuses), and removed when the policy no longer applies to the
// Gateway's backends and when the Gateway is deleted.
func TestBackendTLSPolicyStatus(t *testing.T) {
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
	const ns = "tls"
	must(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))
	for _, name := range []string{"secure", "other"} {
		must(cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "https", Port: 443}}}}, metav1.CreateOptions{}))
	}
	must(cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "ca", Namespace: ns},
		Data: map[string]string{"ca.crt": caPEM(t)}}, metav1.CreateOptions{}))
	must(gc.GatewayV1().GatewayClasses().Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "meridian"},
		Spec: gwv1.GatewayClassSpec{ControllerName: gateway.ControllerName}}, metav1.CreateOptions{}))
	must(gc.GatewayV1().Gateways(ns).Create(ctx, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: ns},
		Spec: gwv1.GatewaySpec{GatewayClassName: "meridian", Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}}}}, metav1.CreateOptions{}))
	port := gwv1.PortNumber(443)
	backend := func(svc string) gwv1.HTTPRouteRule {
		return gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(svc), Port: &port}}}}}
	}
	must(gc.GatewayV1().HTTPRoutes(ns).Create(ctx, &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "edge"}}},
			Rules:           []gwv1.HTTPRouteRule{backend("secure"), backend("other")},
		}}, metav1.CreateOptions{}))
	policy := func(name, svc, cm string) *gwv1.BackendTLSPolicy {
		return &gwv1.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: gwv1.BackendTLSPolicySpec{
			TargetRefs: []gwv1.LocalPolicyTargetReferenceWithSectionName{{LocalPolicyTargetReference: gwv1.LocalPolicyTargetReference{Kind: "Service", Name: gwv1.ObjectName(svc)}}},
			Validation: gwv1.BackendTLSPolicyValidation{Hostname: "secure.example.com", CACertificateRefs: []gwv1.LocalObjectReference{{Kind: "ConfigMap", Name: gwv1.ObjectName(cm)}}},
		}}
	}
	good, err := gc.GatewayV1().BackendTLSPolicies(ns).Create(ctx, policy("good", "secure", "ca"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Another controller's entry, for its own Gateway: it must stay.
	otherNS := gwv1.Namespace(ns)
	theirs := gwv1.PolicyAncestorStatus{
		AncestorRef:    gwv1.ParentReference{Namespace: &otherNS, Name: "theirs"},
		ControllerName: "example.com/other",
		Conditions:     []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: metav1.Now()}},
	}
	good.Status.Ancestors = []gwv1.PolicyAncestorStatus{theirs}
	must(gc.GatewayV1().BackendTLSPolicies(ns).UpdateStatus(ctx, good, metav1.UpdateOptions{}))
	must(gc.GatewayV1().BackendTLSPolicies(ns).Create(ctx, policy("bad", "other", "missing"), metav1.CreateOptions{}))

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
	// Pending is short and the Gateway never gets a ready proxy (no
	// kubelet): it is reconciled every 200ms throughout.
	r := New(Options{Store: st, Kube: cs, Gateway: gc, Proxy: proxy, Log: log, Synced: synced, Pending: 200 * time.Millisecond})
	recCtx, stopRec := context.WithCancel(ctx)
	recDone := make(chan error, 1)
	go func() { recDone <- r.Start(recCtx) }()
	defer func() { stopRec(); <-recDone }()

	get := func(name string) *gwv1.BackendTLSPolicy {
		t.Helper()
		p, err := gc.GatewayV1().BackendTLSPolicies(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// ours checks our entry's conditions and their observedGeneration.
	ours := func(p *gwv1.BackendTLSPolicy, accepted, refs metav1.ConditionStatus, acceptedReason, refsReason string) error {
		a := ancestor(p, gateway.ControllerName, ns, "edge")
		if a == nil {
			return fmt.Errorf("no ancestor entry of ours in %+v", p.Status.Ancestors)
		}
		if a.AncestorRef.Kind == nil || *a.AncestorRef.Kind != "Gateway" || a.AncestorRef.Group == nil || *a.AncestorRef.Group != gwv1.GroupName {
			return fmt.Errorf("ancestorRef %+v is not a Gateway", a.AncestorRef)
		}
		if err := want(a.Conditions, "Accepted", accepted, acceptedReason); err != nil {
			return err
		}
		if err := want(a.Conditions, "ResolvedRefs", refs, refsReason); err != nil {
			return err
		}
		for _, c := range a.Conditions {
			if c.ObservedGeneration != p.Generation {
				return fmt.Errorf("%s observedGeneration %d, the policy's generation %d", c.Type, c.ObservedGeneration, p.Generation)
			}
		}
		return nil
	}
	eventually(t, "the good policy is accepted for the Gateway", func() error {
		return ours(get("good"), metav1.ConditionTrue, metav1.ConditionTrue, "Accepted", "ResolvedRefs")
	})
	eventually(t, "the bad policy is refused for the Gateway", func() error {
		return ours(get("bad"), metav1.ConditionFalse, metav1.ConditionFalse, "NoValidCACertificate", "InvalidCACertificateRef")
	})
	p := get("good")
	if a := ancestor(p, "example.com/other", ns, "theirs"); a == nil || len(p.Status.Ancestors) != 2 {
		t.Fatalf("the other controller's entry was not kept: %+v", p.Status.Ancestors)
	}

	// Reconciled again and again: nothing changed, nothing is written.
	rv := p.ResourceVersion
	time.Sleep(time.Second)
	if p2 := get("good"); p2.ResourceVersion != rv {
		t.Fatalf("the status was rewritten without a change: %+v", p2.Status.Ancestors)
	}

	// A spec change: observedGeneration follows, the transition times of
	// unchanged conditions stay.
	before := *condition(ancestor(p, gateway.ControllerName, ns, "edge").Conditions, "Accepted")
	p.Spec.Validation.Hostname = "other.example.com"
	must(gc.GatewayV1().BackendTLSPolicies(ns).Update(ctx, p, metav1.UpdateOptions{}))
	eventually(t, "observedGeneration follows the spec", func() error {
		return ours(get("good"), metav1.ConditionTrue, metav1.ConditionTrue, "Accepted", "ResolvedRefs")
	})
	after := *condition(ancestor(get("good"), gateway.ControllerName, ns, "edge").Conditions, "Accepted")
	if !after.LastTransitionTime.Equal(&before.LastTransitionTime) {
		t.Fatalf("Accepted stayed True but its lastTransitionTime moved from %v to %v", before.LastTransitionTime, after.LastTransitionTime)
	}

	// The missing ConfigMap appears: the bad policy is accepted.
	must(cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "missing", Namespace: ns},
		Data: map[string]string{"ca.crt": caPEM(t)}}, metav1.CreateOptions{}))
	eventually(t, "the fixed policy is accepted", func() error {
		return ours(get("bad"), metav1.ConditionTrue, metav1.ConditionTrue, "Accepted", "ResolvedRefs")
	})

	// The route stops using Service secure: the good policy no longer
	// applies to the Gateway; its entry goes, the other controller's stays.
	rt, err := gc.GatewayV1().HTTPRoutes(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rt.Spec.Rules = []gwv1.HTTPRouteRule{backend("other")}
	must(gc.GatewayV1().HTTPRoutes(ns).Update(ctx, rt, metav1.UpdateOptions{}))
	eventually(t, "the unused policy's entry is removed", func() error {
		p := get("good")
		if len(p.Status.Ancestors) != 1 || ancestor(p, "example.com/other", ns, "theirs") == nil {
			return fmt.Errorf("ancestors %+v, want only the other controller's", p.Status.Ancestors)
		}
		return nil
	})

	// The Gateway is deleted: its entries go.
	must(nil, gc.GatewayV1().Gateways(ns).Delete(ctx, "edge", metav1.DeleteOptions{}))
	eventually(t, "the deleted Gateway's entry is removed", func() error {
		if p := get("bad"); len(p.Status.Ancestors) != 0 {
			return fmt.Errorf("ancestors %+v", p.Status.Ancestors)
		}
		return nil
	})
}
