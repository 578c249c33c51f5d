package compile

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// DefaultPort is the port of an authority that names none.
const DefaultPort = 80

// ErrNotFound means the authority names no service this control plane knows.
// Callers answer it like Linkerd: "does not exist (yet)", never a hard error.
var ErrNotFound = errors.New("authority not found")

// Target is an authority resolved to a service port.
type Target struct {
	// Authority is the canonical form of what was asked (lower case, no
	// trailing dot, explicit port).
	Authority string
	Service   store.Key
	// Port is the service port asked for.
	Port uint32
	// ServicePort is the service's port spec matching Port; nil when the
	// service has no such port or (local mode) no Service object exists and
	// only registered workloads serve it.
	ServicePort *corev1.ServicePort
	// Subset is the pod-template hash of a Rollout subset authority
	// (<hash>.<svc>.<ns>.svc.<cluster-domain>, see SubsetAuthority): only
	// the service's pods of that hash serve it. Empty for a service.
	Subset string
}

// PodTemplateHashLabel is the label a Rollout's ReplicaSets put on their
// pods (Argo Rollouts' name).
const PodTemplateHashLabel = v1alpha1.DefaultRolloutUniqueLabelKey

// SubsetAuthority is the authority of the pods of pod-template hash hash
// behind service k: <hash>.<svc>.<ns>.svc.<cluster-domain>:<port>. It
// resolves only while a Rollout with Meridian's own routing has k as its
// stable Service; its endpoints are the ready endpoints of k's and the
// Rollout's canary Service's slices whose pods carry that hash.
func SubsetAuthority(hash string, k store.Key, port uint32, o Options) string {
	return net.JoinHostPort(hash+"."+FQDN(k, o), strconv.FormatUint(uint64(port), 10))
}

// FQDN returns <svc>.<ns>.svc.<cluster-domain>.
func FQDN(k store.Key, o Options) string {
	return k.Name + "." + k.Namespace + ".svc." + o.clusterDomain()
}

// Name is one syntactic reading of an authority, before the store is asked.
type Name struct {
	Host string // lower case, no trailing dot
	Port uint32
	// IP is set when Host is an IP address.
	IP netip.Addr
	// Service is set for service DNS forms; Service.Namespace is empty for a
	// short name ("web:80").
	Service store.Key
	// Subset is the first label of <subset>.<svc>.<ns>.svc.<cluster-domain>
	// (a Rollout's pod-template hash, or a headless pod name, which is not
	// served: resolveName decides).
	Subset string
}

// ParseAuthority reads host[:port] without consulting the store. It accepts
// <svc>.<ns>.svc.<cluster-domain>, <svc>.<ns>.svc, <svc>.<ns>, a single label
// <svc> (a short name), and an IP address (IPv6 in brackets when a port
// follows). A name in the cluster domain with the wrong shape, or a name of
// three or more labels that is not a service name, is ErrNotFound.
func ParseAuthority(authority string, o Options) (Name, error) {
	a := strings.TrimSpace(authority)
	if a == "" {
		return Name{}, fmt.Errorf("%w: empty authority", ErrNotFound)
	}
	host, portStr, err := net.SplitHostPort(a)
	if err != nil {
		// No port (or a bare IPv6 address).
		host, portStr = a, ""
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
		}
	}
	port := uint32(DefaultPort)
	if portStr != "" {
		p, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || p == 0 {
			return Name{}, fmt.Errorf("%w: authority %q: port must be 1-65535", ErrNotFound, authority)
		}
		port = uint32(p)
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "" {
		return Name{}, fmt.Errorf("%w: authority %q has no host", ErrNotFound, authority)
	}
	n := Name{Host: host, Port: port}
	if ip, err := netip.ParseAddr(host); err == nil {
		n.IP = ip.Unmap().WithZone("")
		return n, nil
	}
	labels := strings.Split(host, ".")
	for _, l := range labels {
		if l == "" {
			return Name{}, fmt.Errorf("%w: authority %q: empty DNS label", ErrNotFound, authority)
		}
		if i := strings.IndexFunc(l, notDNSChar); i >= 0 {
			return Name{}, fmt.Errorf("%w: authority %q: %q may not be in a DNS name", ErrNotFound, authority, []rune(l[i:])[0])
		}
	}
	suffix := ".svc." + o.clusterDomain()
	switch {
	case strings.HasSuffix(host, suffix):
		rest := strings.Split(strings.TrimSuffix(host, suffix), ".")
		if len(rest) == 3 {
			// <hash>.<svc>.<ns>: a Rollout subset if a Rollout says so
			// (resolveName); a headless pod name otherwise.
			n.Subset, rest = rest[0], rest[1:]
		}
		if len(rest) != 2 {
			// e.g. pod-0.web.ns.svc.cluster.local (a headless pod name) or
			// ns.svc.cluster.local: not a service.
			return Name{}, fmt.Errorf("%w: %q is not <service>.<namespace>%s", ErrNotFound, host, suffix)
		}
		n.Service = store.Key{Namespace: rest[1], Name: rest[0]}
	case len(labels) == 3 && labels[2] == "svc":
		n.Service = store.Key{Namespace: labels[1], Name: labels[0]}
	case len(labels) == 2:
		n.Service = store.Key{Namespace: labels[1], Name: labels[0]}
	case len(labels) == 1:
		n.Service = store.Key{Name: labels[0]}
	default:
		return Name{}, fmt.Errorf("%w: %q is not a service name in cluster domain %q", ErrNotFound, host, o.clusterDomain())
	}
	return n, nil
}

// notDNSChar reports a character that no DNS name (nor any service a store
// holds) has: anything but lower-case letters, digits, '-' and '_'. (Host
// is lower-cased first.)
func notDNSChar(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
}

// ServiceIndex is an optional interface of a store.Reader: the namespaces in
// which a service of the given name exists. Resolve uses it in local mode to
// find a short name's service when no default namespace is configured (or
// the default namespace has none).
type ServiceIndex interface {
	ServiceNamespaces(name string) []string
}

// Resolve maps an authority to a service port. It returns ErrNotFound
// (wrapped, with the reason) when the authority names no known service;
// Target.Service is still set then when the authority names a service key,
// because that key is where the service would appear.
func Resolve(r store.Reader, authority string, o Options) (Target, error) {
	n, err := ParseAuthority(authority, o)
	if err != nil {
		return Target{}, err
	}
	return resolveName(r, n, o)
}

func resolveName(r store.Reader, n Name, o Options) (Target, error) {
	t := Target{Authority: net.JoinHostPort(n.Host, strconv.FormatUint(uint64(n.Port), 10)), Port: n.Port, Subset: n.Subset}
	if n.Subset != "" {
		t.Service = n.Service
		if len(routingRollouts(r, n.Service)) == 0 {
			// e.g. pod-0.web.ns.svc.cluster.local (a headless pod name):
			// not a service.
			return t, fmt.Errorf("%w: %q is not <service>.<namespace>.svc.%s, and no Rollout routes service %s by pod-template hash", ErrNotFound, n.Host, o.clusterDomain(), n.Service)
		}
	}
	switch {
	case n.IP.IsValid():
		k, ok := r.ServiceByClusterIP(n.IP.String())
		if !ok {
			return t, fmt.Errorf("%w: %s is no service's cluster IP", ErrNotFound, n.IP)
		}
		t.Service = k
	case n.Service.Namespace == "":
		if !o.Local {
			return t, fmt.Errorf("%w: short name %q (use <service>.<namespace>)", ErrNotFound, n.Host)
		}
		k, err := resolveShort(r, n.Service.Name, o)
		t.Service = k
		if err != nil {
			return t, err
		}
	default:
		t.Service = n.Service
	}
	svc, ok := r.Service(t.Service)
	if !ok {
		if o.Local && len(r.Workloads(t.Service)) > 0 {
			// Local mode: registered workloads make a service without a
			// Service object.
			return t, nil
		}
		return t, fmt.Errorf("%w: service %s does not exist", ErrNotFound, t.Service)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return t, fmt.Errorf("%w: service %s is an ExternalName service", ErrNotFound, t.Service)
	}
	// A TCP port of the number, else a UDP one: an authority names no
	// protocol, and the gateway's UDP routes resolve UDP Service ports by
	// it. A number served over both resolves to the TCP port's endpoints
	// (usually the same target port, as DNS's are).
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if uint32(p.Port) != n.Port {
			continue
		}
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			t.ServicePort = p
			break
		}
		if p.Protocol == corev1.ProtocolUDP && t.ServicePort == nil {
			t.ServicePort = p
		}
	}
	return t, nil
}

// WatchKey is the service key an authority would resolve to, for watching
// the store while it does not exist yet. ok is false when no single key can
// be named (an unknown IP, an ambiguous or unresolvable short name): callers
// should then re-resolve periodically.
func WatchKey(r store.Reader, authority string, o Options) (k store.Key, ok bool) {
	t, err := Resolve(r, authority, o)
	return watchKey(t, err)
}

// watchKey is WatchKey from Resolve's answer: resolveName sets
// Target.Service whenever the authority names a key, found or not.
func watchKey(t Target, _ error) (store.Key, bool) {
	return t.Service, t.Service.Name != ""
}

// resolve is Resolve and WatchKey in one parse.
func resolve(r store.Reader, authority string, o Options) (Target, []store.Key, error) {
	t, err := Resolve(r, authority, o)
	var deps []store.Key
	if k, ok := watchKey(t, err); ok {
		deps = []store.Key{k}
	}
	return t, deps, err
}

func resolveShort(r store.Reader, name string, o Options) (store.Key, error) {
	exists := func(k store.Key) bool {
		if _, ok := r.Service(k); ok {
			return true
		}
		return len(r.Workloads(k)) > 0
	}
	if o.DefaultNamespace != "" {
		k := store.Key{Namespace: o.DefaultNamespace, Name: name}
		if exists(k) {
			return k, nil
		}
	}
	idx, ok := r.(ServiceIndex)
	if !ok {
		if o.DefaultNamespace != "" {
			// Where it would appear.
			return store.Key{Namespace: o.DefaultNamespace, Name: name},
				fmt.Errorf("%w: no service %q in namespace %q", ErrNotFound, name, o.DefaultNamespace)
		}
		return store.Key{}, fmt.Errorf("%w: short name %q needs a default namespace", ErrNotFound, name)
	}
	nss := idx.ServiceNamespaces(name)
	sort.Strings(nss)
	var where store.Key // where it would appear, to watch
	if o.DefaultNamespace != "" {
		where = store.Key{Namespace: o.DefaultNamespace, Name: name}
	}
	switch len(nss) {
	case 0:
		return where, fmt.Errorf("%w: no service named %q in any namespace", ErrNotFound, name)
	case 1:
		return store.Key{Namespace: nss[0], Name: name}, nil
	default:
		return where, fmt.Errorf("%w: short name %q is ambiguous: namespaces %s", ErrNotFound, name, strings.Join(nss, ", "))
	}
}
