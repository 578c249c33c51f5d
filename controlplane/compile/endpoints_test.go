package compile_test

import (
	"fmt"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/internal/names"
)

// summary is an endpoint in one comparable line.
func summary(e compile.Endpoint) string {
	return fmt.Sprintf("%s w=%d id=%s zone=%s proto=%s pod=%s", e.Addr, e.Weight, e.Identity, e.Zone, e.Protocol, e.Labels["pod"])
}

func summaries(es []compile.Endpoint) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, summary(e))
	}
	return out
}

func emojivoto() *fakeReader {
	f := newFake().
		addService(svc("emojivoto", "web-svc", "10.96.0.10",
			port("http", 80, intstr.FromString("http")),
			port("admin", 9990, intstr.FromInt32(9990)))).
		addSlice(slice("emojivoto", "web-svc", "web-svc-abc", discoveryv1.AddressTypeIPv4,
			map[string]int32{"http": 8080, "admin": 9990},
			ep{ip: "10.0.0.2", pod: "web-2", zone: "z2"},
			ep{ip: "10.0.0.1", pod: "web-1", zone: "z1", ready: ptr(true)},
			ep{ip: "10.0.0.3", pod: "web-3", ready: ptr(false)})).
		addSlice(slice("emojivoto", "web-svc", "web-svc-def", discoveryv1.AddressTypeIPv4,
			map[string]int32{"http": 8080, "admin": 9990},
			ep{ip: "10.0.0.10", pod: "web-10"},
			ep{ip: "10.0.0.2", pod: "web-2", zone: "z2"})). // overlap during a slice update
		addSlice(slice("emojivoto", "web-svc", "web-svc-v6", discoveryv1.AddressTypeIPv6,
			map[string]int32{"http": 8080},
			ep{ip: "fd00::2", pod: "web-2"})).
		addPod(pod("emojivoto", "web-1", "web", true, nil)).
		addPod(pod("emojivoto", "web-2", "", false, map[string]string{names.AnnotationProxyVersion: "v1"})).
		addPod(pod("emojivoto", "web-10", "web", false, nil))
	return f
}

func TestEndpoints(t *testing.T) {
	o := compile.Options{TrustDomain: "example.org"}
	for _, tc := range []struct {
		name      string
		f         func() *fakeReader
		authority string
		o         compile.Options
		exists    bool
		want      []string
		warn      bool
	}{
		{
			name: "ready endpoints, deduplicated, sorted, identities, zones", f: emojivoto,
			authority: "web-svc.emojivoto.svc.cluster.local:80", exists: true,
			want: []string{
				"10.0.0.1:8080 w=1 id=spiffe://example.org/ns/emojivoto/sa/web zone=z1 proto=h2 pod=web-1",
				"10.0.0.2:8080 w=1 id=spiffe://example.org/ns/emojivoto/sa/default zone=z2 proto=h2 pod=web-2",
				"10.0.0.10:8080 w=1 id= zone= proto= pod=web-10",
			},
		},
		{
			name: "second port maps by name", f: emojivoto,
			authority: "10.96.0.10:9990", exists: true,
			want: []string{
				"10.0.0.1:9990 w=1 id=spiffe://example.org/ns/emojivoto/sa/web zone=z1 proto=h2 pod=web-1",
				"10.0.0.2:9990 w=1 id=spiffe://example.org/ns/emojivoto/sa/default zone=z2 proto=h2 pod=web-2",
				"10.0.0.10:9990 w=1 id= zone= proto= pod=web-10",
			},
		},
		{
			name: "unknown port: exists, no endpoints", f: emojivoto,
			authority: "web-svc.emojivoto:81", exists: true, want: []string{}, warn: true,
		},
		{
			name: "unknown service", f: emojivoto,
			authority: "nope.emojivoto:80", exists: false, want: []string{}, warn: true,
		},
		{
			name: "ipv6 service uses the ipv6 slices",
			f: func() *fakeReader {
				f := emojivoto()
				f.services[store.Key{Namespace: "emojivoto", Name: "web-svc"}].Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
				return f
			},
			authority: "web-svc.emojivoto:80", exists: true,
			want: []string{"[fd00::2]:8080 w=1 id=spiffe://example.org/ns/emojivoto/sa/default zone= proto=h2 pod=web-2"},
		},
		{
			name: "opaque service port (service annotation)",
			f: func() *fakeReader {
				f := emojivoto()
				f.services[store.Key{Namespace: "emojivoto", Name: "web-svc"}].Annotations = map[string]string{names.AnnotationOpaquePorts: "80"}
				return f
			},
			authority: "web-svc.emojivoto:80", exists: true,
			want: []string{
				"10.0.0.1:8080 w=1 id=spiffe://example.org/ns/emojivoto/sa/web zone=z1 proto=opaque pod=web-1",
				"10.0.0.2:8080 w=1 id=spiffe://example.org/ns/emojivoto/sa/default zone=z2 proto=opaque pod=web-2",
				"10.0.0.10:8080 w=1 id= zone= proto=opaque pod=web-10",
			},
		},
		{
			name: "opaque by port name; namespace annotation overridden by service's",
			f: func() *fakeReader {
				f := emojivoto()
				f.namespaces["emojivoto"] = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "emojivoto", Annotations: map[string]string{names.AnnotationOpaquePorts: "80"}}}
				f.services[store.Key{Namespace: "emojivoto", Name: "web-svc"}].Annotations = map[string]string{names.AnnotationOpaquePorts: "admin"}
				return f
			},
			authority: "web-svc.emojivoto:9990", exists: true,
			want: []string{
				"10.0.0.1:9990 w=1 id=spiffe://example.org/ns/emojivoto/sa/web zone=z1 proto=opaque pod=web-1",
				"10.0.0.2:9990 w=1 id=spiffe://example.org/ns/emojivoto/sa/default zone=z2 proto=opaque pod=web-2",
				"10.0.0.10:9990 w=1 id= zone= proto=opaque pod=web-10",
			},
		},
		{
			name: "namespace annotation: service port and pods' target ports",
			f: func() *fakeReader {
				f := emojivoto()
				f.namespaces["emojivoto"] = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "emojivoto", Annotations: map[string]string{names.AnnotationOpaquePorts: "8080"}}}
				// web-2 overrides the namespace default with its own annotation.
				f.pods[store.Key{Namespace: "emojivoto", Name: "web-2"}].Annotations[names.AnnotationOpaquePorts] = "3306"
				return f
			},
			authority: "web-svc.emojivoto:80", exists: true,
			want: []string{
				"10.0.0.1:8080 w=1 id=spiffe://example.org/ns/emojivoto/sa/web zone=z1 proto=opaque pod=web-1",
				"10.0.0.2:8080 w=1 id=spiffe://example.org/ns/emojivoto/sa/default zone=z2 proto=h2 pod=web-2",
				"10.0.0.10:8080 w=1 id= zone= proto=opaque pod=web-10",
			},
		},
		{
			name: "default opaque ports apply without annotations",
			f: func() *fakeReader {
				f := emojivoto()
				f.addService(svc("db", "mysql", "10.96.1.1", port("mysql", 3306, intstr.FromInt32(3306))))
				f.addSlice(slice("db", "mysql", "mysql-1", discoveryv1.AddressTypeIPv4, map[string]int32{"mysql": 3306}, ep{ip: "10.1.0.1"}))
				return f
			},
			o:         compile.Options{TrustDomain: "example.org", DefaultOpaquePorts: compile.MustParsePorts("25,3306")},
			authority: "mysql.db:3306", exists: true,
			want: []string{"10.1.0.1:3306 w=1 id= zone= proto=opaque pod="},
		},
		{
			name: "registered workloads (local mode) join the slices",
			f: func() *fakeReader {
				f := emojivoto()
				k := store.Key{Namespace: "emojivoto", Name: "web-svc"}
				f.workloads[k] = []store.Workload{
					{Name: "web-local", Namespace: "emojivoto", Service: "web-svc", ServiceAccount: "web", Address: "127.0.0.1:4143", AppPort: 8080},
					{Name: "web-any", Namespace: "emojivoto", Service: "web-svc", Address: "127.0.0.2:4143"},
					{Name: "web-admin", Namespace: "emojivoto", Service: "web-svc", Address: "127.0.0.3:4143", AppPort: 9990},
					{Name: "web-bad", Namespace: "emojivoto", Service: "web-svc", Address: "nowhere"},
				}
				return f
			},
			o:         compile.Options{TrustDomain: "example.org", Local: true},
			authority: "web-svc.emojivoto:80", exists: true, warn: true,
			want: []string{
				"10.0.0.1:8080 w=1 id=spiffe://example.org/ns/emojivoto/sa/web zone=z1 proto=h2 pod=web-1",
				"10.0.0.2:8080 w=1 id=spiffe://example.org/ns/emojivoto/sa/default zone=z2 proto=h2 pod=web-2",
				"10.0.0.10:8080 w=1 id= zone= proto= pod=web-10",
				"127.0.0.1:4143 w=1 id=spiffe://example.org/ns/emojivoto/sa/web zone= proto=h2 pod=web-local",
				"127.0.0.2:4143 w=1 id=spiffe://example.org/ns/emojivoto/sa/default zone= proto=h2 pod=web-any",
			},
		},
		{
			name: "local workloads without a Service object",
			f: func() *fakeReader {
				f := newFake()
				f.workloads[store.Key{Namespace: "demo", Name: "voting"}] = []store.Workload{
					{Name: "voting-2", Namespace: "demo", Service: "voting", ServiceAccount: "voting", Address: "127.0.0.1:5002", AppPort: 8080},
					{Name: "voting-1", Namespace: "demo", Service: "voting", ServiceAccount: "voting", Address: "127.0.0.1:5001", AppPort: 8080},
				}
				return f
			},
			o:         compile.Options{Local: true, DefaultNamespace: "demo"},
			authority: "voting:8080", exists: true,
			want: []string{
				"127.0.0.1:5001 w=1 id=spiffe://cluster.local/ns/demo/sa/voting zone= proto=h2 pod=voting-1",
				"127.0.0.1:5002 w=1 id=spiffe://cluster.local/ns/demo/sa/voting zone= proto=h2 pod=voting-2",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.o
			if reflect.DeepEqual(opts, compile.Options{}) {
				opts = o
			}
			got := compile.Endpoints(tc.f(), tc.authority, opts)
			if got.Exists != tc.exists {
				t.Fatalf("Exists = %v, want %v (warnings %v)", got.Exists, tc.exists, got.Warnings)
			}
			if s := summaries(got.Endpoints); !reflect.DeepEqual(s, tc.want) {
				t.Fatalf("endpoints:\n got %q\nwant %q", s, tc.want)
			}
			if (len(got.Warnings) > 0) != tc.warn {
				t.Fatalf("warnings = %q, want some: %v", got.Warnings, tc.warn)
			}
			if len(got.Deps) != 1 {
				t.Fatalf("deps = %v, want the service", got.Deps)
			}
		})
	}
}

func TestEndpointLabelsAndProto(t *testing.T) {
	f := emojivoto()
	p := f.pods[store.Key{Namespace: "emojivoto", Name: "web-1"}]
	p.Labels = map[string]string{"pod-template-hash": "5d9f"}
	p.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-5d9f", Controller: ptr(true)}}
	es := compile.Endpoints(f, "web-svc.emojivoto:80", compile.Options{})
	if want := map[string]string{"namespace": "emojivoto", "service": "web-svc"}; !reflect.DeepEqual(es.Labels, want) {
		t.Fatalf("set labels = %v, want %v", es.Labels, want)
	}
	e := es.Endpoints[0]
	want := map[string]string{"pod": "web-1", "serviceaccount": "web", "replicaset": "web-5d9f", "deployment": "web"}
	if !reflect.DeepEqual(e.Labels, want) {
		t.Fatalf("labels = %v, want %v", e.Labels, want)
	}
	wa := e.ToProto()
	if wa.GetAddr().GetIp() != "10.0.0.1" || wa.GetAddr().GetPort() != 8080 || wa.GetWeight() != 1 ||
		wa.GetProtocolHint() != pb.ProtocolHint_PROTOCOL_HINT_H2 || wa.GetZone() != "z1" ||
		wa.GetIdentity() != "spiffe://cluster.local/ns/emojivoto/sa/web" || wa.GetMetricLabels()["deployment"] != "web" {
		t.Fatalf("proto = %v", wa)
	}
}

// The same store gives the same answer, whatever the order of slices.
func TestEndpointsDeterministic(t *testing.T) {
	a := emojivoto()
	b := emojivoto()
	k := store.Key{Namespace: "emojivoto", Name: "web-svc"}
	s := b.slices[k]
	b.slices[k] = []*discoveryv1.EndpointSlice{s[2], s[1], s[0]}
	x := compile.Endpoints(a, "web-svc.emojivoto:80", compile.Options{})
	y := compile.Endpoints(b, "web-svc.emojivoto:80", compile.Options{})
	if !reflect.DeepEqual(x.Endpoints, y.Endpoints) {
		t.Fatalf("answers differ:\n%q\n%q", summaries(x.Endpoints), summaries(y.Endpoints))
	}
}

// A UDP Service port (a gateway UDP route's backend) resolves to its
// endpoints' UDP slice port; a number served over both TCP and UDP
// resolves to the TCP port's; a TCP port never takes a UDP slice port of
// the same name.
func TestEndpointsUDPPort(t *testing.T) {
	udpPort := func(name string, p int32) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: p, TargetPort: intstr.FromInt32(p), Protocol: corev1.ProtocolUDP}
	}
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	name := func(s string) *string { return &s }
	num := func(n int32) *int32 { return &n }
	sl := slice("infra", "dns", "dns-abc", discoveryv1.AddressTypeIPv4, nil, ep{ip: "10.0.1.1"}, ep{ip: "10.0.1.2"})
	sl.Ports = []discoveryv1.EndpointPort{
		{Name: name("dns"), Port: num(1053), Protocol: &udp},
		{Name: name("dns-tcp"), Port: num(2053), Protocol: &tcp},
		{Name: name("echo"), Port: num(8080), Protocol: &udp},
	}
	f := newFake().
		addService(svc("infra", "dns", "10.96.1.1", udpPort("dns", 53), port("dns-tcp", 53, intstr.FromInt32(2053)), udpPort("echo", 8080))).
		addSlice(sl)
	for authority, want := range map[string][]string{
		"dns.infra.svc.cluster.local:8080": {"10.0.1.1:8080", "10.0.1.2:8080"}, // UDP only
		"dns.infra.svc.cluster.local:53":   {"10.0.1.1:2053", "10.0.1.2:2053"}, // TCP and UDP: the TCP port's
	} {
		es := compile.Endpoints(f, authority, compile.Options{})
		var got []string
		for _, e := range es.Endpoints {
			got = append(got, e.Addr.String())
		}
		if !es.Exists || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: endpoints %q (exists %v, warnings %q), want %q", authority, got, es.Exists, es.Warnings, want)
		}
	}

	// A TCP service port named as the slice's UDP port finds no endpoints.
	f2 := newFake().addService(svc("infra", "dns", "10.96.1.1", port("echo", 8080, intstr.FromInt32(8080)))).addSlice(sl)
	if es := compile.Endpoints(f2, "dns.infra.svc.cluster.local:8080", compile.Options{}); len(es.Endpoints) != 0 {
		t.Errorf("TCP port 8080 got the UDP slice port's endpoints %v", summaries(es.Endpoints))
	}
}
