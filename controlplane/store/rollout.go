package store

import (
	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// Rollouts are held for the traffic split Meridian's own routing
// (`trafficRouting.meridian: {}`) compiles from their status: the stable
// Service's profile splits its traffic between the pods of the stable and
// the canary pod-template hashes by status.canary.weights (compile's
// README). One store write of a Rollout's status therefore switches both
// sides of the split for every proxy at once.
var rolloutKind = kind{
	name:   "Rollout",
	decode: object[*v1alpha1.Rollout]("Rollout", false),
	newTable: func(*Store) table {
		return &rolloutTable{objs: map[Key]*v1alpha1.Rollout{}, byStable: index[*v1alpha1.Rollout]{}}
	},
}

// RolloutTopic is the topic of Rollout k. A change of the Rollout wakes it.
func RolloutTopic(k Key) Topic { return Topic{Kind: TopicRollout, Key: k} }

// RolloutServices are a canary Rollout's stable and canary Services (empty
// names left out): the Services whose profiles and hash subsets its status
// decides.
func RolloutServices(ro *v1alpha1.Rollout) (stable, canary Key) {
	c := ro.Spec.Strategy.Canary
	if c == nil {
		return Key{}, Key{}
	}
	if c.StableService != "" {
		stable = Key{ro.Namespace, c.StableService}
	}
	if c.CanaryService != "" {
		canary = Key{ro.Namespace, c.CanaryService}
	}
	return stable, canary
}

// rolloutTable holds Rollouts, indexed by their stable Service. A change
// wakes the Rollout's topic and its stable and canary Services, old and
// new.
type rolloutTable struct {
	objs     map[Key]*v1alpha1.Rollout
	byStable index[*v1alpha1.Rollout]
}

// Rollout returns Rollout k.
func (s *Store) Rollout(k Key) (*v1alpha1.Rollout, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ro, ok := s.tables[rolloutKind.id].(*rolloutTable).objs[k]
	return ro, ok
}

// Rollouts returns the canary Rollouts whose stableService is Service k,
// sorted by name. The slice is shared: do not modify it.
func (s *Store) Rollouts(k Key) []*v1alpha1.Rollout {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.tables[rolloutKind.id].(*rolloutTable).byStable.get(k)
}

func (t *rolloutTable) upsert(k Key, v any, a affected) {
	cur := v.(*v1alpha1.Rollout)
	old, ok := t.objs[k]
	if ok && unchanged(old, cur) {
		return
	}
	if ok {
		t.unindex(k, old, a)
	}
	t.objs[k] = cur
	if st, cn := RolloutServices(cur); st.Name != "" {
		t.byStable.set(st, k.Name, cur)
		a.service(st)
		if cn.Name != "" {
			a.service(cn)
		}
	} else if cn.Name != "" {
		a.service(cn)
	}
	a.add(RolloutTopic(k))
}

func (t *rolloutTable) unindex(k Key, old *v1alpha1.Rollout, a affected) {
	st, cn := RolloutServices(old)
	if st.Name != "" {
		t.byStable.remove(st, k.Name)
		a.service(st)
	}
	if cn.Name != "" {
		a.service(cn)
	}
}

func (t *rolloutTable) delete(k Key, a affected) {
	old, ok := t.objs[k]
	if !ok {
		return
	}
	t.unindex(k, old, a)
	delete(t.objs, k)
	a.add(RolloutTopic(k))
}

func (t *rolloutTable) each(f func(Key)) {
	for k := range t.objs {
		f(k)
	}
}
