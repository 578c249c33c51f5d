package store

import gwv1 "sigs.k8s.io/gateway-api/apis/v1"

var backendTLSPolicyKind = kind{
	name:   "BackendTLSPolicy",
	decode: object[*gwv1.BackendTLSPolicy]("BackendTLSPolicy", false),
	newTable: func(s *Store) table {
		return newObjTable(s, func(s *Store, _, _ *gwv1.BackendTLSPolicy, a affected) { allGateways(s, a) })
	},
}

// BackendTLSPolicies returns every BackendTLSPolicy (a change wakes every
// Gateway).
func (s *Store) BackendTLSPolicies() []*gwv1.BackendTLSPolicy {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*gwv1.BackendTLSPolicy](s, &backendTLSPolicyKind).list()
}
