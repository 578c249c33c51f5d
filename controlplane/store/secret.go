package store

import corev1 "k8s.io/api/core/v1"

var secretKind = kind{
	name:   "Secret",
	decode: object[*corev1.Secret]("Secret", false),
	newTable: func(s *Store) table {
		t := newObjTable(s, func(s *Store, _, _ *corev1.Secret, a affected) { allGateways(s, a) })
		// Only certificates are kept: a Secret of another type is not
		// held (a write of one deletes a certificate of that name).
		t.keep = func(sec *corev1.Secret) bool { return sec.Type == corev1.SecretTypeTLS }
		return t
	},
}

// Secret returns the kubernetes.io/tls Secret k (a change wakes every
// Gateway).
func (s *Store) Secret(k Key) (*corev1.Secret, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return objects[*corev1.Secret](s, &secretKind).get(k)
}
