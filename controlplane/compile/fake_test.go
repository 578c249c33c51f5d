package compile_test

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// fakeReader is a store.Reader over plain maps, for table tests.
type fakeReader struct {
	services   map[store.Key]*corev1.Service
	slices     map[store.Key][]*discoveryv1.EndpointSlice
	pods       map[store.Key]*corev1.Pod
	namespaces map[string]*corev1.Namespace
	profiles   map[store.Key]*v1alpha1.ServiceProfile
	splits     map[store.Key][]store.TrafficSplit
	workloads  map[store.Key][]store.Workload
	httpRoutes map[store.Key][]*gwv1.HTTPRoute
	grpcRoutes map[store.Key][]*gwv1.GRPCRoute
	grants     []*gwv1.ReferenceGrant
	rollouts   map[store.Key][]*v1alpha1.Rollout
}

func newFake() *fakeReader {
	return &fakeReader{
		services:   map[store.Key]*corev1.Service{},
		slices:     map[store.Key][]*discoveryv1.EndpointSlice{},
		pods:       map[store.Key]*corev1.Pod{},
		namespaces: map[string]*corev1.Namespace{},
		profiles:   map[store.Key]*v1alpha1.ServiceProfile{},
		splits:     map[store.Key][]store.TrafficSplit{},
		workloads:  map[store.Key][]store.Workload{},
	}
}

func (f *fakeReader) Service(k store.Key) (*corev1.Service, bool) {
	s, ok := f.services[k]
	return s, ok
}

func (f *fakeReader) ServiceByClusterIP(ip string) (store.Key, bool) {
	for k, s := range f.services {
		if s.Spec.ClusterIP == ip {
			return k, true
		}
		for _, c := range s.Spec.ClusterIPs {
			if c == ip {
				return k, true
			}
		}
	}
	return store.Key{}, false
}

func (f *fakeReader) EndpointSlices(k store.Key) []*discoveryv1.EndpointSlice { return f.slices[k] }

func (f *fakeReader) Pod(k store.Key) (*corev1.Pod, bool) {
	p, ok := f.pods[k]
	return p, ok
}

func (f *fakeReader) Namespace(name string) (*corev1.Namespace, bool) {
	n, ok := f.namespaces[name]
	return n, ok
}

func (f *fakeReader) ServiceProfile(k store.Key) (*v1alpha1.ServiceProfile, bool) {
	p, ok := f.profiles[k]
	return p, ok
}

func (f *fakeReader) TrafficSplits(k store.Key) []store.TrafficSplit { return f.splits[k] }

func (f *fakeReader) Workloads(k store.Key) []store.Workload { return f.workloads[k] }

func (f *fakeReader) MeshHTTPRoutes(k store.Key) []*gwv1.HTTPRoute { return f.httpRoutes[k] }

func (f *fakeReader) MeshGRPCRoutes(k store.Key) []*gwv1.GRPCRoute { return f.grpcRoutes[k] }

func (f *fakeReader) ReferenceGrants() []*gwv1.ReferenceGrant { return f.grants }

func (f *fakeReader) Rollouts(k store.Key) []*v1alpha1.Rollout { return f.rollouts[k] }

// indexedReader adds compile.ServiceIndex.
type indexedReader struct{ *fakeReader }

func (f indexedReader) ServiceNamespaces(name string) []string {
	var out []string
	for k := range f.services {
		if k.Name == name {
			out = append(out, k.Namespace)
		}
	}
	sort.Strings(out)
	return out
}

// Builders.

func svc(ns, name, clusterIP string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{ClusterIP: clusterIP, Ports: ports},
	}
}

func port(name string, p int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: p, TargetPort: target, Protocol: corev1.ProtocolTCP}
}

func (f *fakeReader) addService(s *corev1.Service) *fakeReader {
	f.services[store.Key{Namespace: s.Namespace, Name: s.Name}] = s
	return f
}

type ep struct {
	ip    string
	ready *bool
	pod   string
	zone  string
}

func slice(ns, svcName, name string, at discoveryv1.AddressType, ports map[string]int32, eps ...ep) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
		AddressType: at,
	}
	names := make([]string, 0, len(ports))
	for n := range ports {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		n, p := n, ports[n]
		tcp := corev1.ProtocolTCP
		sl.Ports = append(sl.Ports, discoveryv1.EndpointPort{Name: &n, Port: &p, Protocol: &tcp})
	}
	for _, e := range eps {
		de := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}}
		if e.pod != "" {
			de.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: e.pod}
		}
		if e.zone != "" {
			z := e.zone
			de.Zone = &z
		}
		sl.Endpoints = append(sl.Endpoints, de)
	}
	return sl
}

func (f *fakeReader) addSlice(sl *discoveryv1.EndpointSlice) *fakeReader {
	k := store.Key{Namespace: sl.Namespace, Name: sl.Labels[discoveryv1.LabelServiceName]}
	f.slices[k] = append(f.slices[k], sl)
	return f
}

func pod(ns, name, sa string, meshed bool, ann map[string]string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app"}}},
	}
	if meshed {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "meridian-proxy"})
	}
	return p
}

func (f *fakeReader) addPod(p *corev1.Pod) *fakeReader {
	f.pods[store.Key{Namespace: p.Namespace, Name: p.Name}] = p
	return f
}

func ptr[T any](v T) *T { return &v }
