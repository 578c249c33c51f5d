package compile

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/internal/names"
)

// Protocol is a hint telling a client proxy how an endpoint wants to be
// spoken to. The values are those of the proxy's discovery package.
type Protocol string

// Protocol hints.
const (
	ProtocolDetect Protocol = ""       // detect / preserve the client's protocol
	ProtocolH2     Protocol = "h2"     // a meridian proxy: HTTP/2 between peers
	ProtocolOpaque Protocol = "opaque" // never detect: copy bytes
)

// DefaultWeight is every endpoint's weight. Weights are relative; they exist
// in the API for future zone-aware weighting.
const DefaultWeight = 1

// Endpoint is one address serving an authority.
type Endpoint struct {
	Addr   netip.AddrPort
	Weight uint32
	// Identity is the SPIFFE ID the endpoint's proxy presents; empty when
	// the endpoint is not meshed.
	Identity string
	Zone     string
	Protocol Protocol
	// Labels are metric labels of this endpoint: pod, serviceaccount and the
	// pod's owner (deployment, statefulset, daemonset, job, replicaset).
	Labels map[string]string
}

// EndpointSet is the answer for an authority.
type EndpointSet struct {
	// Exists is false when the authority names no known service.
	Exists bool
	// Target is what the authority resolved to (partially when !Exists).
	Target Target
	// Labels are metric labels of every endpoint: namespace and service.
	Labels map[string]string
	// Endpoints are the ready endpoints, sorted by address.
	Endpoints []Endpoint
	// Deps are the services whose changes can change this answer (watch
	// them). Empty when none can be named yet (an unknown IP or short name):
	// re-resolve periodically then.
	Deps []store.Key
	// Warnings explain what was skipped and why (unknown authority,
	// unmatched port, bad annotation...). They are for logs and status, not
	// for proxies.
	Warnings []string
}

// Endpoints compiles the endpoint set of authority: the ready endpoints of
// the service's EndpointSlices for the asked service port (the slice port
// with the service port's name), plus the workloads registered for the
// service (local mode), deduplicated by address and sorted.
func Endpoints(r store.Reader, authority string, o Options) EndpointSet {
	var es EndpointSet
	t, deps, err := resolve(r, authority, o)
	es.Target, es.Deps = t, deps
	if err != nil {
		es.Warnings = append(es.Warnings, err.Error())
		return es
	}
	es.Exists = true
	es.Labels = map[string]string{"namespace": t.Service.Namespace, "service": t.Service.Name}

	svc, hasSvc := r.Service(t.Service)
	ns, _ := r.Namespace(t.Service.Namespace)
	nsOpaque, nsHas := annotationPorts(nsAnnotations(ns), &es.Warnings, "namespace "+t.Service.Namespace)
	svcOpaque := serviceOpaque(r, t, svc, o, &es.Warnings)

	add := func(e Endpoint) { es.Endpoints = append(es.Endpoints, e) }

	if hasSvc && t.ServicePort == nil {
		// Known service, unknown port: it exists, but nothing serves it.
		es.Warnings = append(es.Warnings, fmt.Sprintf("service %s has no TCP or UDP port %d", t.Service, t.Port))
		return es
	}
	targets := map[uint32]bool{} // the service port's target ports, as the slices have them
	fromSlices := func(key store.Key, svc *corev1.Service, servicePort *corev1.ServicePort) {
		// Slices in name order (the store's order already), for a
		// deterministic choice among duplicate addresses.
		sls := r.EndpointSlices(key)
		if !sort.SliceIsSorted(sls, func(i, j int) bool { return sls[i].Name < sls[j].Name }) {
			sls = append([]*discoveryv1.EndpointSlice(nil), sls...)
			sort.Slice(sls, func(i, j int) bool { return sls[i].Name < sls[j].Name })
		}
		fam := preferredFamily(svc, sls)
		n := len(r.Workloads(t.Service))
		for _, sl := range sls {
			if sl.AddressType == fam {
				n += len(sl.Endpoints)
			}
		}
		es.Endpoints = slices.Grow(es.Endpoints, n)
		for _, sl := range sls {
			if sl.AddressType != fam {
				continue
			}
			sp := slicePort(sl, servicePort)
			if sp == nil {
				continue
			}
			target := uint32(*sp.Port)
			targets[target] = true
			for i := range sl.Endpoints {
				ep := &sl.Endpoints[i]
				if !ready(ep) || len(ep.Addresses) == 0 {
					continue
				}
				ip, err := netip.ParseAddr(ep.Addresses[0])
				if err != nil {
					es.Warnings = append(es.Warnings, fmt.Sprintf("endpointslice %s/%s: bad address %q", sl.Namespace, sl.Name, ep.Addresses[0]))
					continue
				}
				e := Endpoint{Addr: netip.AddrPortFrom(ip.Unmap(), uint16(target)), Weight: DefaultWeight}
				if ep.Zone != nil {
					e.Zone = *ep.Zone
				}
				podOpaque := false
				if t.Subset != "" && !inSubset(r, ep, sl.Namespace, t.Subset) {
					continue
				}
				if ref := ep.TargetRef; ref != nil && ref.Kind == "Pod" {
					pns := ref.Namespace
					if pns == "" {
						pns = sl.Namespace
					}
					if pod, ok := r.Pod(store.Key{Namespace: pns, Name: ref.Name}); ok {
						e.Labels = podLabels(pod)
						if meshed(pod) {
							e.Identity = Identity(pod.Namespace, pod.Spec.ServiceAccountName, o)
							e.Protocol = ProtocolH2
						}
						if ps, has := annotationPorts(pod.Annotations, &es.Warnings, "pod "+pns+"/"+pod.Name); has {
							podOpaque = ps.Contains(target, containerPortName(pod, target))
						} else if nsHas {
							podOpaque = nsOpaque.Contains(target, containerPortName(pod, target))
						}
					} else {
						e.Labels = map[string]string{"pod": ref.Name}
					}
				}
				if svcOpaque || podOpaque {
					e.Protocol = ProtocolOpaque
				}
				add(e)
			}
		}
	}
	if hasSvc {
		fromSlices(t.Service, svc, t.ServicePort)
	}
	if t.Subset != "" {
		// A Rollout subset: the pods of the hash are taken from the stable
		// and the canary Services' slices alike, so a Service selector
		// switching hashes (and its slices following) never empties it.
		for _, ro := range routingRollouts(r, t.Service) {
			_, ck := store.RolloutServices(ro)
			if ck.Name == "" || ck == t.Service {
				continue
			}
			es.Deps = appendKey(es.Deps, ck)
			csvc, ok := r.Service(ck)
			if !ok {
				continue
			}
			if cp := samePort(csvc, t.ServicePort); cp != nil {
				fromSlices(ck, csvc, cp)
			}
		}
		es.Labels["rollouts_pod_template_hash"] = t.Subset
		sortEndpoints(&es)
		return es
	}

	for _, w := range r.Workloads(t.Service) {
		if !workloadServes(w, t.ServicePort, targets) {
			continue
		}
		ap, err := netip.ParseAddrPort(w.Address)
		if err != nil {
			es.Warnings = append(es.Warnings, fmt.Sprintf("workload %s/%s: address %q is not ip:port", w.Namespace, w.Name, w.Address))
			continue
		}
		e := Endpoint{
			Addr:     netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()),
			Weight:   DefaultWeight,
			Identity: Identity(w.Namespace, w.ServiceAccount, o),
			Protocol: ProtocolH2,
			Labels:   map[string]string{"pod": w.Name, "serviceaccount": saOrDefault(w.ServiceAccount)},
		}
		if svcOpaque || (nsHas && nsOpaque.Contains(w.AppPort, "")) {
			e.Protocol = ProtocolOpaque
		}
		add(e)
	}

	// Sorted by address; of an address listed twice (slices overlap while
	// the controller moves endpoints; a workload may repeat a slice's
	// address) the first, in slice-name order then workloads, is kept.
	sortEndpoints(&es)
	return es
}

func sortEndpoints(es *EndpointSet) {
	sort.SliceStable(es.Endpoints, func(i, j int) bool { return es.Endpoints[i].Addr.Compare(es.Endpoints[j].Addr) < 0 })
	es.Endpoints = slices.CompactFunc(es.Endpoints, func(a, b Endpoint) bool { return a.Addr == b.Addr })
}

// inSubset reports whether a slice endpoint is a pod carrying pod-template
// hash hash (a Rollout subset's member).
func inSubset(r store.Reader, ep *discoveryv1.Endpoint, sliceNS, hash string) bool {
	ref := ep.TargetRef
	if ref == nil || ref.Kind != "Pod" {
		return false
	}
	pns := ref.Namespace
	if pns == "" {
		pns = sliceNS
	}
	pod, ok := r.Pod(store.Key{Namespace: pns, Name: ref.Name})
	return ok && pod.Labels[PodTemplateHashLabel] == hash
}

// samePort is svc's port of sp's protocol with sp's number, else with its
// name.
func samePort(svc *corev1.Service, sp *corev1.ServicePort) *corev1.ServicePort {
	if sp == nil {
		return nil
	}
	var byName *corev1.ServicePort
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if protocolOf(p.Protocol) != protocolOf(sp.Protocol) {
			continue
		}
		if p.Port == sp.Port {
			return p
		}
		if sp.Name != "" && p.Name == sp.Name && byName == nil {
			byName = p
		}
	}
	return byName
}

// OpaquePort reports whether the resolved service port is opaque: listed in
// the service's opaque-ports annotation (or, without one, its namespace's, or
// else Options.DefaultOpaquePorts) or in its ServiceProfile's opaquePorts.
func OpaquePort(r store.Reader, t Target, o Options) bool {
	svc, _ := r.Service(t.Service)
	return serviceOpaque(r, t, svc, o, new([]string))
}

func serviceOpaque(r store.Reader, t Target, svc *corev1.Service, o Options, warn *[]string) bool {
	name := ""
	if t.ServicePort != nil {
		name = t.ServicePort.Name
	}
	var set PortSet
	if ps, has := annotationPorts(svcAnnotations(svc), warn, "service "+t.Service.String()); has {
		set = ps
	} else {
		ns, _ := r.Namespace(t.Service.Namespace)
		if ps, has := annotationPorts(nsAnnotations(ns), warn, "namespace "+t.Service.Namespace); has {
			set = ps
		} else {
			set = o.DefaultOpaquePorts
		}
	}
	if set.Contains(t.Port, name) {
		return true
	}
	if sp, ok := r.ServiceProfile(t.Service); ok && sp != nil {
		for _, p := range profileOpaquePorts(sp) {
			if p == t.Port {
				return true
			}
		}
	}
	return false
}

func annotationPorts(ann map[string]string, warn *[]string, where string) (PortSet, bool) {
	v, ok := ann[names.AnnotationOpaquePorts]
	if !ok {
		return PortSet{}, false
	}
	ps, errs := ParsePorts(v)
	for _, e := range errs {
		*warn = append(*warn, fmt.Sprintf("%s: %s: %v", where, names.AnnotationOpaquePorts, e))
	}
	return ps, true
}

func svcAnnotations(s *corev1.Service) map[string]string {
	if s == nil {
		return nil
	}
	return s.Annotations
}

func nsAnnotations(n *corev1.Namespace) map[string]string {
	if n == nil {
		return nil
	}
	return n.Annotations
}

// preferredFamily is the address family whose slices are used: the
// service's primary IP family, or IPv4; the other family only when the
// service has no slice of the preferred one. Using one family keeps a
// dual-stack pod from being counted twice.
func preferredFamily(svc *corev1.Service, slices []*discoveryv1.EndpointSlice) discoveryv1.AddressType {
	pref, other := discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6
	if svc != nil && len(svc.Spec.IPFamilies) > 0 && svc.Spec.IPFamilies[0] == corev1.IPv6Protocol {
		pref, other = other, pref
	}
	hasOther := false
	for _, sl := range slices {
		if sl.AddressType == pref {
			return pref
		}
		if sl.AddressType == other {
			hasOther = true
		}
	}
	if hasOther {
		return other
	}
	return pref
}

// protocolOf is a port's protocol, TCP when unset (the API's default).
func protocolOf(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

// slicePort finds the slice's port for a service port: the EndpointSlice
// controller names slice ports after service ports and resolves named target
// ports per pod, so matching by name gives the right number. The protocol
// must be the service port's too (TCP, or UDP for a gateway's UDP route).
func slicePort(sl *discoveryv1.EndpointSlice, sp *corev1.ServicePort) *discoveryv1.EndpointPort {
	for i := range sl.Ports {
		p := &sl.Ports[i]
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if name == sp.Name && proto == protocolOf(sp.Protocol) && p.Port != nil && *p.Port > 0 && *p.Port <= 65535 {
			return p
		}
	}
	return nil
}

// ready follows the EndpointSlice API: a nil Ready condition means ready.
func ready(ep *discoveryv1.Endpoint) bool {
	return ep.Conditions.Ready == nil || *ep.Conditions.Ready
}

func meshed(p *corev1.Pod) bool {
	if _, ok := p.Annotations[names.AnnotationProxyVersion]; ok {
		return true
	}
	for _, c := range p.Spec.Containers {
		if c.Name == names.ProxyContainerName {
			return true
		}
	}
	for _, c := range p.Spec.InitContainers { // native sidecar
		if c.Name == names.ProxyContainerName {
			return true
		}
	}
	return false
}

func containerPortName(p *corev1.Pod, port uint32) string {
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if uint32(cp.ContainerPort) == port {
				return cp.Name
			}
		}
	}
	return ""
}

func saOrDefault(sa string) string {
	if sa == "" {
		return "default"
	}
	return sa
}

func podLabels(p *corev1.Pod) map[string]string {
	l := map[string]string{"pod": p.Name, "serviceaccount": saOrDefault(p.Spec.ServiceAccountName)}
	for _, ref := range p.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		switch ref.Kind {
		case "ReplicaSet":
			l["replicaset"] = ref.Name
			if h := p.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(ref.Name, "-"+h) {
				l["deployment"] = strings.TrimSuffix(ref.Name, "-"+h)
			}
		case "StatefulSet":
			l["statefulset"] = ref.Name
		case "DaemonSet":
			l["daemonset"] = ref.Name
		case "Job":
			l["job"] = ref.Name
		}
	}
	return l
}

// workloadServes reports whether a registered workload serves the service
// port: it does when it names no app port, when there is no Service object
// to compare with, or when its app port is the service port or its target
// port (numeric, or as the slices resolved a named one).
func workloadServes(w store.Workload, sp *corev1.ServicePort, targets map[uint32]bool) bool {
	if w.AppPort == 0 || sp == nil || w.AppPort == uint32(sp.Port) || targets[w.AppPort] {
		return true
	}
	return sp.TargetPort.Type == intstr.Int && uint32(sp.TargetPort.IntVal) == w.AppPort
}
