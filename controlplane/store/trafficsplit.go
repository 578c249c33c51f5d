package store

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	splitv1alpha1 "github.com/meridian-mesh/meridian/api/split/v1alpha1"
	splitv1alpha2 "github.com/meridian-mesh/meridian/api/split/v1alpha2"
	splitv1alpha3 "github.com/meridian-mesh/meridian/api/split/v1alpha3"
	splitv1alpha4 "github.com/meridian-mesh/meridian/api/split/v1alpha4"
)

// TrafficSplitFrom normalizes an SMI TrafficSplit of any version. It reports
// false if obj is not a TrafficSplit. v1alpha1 weights are quantities and
// become thousandths ("500m" → 500, "1" → 1000); later versions' integer
// weights are kept. Either way weights are only relative within one split.
// Negative weights become 0. Matches (v1alpha3+) are not represented: the
// split applies to all of the apex's traffic.
func TrafficSplitFrom(obj runtime.Object) (TrafficSplit, bool, error) {
	var (
		meta     metav1.Object
		service  string
		backends []Backend
	)
	switch o := obj.(type) {
	case *splitv1alpha1.TrafficSplit:
		meta, service = o, o.Spec.Service
		for _, b := range o.Spec.Backends {
			backends = append(backends, Backend{Service: b.Service, Weight: b.Weight.MilliValue()})
		}
	case *splitv1alpha2.TrafficSplit:
		meta, service = o, o.Spec.Service
		for _, b := range o.Spec.Backends {
			backends = append(backends, Backend{Service: b.Service, Weight: int64(b.Weight)})
		}
	case *splitv1alpha3.TrafficSplit:
		meta, service = o, o.Spec.Service
		for _, b := range o.Spec.Backends {
			backends = append(backends, Backend{Service: b.Service, Weight: int64(b.Weight)})
		}
	case *splitv1alpha4.TrafficSplit:
		meta, service = o, o.Spec.Service
		for _, b := range o.Spec.Backends {
			backends = append(backends, Backend{Service: b.Service, Weight: int64(b.Weight)})
		}
	default:
		return TrafficSplit{}, false, nil
	}
	if service == "" {
		return TrafficSplit{}, true, fmt.Errorf("store: TrafficSplit %s/%s has no spec.service", meta.GetNamespace(), meta.GetName())
	}
	for i := range backends {
		if backends[i].Weight < 0 {
			backends[i].Weight = 0
		}
	}
	return TrafficSplit{
		Key:      Key{meta.GetNamespace(), meta.GetName()},
		Service:  service,
		Backends: backends,
	}, true, nil
}

var splitKind = kind{
	name:   "TrafficSplit",
	decode: decodeSplit,
	newTable: func(*Store) table {
		return &splitTable{splits: map[Key]TrafficSplit{}, apexSplits: index[TrafficSplit]{}}
	},
}

// decodeSplit accepts an SMI TrafficSplit of any version, stored
// normalized.
func decodeSplit(obj runtime.Object) (Key, any, bool, error) {
	ts, ok, err := TrafficSplitFrom(obj)
	if !ok || err != nil {
		return Key{}, nil, ok, err
	}
	if err := splitKey(ts.Key); err != nil {
		return Key{}, nil, true, err
	}
	return ts.Key, ts, true, nil
}

// splitKey checks a TrafficSplit's key.
func splitKey(k Key) error {
	if k.Namespace == "" || k.Name == "" {
		return fmt.Errorf("store: TrafficSplit %q needs a namespace and a name", k.String())
	}
	return nil
}

// splitTable holds normalized TrafficSplits, indexed by apex (sorted by
// name). A change wakes the apex and every backend, old and new.
type splitTable struct {
	splits     map[Key]TrafficSplit
	apexSplits index[TrafficSplit]
}

// TrafficSplits returns the splits whose apex is service k, sorted by name.
// The slice is shared: do not modify it.
func (s *Store) TrafficSplits(k Key) []TrafficSplit {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.tables[splitKind.id].(*splitTable).apexSplits.get(k)
}

// UpsertTrafficSplit adds or replaces a normalized TrafficSplit (by
// ts.Key). The store keeps ts.Backends: do not modify it afterwards.
func (s *Store) UpsertTrafficSplit(ts TrafficSplit) error {
	if err := splitKey(ts.Key); err != nil {
		return err
	}
	s.write(func(a affected) { s.tables[splitKind.id].upsert(ts.Key, ts, a) })
	return nil
}

// DeleteTrafficSplit removes the TrafficSplit k.
func (s *Store) DeleteTrafficSplit(k Key) {
	s.write(func(a affected) { s.tables[splitKind.id].delete(k, a) })
}

func (t *splitTable) upsert(k Key, v any, a affected) {
	ts := v.(TrafficSplit)
	old, ok := t.splits[k]
	if ok && equality.Semantic.DeepEqual(old, ts) {
		return
	}
	if ok {
		t.apexSplits.remove(Key{k.Namespace, old.Service}, k.Name)
		old.affects(a)
	}
	t.splits[k] = ts
	t.apexSplits.set(Key{k.Namespace, ts.Service}, k.Name, ts)
	ts.affects(a)
}

func (t *splitTable) delete(k Key, a affected) {
	old, ok := t.splits[k]
	if !ok {
		return
	}
	delete(t.splits, k)
	t.apexSplits.remove(Key{k.Namespace, old.Service}, k.Name)
	old.affects(a)
}

func (t *splitTable) each(f func(Key)) {
	for k := range t.splits {
		f(k)
	}
}

func (ts TrafficSplit) affects(a affected) {
	a.service(Key{ts.Key.Namespace, ts.Service})
	for _, b := range ts.Backends {
		a.service(Key{ts.Key.Namespace, b.Service})
	}
}
