package store

import gwv1 "sigs.k8s.io/gateway-api/apis/v1"

var referenceGrantKind = kind{
	name:   "ReferenceGrant",
	decode: object[*gwv1.ReferenceGrant]("ReferenceGrant", false),
	newTable: func(s *Store) table {
		return newObjTable(s, func(s *Store, old, cur *gwv1.ReferenceGrant, a affected) {
			allGateways(s, a)
			for _, g := range []*gwv1.ReferenceGrant{old, cur} {
				if g != nil {
					grantMeshParents(s, g, a)
				}
			}
		})
	},
}

// ReferenceGrants returns every ReferenceGrant (a change wakes every
// Gateway: a grant may open a Service or a Secret to any of them; and the
// Service parents of the mesh routes in the namespaces it grants from).
func (s *Store) ReferenceGrants() []*gwv1.ReferenceGrant {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*gwv1.ReferenceGrant](s, &referenceGrantKind).list()
}

// grantMeshParents wakes the Service parents of the mesh routes in the
// namespaces g grants from: their backendRefs into g's namespace may have
// become (un)permitted. Grants are rare, so a scan of the routes is fine.
func grantMeshParents(s *Store, g *gwv1.ReferenceGrant, a affected) {
	from := map[string]bool{}
	for _, f := range g.Spec.From {
		from[string(f.Namespace)] = true
	}
	hr := objects[*gwv1.HTTPRoute](s, &httpRouteKind)
	for _, set := range hr.byParent {
		for rk := range set {
			if from[rk.Namespace] {
				r := hr.objs[rk]
				meshParentServices(r.Namespace, r.Spec.ParentRefs, a)
			}
		}
	}
	gr := objects[*gwv1.GRPCRoute](s, &grpcRouteKind)
	for _, set := range gr.byParent {
		for rk := range set {
			if from[rk.Namespace] {
				r := gr.objs[rk]
				meshParentServices(r.Namespace, r.Spec.ParentRefs, a)
			}
		}
	}
}
