package store

import gwv1 "sigs.k8s.io/gateway-api/apis/v1"

var tcpRouteKind = kind{
	name:   "TCPRoute",
	decode: object[*gwv1.TCPRoute]("TCPRoute", false),
	newTable: func(s *Store) table {
		t := newObjTable(s, func(s *Store, old, cur *gwv1.TCPRoute, a affected) {
			for _, r := range []*gwv1.TCPRoute{old, cur} {
				if r != nil {
					parentGateways(s, r.Namespace, r.Spec.ParentRefs, a)
				}
			}
		})
		t.services = TCPRouteServices
		return t
	},
}

// TCPRoutes returns every TCPRoute. A change wakes its parent Gateways,
// old and new.
func (s *Store) TCPRoutes() []*gwv1.TCPRoute {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*gwv1.TCPRoute](s, &tcpRouteKind).list()
}

// TCPRouteServices are the Services r's backendRefs name (the store indexes
// routes by them; the gateway compiler reads them).
func TCPRouteServices(r *gwv1.TCPRoute) []Key {
	var refs []gwv1.BackendObjectReference
	for _, rule := range r.Spec.Rules {
		for _, b := range rule.BackendRefs {
			refs = append(refs, b.BackendObjectReference)
		}
	}
	return backendServices(r.Namespace, refs)
}
