package store

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	splitv1alpha2 "github.com/meridian-mesh/meridian/api/split/v1alpha2"
)

// op is one write on a kind's table, as Upsert, Delete or RegisterWorkload
// make it; it records the topics woken in a.
type op func(t *testing.T, s *Store, a affected)

func up(obj runtime.Object) op {
	return func(t *testing.T, s *Store, a affected) {
		t.Helper()
		it, err := decode(obj)
		if err != nil {
			t.Fatalf("decode %T: %v", obj, err)
		}
		s.tables[it.kind.id].upsert(it.key, it.v, a)
	}
}

func del(obj runtime.Object) op {
	return func(t *testing.T, s *Store, a affected) {
		t.Helper()
		it, err := decode(obj)
		if err != nil {
			t.Fatalf("decode %T: %v", obj, err)
		}
		s.tables[it.kind.id].delete(it.key, a)
	}
}

func register(w Workload) op {
	return func(_ *testing.T, s *Store, a affected) {
		s.workloadTable().upsert(Key{w.Namespace, w.Name}, registration{w: w}, a)
	}
}

func unregister(k Key) op {
	return func(_ *testing.T, s *Store, a affected) { s.workloadTable().delete(k, a) }
}

func split2(ns, name, apex string, backends ...string) *splitv1alpha2.TrafficSplit {
	ts := &splitv1alpha2.TrafficSplit{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: splitv1alpha2.TrafficSplitSpec{Service: apex}}
	for _, b := range backends {
		ts.Spec.Backends = append(ts.Spec.Backends, splitv1alpha2.TrafficSplitBackend{Service: b, Weight: 1})
	}
	return ts
}

func topics(a affected) []string {
	var out []string
	for t := range a {
		out = append(out, t.String())
	}
	slices.Sort(out)
	return out
}

func svcTopics(ks ...Key) []string {
	var out []string
	for _, k := range ks {
		out = append(out, ServiceTopic(k).String())
	}
	slices.Sort(out)
	return out
}

// Each kind: add, update, delete, its index, and exactly the topics each
// write wakes.
func TestKinds(t *testing.T) {
	type step struct {
		name  string
		do    op
		want  []string // the topics woken, exactly
		check func(s *Store) error
	}
	labelled := func(ns *corev1.Namespace, k, v string) *corev1.Namespace {
		ns = ns.DeepCopy()
		ns.Labels = map[string]string{k: v}
		return ns
	}
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns"}}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}}
	for _, tc := range []struct {
		kind  string
		setup []runtime.Object
		steps []step
	}{
		{kind: "Service", steps: []step{
			{"add", up(service("ns", "a", "10.96.0.1")), svcTopics(kA), func(s *Store) error {
				if k, ok := s.ServiceByClusterIP("10.96.0.1"); !ok || k != kA {
					return fmt.Errorf("ServiceByClusterIP = %v, %v", k, ok)
				}
				return nil
			}},
			{"same again", up(service("ns", "a", "10.96.0.1")), nil, nil},
			{"update", up(service("ns", "a", "10.96.0.2")), svcTopics(kA), func(s *Store) error {
				if _, ok := s.ServiceByClusterIP("10.96.0.1"); ok {
					return fmt.Errorf("old IP still indexed")
				}
				return nil
			}},
			{"delete", del(service("ns", "a")), svcTopics(kA), func(s *Store) error {
				if _, ok := s.Service(kA); ok || len(s.serviceTable().byIP) != 0 || len(s.serviceTable().nsServices) != 0 {
					return fmt.Errorf("service or its indexes left")
				}
				return nil
			}},
			{"delete absent", del(service("ns", "a")), nil, nil},
		}},
		{kind: "EndpointSlice", setup: []runtime.Object{pod("ns", "p1")}, steps: []step{
			{"add", up(slice("ns", "a-1", "a", "p1")), svcTopics(kA), func(s *Store) error {
				if len(s.EndpointSlices(kA)) != 1 {
					return fmt.Errorf("EndpointSlices(a) = %v", names(s.EndpointSlices(kA)))
				}
				return nil
			}},
			{"move to b", up(slice("ns", "a-1", "b", "p1")), svcTopics(kA, kB), func(s *Store) error {
				if len(s.EndpointSlices(kA)) != 0 || len(s.EndpointSlices(kB)) != 1 {
					return fmt.Errorf("slice not moved")
				}
				if refs := s.sliceTable().podRefs[Key{"ns", "p1"}]; len(refs) != 1 || refs[kB] != 1 {
					return fmt.Errorf("podRefs(p1) = %v, want b", refs)
				}
				return nil
			}},
			{"without a service label", up(func() runtime.Object {
				es := slice("ns", "x", "", "p1")
				es.Labels = nil
				return es
			}()), nil, nil},
			{"delete", del(slice("ns", "a-1", "b")), svcTopics(kB), func(s *Store) error {
				if len(s.sliceTable().podRefs) != 0 {
					return fmt.Errorf("podRefs left: %v", s.sliceTable().podRefs)
				}
				return nil
			}},
		}},
		{kind: "Pod", setup: []runtime.Object{slice("ns", "a-1", "a", "p1"), slice("ns", "b-1", "b", "p1", "p2")}, steps: []step{
			{"add referenced by two services", up(pod("ns", "p1")), svcTopics(kA, kB), nil},
			{"add referenced by one", up(pod("ns", "p2")), svcTopics(kB), nil},
			{"add unreferenced", up(pod("ns", "p3")), nil, func(s *Store) error {
				if _, ok := s.Pod(Key{"ns", "p3"}); !ok {
					return fmt.Errorf("pod p3 missing")
				}
				return nil
			}},
			{"same again", up(pod("ns", "p1")), nil, nil},
			{"delete", del(pod("ns", "p1")), svcTopics(kA, kB), nil},
		}},
		{kind: "Namespace", setup: []runtime.Object{service("ns", "a"), service("ns", "b"), service("other", "a")}, steps: []step{
			{"add", up(nsObj), svcTopics(kA, kB), nil},
			{"labels change", up(labelled(nsObj, "x", "y")), svcTopics(kA, kB), nil},
			{"status only", up(func() *corev1.Namespace {
				n := labelled(nsObj, "x", "y")
				n.Status.Phase = corev1.NamespaceTerminating
				return n
			}()), nil, func(s *Store) error {
				if n, _ := s.Namespace("ns"); n.Status.Phase != corev1.NamespaceTerminating {
					return fmt.Errorf("status not stored")
				}
				return nil
			}},
			{"delete", del(nsObj), svcTopics(kA, kB), nil},
		}},
		{kind: "ServiceAccount", steps: []step{
			{"add", up(sa), nil, func(s *Store) error {
				if _, ok := s.ServiceAccount(Key{"ns", "web"}); !ok {
					return fmt.Errorf("account missing")
				}
				return nil
			}},
			{"delete", del(sa), nil, func(s *Store) error {
				if _, ok := s.ServiceAccount(Key{"ns", "web"}); ok {
					return fmt.Errorf("account left")
				}
				return nil
			}},
		}},
		{kind: "ServiceProfile", steps: []step{
			{"add", up(profile("ns", "a.ns.svc.cluster.local")), svcTopics(kA), func(s *Store) error {
				if _, ok := s.ServiceProfile(kA); !ok {
					return fmt.Errorf("profile not indexed under a")
				}
				return nil
			}},
			{"serving no one", up(profile("ns", "api.example.com")), nil, nil},
			{"update", up(func() runtime.Object {
				p := profile("ns", "a.ns.svc.cluster.local")
				p.Labels = map[string]string{"v": "2"}
				return p
			}()), svcTopics(kA), nil},
			{"delete", del(profile("ns", "a.ns.svc.cluster.local")), svcTopics(kA), func(s *Store) error {
				if _, ok := s.ServiceProfile(kA); ok {
					return fmt.Errorf("profile left")
				}
				return nil
			}},
		}},
		{kind: "TrafficSplit", steps: []step{
			{"add", up(split2("ns", "s", "a", "a", "b")), svcTopics(kA, kB), func(s *Store) error {
				if len(s.TrafficSplits(kA)) != 1 || len(s.TrafficSplits(kB)) != 0 {
					return fmt.Errorf("split not indexed by apex only")
				}
				return nil
			}},
			{"same again", up(split2("ns", "s", "a", "a", "b")), nil, nil},
			{"backend b to c", up(split2("ns", "s", "a", "a", "c")), svcTopics(kA, kB, kC), nil},
			{"delete", del(split2("ns", "s", "a")), svcTopics(kA, kC), func(s *Store) error {
				if len(s.TrafficSplits(kA)) != 0 {
					return fmt.Errorf("split left")
				}
				return nil
			}},
		}},
		{kind: "Workload", steps: []step{
			{"add", register(Workload{Namespace: "ns", Name: "w", Service: "a"}), svcTopics(kA), func(s *Store) error {
				if len(s.Workloads(kA)) != 1 {
					return fmt.Errorf("workload not indexed under a")
				}
				return nil
			}},
			{"move to b", register(Workload{Namespace: "ns", Name: "w", Service: "b"}), svcTopics(kA, kB), nil},
			{"client only", register(Workload{Namespace: "ns", Name: "client"}), nil, nil},
			{"delete", unregister(Key{"ns", "w"}), svcTopics(kB), func(s *Store) error {
				if len(s.Workloads(kB)) != 0 {
					return fmt.Errorf("workload left")
				}
				return nil
			}},
		}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			s := New()
			mustUpsert(t, s, tc.setup...)
			for _, st := range tc.steps {
				a := affected{}
				s.mu.Lock()
				st.do(t, s, a)
				s.mu.Unlock()
				if got := topics(a); !slices.Equal(got, st.want) {
					t.Errorf("%s: woke %v, want %v", st.name, got, st.want)
				}
				if st.check != nil {
					if err := st.check(s); err != nil {
						t.Errorf("%s: %v", st.name, err)
					}
				}
			}
		})
	}
}

// Every registered kind has a name and a table, objects are claimed by
// one kind only, and an unknown object's error names what the store holds.
func TestKindsRegistry(t *testing.T) {
	seen := map[string]bool{}
	for i, k := range kinds {
		if k.id != i || k.name == "" || k.newTable == nil || seen[k.name] {
			t.Errorf("kinds[%d] = %+v: want a unique name, a table and id %d", i, k, i)
		}
		seen[k.name] = true
	}
	for _, obj := range []runtime.Object{service("ns", "a"), slice("ns", "a", "a"), pod("ns", "a"), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}}, profile("ns", "a"), split2("ns", "a", "a")} {
		var claims []string
		for _, k := range kinds {
			if k.decode == nil {
				continue
			}
			if _, _, ok, _ := k.decode(obj); ok {
				claims = append(claims, k.name)
			}
		}
		if len(claims) != 1 {
			t.Errorf("%T claimed by %v, want one kind", obj, claims)
		}
	}
	_, err := decode(&corev1.LimitRange{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "lr"}})
	if err == nil || !strings.Contains(err.Error(), "LimitRange") || !strings.Contains(err.Error(), "Service, EndpointSlice") {
		t.Errorf("decode(LimitRange) = %v, want an error naming it and the kinds held", err)
	}
	// A cluster-scoped kind's key has no namespace; a namespaced one needs it.
	if it, err := decode(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "ns"}}); err != nil || it.key != (Key{Name: "ns"}) {
		t.Errorf("decode(Namespace) = %+v, %v", it, err)
	}
	if _, err := decode(pod("", "p")); err == nil || !strings.Contains(err.Error(), "metadata.namespace") {
		t.Errorf("decode(pod without namespace) = %v, want an error naming metadata.namespace", err)
	}
}

// A change to one topic wakes no watcher of another: not another kind of
// topic on the same key, not the same kind on another key.
func TestTopicsAreIsolated(t *testing.T) {
	s := New()
	all := []Topic{ServiceTopic(kA), ServiceTopic(kB), {Kind: TopicGateway, Key: kA}, {Kind: TopicRollout, Key: kA}}
	chs := map[Topic]<-chan struct{}{}
	for _, tp := range all {
		ch, cancel := s.Watch(tp)
		defer cancel()
		chs[tp] = ch
	}
	expect := func(what string, want ...Topic) {
		t.Helper()
		for tp, ch := range chs {
			woke := false
			select {
			case <-ch:
				woke = true
			default:
			}
			if woke != slices.Contains(want, tp) {
				t.Errorf("%s: %s woke=%v", what, tp, woke)
			}
		}
	}
	mustUpsert(t, s, service("ns", "a"))
	expect("service a", ServiceTopic(kA))
	for _, tp := range all[2:] {
		a := affected{}
		a.add(tp)
		s.notify(a) // as a Gateway or Rollout kind will
		expect(tp.String(), tp)
	}
	mustUpsert(t, s, slice("ns", "b-1", "b"))
	expect("slice of b", ServiceTopic(kB))
}
