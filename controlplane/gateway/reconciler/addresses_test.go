package reconciler

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/meridian-mesh/meridian/controlplane/compile/gateway"
	"github.com/meridian-mesh/meridian/controlplane/gateway/provision"
	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// Static addresses (spec.addresses) against a real API server, the steps
// of the upstream GatewayStaticAddresses test and more: an unsupported
// type is refused (Accepted False, UnsupportedAddress); addresses the API
// server will not give the Service (outside its range, already allocated)
// leave the Gateway accepted but not programmed (AddressNotUsable, with
// the API server's reason); a usable one becomes the Service's cluster IP
// and the only status address; another one recreates the Service (cluster
// IPs are immutable); removing it keeps the Service. A LoadBalancer
// Service gets its spec.loadBalancerIP, and the status waits for the
// provider to give it.
func TestStaticAddresses(t *testing.T) {
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
	must(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}, metav1.CreateOptions{}))
	must(gc.GatewayV1().GatewayClasses().Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "meridian"},
		Spec: gwv1.GatewayClassSpec{ControllerName: gateway.ControllerName}}, metav1.CreateOptions{}))

	// The API server's Service range, from a Service it allocated; one
	// address in it taken by another Service.
	probe, err := cs.CoreV1().Services("edge").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "probe"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in := netip.MustParseAddr(probe.Spec.ClusterIP)
	if !in.Is4() {
		t.Fatalf("cluster IP %s: this test expects an IPv4 range", in)
	}
	// envtest's range is 10.0.0.0/24: addresses near its top are free.
	base := in.As4()
	at := func(last byte) string { return netip.AddrFrom4([4]byte{base[0], base[1], base[2], last}).String() }
	taken, usable, other, outside := at(240), at(250), at(251), "192.0.2.10"
	must(cs.CoreV1().Services("edge").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "taken"},
		Spec: corev1.ServiceSpec{ClusterIP: taken, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{}))

	ipType, fake := gwv1.IPAddressType, gwv1.AddressType("test/fake-invalid-type")
	gwSpec := func(addrs ...gwv1.GatewaySpecAddress) gwv1.GatewaySpec {
		return gwv1.GatewaySpec{GatewayClassName: "meridian", Addresses: addrs,
			Listeners: []gwv1.Listener{{Name: "http", Port: 8080, Protocol: gwv1.HTTPProtocolType}}}
	}
	ip := func(v string) gwv1.GatewaySpecAddress { return gwv1.GatewaySpecAddress{Type: &ipType, Value: v} }
	must(gc.GatewayV1().Gateways("edge").Create(ctx, &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "static", Namespace: "edge", Annotations: map[string]string{provision.AnnotationServiceType: "ClusterIP"}},
		Spec:       gwSpec(gwv1.GatewaySpecAddress{Type: &fake, Value: "fake address teehee!"}, ip(outside), ip(usable)),
	}, metav1.CreateOptions{}))

	st, log := syncedStore(t, ctx, cfg)
	proxy := inject.DefaultConfig("v1.0.0", "meridian")
	proxy.TrustAnchorsPEM = "anchors"
	r := New(Options{Store: st, Kube: cs, Gateway: gc, Proxy: proxy, Log: log, Pending: 200 * time.Millisecond})
	recCtx, stopRec := context.WithCancel(ctx)
	recDone := make(chan error, 1)
	go func() { recDone <- r.Start(recCtx) }()
	defer func() { stopRec(); <-recDone }()

	name := provision.Name("static")
	// gateway waits until Gateway gw's status, of its latest generation,
	// passes check.
	gateway := func(what, gw string, check func(g *gwv1.Gateway) error) *gwv1.Gateway {
		t.Helper()
		var g *gwv1.Gateway
		eventually(t, what, func() error {
			var err error
			if g, err = gc.GatewayV1().Gateways("edge").Get(ctx, gw, metav1.GetOptions{}); err != nil {
				return err
			}
			if c := condition(g.Status.Conditions, "Accepted"); c == nil || c.ObservedGeneration != g.Generation {
				return fmt.Errorf("status of generation %v, want %d", c, g.Generation)
			}
			return check(g)
		})
		return g
	}
	setAddresses := func(gw string, addrs ...gwv1.GatewaySpecAddress) {
		t.Helper()
		patch := fmt.Sprintf(`{"spec":{"addresses":%s}}`, jsonOf(t, addrs))
		must(gc.GatewayV1().Gateways("edge").Patch(ctx, gw, types.MergePatchType, []byte(patch), metav1.PatchOptions{}))
	}
	notUsable := func(reason string) func(g *gwv1.Gateway) error {
		return func(g *gwv1.Gateway) error {
			if err := want(g.Status.Conditions, "Accepted", metav1.ConditionTrue, "Accepted"); err != nil {
				return err
			}
			if err := want(g.Status.Conditions, "Programmed", metav1.ConditionFalse, "AddressNotUsable"); err != nil {
				return err
			}
			if m := condition(g.Status.Conditions, "Programmed").Message; !strings.Contains(m, reason) {
				return fmt.Errorf("Programmed message %q does not say %q", m, reason)
			}
			if len(g.Status.Addresses) != 0 {
				return fmt.Errorf("status addresses %+v, want none", g.Status.Addresses)
			}
			return nil
		}
	}
	addressed := func(want ...string) func(g *gwv1.Gateway) error {
		return func(g *gwv1.Gateway) error {
			var have []string
			for _, a := range g.Status.Addresses {
				if a.Type == nil || *a.Type != gwv1.IPAddressType {
					return fmt.Errorf("status address %+v is not of type IPAddress", a)
				}
				have = append(have, a.Value)
			}
			if !slices.Equal(have, want) {
				return fmt.Errorf("status addresses %v, want %v (conditions %+v)", have, want, g.Status.Conditions)
			}
			return nil
		}
	}

	gateway("an unsupported address type is refused", "static", func(g *gwv1.Gateway) error {
		if err := want(g.Status.Conditions, "Accepted", metav1.ConditionFalse, "UnsupportedAddress"); err != nil {
			return err
		}
		if m := condition(g.Status.Conditions, "Accepted").Message; !strings.Contains(m, `spec.addresses[0]: type "test/fake-invalid-type" is not supported (allowed: IPAddress)`) {
			return fmt.Errorf("message %q", m)
		}
		return nil
	})
	if _, err := cs.CoreV1().Services("edge").Get(ctx, name, metav1.GetOptions{}); err == nil {
		t.Fatal("a Gateway that is not accepted got a Service")
	}

	// An address outside the Service range: the API server's own reason.
	setAddresses("static", ip(outside), ip(usable))
	g := gateway("an address outside the Service range is not usable", "static", notUsable("failed to allocate IP "+outside))
	if m := condition(g.Status.Conditions, "Programmed").Message; !strings.Contains(m, "spec.addresses[1]: "+usable+": a Service has one cluster IP per IP family") {
		t.Errorf("Programmed message %q does not name the second IPv4 address", m)
	}
	setAddresses("static", ip(taken))
	gateway("an allocated address is not usable", "static", notUsable("failed to allocate IP "+taken+": provided IP is already allocated"))

	setAddresses("static", ip(usable))
	gateway("a usable address is the only status address", "static", func(g *gwv1.Gateway) error {
		if err := want(g.Status.Conditions, "Programmed", metav1.ConditionFalse, "Pending"); err != nil {
			return err // no kubelet: no ready proxy
		}
		return addressed(usable)(g)
	})
	svc, err := cs.CoreV1().Services("edge").Get(ctx, name, metav1.GetOptions{})
	if err != nil || svc.Spec.ClusterIP != usable {
		t.Fatalf("Service cluster IP %q (%v), want %s", svc.Spec.ClusterIP, err, usable)
	}
	// No kubelet here: a ready proxy is written by hand.
	dep, err := cs.AppsV1().Deployments("edge").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dep.Status.Replicas, dep.Status.ReadyReplicas = 1, 1
	must(cs.AppsV1().Deployments("edge").UpdateStatus(ctx, dep, metav1.UpdateOptions{}))
	gateway("the Gateway is programmed on its static address", "static", func(g *gwv1.Gateway) error {
		if err := want(g.Status.Conditions, "Programmed", metav1.ConditionTrue, "Programmed"); err != nil {
			return err
		}
		return addressed(usable)(g)
	})

	// Another address: the Service is created again with it.
	setAddresses("static", ip(other))
	gateway("another address recreates the Service", "static", addressed(other))
	svc2, err := cs.CoreV1().Services("edge").Get(ctx, name, metav1.GetOptions{})
	if err != nil || svc2.Spec.ClusterIP != other || svc2.UID == svc.UID {
		t.Fatalf("Service %s cluster IP %q (%v), want a new one with %s", svc2.UID, svc2.Spec.ClusterIP, err, other)
	}
	// An address the cluster cannot give: the Service, and its clients,
	// keep the one it has (a dry run asked first).
	setAddresses("static", ip(outside))
	gateway("an unusable address leaves the Service as it is", "static", notUsable("failed to allocate IP "+outside))
	if s, err := cs.CoreV1().Services("edge").Get(ctx, name, metav1.GetOptions{}); err != nil || s.UID != svc2.UID || s.Spec.ClusterIP != other {
		t.Fatalf("Service %s cluster IP %q (%v), want %s %s kept", s.UID, s.Spec.ClusterIP, err, svc2.UID, other)
	}
	// No address asked for: the Service keeps the one it has.
	must(gc.GatewayV1().Gateways("edge").Patch(ctx, "static", types.MergePatchType, []byte(`{"spec":{"addresses":null}}`), metav1.PatchOptions{}))
	gateway("without spec.addresses the Service keeps its address", "static", addressed(other))
	if svc3, err := cs.CoreV1().Services("edge").Get(ctx, name, metav1.GetOptions{}); err != nil || svc3.UID != svc2.UID {
		t.Fatalf("Service replaced (%v)", err)
	}

	// A LoadBalancer Service: spec.loadBalancerIP, and the status waits
	// for the provider (written by hand here) to give that address.
	lbIP := "203.0.113.7"
	must(gc.GatewayV1().Gateways("edge").Create(ctx, &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: "lb", Namespace: "edge"}, Spec: gwSpec(ip(lbIP)),
	}, metav1.CreateOptions{}))
	gateway("a load balancer's address is not assigned yet", "lb", func(g *gwv1.Gateway) error {
		if err := want(g.Status.Conditions, "Programmed", metav1.ConditionFalse, "AddressNotAssigned"); err != nil {
			return err
		}
		return addressed()(g) // not the cluster IP: the requested address only
	})
	lbName := provision.Name("lb")
	lbSvc, err := cs.CoreV1().Services("edge").Get(ctx, lbName, metav1.GetOptions{})
	if err != nil || lbSvc.Spec.Type != corev1.ServiceTypeLoadBalancer || lbSvc.Spec.LoadBalancerIP != lbIP {
		t.Fatalf("Service %s loadBalancerIP %q (%v), want %s", lbSvc.Spec.Type, lbSvc.Spec.LoadBalancerIP, err, lbIP)
	}
	setIngress := func(ip string) {
		t.Helper()
		s, err := cs.CoreV1().Services("edge").Get(ctx, lbName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
		must(cs.CoreV1().Services("edge").UpdateStatus(ctx, s, metav1.UpdateOptions{}))
	}
	setIngress("198.51.100.1")
	gateway("a provider that gives another address", "lb", notUsable("the load balancer has 198.51.100.1, not the requested "+lbIP))
	setIngress(lbIP)
	gateway("the provider gives the requested address", "lb", addressed(lbIP))
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
