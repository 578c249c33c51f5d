package store

import (
	"fmt"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
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
// services it affects, never to the size of the store or the number of
// watchers; every read costs time in proportion to its result.
type Store struct {
	clusterDomain string

	mu         sync.RWMutex
	services   map[Key]*corev1.Service
	byIP       map[string]Key
	nsServices map[string]map[string]struct{} // namespace → service names
	slices     map[Key]*discoveryv1.EndpointSlice
	svcSlices  index[*discoveryv1.EndpointSlice]
	pods       map[Key]*corev1.Pod
	podRefs    map[Key]map[Key]int // pod → services whose slices reference it → endpoint count
	namespaces map[string]*corev1.Namespace
	accounts   map[Key]*corev1.ServiceAccount
	profiles   map[Key]*v1alpha1.ServiceProfile // by the profile's own key
	svcProfile map[Key]*v1alpha1.ServiceProfile // by the service it describes
	splits     map[Key]TrafficSplit
	apexSplits index[TrafficSplit]
	workloads  map[Key]registration
	svcWloads  index[Workload]
	gen        uint64 // registrations so far

	wmu      sync.RWMutex
	watchers map[Key]map[*watcher]struct{}
}

type registration struct {
	w   Workload
	gen uint64
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
		services:      map[Key]*corev1.Service{},
		byIP:          map[string]Key{},
		nsServices:    map[string]map[string]struct{}{},
		slices:        map[Key]*discoveryv1.EndpointSlice{},
		svcSlices:     index[*discoveryv1.EndpointSlice]{},
		pods:          map[Key]*corev1.Pod{},
		podRefs:       map[Key]map[Key]int{},
		namespaces:    map[string]*corev1.Namespace{},
		accounts:      map[Key]*corev1.ServiceAccount{},
		profiles:      map[Key]*v1alpha1.ServiceProfile{},
		svcProfile:    map[Key]*v1alpha1.ServiceProfile{},
		splits:        map[Key]TrafficSplit{},
		apexSplits:    index[TrafficSplit]{},
		workloads:     map[Key]registration{},
		svcWloads:     index[Workload]{},
		watchers:      map[Key]map[*watcher]struct{}{},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// ClusterDomain is the DNS domain the store was configured with.
func (s *Store) ClusterDomain() string { return s.clusterDomain }

// ---- Reader ----

// Service returns the Service k.
func (s *Store) Service(k Key) (*corev1.Service, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	svc, ok := s.services[k]
	return svc, ok
}

// ServiceByClusterIP finds the Service owning a cluster IP (any of
// spec.clusterIPs).
func (s *Store) ServiceByClusterIP(ip string) (Key, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.byIP[ip]
	return k, ok
}

// EndpointSlices returns the slices of service k, sorted by name. The slice
// is shared: do not modify it or its elements.
func (s *Store) EndpointSlices(k Key) []*discoveryv1.EndpointSlice {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svcSlices.get(k)
}

// Pod returns the Pod k.
func (s *Store) Pod(k Key) (*corev1.Pod, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.pods[k]
	return p, ok
}

// Namespace returns the Namespace name.
func (s *Store) Namespace(name string) (*corev1.Namespace, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ns, ok := s.namespaces[name]
	return ns, ok
}

// ServiceAccount returns the ServiceAccount k.
func (s *Store) ServiceAccount(k Key) (*corev1.ServiceAccount, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sa, ok := s.accounts[k]
	return sa, ok
}

// ServiceProfile returns the profile of service k: the one named
// <k.Name>.<k.Namespace>.svc.<cluster-domain> in namespace k.Namespace.
func (s *Store) ServiceProfile(k Key) (*v1alpha1.ServiceProfile, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.svcProfile[k]
	return p, ok
}

// TrafficSplits returns the splits whose apex is service k, sorted by name.
// The slice is shared: do not modify it.
func (s *Store) TrafficSplits(k Key) []TrafficSplit {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.apexSplits.get(k)
}

// Workloads returns the workloads registered for service k, sorted by
// name. The slice is shared: do not modify it.
func (s *Store) Workloads(k Key) []Workload {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svcWloads.get(k)
}

// ---- Notifier ----

// Watch returns a channel that receives a value after every change
// affecting service k (coalesced: at most one pending), and a func that
// ends the watch. A watcher that does not drain its channel only misses
// repeated wake-ups; it never blocks a writer.
func (s *Store) Watch(k Key) (<-chan struct{}, func()) {
	w := &watcher{ch: make(chan struct{}, 1)}
	s.wmu.Lock()
	set := s.watchers[k]
	if set == nil {
		set = map[*watcher]struct{}{}
		s.watchers[k] = set
	}
	set[w] = struct{}{}
	s.wmu.Unlock()
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			s.wmu.Lock()
			if set := s.watchers[k]; set != nil {
				delete(set, w)
				if len(set) == 0 {
					delete(s.watchers, k)
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
	for k := range a {
		for w := range s.watchers[k] {
			select {
			case w.ch <- struct{}{}:
			default:
			}
		}
	}
}

// affected collects the services a write touches.
type affected map[Key]struct{}

func (a affected) add(k Key) { a[k] = struct{}{} }

// ---- writers ----

// Upsert adds or replaces an object: a *corev1.Service,
// *discoveryv1.EndpointSlice, *corev1.Pod, *corev1.ServiceAccount,
// *corev1.Namespace, *v1alpha1.ServiceProfile, or an SMI TrafficSplit of any
// version (stored normalized, see TrafficSplitFrom). The store keeps obj:
// the caller must not modify it afterwards. An object whose
// resourceVersion (or, without one, content) is unchanged wakes no one.
func (s *Store) Upsert(obj runtime.Object) error {
	it, err := s.item(obj)
	if err != nil {
		return err
	}
	a := affected{}
	s.mu.Lock()
	s.upsertLocked(it, a)
	s.mu.Unlock()
	s.notify(a)
	return nil
}

// Delete removes an object of a kind Upsert accepts; only its kind,
// namespace and name matter. Deleting an absent object is not an error.
func (s *Store) Delete(obj runtime.Object) error {
	it, err := s.item(obj)
	if err != nil {
		return err
	}
	a := affected{}
	s.mu.Lock()
	s.deleteLocked(it.kind, it.key, a)
	s.mu.Unlock()
	s.notify(a)
	return nil
}

// UpsertTrafficSplit adds or replaces a normalized TrafficSplit (by
// ts.Key). The store keeps ts.Backends: do not modify it afterwards.
func (s *Store) UpsertTrafficSplit(ts TrafficSplit) error {
	if ts.Key.Namespace == "" || ts.Key.Name == "" {
		return fmt.Errorf("store: TrafficSplit needs a namespace and a name")
	}
	a := affected{}
	s.mu.Lock()
	s.upsertLocked(item{kind: kindSplit, key: ts.Key, split: ts}, a)
	s.mu.Unlock()
	s.notify(a)
	return nil
}

// DeleteTrafficSplit removes the TrafficSplit k.
func (s *Store) DeleteTrafficSplit(k Key) {
	a := affected{}
	s.mu.Lock()
	s.deleteLocked(kindSplit, k, a)
	s.mu.Unlock()
	s.notify(a)
}

// RegisterWorkload adds a local-mode workload, replacing any workload of the
// same namespace and name. The returned func removes this registration,
// unless a later one of the same name has replaced it (so a proxy that
// reconnects is not unregistered by its previous stream ending). The store
// keeps w.Labels: do not modify it afterwards.
func (s *Store) RegisterWorkload(w Workload) (unregister func(), err error) {
	if w.Namespace == "" || w.Name == "" {
		return nil, fmt.Errorf("store: workload needs a namespace and a name")
	}
	k := Key{w.Namespace, w.Name}
	a := affected{}
	s.mu.Lock()
	s.gen++
	gen := s.gen
	s.removeWorkloadLocked(k, a)
	s.workloads[k] = registration{w: w, gen: gen}
	if w.Service != "" {
		svc := Key{w.Namespace, w.Service}
		s.svcWloads.set(svc, w.Name, w)
		a.add(svc)
	}
	s.mu.Unlock()
	s.notify(a)
	var once sync.Once
	return func() {
		once.Do(func() {
			a := affected{}
			s.mu.Lock()
			if r, ok := s.workloads[k]; ok && r.gen == gen {
				s.removeWorkloadLocked(k, a)
			}
			s.mu.Unlock()
			s.notify(a)
		})
	}, nil
}

// UnregisterWorkload removes the workload k, whichever registration made
// it. It reports whether there was one.
func (s *Store) UnregisterWorkload(k Key) bool {
	a := affected{}
	s.mu.Lock()
	_, ok := s.workloads[k]
	s.removeWorkloadLocked(k, a)
	s.mu.Unlock()
	s.notify(a)
	return ok
}

func (s *Store) removeWorkloadLocked(k Key, a affected) {
	r, ok := s.workloads[k]
	if !ok {
		return
	}
	delete(s.workloads, k)
	if r.w.Service != "" {
		svc := Key{k.Namespace, r.w.Service}
		s.svcWloads.remove(svc, k.Name)
		a.add(svc)
	}
}

// ReplaceAll makes objs the store's whole content of the kinds Upsert
// accepts, as a directory reload does: objects not in objs are deleted, and
// only the services affected by an actual difference are woken. Registered
// workloads are kept. Either every object is accepted or, on error, the
// store is untouched. Readers see the old content or the new, never a mix.
func (s *Store) ReplaceAll(objs []runtime.Object) error {
	items := make([]item, 0, len(objs))
	next := make(map[kindKey]bool, len(objs))
	for _, o := range objs {
		it, err := s.item(o)
		if err != nil {
			return err
		}
		items = append(items, it)
		next[kindKey{it.kind, it.key}] = true
	}
	a := affected{}
	s.mu.Lock()
	for _, kk := range s.allKeysLocked() {
		if !next[kk] {
			s.deleteLocked(kk.kind, kk.key, a)
		}
	}
	for _, it := range items {
		s.upsertLocked(it, a)
	}
	s.mu.Unlock()
	s.notify(a)
	return nil
}

type kindKey struct {
	kind kind
	key  Key
}

func (s *Store) allKeysLocked() []kindKey {
	var out []kindKey
	for k := range s.services {
		out = append(out, kindKey{kindService, k})
	}
	for k := range s.slices {
		out = append(out, kindKey{kindSlice, k})
	}
	for k := range s.pods {
		out = append(out, kindKey{kindPod, k})
	}
	for n := range s.namespaces {
		out = append(out, kindKey{kindNamespace, Key{Name: n}})
	}
	for k := range s.accounts {
		out = append(out, kindKey{kindAccount, k})
	}
	for k := range s.profiles {
		out = append(out, kindKey{kindProfile, k})
	}
	for k := range s.splits {
		out = append(out, kindKey{kindSplit, k})
	}
	return out
}

// ---- items: one decoded write ----

type kind int

const (
	kindService kind = iota
	kindSlice
	kindPod
	kindNamespace
	kindAccount
	kindProfile
	kindSplit
)

type item struct {
	kind  kind
	key   Key
	obj   runtime.Object
	split TrafficSplit
}

func (s *Store) item(obj runtime.Object) (item, error) {
	if obj == nil {
		return item{}, fmt.Errorf("store: nil object")
	}
	var k kind
	switch obj.(type) {
	case *corev1.Service:
		k = kindService
	case *discoveryv1.EndpointSlice:
		k = kindSlice
	case *corev1.Pod:
		k = kindPod
	case *corev1.Namespace:
		k = kindNamespace
	case *corev1.ServiceAccount:
		k = kindAccount
	case *v1alpha1.ServiceProfile:
		k = kindProfile
	default:
		ts, ok, err := TrafficSplitFrom(obj)
		if err != nil {
			return item{}, err
		}
		if !ok {
			return item{}, fmt.Errorf("store: unsupported object %T", obj)
		}
		if ts.Key.Namespace == "" || ts.Key.Name == "" {
			return item{}, fmt.Errorf("store: TrafficSplit needs a namespace and a name")
		}
		return item{kind: kindSplit, key: ts.Key, split: ts}, nil
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return item{}, fmt.Errorf("store: %T has no metadata", obj)
	}
	key := Key{m.GetNamespace(), m.GetName()}
	if key.Name == "" {
		return item{}, fmt.Errorf("store: %T without a name", obj)
	}
	if k == kindNamespace {
		key.Namespace = ""
	} else if key.Namespace == "" {
		return item{}, fmt.Errorf("store: %T %s without a namespace", obj, key.Name)
	}
	return item{kind: k, key: key, obj: obj}, nil
}

func (s *Store) upsertLocked(it item, a affected) {
	switch it.kind {
	case kindService:
		s.upsertService(it.key, it.obj.(*corev1.Service), a)
	case kindSlice:
		s.upsertSlice(it.key, it.obj.(*discoveryv1.EndpointSlice), a)
	case kindPod:
		p := it.obj.(*corev1.Pod)
		if old, ok := s.pods[it.key]; ok && unchanged(old, p) {
			return
		}
		s.pods[it.key] = p
		for svc := range s.podRefs[it.key] {
			a.add(svc)
		}
	case kindNamespace:
		ns := it.obj.(*corev1.Namespace)
		old, ok := s.namespaces[it.key.Name]
		if ok && unchanged(old, ns) {
			return
		}
		s.namespaces[it.key.Name] = ns
		if !ok || !equality.Semantic.DeepEqual(old.Labels, ns.Labels) || !equality.Semantic.DeepEqual(old.Annotations, ns.Annotations) {
			s.namespaceChanged(it.key.Name, a)
		}
	case kindAccount:
		s.accounts[it.key] = it.obj.(*corev1.ServiceAccount)
	case kindProfile:
		p := it.obj.(*v1alpha1.ServiceProfile)
		if old, ok := s.profiles[it.key]; ok && unchanged(old, p) {
			return
		}
		s.profiles[it.key] = p
		if svc, ok := s.profileService(it.key); ok {
			s.svcProfile[svc] = p
			a.add(svc)
		}
	case kindSplit:
		old, ok := s.splits[it.key]
		if ok && equality.Semantic.DeepEqual(old, it.split) {
			return
		}
		if ok {
			s.apexSplits.remove(Key{it.key.Namespace, old.Service}, it.key.Name)
			splitAffects(old, a)
		}
		s.splits[it.key] = it.split
		s.apexSplits.set(Key{it.key.Namespace, it.split.Service}, it.key.Name, it.split)
		splitAffects(it.split, a)
	}
}

func (s *Store) deleteLocked(k kind, key Key, a affected) {
	switch k {
	case kindService:
		old, ok := s.services[key]
		if !ok {
			return
		}
		s.unindexService(key, old)
		delete(s.services, key)
		if names := s.nsServices[key.Namespace]; names != nil {
			delete(names, key.Name)
			if len(names) == 0 {
				delete(s.nsServices, key.Namespace)
			}
		}
		a.add(key)
	case kindSlice:
		old, ok := s.slices[key]
		if !ok {
			return
		}
		s.unindexSlice(key, old, a)
		delete(s.slices, key)
	case kindPod:
		if _, ok := s.pods[key]; !ok {
			return
		}
		delete(s.pods, key)
		for svc := range s.podRefs[key] {
			a.add(svc)
		}
	case kindNamespace:
		if _, ok := s.namespaces[key.Name]; !ok {
			return
		}
		delete(s.namespaces, key.Name)
		s.namespaceChanged(key.Name, a)
	case kindAccount:
		delete(s.accounts, key)
	case kindProfile:
		if _, ok := s.profiles[key]; !ok {
			return
		}
		delete(s.profiles, key)
		if svc, ok := s.profileService(key); ok {
			delete(s.svcProfile, svc)
			a.add(svc)
		}
	case kindSplit:
		old, ok := s.splits[key]
		if !ok {
			return
		}
		delete(s.splits, key)
		s.apexSplits.remove(Key{key.Namespace, old.Service}, key.Name)
		splitAffects(old, a)
	}
}

func splitAffects(ts TrafficSplit, a affected) {
	a.add(Key{ts.Key.Namespace, ts.Service})
	for _, b := range ts.Backends {
		a.add(Key{ts.Key.Namespace, b.Service})
	}
}

func (s *Store) namespaceChanged(ns string, a affected) {
	for name := range s.nsServices[ns] {
		a.add(Key{ns, name})
	}
}

// profileService is the service a profile describes: its name must be the
// service's FQDN in the cluster domain, and it must be in the service's
// namespace. Other profiles are kept but serve no one.
func (s *Store) profileService(k Key) (Key, bool) {
	svc, ns, ok := v1alpha1.ServiceForProfile(k.Name, s.clusterDomain)
	if !ok || ns != k.Namespace {
		return Key{}, false
	}
	return Key{ns, svc}, true
}

func (s *Store) upsertService(k Key, svc *corev1.Service, a affected) {
	old, ok := s.services[k]
	if ok && unchanged(old, svc) {
		return
	}
	if ok {
		s.unindexService(k, old)
	}
	s.services[k] = svc
	for _, ip := range clusterIPs(svc) {
		s.byIP[ip] = k
	}
	names := s.nsServices[k.Namespace]
	if names == nil {
		names = map[string]struct{}{}
		s.nsServices[k.Namespace] = names
	}
	names[k.Name] = struct{}{}
	a.add(k)
}

func (s *Store) unindexService(k Key, svc *corev1.Service) {
	for _, ip := range clusterIPs(svc) {
		if s.byIP[ip] == k {
			delete(s.byIP, ip)
		}
	}
}

func clusterIPs(svc *corev1.Service) []string {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	out := ips[:0:0]
	for _, ip := range ips {
		if ip != "" && ip != corev1.ClusterIPNone {
			out = append(out, ip)
		}
	}
	return out
}

func (s *Store) upsertSlice(k Key, es *discoveryv1.EndpointSlice, a affected) {
	old, ok := s.slices[k]
	if ok && unchanged(old, es) {
		return
	}
	if ok {
		s.unindexSlice(k, old, a)
	}
	s.slices[k] = es
	svc, ok := sliceService(es)
	if !ok {
		return
	}
	s.svcSlices.set(svc, k.Name, es)
	for _, p := range slicePods(es) {
		refs := s.podRefs[p]
		if refs == nil {
			refs = map[Key]int{}
			s.podRefs[p] = refs
		}
		refs[svc]++
	}
	a.add(svc)
}

func (s *Store) unindexSlice(k Key, es *discoveryv1.EndpointSlice, a affected) {
	svc, ok := sliceService(es)
	if !ok {
		return
	}
	s.svcSlices.remove(svc, k.Name)
	for _, p := range slicePods(es) {
		refs := s.podRefs[p]
		if refs[svc]--; refs[svc] <= 0 {
			delete(refs, svc)
		}
		if len(refs) == 0 {
			delete(s.podRefs, p)
		}
	}
	a.add(svc)
}

// sliceService is the service a slice belongs to, by its
// kubernetes.io/service-name label.
func sliceService(es *discoveryv1.EndpointSlice) (Key, bool) {
	name := es.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return Key{}, false
	}
	return Key{es.Namespace, name}, true
}

// slicePods lists the pods a slice's endpoints reference by targetRef, once
// per endpoint.
func slicePods(es *discoveryv1.EndpointSlice) []Key {
	var out []Key
	for i := range es.Endpoints {
		ref := es.Endpoints[i].TargetRef
		if ref == nil || ref.Name == "" || (ref.Kind != "" && ref.Kind != "Pod") {
			continue
		}
		ns := ref.Namespace
		if ns == "" {
			ns = es.Namespace
		}
		out = append(out, Key{ns, ref.Name})
	}
	return out
}

// unchanged reports whether an update carries nothing new: the same
// resourceVersion when both have one (an informer's resync), else equal
// content (a reloaded file).
func unchanged(old, cur runtime.Object) bool {
	om, ok1 := old.(metav1.Object)
	cm, ok2 := cur.(metav1.Object)
	if ok1 && ok2 && om.GetResourceVersion() != "" && cm.GetResourceVersion() != "" {
		return om.GetResourceVersion() == cm.GetResourceVersion()
	}
	return equality.Semantic.DeepEqual(old, cur)
}

// ---- index: per-service groups with a shared sorted snapshot ----

type group[T any] struct {
	byName map[string]T
	list   []T // sorted by name; replaced on change, never mutated
}

type index[T any] map[Key]*group[T]

func (ix index[T]) get(k Key) []T {
	if g := ix[k]; g != nil {
		return g.list
	}
	return nil
}

func (ix index[T]) set(k Key, name string, v T) {
	g := ix[k]
	if g == nil {
		g = &group[T]{byName: map[string]T{}}
		ix[k] = g
	}
	g.byName[name] = v
	g.rebuild()
}

func (ix index[T]) remove(k Key, name string) {
	g := ix[k]
	if g == nil {
		return
	}
	if _, ok := g.byName[name]; !ok {
		return
	}
	delete(g.byName, name)
	if len(g.byName) == 0 {
		delete(ix, k)
		return
	}
	g.rebuild()
}

func (g *group[T]) rebuild() {
	names := make([]string, 0, len(g.byName))
	for n := range g.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	list := make([]T, len(names))
	for i, n := range names {
		list[i] = g.byName[n]
	}
	g.list = list
}
