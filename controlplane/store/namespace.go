package store

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

var namespaceKind = kind{
	name:     "Namespace",
	decode:   object[*corev1.Namespace]("Namespace", true),
	newTable: func(s *Store) table { return &namespaceTable{s: s, namespaces: map[string]*corev1.Namespace{}} },
}

// namespaceTable holds Namespaces (keyed by name alone). Their labels and
// annotations configure the services in them (opaque ports, say): a change
// to those, or a namespace appearing or going, wakes every service in it
// (the service kind's index); a status-only change wakes no one.
type namespaceTable struct {
	s          *Store
	namespaces map[string]*corev1.Namespace
}

func (s *Store) namespaceTable() *namespaceTable {
	return s.tables[namespaceKind.id].(*namespaceTable)
}

// Namespace returns the Namespace name.
func (s *Store) Namespace(name string) (*corev1.Namespace, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ns, ok := s.namespaceTable().namespaces[name]
	return ns, ok
}

func (t *namespaceTable) upsert(k Key, v any, a affected) {
	ns := v.(*corev1.Namespace)
	old, ok := t.namespaces[k.Name]
	if ok && unchanged(old, ns) {
		return
	}
	t.namespaces[k.Name] = ns
	if !ok || !equality.Semantic.DeepEqual(old.Labels, ns.Labels) || !equality.Semantic.DeepEqual(old.Annotations, ns.Annotations) {
		t.affects(k.Name, a)
	}
}

func (t *namespaceTable) delete(k Key, a affected) {
	if _, ok := t.namespaces[k.Name]; !ok {
		return
	}
	delete(t.namespaces, k.Name)
	t.affects(k.Name, a)
}

func (t *namespaceTable) each(f func(Key)) {
	for n := range t.namespaces {
		f(Key{Name: n})
	}
}

func (t *namespaceTable) affects(ns string, a affected) {
	for name := range t.s.serviceTable().nsServices[ns] {
		a.service(Key{ns, name})
	}
	// Labels decide listeners' allowedRoutes selectors.
	allGateways(t.s, a)
}
