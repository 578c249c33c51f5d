package store

import corev1 "k8s.io/api/core/v1"

var accountKind = kind{
	name:     "ServiceAccount",
	decode:   object[*corev1.ServiceAccount]("ServiceAccount", false),
	newTable: func(*Store) table { return &accountTable{accounts: map[Key]*corev1.ServiceAccount{}} },
}

// accountTable holds ServiceAccounts. A change wakes no one: identity
// comes from the pod's serviceAccountName, not from the account object.
type accountTable struct {
	accounts map[Key]*corev1.ServiceAccount
}

// ServiceAccount returns the ServiceAccount k.
func (s *Store) ServiceAccount(k Key) (*corev1.ServiceAccount, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sa, ok := s.tables[accountKind.id].(*accountTable).accounts[k]
	return sa, ok
}

func (t *accountTable) upsert(k Key, v any, _ affected) {
	t.accounts[k] = v.(*corev1.ServiceAccount)
}

func (t *accountTable) delete(k Key, _ affected) { delete(t.accounts, k) }

func (t *accountTable) each(f func(Key)) {
	for k := range t.accounts {
		f(k)
	}
}
