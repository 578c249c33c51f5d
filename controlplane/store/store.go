package store

import (
	"sync"

	"k8s.io/apimachinery/pkg/runtime"
)

// DefaultClusterDomain is the DNS domain of services unless WithClusterDomain
// says otherwise: profiles are named <svc>.<ns>.svc.<cluster-domain>.
const DefaultClusterDomain = "cluster.local"

// Store is the typed in-memory store both sources fill and the compilers
// read. It implements Reader and Notifier.
//
// Objects are shared, never copied: a writer hands an object over and must
// not modify it afterwards (informer caches and freshly decoded files both
// satisfy this), and readers receive pointers and slices they must not
// modify either. Writes replace objects; they never mutate one in place, so
// a reader may keep what it got as a consistent snapshot.
//
// Every write costs time in proportion to the objects it touches and the
// topics it affects, never to the size of the store or the number of
// watchers; every read costs time in proportion to its result.
//
// What it holds is the kinds registry (kinds.go): one table per kind, each
// in a file of its own with its reads, its indexes and the topics its
// changes wake.
type Store struct {
	clusterDomain string

	mu     sync.RWMutex
	tables []table // by kind.id

	wmu      sync.RWMutex
	watchers map[Topic]map[*watcher]struct{}
}

type watcher struct{ ch chan struct{} }

var (
	_ Reader   = (*Store)(nil)
	_ Notifier = (*Store)(nil)
)

// Option configures a Store.
type Option func(*Store)

// WithClusterDomain sets the cluster's DNS domain (default cluster.local),
// which ServiceProfile names end with.
func WithClusterDomain(domain string) Option {
	return func(s *Store) {
		if domain != "" {
			s.clusterDomain = domain
		}
	}
}

// New returns an empty store.
func New(opts ...Option) *Store {
	s := &Store{
		clusterDomain: DefaultClusterDomain,
		tables:        make([]table, len(kinds)),
		watchers:      map[Topic]map[*watcher]struct{}{},
	}
	for _, k := range kinds {
		s.tables[k.id] = k.newTable(s)
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// ClusterDomain is the DNS domain the store was configured with.
func (s *Store) ClusterDomain() string { return s.clusterDomain }

// ---- Notifier ----

// Watch returns a channel that receives a value after every change
// affecting topic t (coalesced: at most one pending), and a func that ends
// the watch. A watcher that does not drain its channel only misses
// repeated wake-ups; it never blocks a writer.
func (s *Store) Watch(t Topic) (<-chan struct{}, func()) {
	w := &watcher{ch: make(chan struct{}, 1)}
	s.wmu.Lock()
	set := s.watchers[t]
	if set == nil {
		set = map[*watcher]struct{}{}
		s.watchers[t] = set
	}
	set[w] = struct{}{}
	s.wmu.Unlock()
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			s.wmu.Lock()
			if set := s.watchers[t]; set != nil {
				delete(set, w)
				if len(set) == 0 {
					delete(s.watchers, t)
				}
			}
			s.wmu.Unlock()
		})
	}
}

func (s *Store) notify(a affected) {
	if len(a) == 0 {
		return
	}
	s.wmu.RLock()
	defer s.wmu.RUnlock()
	for t := range a {
		for w := range s.watchers[t] {
			select {
			case w.ch <- struct{}{}:
			default:
			}
		}
	}
}

// write runs f under the write lock, then wakes the topics f affected,
// after the lock is released so that the woken read at once.
func (s *Store) write(f func(a affected)) {
	a := getAffected()
	s.mu.Lock()
	f(a)
	s.mu.Unlock()
	s.notify(a)
	putAffected(a)
}

// ---- writers ----

// Upsert adds or replaces an object of a kind the store holds (kinds.go):
// a *corev1.Service, *discoveryv1.EndpointSlice, *corev1.Pod,
// *corev1.ServiceAccount, *corev1.Namespace, *v1alpha1.ServiceProfile, or
// an SMI TrafficSplit of any version (stored normalized, see
// TrafficSplitFrom). The store keeps obj: the caller must not modify it
// afterwards. An object whose resourceVersion (or, without one, content) is
// unchanged wakes no one.
func (s *Store) Upsert(obj runtime.Object) error {
	it, err := decode(obj)
	if err != nil {
		return err
	}
	s.write(func(a affected) { s.tables[it.kind.id].upsert(it.key, it.v, a) })
	return nil
}

// Delete removes an object of a kind Upsert accepts; only its kind,
// namespace and name matter. Deleting an absent object is not an error.
func (s *Store) Delete(obj runtime.Object) error {
	it, err := decode(obj)
	if err != nil {
		return err
	}
	s.write(func(a affected) { s.tables[it.kind.id].delete(it.key, a) })
	return nil
}

// ReplaceAll makes objs the store's whole content of the kinds Upsert
// accepts, as a directory reload does: objects not in objs are deleted, and
// only the topics affected by an actual difference are woken. Registered
// workloads are kept. Either every object is accepted or, on error, the
// store is untouched. Readers see the old content or the new, never a mix.
func (s *Store) ReplaceAll(objs []runtime.Object) error {
	items := make([]item, 0, len(objs))
	next := make(map[kindKey]bool, len(objs))
	for _, o := range objs {
		it, err := decode(o)
		if err != nil {
			return err
		}
		items = append(items, it)
		next[kindKey{it.kind, it.key}] = true
	}
	s.write(func(a affected) {
		var gone []kindKey
		for _, k := range kinds {
			if k.decode == nil {
				continue
			}
			s.tables[k.id].each(func(key Key) {
				if !next[kindKey{k, key}] {
					gone = append(gone, kindKey{k, key})
				}
			})
		}
		for _, kk := range gone {
			s.tables[kk.kind.id].delete(kk.key, a)
		}
		for _, it := range items {
			s.tables[it.kind.id].upsert(it.key, it.v, a)
		}
	})
	return nil
}

type kindKey struct {
	kind *kind
	key  Key
}
