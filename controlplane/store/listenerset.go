package store

import gwv1 "sigs.k8s.io/gateway-api/apis/v1"

var listenerSetKind = kind{
	name:   "ListenerSet",
	decode: object[*gwv1.ListenerSet]("ListenerSet", false),
	newTable: func(s *Store) table {
		return newObjTable(s, func(_ *Store, old, cur *gwv1.ListenerSet, a affected) {
			for _, ls := range []*gwv1.ListenerSet{old, cur} {
				if ls != nil {
					if k, ok := ListenerSetParent(ls); ok {
						a.add(GatewayTopic(k))
					}
				}
			}
		})
	},
}

// ListenerSets returns every ListenerSet. A change wakes its parent
// Gateway, old and new.
func (s *Store) ListenerSets() []*gwv1.ListenerSet {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*gwv1.ListenerSet](s, &listenerSetKind).list()
}

// ListenerSet returns the ListenerSet k.
func (s *Store) ListenerSet(k Key) (*gwv1.ListenerSet, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*gwv1.ListenerSet](s, &listenerSetKind).get(k)
}

// ListenerSetParent is the Gateway ls's spec.parentRef names (the CRD
// defaults its group and kind; any other group or kind names no Gateway).
func ListenerSetParent(ls *gwv1.ListenerSet) (Key, bool) {
	p := ls.Spec.ParentRef
	if p.Group != nil && *p.Group != gwv1.GroupName {
		return Key{}, false
	}
	if p.Kind != nil && *p.Kind != "Gateway" {
		return Key{}, false
	}
	ns := ls.Namespace
	if p.Namespace != nil && *p.Namespace != "" {
		ns = string(*p.Namespace)
	}
	return Key{Namespace: ns, Name: string(p.Name)}, true
}
