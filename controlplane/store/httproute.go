package store

import gwv1 "sigs.k8s.io/gateway-api/apis/v1"

var httpRouteKind = kind{
	name:   "HTTPRoute",
	decode: object[*gwv1.HTTPRoute]("HTTPRoute", false),
	newTable: func(s *Store) table {
		t := newObjTable(s, func(s *Store, old, cur *gwv1.HTTPRoute, a affected) {
			for _, r := range []*gwv1.HTTPRoute{old, cur} {
				if r != nil {
					parentGateways(s, r.Namespace, r.Spec.ParentRefs, a)
					meshParentServices(r.Namespace, r.Spec.ParentRefs, a)
				}
			}
		})
		t.services = HTTPRouteServices
		t.meshParents = func(r *gwv1.HTTPRoute) []Key { return ServiceParents(r.Namespace, r.Spec.ParentRefs) }
		return t
	},
}

// HTTPRoutes returns every HTTPRoute. A change wakes its parent Gateways
// and its parent Services (GAMMA), old and new.
func (s *Store) HTTPRoutes() []*gwv1.HTTPRoute {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*gwv1.HTTPRoute](s, &httpRouteKind).list()
}

// HTTPRouteServices are the Services r's backendRefs and mirrors name (the store indexes
// routes by them; the gateway compiler reads them).
func HTTPRouteServices(r *gwv1.HTTPRoute) []Key {
	var refs []gwv1.BackendObjectReference
	for _, rule := range r.Spec.Rules {
		for _, b := range rule.BackendRefs {
			refs = append(refs, b.BackendObjectReference)
		}
		for _, f := range rule.Filters {
			if f.RequestMirror != nil {
				refs = append(refs, f.RequestMirror.BackendRef)
			}
		}
	}
	return backendServices(r.Namespace, refs)
}

// MeshHTTPRoutes returns the HTTPRoutes whose parentRefs name Service k (GAMMA
// mesh routes), in no order.
func (s *Store) MeshHTTPRoutes(k Key) []*gwv1.HTTPRoute {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*gwv1.HTTPRoute](s, &httpRouteKind).byMeshParent(k)
}
