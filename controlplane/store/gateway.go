package store

import gwv1 "sigs.k8s.io/gateway-api/apis/v1"

var gatewayKind = kind{
	name:   "Gateway",
	decode: object[*gwv1.Gateway]("Gateway", false),
	newTable: func(s *Store) table {
		return newObjTable(s, func(_ *Store, old, cur *gwv1.Gateway, a affected) {
			a.add(GatewaysTopic)
			for _, g := range []*gwv1.Gateway{old, cur} {
				if g != nil {
					a.add(GatewayTopic(Key{g.Namespace, g.Name}))
				}
			}
		})
	},
}

// Gateway returns the Gateway k (a change wakes its own topic).
func (s *Store) Gateway(k Key) (*gwv1.Gateway, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*gwv1.Gateway](s, &gatewayKind).get(k)
}

// Gateways returns every Gateway.
func (s *Store) Gateways() []*gwv1.Gateway {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*gwv1.Gateway](s, &gatewayKind).list()
}
