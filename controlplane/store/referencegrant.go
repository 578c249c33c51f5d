package store

import gwv1 "sigs.k8s.io/gateway-api/apis/v1"

var referenceGrantKind = kind{
	name:   "ReferenceGrant",
	decode: object[*gwv1.ReferenceGrant]("ReferenceGrant", false),
	newTable: func(s *Store) table {
		return newObjTable(s, func(s *Store, _, _ *gwv1.ReferenceGrant, a affected) { allGateways(s, a) })
	},
}

// ReferenceGrants returns every ReferenceGrant (a change wakes every
// Gateway: a grant may open a Service or a Secret to any of them).
func (s *Store) ReferenceGrants() []*gwv1.ReferenceGrant {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*gwv1.ReferenceGrant](s, &referenceGrantKind).list()
}
