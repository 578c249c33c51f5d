package gateway

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meridian-mesh/meridian/controlplane/store"
)

// Reader is what InputFrom reads; *store.Store implements it.
type Reader interface {
	GatewayClasses() []*gwv1.GatewayClass
	Gateway(k store.Key) (*gwv1.Gateway, bool)
	HTTPRoutes() []*gwv1.HTTPRoute
	GRPCRoutes() []*gwv1.GRPCRoute
	TLSRoutes() []*gwv1.TLSRoute
	TCPRoutes() []*gwv1.TCPRoute
	UDPRoutes() []*gwv1.UDPRoute
	ListenerSets() []*gwv1.ListenerSet
	ReferenceGrants() []*gwv1.ReferenceGrant
	BackendTLSPolicies() []*gwv1.BackendTLSPolicy
	Service(k store.Key) (*corev1.Service, bool)
	Secret(k store.Key) (*corev1.Secret, bool)
	ConfigMap(k store.Key) (*corev1.ConfigMap, bool)
	Namespace(name string) (*corev1.Namespace, bool)
}

var _ Reader = (*store.Store)(nil)

// InputFrom reads what Compile needs for Gateway gw: the classes, the
// Gateway, every ListenerSet, the routes naming it or a ListenerSet that
// names it, every ReferenceGrant and
// BackendTLSPolicy, and the Services, Secrets (the listeners' and
// spec.tls.backend's), ConfigMaps (the policies' and the frontend
// validation's CAs) and Namespaces those name.
func InputFrom(r Reader, gw types.NamespacedName) Input {
	var in Input
	g, ok := r.Gateway(store.Key{Namespace: gw.Namespace, Name: gw.Name})
	if !ok {
		return in
	}
	in.Gateways = []*gwv1.Gateway{g}
	in.GatewayClasses = r.GatewayClasses()
	in.ReferenceGrants = r.ReferenceGrants()
	in.BackendTLSPolicies = r.BackendTLSPolicies()
	c := &compiler{gw: g}
	in.ListenerSets = r.ListenerSets()
	c.indexListenerSets(in.ListenerSets)
	namespaces := map[string]bool{}
	services := map[store.Key]bool{}
	addRefs := func(ns string, keys []store.Key) {
		namespaces[ns] = true
		for _, k := range keys {
			services[k] = true
		}
	}
	names := func(ns string, ps []gwv1.ParentReference) bool {
		for _, p := range ps {
			if c.names(p, ns) {
				return true
			}
		}
		return false
	}
	for _, rt := range r.HTTPRoutes() {
		if names(rt.Namespace, rt.Spec.ParentRefs) {
			in.HTTPRoutes = append(in.HTTPRoutes, rt)
			addRefs(rt.Namespace, store.HTTPRouteServices(rt))
		}
	}
	for _, rt := range r.GRPCRoutes() {
		if names(rt.Namespace, rt.Spec.ParentRefs) {
			in.GRPCRoutes = append(in.GRPCRoutes, rt)
			addRefs(rt.Namespace, store.GRPCRouteServices(rt))
		}
	}
	for _, rt := range r.TLSRoutes() {
		if names(rt.Namespace, rt.Spec.ParentRefs) {
			in.TLSRoutes = append(in.TLSRoutes, rt)
			addRefs(rt.Namespace, store.TLSRouteServices(rt))
		}
	}
	for _, rt := range r.TCPRoutes() {
		if names(rt.Namespace, rt.Spec.ParentRefs) {
			in.TCPRoutes = append(in.TCPRoutes, rt)
			addRefs(rt.Namespace, store.TCPRouteServices(rt))
		}
	}
	for _, rt := range r.UDPRoutes() {
		if names(rt.Namespace, rt.Spec.ParentRefs) {
			in.UDPRoutes = append(in.UDPRoutes, rt)
			addRefs(rt.Namespace, store.UDPRouteServices(rt))
		}
	}
	for k := range services {
		if s, ok := r.Service(k); ok {
			in.Services = append(in.Services, s)
		}
	}
	// The ListenerSets' namespaces (allowedListeners selectors) and
	// certificates, as the Gateway's.
	type tlsOf struct {
		ns  string
		tls *gwv1.ListenerTLSConfig
	}
	var tlss []tlsOf
	for _, l := range g.Spec.Listeners {
		tlss = append(tlss, tlsOf{g.Namespace, l.TLS})
	}
	for _, s := range c.sets {
		namespaces[s.obj.Namespace] = true
		for _, l := range s.obj.Spec.Listeners {
			tlss = append(tlss, tlsOf{s.obj.Namespace, l.TLS})
		}
	}
	for ns := range namespaces {
		if n, ok := r.Namespace(ns); ok {
			in.Namespaces = append(in.Namespaces, n)
		}
	}
	for _, l := range tlss {
		if l.tls == nil {
			continue
		}
		for _, ref := range l.tls.CertificateRefs {
			k := store.Key{Namespace: l.ns, Name: string(ref.Name)}
			if ref.Namespace != nil && *ref.Namespace != "" {
				k.Namespace = string(*ref.Namespace)
			}
			if s, ok := r.Secret(k); ok {
				in.Secrets = append(in.Secrets, s)
			}
		}
	}
	if t := g.Spec.TLS; t != nil && t.Frontend != nil {
		cfgs := []gwv1.TLSConfig{t.Frontend.Default}
		for _, p := range t.Frontend.PerPort {
			cfgs = append(cfgs, p.TLS)
		}
		for _, cfg := range cfgs {
			if cfg.Validation == nil {
				continue
			}
			for _, ref := range cfg.Validation.CACertificateRefs {
				k := store.Key{Namespace: g.Namespace, Name: string(ref.Name)}
				if ref.Namespace != nil && *ref.Namespace != "" {
					k.Namespace = string(*ref.Namespace)
				}
				if cm, ok := r.ConfigMap(k); ok && ref.Group == "" && ref.Kind == "ConfigMap" {
					in.ConfigMaps = append(in.ConfigMaps, cm)
				}
			}
		}
	}
	if g.Spec.TLS != nil && g.Spec.TLS.Backend != nil && g.Spec.TLS.Backend.ClientCertificateRef != nil {
		ref := g.Spec.TLS.Backend.ClientCertificateRef
		k := store.Key{Namespace: g.Namespace, Name: string(ref.Name)}
		if ref.Namespace != nil && *ref.Namespace != "" {
			k.Namespace = string(*ref.Namespace)
		}
		if s, ok := r.Secret(k); ok {
			in.Secrets = append(in.Secrets, s)
		}
	}
	for _, p := range in.BackendTLSPolicies {
		for _, ref := range p.Spec.Validation.CACertificateRefs {
			if cm, ok := r.ConfigMap(store.Key{Namespace: p.Namespace, Name: string(ref.Name)}); ok {
				in.ConfigMaps = append(in.ConfigMaps, cm)
			}
		}
	}
	return in
}
