package store

import gwv1 "sigs.k8s.io/gateway-api/apis/v1"

var gatewayClassKind = kind{
	name:   "GatewayClass",
	decode: object[*gwv1.GatewayClass]("GatewayClass", true),
	newTable: func(s *Store) table {
		return newObjTable(s, func(s *Store, _, _ *gwv1.GatewayClass, a affected) { allGateways(s, a) })
	},
}

// GatewayClasses returns every GatewayClass (a change wakes every Gateway).
func (s *Store) GatewayClasses() []*gwv1.GatewayClass {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*gwv1.GatewayClass](s, &gatewayClassKind).list()
}
