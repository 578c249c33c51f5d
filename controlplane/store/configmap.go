package store

import corev1 "k8s.io/api/core/v1"

var configMapKind = kind{
	name:   "ConfigMap",
	decode: object[*corev1.ConfigMap]("ConfigMap", false),
	newTable: func(s *Store) table {
		t := newObjTable(s, func(s *Store, _, _ *corev1.ConfigMap, a affected) { allGateways(s, a) })
		// Only CA bundles (BackendTLSPolicy's caCertificateRefs) are kept.
		t.keep = func(cm *corev1.ConfigMap) bool { _, ok := cm.Data["ca.crt"]; return ok }
		return t
	},
}

// ConfigMap returns ConfigMap k when it holds a ca.crt (a change wakes
// every Gateway).
func (s *Store) ConfigMap(k Key) (*corev1.ConfigMap, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*corev1.ConfigMap](s, &configMapKind).get(k)
}
