package store

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The Gateway API kinds (gatewayclass.go, gateway.go, httproute.go,
// grpcroute.go, tlsroute.go, listenerset.go, referencegrant.go,
// backendtlspolicy.go) and
// the objects only the gateway reads (secret.go, configmap.go) share this
// table: objects by key, the Services each refers to (routes: backendRefs
// and mirrors) indexed so that a Service's change wakes only the Gateways
// whose routes name it, and a wake function per kind.

// GatewayTopic is the topic of Gateway k: its listeners, routes and what
// they depend on.
func GatewayTopic(k Key) Topic { return Topic{Kind: TopicGateway, Key: k} }

// GatewaysTopic wakes on every change of any Gateway (one added, changed
// or deleted): for the writer that provisions every Gateway and must learn
// of new ones.
var GatewaysTopic = Topic{Kind: TopicGateway}

// gatewayObject is what every Gateway API object is.
type gatewayObject interface {
	runtime.Object
	metav1.Object
}

// objTable holds objects of one kind.
type objTable[T gatewayObject] struct {
	s    *Store
	objs map[Key]T
	// keep filters what is stored (a Secret that is not kubernetes.io/tls
	// is not): false makes the write a delete.
	keep func(T) bool
	// wake adds the topics a change wakes; old or cur is the zero T when
	// absent.
	wake func(s *Store, old, cur T, a affected)
	// services lists the Services an object refers to; the table indexes
	// them in byService (service → object keys).
	services  func(T) []Key
	byService map[Key]map[Key]struct{}
	// meshParents lists the Services a route names as parentRefs (GAMMA:
	// the route routes that Service's mesh traffic); indexed in byParent.
	meshParents func(T) []Key
	byParent    map[Key]map[Key]struct{}
}

func newObjTable[T gatewayObject](s *Store, wake func(s *Store, old, cur T, a affected)) *objTable[T] {
	return &objTable[T]{s: s, objs: map[Key]T{}, wake: wake, byService: map[Key]map[Key]struct{}{}, byParent: map[Key]map[Key]struct{}{}}
}

func (t *objTable[T]) upsert(k Key, v any, a affected) {
	cur := v.(T)
	if t.keep != nil && !t.keep(cur) {
		t.delete(k, a)
		return
	}
	old, ok := t.objs[k]
	if ok && unchanged(old, cur) {
		return
	}
	if ok {
		t.unindex(k, old)
	}
	t.objs[k] = cur
	t.index(k, cur)
	var zero T
	if !ok {
		old = zero
	}
	t.wake(t.s, old, cur, a)
}

func (t *objTable[T]) delete(k Key, a affected) {
	old, ok := t.objs[k]
	if !ok {
		return
	}
	t.unindex(k, old)
	delete(t.objs, k)
	var zero T
	t.wake(t.s, old, zero, a)
}

func (t *objTable[T]) each(f func(Key)) {
	for k := range t.objs {
		f(k)
	}
}

func (t *objTable[T]) index(k Key, v T) {
	if t.services != nil {
		addTo(t.byService, t.services(v), k)
	}
	if t.meshParents != nil {
		addTo(t.byParent, t.meshParents(v), k)
	}
}

func (t *objTable[T]) unindex(k Key, v T) {
	if t.services != nil {
		removeFrom(t.byService, t.services(v), k)
	}
	if t.meshParents != nil {
		removeFrom(t.byParent, t.meshParents(v), k)
	}
}

func addTo(ix map[Key]map[Key]struct{}, svcs []Key, k Key) {
	for _, svc := range svcs {
		set := ix[svc]
		if set == nil {
			set = map[Key]struct{}{}
			ix[svc] = set
		}
		set[k] = struct{}{}
	}
}

func removeFrom(ix map[Key]map[Key]struct{}, svcs []Key, k Key) {
	for _, svc := range svcs {
		if set := ix[svc]; set != nil {
			delete(set, k)
			if len(set) == 0 {
				delete(ix, svc)
			}
		}
	}
}

// byMeshParent returns the objects whose parentRefs name Service k (a new
// slice, in no order).
func (t *objTable[T]) byMeshParent(k Key) []T {
	set := t.byParent[k]
	if len(set) == 0 {
		return nil
	}
	out := make([]T, 0, len(set))
	for rk := range set {
		out = append(out, t.objs[rk])
	}
	return out
}

// ServiceParents are the core Services among a route's parentRefs (group
// "" and kind Service: GAMMA's mesh routes), in the route's namespace
// unless the parentRef names another.
func ServiceParents(ns string, refs []gwv1.ParentReference) []Key {
	var out []Key
	for _, p := range refs {
		if !IsServiceParent(p) {
			continue
		}
		pns := ns
		if p.Namespace != nil && *p.Namespace != "" {
			pns = string(*p.Namespace)
		}
		k := Key{pns, string(p.Name)}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// IsServiceParent reports whether a parentRef names a core Service (GAMMA).
func IsServiceParent(p gwv1.ParentReference) bool {
	return p.Group != nil && *p.Group == "" && p.Kind != nil && *p.Kind == "Service"
}

// MeshRoutesTopic wakes on every change of a route with a Service parent
// (one added, changed or deleted, or a parent moving to or from a
// Service): for the writer of the mesh routes' statuses.
var MeshRoutesTopic = Topic{Kind: TopicService}

// meshParentServices wakes the Services a route's parentRefs name (their
// profiles are compiled from it), and MeshRoutesTopic when it has any.
func meshParentServices(ns string, refs []gwv1.ParentReference, a affected) {
	for _, k := range ServiceParents(ns, refs) {
		a.service(k)
		a.add(MeshRoutesTopic)
	}
}

// list returns every object (a new slice, in no order: the compiler does
// not depend on it).
func (t *objTable[T]) list() []T {
	out := make([]T, 0, len(t.objs))
	for _, o := range t.objs {
		out = append(out, o)
	}
	return out
}

func (t *objTable[T]) get(k Key) (T, bool) {
	o, ok := t.objs[k]
	return o, ok
}

func objects[T gatewayObject](s *Store, k *kind) *objTable[T] { return s.tables[k.id].(*objTable[T]) }

// allGateways wakes every Gateway: the choice for objects that are rare
// and may matter to any Gateway (GatewayClasses, ReferenceGrants,
// certificate Secrets, CA ConfigMaps, BackendTLSPolicies, namespace
// labels), where finding the exact readers would need the compiler's
// dependencies in the store.
func allGateways(s *Store, a affected) {
	for k := range objects[*gwv1.Gateway](s, &gatewayKind).objs {
		a.add(GatewayTopic(k))
	}
}

// parentGateways wakes the Gateways a route's parentRefs name, directly
// or through a ListenerSet (its parent Gateway as the store holds it; a
// ListenerSet added later wakes its Gateway itself).
func parentGateways(s *Store, ns string, refs []gwv1.ParentReference, a affected) {
	for _, p := range refs {
		if p.Group != nil && *p.Group != gwv1.GroupName {
			continue
		}
		pns := ns
		if p.Namespace != nil && *p.Namespace != "" {
			pns = string(*p.Namespace)
		}
		switch {
		case p.Kind == nil || *p.Kind == "Gateway":
			a.add(GatewayTopic(Key{pns, string(p.Name)}))
		case *p.Kind == "ListenerSet":
			if ls, ok := objects[*gwv1.ListenerSet](s, &listenerSetKind).get(Key{pns, string(p.Name)}); ok {
				if k, ok := ListenerSetParent(ls); ok {
					a.add(GatewayTopic(k))
				}
			}
		}
	}
}

// backendServices lists the core Services of backendRefs (and mirrors).
func backendServices(ns string, refs []gwv1.BackendObjectReference) []Key {
	var out []Key
	for _, r := range refs {
		if (r.Group != nil && *r.Group != "") || (r.Kind != nil && *r.Kind != "Service") {
			continue
		}
		sns := ns
		if r.Namespace != nil && *r.Namespace != "" {
			sns = string(*r.Namespace)
		}
		out = append(out, Key{sns, string(r.Name)})
	}
	return out
}

// serviceGateways wakes the Gateways whose routes name Service k.
func serviceGateways(s *Store, k Key, a affected) {
	for rk := range objects[*gwv1.HTTPRoute](s, &httpRouteKind).byService[k] {
		r := objects[*gwv1.HTTPRoute](s, &httpRouteKind).objs[rk]
		parentGateways(s, r.Namespace, r.Spec.ParentRefs, a)
	}
	for rk := range objects[*gwv1.GRPCRoute](s, &grpcRouteKind).byService[k] {
		r := objects[*gwv1.GRPCRoute](s, &grpcRouteKind).objs[rk]
		parentGateways(s, r.Namespace, r.Spec.ParentRefs, a)
	}
	for rk := range objects[*gwv1.TLSRoute](s, &tlsRouteKind).byService[k] {
		r := objects[*gwv1.TLSRoute](s, &tlsRouteKind).objs[rk]
		parentGateways(s, r.Namespace, r.Spec.ParentRefs, a)
	}
	for rk := range objects[*gwv1.TCPRoute](s, &tcpRouteKind).byService[k] {
		r := objects[*gwv1.TCPRoute](s, &tcpRouteKind).objs[rk]
		parentGateways(s, r.Namespace, r.Spec.ParentRefs, a)
	}
	for rk := range objects[*gwv1.UDPRoute](s, &udpRouteKind).byService[k] {
		r := objects[*gwv1.UDPRoute](s, &udpRouteKind).objs[rk]
		parentGateways(s, r.Namespace, r.Spec.ParentRefs, a)
	}
}
