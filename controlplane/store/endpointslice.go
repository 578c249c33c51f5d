package store

import discoveryv1 "k8s.io/api/discovery/v1"

var sliceKind = kind{
	name:   "EndpointSlice",
	decode: object[*discoveryv1.EndpointSlice]("EndpointSlice", false),
	newTable: func(*Store) table {
		return &sliceTable{slices: map[Key]*discoveryv1.EndpointSlice{}, svcSlices: index[*discoveryv1.EndpointSlice]{}, podRefs: map[Key]map[Key]int{}}
	},
}

// sliceTable holds EndpointSlices, indexed by their service (the
// kubernetes.io/service-name label, sorted by name), and the pods their
// endpoints reference by targetRef (for the pod kind). A change wakes its
// service's topic, before and after the write.
type sliceTable struct {
	slices    map[Key]*discoveryv1.EndpointSlice
	svcSlices index[*discoveryv1.EndpointSlice]
	podRefs   map[Key]map[Key]int // pod → services whose slices reference it → endpoint count
}

func (s *Store) sliceTable() *sliceTable { return s.tables[sliceKind.id].(*sliceTable) }

// EndpointSlices returns the slices of service k, sorted by name. The slice
// is shared: do not modify it or its elements.
func (s *Store) EndpointSlices(k Key) []*discoveryv1.EndpointSlice {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.sliceTable().svcSlices.get(k)
}

func (t *sliceTable) upsert(k Key, v any, a affected) {
	es := v.(*discoveryv1.EndpointSlice)
	old, ok := t.slices[k]
	if ok && unchanged(old, es) {
		return
	}
	if ok {
		t.unindex(k, old, a)
	}
	t.slices[k] = es
	svc, ok := sliceService(es)
	if !ok {
		return
	}
	t.svcSlices.set(svc, k.Name, es)
	for _, p := range slicePods(es) {
		refs := t.podRefs[p]
		if refs == nil {
			refs = map[Key]int{}
			t.podRefs[p] = refs
		}
		refs[svc]++
	}
	a.service(svc)
}

func (t *sliceTable) delete(k Key, a affected) {
	old, ok := t.slices[k]
	if !ok {
		return
	}
	t.unindex(k, old, a)
	delete(t.slices, k)
}

func (t *sliceTable) each(f func(Key)) {
	for k := range t.slices {
		f(k)
	}
}

func (t *sliceTable) unindex(k Key, es *discoveryv1.EndpointSlice, a affected) {
	svc, ok := sliceService(es)
	if !ok {
		return
	}
	t.svcSlices.remove(svc, k.Name)
	for _, p := range slicePods(es) {
		refs := t.podRefs[p]
		if refs[svc]--; refs[svc] <= 0 {
			delete(refs, svc)
		}
		if len(refs) == 0 {
			delete(t.podRefs, p)
		}
	}
	a.service(svc)
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
