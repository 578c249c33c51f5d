package store

import gwv1 "sigs.k8s.io/gateway-api/apis/v1"

var tlsRouteKind = kind{
	name:   "TLSRoute",
	decode: object[*gwv1.TLSRoute]("TLSRoute", false),
	newTable: func(s *Store) table {
		t := newObjTable(s, func(s *Store, old, cur *gwv1.TLSRoute, a affected) {
			for _, r := range []*gwv1.TLSRoute{old, cur} {
				if r != nil {
					parentGateways(s, r.Namespace, r.Spec.ParentRefs, a)
				}
			}
		})
		t.services = TLSRouteServices
		return t
	},
}

// TLSRoutes returns every TLSRoute. A change wakes its parent Gateways,
// old and new.
func (s *Store) TLSRoutes() []*gwv1.TLSRoute {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*gwv1.TLSRoute](s, &tlsRouteKind).list()
}

// TLSRouteServices are the Services r's backendRefs name (the store indexes
// routes by them; the gateway compiler reads them).
func TLSRouteServices(r *gwv1.TLSRoute) []Key {
	var refs []gwv1.BackendObjectReference
	for _, rule := range r.Spec.Rules {
		for _, b := range rule.BackendRefs {
			refs = append(refs, b.BackendObjectReference)
		}
	}
	return backendServices(r.Namespace, refs)
}
