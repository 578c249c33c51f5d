package store

import gwv1 "sigs.k8s.io/gateway-api/apis/v1"

var grpcRouteKind = kind{
	name:   "GRPCRoute",
	decode: object[*gwv1.GRPCRoute]("GRPCRoute", false),
	newTable: func(s *Store) table {
		t := newObjTable(s, func(s *Store, old, cur *gwv1.GRPCRoute, a affected) {
			for _, r := range []*gwv1.GRPCRoute{old, cur} {
				if r != nil {
					parentGateways(s, r.Namespace, r.Spec.ParentRefs, a)
					meshParentServices(r.Namespace, r.Spec.ParentRefs, a)
				}
			}
		})
		t.services = GRPCRouteServices
		t.meshParents = func(r *gwv1.GRPCRoute) []Key { return ServiceParents(r.Namespace, r.Spec.ParentRefs) }
		return t
	},
}

// GRPCRoutes returns every GRPCRoute. A change wakes its parent Gateways
// and its parent Services (GAMMA), old and new.
func (s *Store) GRPCRoutes() []*gwv1.GRPCRoute {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*gwv1.GRPCRoute](s, &grpcRouteKind).list()
}

// GRPCRouteServices are the Services r's backendRefs and mirrors name (the store indexes
// routes by them; the gateway compiler reads them).
func GRPCRouteServices(r *gwv1.GRPCRoute) []Key {
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

// MeshGRPCRoutes returns the GRPCRoutes whose parentRefs name Service k (GAMMA
// mesh routes), in no order.
func (s *Store) MeshGRPCRoutes(k Key) []*gwv1.GRPCRoute {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*gwv1.GRPCRoute](s, &grpcRouteKind).byMeshParent(k)
}
