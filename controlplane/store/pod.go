package store

import corev1 "k8s.io/api/core/v1"

var podKind = kind{
	name:     "Pod",
	decode:   object[*corev1.Pod]("Pod", false),
	newTable: func(s *Store) table { return &podTable{s: s, pods: map[Key]*corev1.Pod{}} },
}

// podTable holds Pods. A change wakes the services whose EndpointSlices
// reference the pod by targetRef (the slice kind's index), and only those.
type podTable struct {
	s    *Store
	pods map[Key]*corev1.Pod
}

func (s *Store) podTable() *podTable { return s.tables[podKind.id].(*podTable) }

// Pod returns the Pod k.
func (s *Store) Pod(k Key) (*corev1.Pod, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.podTable().pods[k]
	return p, ok
}

func (t *podTable) upsert(k Key, v any, a affected) {
	p := v.(*corev1.Pod)
	if old, ok := t.pods[k]; ok && unchanged(old, p) {
		return
	}
	t.pods[k] = p
	t.affects(k, a)
}

func (t *podTable) delete(k Key, a affected) {
	if _, ok := t.pods[k]; !ok {
		return
	}
	delete(t.pods, k)
	t.affects(k, a)
}

func (t *podTable) each(f func(Key)) {
	for k := range t.pods {
		f(k)
	}
}

func (t *podTable) affects(k Key, a affected) {
	for svc := range t.s.sliceTable().podRefs[k] {
		a.service(svc)
	}
}
