package store

import gwv1 "sigs.k8s.io/gateway-api/apis/v1"

var udpRouteKind = kind{
	name:   "UDPRoute",
	decode: object[*gwv1.UDPRoute]("UDPRoute", false),
	newTable: func(s *Store) table {
		t := newObjTable(s, func(s *Store, old, cur *gwv1.UDPRoute, a affected) {
			for _, r := range []*gwv1.UDPRoute{old, cur} {
				if r != nil {
					parentGateways(s, r.Namespace, r.Spec.ParentRefs, a)
				}
			}
		})
		t.services = UDPRouteServices
		return t
	},
}

// UDPRoutes returns every UDPRoute. A change wakes its parent Gateways,
// old and new.
func (s *Store) UDPRoutes() []*gwv1.UDPRoute {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*gwv1.UDPRoute](s, &udpRouteKind).list()
}

// UDPRouteServices are the Services r's backendRefs name (the store indexes
// routes by them; the gateway compiler reads them).
func UDPRouteServices(r *gwv1.UDPRoute) []Key {
	var refs []gwv1.BackendObjectReference
	for _, rule := range r.Spec.Rules {
		for _, b := range rule.BackendRefs {
			refs = append(refs, b.BackendObjectReference)
		}
	}
	return backendServices(r.Namespace, refs)
}
