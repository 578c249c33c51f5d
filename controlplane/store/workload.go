package store

import (
	"fmt"
	"sync"
)

// Workloads are written only through RegisterWorkload and
// UnregisterWorkload (no decode): Upsert, Delete and ReplaceAll leave them
// alone, so a directory reload keeps the proxies that registered.
var workloadKind = kind{
	name: "Workload",
	newTable: func(*Store) table {
		return &workloadTable{workloads: map[Key]registration{}, svcWloads: index[Workload]{}}
	},
}

// workloadTable holds local-mode Workloads, indexed by service (sorted by
// name). A change wakes its service's topic, old and new.
type workloadTable struct {
	workloads map[Key]registration
	svcWloads index[Workload]
	gen       uint64 // registrations so far
}

type registration struct {
	w   Workload
	gen uint64
}

func (s *Store) workloadTable() *workloadTable { return s.tables[workloadKind.id].(*workloadTable) }

// Workloads returns the workloads registered for service k, sorted by
// name. The slice is shared: do not modify it.
func (s *Store) Workloads(k Key) []Workload {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.workloadTable().svcWloads.get(k)
}

// RegisterWorkload adds a local-mode workload, replacing any workload of the
// same namespace and name. The returned func removes this registration,
// unless a later one of the same name has replaced it (so a proxy that
// reconnects is not unregistered by its previous stream ending). The store
// keeps w.Labels: do not modify it afterwards.
func (s *Store) RegisterWorkload(w Workload) (unregister func(), err error) {
	if w.Namespace == "" || w.Name == "" {
		return nil, fmt.Errorf("store: workload %s/%s needs a namespace and a name", w.Namespace, w.Name)
	}
	k := Key{w.Namespace, w.Name}
	var gen uint64
	s.write(func(a affected) {
		t := s.workloadTable()
		t.gen++
		gen = t.gen
		t.upsert(k, registration{w: w, gen: gen}, a)
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			s.write(func(a affected) {
				t := s.workloadTable()
				if r, ok := t.workloads[k]; ok && r.gen == gen {
					t.delete(k, a)
				}
			})
		})
	}, nil
}

// UnregisterWorkload removes the workload k, whichever registration made
// it. It reports whether there was one.
func (s *Store) UnregisterWorkload(k Key) (ok bool) {
	s.write(func(a affected) {
		t := s.workloadTable()
		_, ok = t.workloads[k]
		t.delete(k, a)
	})
	return ok
}

func (t *workloadTable) upsert(k Key, v any, a affected) {
	r := v.(registration)
	t.delete(k, a)
	t.workloads[k] = r
	if r.w.Service != "" {
		svc := Key{k.Namespace, r.w.Service}
		t.svcWloads.set(svc, k.Name, r.w)
		a.service(svc)
	}
}

func (t *workloadTable) delete(k Key, a affected) {
	r, ok := t.workloads[k]
	if !ok {
		return
	}
	delete(t.workloads, k)
	if r.w.Service != "" {
		svc := Key{k.Namespace, r.w.Service}
		t.svcWloads.remove(svc, k.Name)
		a.service(svc)
	}
}

func (t *workloadTable) each(f func(Key)) {
	for k := range t.workloads {
		f(k)
	}
}
