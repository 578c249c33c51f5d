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
	ReferenceGrants() []*gwv1.ReferenceGrant
	BackendTLSPolicies() []*gwv1.BackendTLSPolicy
	Service(k store.Key) (*corev1.Service, bool)
	Secret(k store.Key) (*corev1.Secret, bool)
	ConfigMap(k store.Key) (*corev1.ConfigMap, bool)
	Namespace(name string) (*corev1.Namespace, bool)
}

var _ Reader = (*store.Store)(nil)

// InputFrom reads what Compile needs for Gateway gw: the classes, the
// Gateway, the routes naming it, every ReferenceGrant and
// BackendTLSPolicy, and the Services, Secrets, ConfigMaps and Namespaces
// those name.
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
	namespaces := map[string]bool{}
	services := map[store.Key]bool{}
	addRefs := func(ns string, refs []gwv1.BackendObjectReference) {
		namespaces[ns] = true
		for _, b := range refs {
			if (b.Group != nil && *b.Group != "") || (b.Kind != nil && *b.Kind != "Service") {
				continue
			}
			k := store.Key{Namespace: ns, Name: string(b.Name)}
			if b.Namespace != nil && *b.Namespace != "" {
				k.Namespace = string(*b.Namespace)
			}
			services[k] = true
		}
	}
	names := func(ns string, ps []gwv1.ParentReference) bool {
		for _, p := range ps {
			if c.namesGateway(p, ns) {
				return true
			}
		}
		return false
	}
	for _, rt := range r.HTTPRoutes() {
		if !names(rt.Namespace, rt.Spec.ParentRefs) {
			continue
		}
		in.HTTPRoutes = append(in.HTTPRoutes, rt)
		var refs []gwv1.BackendObjectReference
		for _, rule := range rt.Spec.Rules {
			for _, b := range rule.BackendRefs {
				refs = append(refs, b.BackendObjectReference)
			}
			for _, f := range rule.Filters {
				if f.RequestMirror != nil {
					refs = append(refs, f.RequestMirror.BackendRef)
				}
			}
		}
		addRefs(rt.Namespace, refs)
	}
	for _, rt := range r.GRPCRoutes() {
		if !names(rt.Namespace, rt.Spec.ParentRefs) {
			continue
		}
		in.GRPCRoutes = append(in.GRPCRoutes, rt)
		var refs []gwv1.BackendObjectReference
		for _, rule := range rt.Spec.Rules {
			for _, b := range rule.BackendRefs {
				refs = append(refs, b.BackendObjectReference)
			}
			for _, f := range rule.Filters {
				if f.RequestMirror != nil {
					refs = append(refs, f.RequestMirror.BackendRef)
				}
			}
		}
		addRefs(rt.Namespace, refs)
	}
	for _, rt := range r.TLSRoutes() {
		if !names(rt.Namespace, rt.Spec.ParentRefs) {
			continue
		}
		in.TLSRoutes = append(in.TLSRoutes, rt)
		var refs []gwv1.BackendObjectReference
		for _, rule := range rt.Spec.Rules {
			for _, b := range rule.BackendRefs {
				refs = append(refs, b.BackendObjectReference)
			}
		}
		addRefs(rt.Namespace, refs)
	}
	for k := range services {
		if s, ok := r.Service(k); ok {
			in.Services = append(in.Services, s)
		}
	}
	for ns := range namespaces {
		if n, ok := r.Namespace(ns); ok {
			in.Namespaces = append(in.Namespaces, n)
		}
	}
	for _, l := range g.Spec.Listeners {
		if l.TLS == nil {
			continue
		}
		for _, ref := range l.TLS.CertificateRefs {
			k := store.Key{Namespace: g.Namespace, Name: string(ref.Name)}
			if ref.Namespace != nil && *ref.Namespace != "" {
				k.Namespace = string(*ref.Namespace)
			}
			if s, ok := r.Secret(k); ok {
				in.Secrets = append(in.Secrets, s)
			}
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
