package provision

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

func gateway(name string, ports ...gatewayv1.PortNumber) *gatewayv1.Gateway {
	gw := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "edge", UID: "uid-1"},
		Spec:       gatewayv1.GatewaySpec{GatewayClassName: "meridian"},
	}
	for i, p := range ports {
		proto := gatewayv1.HTTPProtocolType
		if p == 443 {
			proto = gatewayv1.HTTPSProtocolType
		}
		gw.Spec.Listeners = append(gw.Spec.Listeners, gatewayv1.Listener{Name: gatewayv1.SectionName("l" + string(rune('a'+i))), Port: p, Protocol: proto})
	}
	return gw
}

func config() inject.Config {
	cfg := inject.DefaultConfig("v1.0.0", "meridian")
	cfg.TrustAnchorsPEM = "anchors"
	return cfg
}

// A UDP listener's Service port is UDP (udp-<port>), the others' TCP; a
// number served over both (DNS) is two Service ports.
func TestRenderUDPPorts(t *testing.T) {
	gw := gateway("dns", 80)
	gw.Spec.Listeners = append(gw.Spec.Listeners,
		gatewayv1.Listener{Name: "dns", Port: 53, Protocol: gatewayv1.UDPProtocolType},
		gatewayv1.Listener{Name: "dns-tcp", Port: 53, Protocol: gatewayv1.TCPProtocolType},
		gatewayv1.Listener{Name: "raw", Port: 9000, Protocol: gatewayv1.TCPProtocolType})
	objs, err := Render(gw, Params{}, config())
	if err != nil {
		t.Fatal(err)
	}
	want := []corev1.ServicePort{
		{Name: "tcp-53", Port: 53, Protocol: corev1.ProtocolTCP},
		{Name: "udp-53", Port: 53, Protocol: corev1.ProtocolUDP},
		{Name: "http-80", Port: 80, Protocol: corev1.ProtocolTCP},
		{Name: "tcp-9000", Port: 9000, Protocol: corev1.ProtocolTCP},
	}
	got := objs.Service.Spec.Ports
	if len(got) != len(want) {
		t.Fatalf("service ports %+v, want %+v", got, want)
	}
	for i, w := range want {
		if got[i].Name != w.Name || got[i].Port != w.Port || got[i].Protocol != w.Protocol || got[i].TargetPort.IntValue() != int(w.Port) {
			t.Errorf("service port %d: %+v, want %s %d/%s targeting %d", i, got[i], w.Name, w.Port, w.Protocol, w.Port)
		}
	}
}

func TestRender(t *testing.T) {
	gw := gateway("public", 443, 80, 80) // two listeners share port 80 by hostname
	gw.Spec.Infrastructure = &gatewayv1.GatewayInfrastructure{
		Labels:      map[gatewayv1.LabelKey]gatewayv1.LabelValue{"team": "edge"},
		Annotations: map[gatewayv1.AnnotationKey]gatewayv1.AnnotationValue{"example.com/owner": "edge-team"},
	}
	objs, err := Render(gw, Params{}, config())
	if err != nil {
		t.Fatal(err)
	}
	svc, dep, sa := objs.Service, objs.Deployment, objs.ServiceAccount
	if svc.Name != "public-meridian" || dep.Name != svc.Name || sa.Name != svc.Name || svc.Namespace != "edge" {
		t.Fatalf("names %s %s %s in %s", svc.Name, dep.Name, sa.Name, svc.Namespace)
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		t.Fatalf("default Service type %s, want LoadBalancer", svc.Spec.Type)
	}
	if len(svc.Spec.Ports) != 2 || svc.Spec.Ports[0].Port != 80 || svc.Spec.Ports[1].Port != 443 || svc.Spec.Ports[1].TargetPort.IntValue() != 443 {
		t.Fatalf("service ports %+v, want 80 and 443 once each", svc.Spec.Ports)
	}
	for _, m := range []metav1.ObjectMeta{svc.ObjectMeta, dep.ObjectMeta, sa.ObjectMeta, dep.Spec.Template.ObjectMeta} {
		if m.Labels["team"] != "edge" || m.Annotations["example.com/owner"] != "edge-team" || m.Labels[gatewayv1.GatewayNameLabelKey] != "public" {
			t.Fatalf("%q: labels %v annotations %v: the infrastructure's and the gateway-name label must be on every object", m.Name, m.Labels, m.Annotations)
		}
	}
	for _, m := range []metav1.ObjectMeta{svc.ObjectMeta, dep.ObjectMeta, sa.ObjectMeta} {
		if len(m.OwnerReferences) != 1 || m.OwnerReferences[0].Kind != "Gateway" || m.OwnerReferences[0].UID != "uid-1" || !*m.OwnerReferences[0].Controller {
			t.Fatalf("%s owner %+v, want the Gateway as controller", m.Name, m.OwnerReferences)
		}
	}
	if got := svc.Spec.Selector[gatewayv1.GatewayNameLabelKey]; got != "public" || dep.Spec.Template.Labels[gatewayv1.GatewayNameLabelKey] != "public" {
		t.Fatalf("selector %v", svc.Spec.Selector)
	}
	if got := dep.Spec.Template.Annotations["meridian.io/inject"]; got != "disabled" {
		t.Fatalf("pod template meridian.io/inject %q, want disabled: the gateway is its own proxy", got)
	}
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	if pod.ServiceAccountName != "public-meridian" || !strings.Contains(strings.Join(c.Args, " "), "--gateway-name=edge/public") || c.Image != inject.ProxyImageRepo+":v1.0.0" {
		t.Fatalf("pod: sa %s, args %v, image %s", pod.ServiceAccountName, c.Args, c.Image)
	}

	// The admin port follows the cluster's default inbound policy, as a
	// sidecar's.
	cfg := config()
	cfg.DefaultInboundPolicy, cfg.ClusterNetworks = "all-authenticated", "10.0.0.0/8"
	objs, err = Render(gw, Params{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(objs.Deployment.Spec.Template.Spec.Containers[0].Args, " ")
	if !strings.Contains(args, "--default-inbound-policy=all-authenticated") || !strings.Contains(args, "--cluster-networks=10.0.0.0/8") {
		t.Fatalf("args %s: no policy", args)
	}
}

func TestParams(t *testing.T) {
	p, err := Params{}.Merge(map[string]string{ParamServiceType: "NodePort", ParamExternalTrafficPolicy: "Local", ParamReplicas: "2"}, "GatewayClass meridian")
	if err != nil {
		t.Fatal(err)
	}
	p, err = p.Merge(map[string]string{ParamServiceType: "ClusterIP"}, "Gateway edge/public")
	if err != nil {
		t.Fatal(err)
	}
	if p.ServiceType != corev1.ServiceTypeClusterIP || p.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal || p.Replicas != 2 {
		t.Fatalf("merged %+v", p)
	}
	objs, err := Render(gateway("public", 80), p, config())
	if err != nil {
		t.Fatal(err)
	}
	if objs.Service.Spec.ExternalTrafficPolicy != "" || *objs.Deployment.Spec.Replicas != 2 {
		t.Fatalf("ClusterIP service with policy %q, replicas %d", objs.Service.Spec.ExternalTrafficPolicy, *objs.Deployment.Spec.Replicas)
	}
	gw := gateway("public", 80)
	gw.Annotations = map[string]string{AnnotationServiceType: "NodePort"}
	if objs, err = Render(gw, p, config()); err != nil || objs.Service.Spec.Type != corev1.ServiceTypeNodePort || objs.Service.Spec.ExternalTrafficPolicy != "Local" {
		t.Fatalf("annotation: %v %+v", err, objs.Service)
	}

	for _, tc := range []struct {
		data map[string]string
		want string
	}{
		{map[string]string{ParamServiceType: "ExternalName"}, `GatewayClass meridian: data.serviceType: "ExternalName" is not ClusterIP, NodePort or LoadBalancer`},
		{map[string]string{ParamExternalTrafficPolicy: "local"}, `data.externalTrafficPolicy: "local" is not Cluster or Local`},
		{map[string]string{ParamReplicas: "0"}, `data.replicas: "0" is not a number of replicas from 1 to 100`},
		{map[string]string{"service-type": "ClusterIP"}, `data.service-type: unknown key`},
		{map[string]string{ParamMaxConnections: "0"}, `data.maxConnections: "0" is not a number of connections from 1 to 10000000, or -1 for no bound`},
		{map[string]string{ParamMaxConnections: "many"}, `data.maxConnections: "many" is not a number`},
		{map[string]string{ParamEventLoop: "off"}, `data.eventLoop: "off" is not true or false`},
		{map[string]string{ParamDefaultInboundPolicy: "allow"}, `data.defaultInboundPolicy: "allow" is not all-unauthenticated, cluster-unauthenticated, all-authenticated, cluster-authenticated or deny`},
	} {
		if _, err := (Params{}).Merge(tc.data, "GatewayClass meridian"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Merge(%v) = %v, want %q", tc.data, err, tc.want)
		}
	}
	gw.Annotations[AnnotationServiceType] = "Public"
	if _, err := Render(gw, Params{}, config()); err == nil || !strings.Contains(err.Error(), "Gateway edge/public: metadata.annotations[gateway.meridian.io/service-type]") {
		t.Fatalf("bad annotation: %v", err)
	}
}

// Names are DNS labels whatever the Gateway's name, and distinct for
// distinct long names.
func TestName(t *testing.T) {
	long := strings.Repeat("a", 100)
	a, b := Name(long), Name(long+"b")
	if len(a) > 63 || len(b) > 63 || a == b || !strings.HasSuffix(a, "-meridian") {
		t.Fatalf("%q (%d) %q (%d)", a, len(a), b, len(b))
	}
	if Name("web") != "web-meridian" {
		t.Fatal(Name("web"))
	}
}

// The API server accepts what Render makes (its own validation of
// Deployments, Services and ServiceAccounts).
func TestRenderAccepted(t *testing.T) {
	cfg := apiserver.Start(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	gw := gateway(strings.Repeat("g", 80), 80, 443, 8443)
	gw.Spec.Infrastructure = &gatewayv1.GatewayInfrastructure{Labels: map[gatewayv1.LabelKey]gatewayv1.LabelValue{"team": "edge"}}
	for _, p := range []Params{{}, {ServiceType: corev1.ServiceTypeNodePort, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal}} {
		objs, err := Render(gw, p, config())
		if err != nil {
			t.Fatal(err)
		}
		// Owner references to a Gateway that does not exist here are
		// accepted (the garbage collector is not running).
		if _, err := cs.CoreV1().ServiceAccounts("edge").Create(ctx, objs.ServiceAccount, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatalf("ServiceAccount: %v", err)
		}
		if _, err := cs.AppsV1().Deployments("edge").Create(ctx, objs.Deployment, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatalf("Deployment: %v", err)
		}
		if _, err := cs.CoreV1().Services("edge").Create(ctx, objs.Service, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatalf("Service %+v: %v", p, err)
		}
	}
}

// A listener added or removed changes the Service, never the pod template:
// the proxies follow the snapshot, and no gateway pod is rolled (which
// would drop its connections) for a config change.
func TestListenersDoNotRollPods(t *testing.T) {
	one, err := Render(gateway("public", 80), Params{}, config())
	if err != nil {
		t.Fatal(err)
	}
	two, err := Render(gateway("public", 80, 443), Params{}, config())
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(one.Deployment.Spec.Template, two.Deployment.Spec.Template) {
		t.Errorf("adding a listener changed the pod template:\n%+v\n%+v", one.Deployment.Spec.Template, two.Deployment.Spec.Template)
	}
	if len(two.Service.Spec.Ports) != 2 {
		t.Errorf("service ports %+v, want the two listeners'", two.Service.Spec.Ports)
	}
}

// The ports of the Gateway's ListenerSets join its own on the Service
// (each once); the pod template does not change.
func TestListenerSetPorts(t *testing.T) {
	one, err := Render(gateway("public", 80), Params{}, config())
	if err != nil {
		t.Fatal(err)
	}
	two, err := Render(gateway("public", 80), Params{}, config(), Port{80, gatewayv1.HTTPProtocolType}, Port{8443, gatewayv1.HTTPSProtocolType})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range two.Service.Spec.Ports {
		got = append(got, fmt.Sprintf("%s %d->%s", p.Name, p.Port, p.TargetPort.String()))
	}
	if want := []string{"http-80 80->80", "https-8443 8443->8443"}; !slices.Equal(got, want) {
		t.Errorf("service ports %q, want %q", got, want)
	}
	if !equality.Semantic.DeepEqual(one.Deployment.Spec.Template, two.Deployment.Spec.Template) {
		t.Error("a ListenerSet's port changed the pod template")
	}
}

// spec.addresses: IPAddress entries are pinned on the Service (cluster IPs,
// one per family; a load balancer's one loadBalancerIP), the others are
// named as not usable; any other type is unsupported.
func TestRenderAddresses(t *testing.T) {
	ip, host, fake := gatewayv1.IPAddressType, gatewayv1.HostnameAddressType, gatewayv1.AddressType("test/fake-invalid-type")
	addr := func(typ *gatewayv1.AddressType, v string) gatewayv1.GatewaySpecAddress {
		return gatewayv1.GatewaySpecAddress{Type: typ, Value: v}
	}
	for _, c := range []struct {
		name        string
		svcType     corev1.ServiceType
		addrs       []gatewayv1.GatewaySpecAddress
		clusterIPs  []string
		dual        bool
		lbIP        string
		unusable    []string
		any         bool
		unsupported string
	}{
		{"none", corev1.ServiceTypeClusterIP, nil, nil, false, "", nil, false, ""},
		{"one IPv4", corev1.ServiceTypeClusterIP, []gatewayv1.GatewaySpecAddress{addr(&ip, "10.96.0.250")}, []string{"10.96.0.250"}, false, "", nil, false, ""},
		{"type defaults to IPAddress", corev1.ServiceTypeNodePort, []gatewayv1.GatewaySpecAddress{addr(nil, "fd00::a")}, []string{"fd00::a"}, false, "", nil, false, ""},
		{"dual stack", corev1.ServiceTypeClusterIP, []gatewayv1.GatewaySpecAddress{addr(&ip, "fd00::a"), addr(&ip, "10.96.0.250")}, []string{"fd00::a", "10.96.0.250"}, true, "", nil, false, ""},
		{"two IPv4", corev1.ServiceTypeClusterIP, []gatewayv1.GatewaySpecAddress{addr(&ip, "192.0.2.1"), addr(&ip, "10.96.0.250")}, []string{"192.0.2.1"}, false, "",
			[]string{"Gateway edge/gw: spec.addresses[1]: 10.96.0.250: a Service has one cluster IP per IP family, IPv4 already"}, false, ""},
		{"no value: any", corev1.ServiceTypeClusterIP, []gatewayv1.GatewaySpecAddress{addr(&ip, "")}, nil, false, "", nil, true, ""},
		{"load balancer", corev1.ServiceTypeLoadBalancer, []gatewayv1.GatewaySpecAddress{addr(&ip, "203.0.113.7"), addr(&ip, "fd00::a")}, nil, false, "203.0.113.7",
			[]string{"Gateway edge/gw: spec.addresses[1]: fd00::a: a LoadBalancer Service is given one requested address (spec.loadBalancerIP), 203.0.113.7 already"}, false, ""},
		{"hostname", corev1.ServiceTypeLoadBalancer, []gatewayv1.GatewaySpecAddress{addr(&ip, "203.0.113.7"), addr(&host, "gw.example.com")}, nil, false, "", nil, false,
			`Gateway edge/gw: spec.addresses[1]: type "Hostname" is not supported (allowed: IPAddress)`},
		{"fake type", corev1.ServiceTypeClusterIP, []gatewayv1.GatewaySpecAddress{addr(&fake, "fake address teehee!")}, nil, false, "", nil, false,
			`Gateway edge/gw: spec.addresses[0]: type "test/fake-invalid-type" is not supported (allowed: IPAddress)`},
		{"not an IP", corev1.ServiceTypeClusterIP, []gatewayv1.GatewaySpecAddress{addr(&ip, "10.0.0.300")}, nil, false, "", nil, false,
			`Gateway edge/gw: spec.addresses[0]: value "10.0.0.300" is not an IP address`},
	} {
		t.Run(c.name, func(t *testing.T) {
			gw := gateway("gw", 80)
			gw.Spec.Addresses = c.addrs
			objs, err := Render(gw, Params{ServiceType: c.svcType}, config())
			if c.unsupported != "" {
				var ue *UnsupportedAddressError
				if !errors.As(err, &ue) || err.Error() != c.unsupported {
					t.Fatalf("error %v, want UnsupportedAddressError %q", err, c.unsupported)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			spec := objs.Service.Spec
			if !slices.Equal(spec.ClusterIPs, c.clusterIPs) || (len(c.clusterIPs) > 0) != (spec.ClusterIP != "") || len(c.clusterIPs) > 0 && spec.ClusterIP != c.clusterIPs[0] {
				t.Errorf("clusterIP %q clusterIPs %v, want %v", spec.ClusterIP, spec.ClusterIPs, c.clusterIPs)
			}
			if dual := spec.IPFamilyPolicy != nil && *spec.IPFamilyPolicy == corev1.IPFamilyPolicyRequireDualStack; dual != c.dual {
				t.Errorf("ipFamilyPolicy %v, dual stack wanted %v", spec.IPFamilyPolicy, c.dual)
			}
			if spec.LoadBalancerIP != c.lbIP {
				t.Errorf("loadBalancerIP %q, want %q", spec.LoadBalancerIP, c.lbIP)
			}
			if !slices.Equal(objs.Addresses.Unusable, c.unusable) || objs.Addresses.Any != c.any {
				t.Errorf("unusable %q any %v, want %q %v", objs.Addresses.Unusable, objs.Addresses.Any, c.unusable, c.any)
			}
		})
	}
}

// Cluster IPs are immutable: Mismatch says when the Service must be
// created again.
func TestAddressesMismatch(t *testing.T) {
	svc := func(ips ...string) *corev1.Service {
		return &corev1.Service{Spec: corev1.ServiceSpec{ClusterIPs: ips}}
	}
	a := Addresses{Pinned: []netip.Addr{netip.MustParseAddr("10.96.0.250")}}
	if m := a.Mismatch(svc("10.96.0.250"), corev1.ServiceTypeClusterIP); m != "" {
		t.Errorf("same IP: %q", m)
	}
	if m := a.Mismatch(svc("10.96.0.12"), corev1.ServiceTypeNodePort); m != "cluster IPs 10.96.0.12, requested 10.96.0.250" {
		t.Errorf("other IP: %q", m)
	}
	if m := a.Mismatch(svc("10.96.0.12"), corev1.ServiceTypeLoadBalancer); m != "" {
		t.Errorf("a load balancer's address is not its cluster IP: %q", m)
	}
	if m := (Addresses{}).Mismatch(svc("10.96.0.12"), corev1.ServiceTypeClusterIP); m != "" {
		t.Errorf("nothing pinned: %q", m)
	}
}

// The connection bound and the admin port's default inbound policy reach
// the proxy's flags: the parameters' policy over the cluster's, which
// applies when the parameters set none; the namespace's annotation is
// read as for injected pods.
func TestParamsProxyFlags(t *testing.T) {
	flags := func(p Params) string {
		t.Helper()
		cfg := config()
		cfg.DefaultInboundPolicy = "all-unauthenticated"
		objs, err := Render(gateway("public", 80), p, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(objs.Deployment.Spec.Template.Spec.Containers[0].Args, " ")
	}
	p, err := Params{}.Merge(map[string]string{ParamMaxConnections: "500", ParamDefaultInboundPolicy: "cluster-authenticated"}, "GatewayClass meridian")
	if err != nil {
		t.Fatal(err)
	}
	if a := flags(p); !strings.Contains(a, "--max-connections=500") || !strings.Contains(a, "--default-inbound-policy=cluster-authenticated") ||
		strings.Contains(a, "all-unauthenticated") {
		t.Errorf("parameters' flags: %s", a)
	}
	if p, err = p.Merge(map[string]string{ParamMaxConnections: "-1"}, "Gateway edge/public"); err != nil || !strings.Contains(flags(p), "--max-connections=-1") {
		t.Errorf("no bound: %v %s", err, flags(p))
	}
	if p, err = p.Merge(map[string]string{ParamEventLoop: "false"}, "Gateway edge/public"); err != nil || !strings.Contains(flags(p), "--event-loop=false") {
		t.Errorf("event loop off: %v %s", err, flags(p))
	}
	if a := flags(Params{}); strings.Contains(a, "--max-connections") || strings.Contains(a, "--event-loop") || !strings.Contains(a, "--default-inbound-policy=all-unauthenticated") {
		t.Errorf("defaults: %s", a)
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "edge", Annotations: map[string]string{names.AnnotationDefaultInbound: "deny"}}}
	if v, err := NamespacePolicy(ns); v != "deny" || err != nil {
		t.Errorf("NamespacePolicy = %q, %v", v, err)
	}
	ns.Annotations[names.AnnotationDefaultInbound] = "open"
	if _, err := NamespacePolicy(ns); err == nil || !strings.Contains(err.Error(), `Namespace edge: metadata.annotations[config.meridian.io/default-inbound-policy]: "open" is not`) {
		t.Errorf("bad annotation: %v", err)
	}
	if v, err := NamespacePolicy(&corev1.Namespace{}); v != "" || err != nil {
		t.Errorf("none: %q, %v", v, err)
	}
}
