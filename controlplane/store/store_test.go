package store

import (
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	splitv1alpha1 "github.com/meridian-mesh/meridian/api/split/v1alpha1"
	splitv1alpha2 "github.com/meridian-mesh/meridian/api/split/v1alpha2"
	splitv1alpha4 "github.com/meridian-mesh/meridian/api/split/v1alpha4"
	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

func service(ns, name string, ips ...string) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if len(ips) > 0 {
		s.Spec.ClusterIP = ips[0]
		s.Spec.ClusterIPs = ips
	}
	return s
}

func slice(ns, name, svc string, pods ...string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, p := range pods {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{fmt.Sprintf("10.1.0.%d", i+1)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: p},
		})
	}
	return es
}

func pod(ns, name string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

func profile(ns, name string) *v1alpha1.ServiceProfile {
	return &v1alpha1.ServiceProfile{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

func mustUpsert(t testing.TB, s *Store, objs ...runtime.Object) {
	t.Helper()
	for _, o := range objs {
		if err := s.Upsert(o); err != nil {
			t.Fatalf("Upsert(%T): %v", o, err)
		}
	}
}

// watchers watches each key and reports which have woken.
type watchers struct {
	t    *testing.T
	chs  map[Key]<-chan struct{}
	stop []func()
}

func watch(t *testing.T, s *Store, keys ...Key) *watchers {
	w := &watchers{t: t, chs: map[Key]<-chan struct{}{}}
	for _, k := range keys {
		ch, cancel := s.Watch(ServiceTopic(k))
		w.chs[k] = ch
		w.stop = append(w.stop, cancel)
	}
	t.Cleanup(func() {
		for _, c := range w.stop {
			c()
		}
	})
	return w
}

// expect checks that exactly the keys in want have a pending wake-up, and
// drains them.
func (w *watchers) expect(what string, want ...Key) {
	w.t.Helper()
	wanted := map[Key]bool{}
	for _, k := range want {
		wanted[k] = true
	}
	for k, ch := range w.chs {
		got := false
		select {
		case <-ch:
			got = true
		default:
		}
		if got != wanted[k] {
			w.t.Errorf("%s: watcher %s woke=%v, want %v", what, k, got, wanted[k])
		}
	}
}

var (
	kA = Key{"ns", "a"}
	kB = Key{"ns", "b"}
	kC = Key{"ns", "c"}
	kD = Key{"other", "a"}
)

func TestServiceAndClusterIPIndex(t *testing.T) {
	s := New()
	w := watch(t, s, kA, kB)
	mustUpsert(t, s, service("ns", "a", "10.96.0.1", "fd00::1"))
	w.expect("create a", kA)
	if got, ok := s.ServiceByClusterIP("fd00::1"); !ok || got != kA {
		t.Fatalf("ServiceByClusterIP(fd00::1) = %v, %v", got, ok)
	}
	mustUpsert(t, s, service("ns", "a", "10.96.0.2"))
	w.expect("change a's IP", kA)
	if _, ok := s.ServiceByClusterIP("10.96.0.1"); ok {
		t.Fatal("old cluster IP still indexed")
	}
	if got, _ := s.ServiceByClusterIP("10.96.0.2"); got != kA {
		t.Fatalf("new cluster IP maps to %v", got)
	}
	mustUpsert(t, s, service("ns", "b", "None"))
	w.expect("create headless b", kB)
	if _, ok := s.ServiceByClusterIP("None"); ok {
		t.Fatal("headless service indexed under None")
	}
	if err := s.Delete(service("ns", "a")); err != nil {
		t.Fatal(err)
	}
	w.expect("delete a", kA)
	if _, ok := s.ServiceByClusterIP("10.96.0.2"); ok {
		t.Fatal("deleted service's IP still indexed")
	}
	if _, ok := s.Service(kA); ok {
		t.Fatal("deleted service still present")
	}
	if err := s.Delete(service("ns", "a")); err != nil {
		t.Fatal(err)
	}
	w.expect("delete absent a")
}

func TestSlicesAndPods(t *testing.T) {
	s := New()
	w := watch(t, s, kA, kB, kC)
	mustUpsert(t, s, slice("ns", "a-2", "a", "p1", "p2"), slice("ns", "a-1", "a", "p3"))
	w.expect("slices of a", kA)
	got := s.EndpointSlices(kA)
	if len(got) != 2 || got[0].Name != "a-1" || got[1].Name != "a-2" {
		t.Fatalf("EndpointSlices(a) = %v, want a-1, a-2", names(got))
	}
	mustUpsert(t, s, slice("ns", "b-1", "b", "p2"))
	w.expect("slice of b", kB)

	// A pod wakes every service whose slices reference it, and only those.
	mustUpsert(t, s, pod("ns", "p2"))
	w.expect("pod p2", kA, kB)
	mustUpsert(t, s, pod("ns", "p3"))
	w.expect("pod p3", kA)
	mustUpsert(t, s, pod("ns", "unreferenced"))
	w.expect("unreferenced pod")

	// Moving a slice to another service wakes both.
	mustUpsert(t, s, slice("ns", "a-2", "c", "p1"))
	w.expect("move a-2 to c", kA, kC)
	if got := s.EndpointSlices(kA); len(got) != 1 {
		t.Fatalf("a has %d slices after the move", len(got))
	}
	p2 := pod("ns", "p2")
	p2.Labels = map[string]string{"changed": "yes"}
	mustUpsert(t, s, p2)
	w.expect("pod p2 after a-2 stopped referencing it", kB)

	if err := s.Delete(slice("ns", "b-1", "b")); err != nil {
		t.Fatal(err)
	}
	w.expect("delete b-1", kB)
	if err := s.Delete(pod("ns", "p2")); err != nil {
		t.Fatal(err)
	}
	w.expect("delete unreferenced p2")
	if n := len(s.sliceTable().podRefs); n != 2 {
		t.Errorf("podRefs has %d pods, want 2 (p1, p3): %v", n, s.sliceTable().podRefs)
	}
	if _, ok := s.Pod(Key{"ns", "p3"}); !ok {
		t.Error("pod p3 missing")
	}
}

func TestResyncWithSameResourceVersionWakesNoOne(t *testing.T) {
	s := New()
	w := watch(t, s, kA)
	es := slice("ns", "a-1", "a", "p1")
	es.ResourceVersion = "5"
	mustUpsert(t, s, es)
	w.expect("create", kA)
	mustUpsert(t, s, es.DeepCopy())
	w.expect("resync")
	es2 := es.DeepCopy()
	es2.ResourceVersion = "6"
	mustUpsert(t, s, es2)
	w.expect("update", kA)
	// Without resource versions (files), equal content is no change.
	mustUpsert(t, s, service("ns", "a", "10.96.0.1"))
	w.expect("service", kA)
	mustUpsert(t, s, service("ns", "a", "10.96.0.1"))
	w.expect("same service again")
}

func TestServiceProfileIndex(t *testing.T) {
	s := New(WithClusterDomain("example.org"))
	w := watch(t, s, kA, kB)
	mustUpsert(t, s,
		profile("ns", "a.ns.svc.example.org"),
		profile("ns", "b.ns.svc.cluster.local"),   // another cluster domain
		profile("client", "b.ns.svc.example.org"), // not in b's namespace
		profile("ns", "api.example.com"),          // an external authority
	)
	w.expect("profiles", kA)
	if p, ok := s.ServiceProfile(kA); !ok || p.Name != "a.ns.svc.example.org" {
		t.Fatalf("ServiceProfile(a) = %v, %v", p, ok)
	}
	if _, ok := s.ServiceProfile(kB); ok {
		t.Fatal("a profile for another domain or namespace was indexed for b")
	}
	if err := s.Delete(profile("ns", "a.ns.svc.example.org")); err != nil {
		t.Fatal(err)
	}
	w.expect("delete profile", kA)
	if _, ok := s.ServiceProfile(kA); ok {
		t.Fatal("deleted profile still served")
	}
}

func TestTrafficSplits(t *testing.T) {
	s := New()
	w := watch(t, s, kA, kB, kC, kD)
	v2 := &splitv1alpha2.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "split"},
		Spec: splitv1alpha2.TrafficSplitSpec{Service: "a", Backends: []splitv1alpha2.TrafficSplitBackend{
			{Service: "a", Weight: 90}, {Service: "b", Weight: 10},
		}},
	}
	mustUpsert(t, s, v2)
	w.expect("create split", kA, kB)
	got := s.TrafficSplits(kA)
	if len(got) != 1 || len(got[0].Backends) != 2 || got[0].Backends[1] != (Backend{"b", 10}) {
		t.Fatalf("TrafficSplits(a) = %+v", got)
	}
	if len(s.TrafficSplits(kB)) != 0 {
		t.Fatal("a backend is indexed as an apex")
	}

	// The same split rewritten by Argo Rollouts as v1alpha1 with string
	// weights, now to c: a, the old backend b and the new backend c wake.
	v1 := &splitv1alpha1.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "split"},
		Spec: splitv1alpha1.TrafficSplitSpec{Service: "a", Backends: []splitv1alpha1.TrafficSplitBackend{
			{Service: "a", Weight: resource.MustParse("500m")}, {Service: "c", Weight: resource.MustParse("1")},
		}},
	}
	mustUpsert(t, s, v1)
	w.expect("rewrite split", kA, kB, kC)
	got = s.TrafficSplits(kA)
	if want := []Backend{{"a", 500}, {"c", 1000}}; len(got) != 1 || fmt.Sprint(got[0].Backends) != fmt.Sprint(want) {
		t.Fatalf("after v1alpha1 rewrite: %+v, want backends %v", got, want)
	}

	v4 := &splitv1alpha4.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "another"},
		Spec:       splitv1alpha4.TrafficSplitSpec{Service: "a", Backends: []splitv1alpha4.TrafficSplitBackend{{Service: "b", Weight: 1}}},
	}
	mustUpsert(t, s, v4)
	w.expect("second split", kA, kB)
	if got := s.TrafficSplits(kA); len(got) != 2 || got[0].Key.Name != "another" {
		t.Fatalf("TrafficSplits(a) not sorted by name: %+v", got)
	}
	s.DeleteTrafficSplit(Key{"ns", "split"})
	w.expect("delete split", kA, kC)
	if err := s.UpsertTrafficSplit(TrafficSplit{Key: Key{"other", "s"}, Service: "a"}); err != nil {
		t.Fatal(err)
	}
	w.expect("normalized split in another namespace", kD)
}

func TestWorkloads(t *testing.T) {
	s := New()
	w := watch(t, s, kA, kB)
	unregOld, err := s.RegisterWorkload(Workload{Name: "a-0", Namespace: "ns", Service: "a", Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	w.expect("register", kA)
	// The proxy reconnects and registers again before the old stream ends.
	unregNew, err := s.RegisterWorkload(Workload{Name: "a-0", Namespace: "ns", Service: "a", Address: "127.0.0.1:2"})
	if err != nil {
		t.Fatal(err)
	}
	w.expect("re-register", kA)
	unregOld()
	w.expect("stale unregister")
	if got := s.Workloads(kA); len(got) != 1 || got[0].Address != "127.0.0.1:2" {
		t.Fatalf("Workloads(a) = %+v", got)
	}
	// Moving to another service wakes both.
	if _, err := s.RegisterWorkload(Workload{Name: "a-0", Namespace: "ns", Service: "b"}); err != nil {
		t.Fatal(err)
	}
	w.expect("move", kA, kB)
	unregNew()
	w.expect("replaced registration's unregister")
	if !s.UnregisterWorkload(Key{"ns", "a-0"}) {
		t.Fatal("UnregisterWorkload found nothing")
	}
	w.expect("unregister", kB)
	if len(s.Workloads(kB)) != 0 {
		t.Fatal("workload still listed")
	}
	if _, err := s.RegisterWorkload(Workload{Name: "x"}); err == nil {
		t.Fatal("a workload without a namespace was accepted")
	}
}

func TestNamespaceChangeWakesItsServices(t *testing.T) {
	s := New()
	mustUpsert(t, s, service("ns", "a"), service("ns", "b"), service("other", "a"))
	w := watch(t, s, kA, kB, kD)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns"}}
	mustUpsert(t, s, ns)
	w.expect("create namespace", kA, kB)
	st := ns.DeepCopy()
	st.Status.Phase = corev1.NamespaceTerminating
	mustUpsert(t, s, st)
	w.expect("status-only change")
	an := st.DeepCopy()
	an.Annotations = map[string]string{"config.meridian.io/opaque-ports": "3306"}
	mustUpsert(t, s, an)
	w.expect("annotation", kA, kB)
}

func TestCoalescingAndStuckWatcher(t *testing.T) {
	s := New()
	stuck, cancelStuck := s.Watch(ServiceTopic(kA)) // never read
	defer cancelStuck()
	ch, cancel := s.Watch(ServiceTopic(kA))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			mustUpsert(t, s, service("ns", "a", fmt.Sprintf("10.96.%d.%d", i/256, i%256)))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writers blocked by a watcher that does not read")
	}
	if len(stuck) != 1 {
		t.Fatalf("stuck watcher has %d pending, want 1", len(stuck))
	}
	<-ch
	select {
	case <-ch:
		t.Fatal("1000 writes left more than one pending wake-up")
	default:
	}
	cancel()
	mustUpsert(t, s, service("ns", "a"))
	select {
	case <-ch:
		t.Fatal("a cancelled watcher woke")
	default:
	}
	cancel() // idempotent
	if n := len(s.watchers[ServiceTopic(kA)]); n != 1 {
		t.Fatalf("%d watchers of a left, want 1", n)
	}
	cancelStuck()
	if _, ok := s.watchers[ServiceTopic(kA)]; ok {
		t.Fatal("empty watcher set not removed")
	}
}

func TestReplaceAll(t *testing.T) {
	s := New()
	unreg, _ := s.RegisterWorkload(Workload{Name: "w", Namespace: "ns", Service: "c"})
	defer unreg()
	split := &splitv1alpha2.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s"},
		Spec:       splitv1alpha2.TrafficSplitSpec{Service: "b", Backends: []splitv1alpha2.TrafficSplitBackend{{Service: "b", Weight: 1}}},
	}
	first := []runtime.Object{
		service("ns", "a", "10.96.0.1"), slice("ns", "a-1", "a", "p1"), pod("ns", "p1"),
		service("ns", "b", "10.96.0.2"), split,
		service("other", "a", "10.96.0.3"),
	}
	if err := s.ReplaceAll(first); err != nil {
		t.Fatal(err)
	}
	w := watch(t, s, kA, kB, kC, kD)

	// Same content, freshly decoded: nothing wakes.
	again := []runtime.Object{
		service("ns", "a", "10.96.0.1"), slice("ns", "a-1", "a", "p1"), pod("ns", "p1"),
		service("ns", "b", "10.96.0.2"), split.DeepCopy(),
		service("other", "a", "10.96.0.3"),
	}
	if err := s.ReplaceAll(again); err != nil {
		t.Fatal(err)
	}
	w.expect("identical reload")

	// p1 changes (wakes a through its slice), the split goes (wakes b), and
	// other/a is unchanged.
	p1 := pod("ns", "p1")
	p1.Labels = map[string]string{"version": "2"}
	next := []runtime.Object{
		service("ns", "a", "10.96.0.1"), slice("ns", "a-1", "a", "p1"), p1,
		service("ns", "b", "10.96.0.2"),
		service("other", "a", "10.96.0.3"),
	}
	if err := s.ReplaceAll(next); err != nil {
		t.Fatal(err)
	}
	w.expect("reload", kA, kB)
	if len(s.TrafficSplits(kB)) != 0 {
		t.Fatal("split survived the reload")
	}
	if len(s.Workloads(kC)) != 1 {
		t.Fatal("ReplaceAll dropped a registered workload")
	}

	// A bad object rejects the whole reload.
	bad := append([]runtime.Object{service("ns", "z")}, &corev1.LimitRange{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cm"}})
	if err := s.ReplaceAll(bad); err == nil {
		t.Fatal("ReplaceAll accepted a LimitRange")
	}
	w.expect("rejected reload")
	if _, ok := s.Service(kA); !ok {
		t.Fatal("rejected reload changed the store")
	}

	// Everything removed.
	if err := s.ReplaceAll(nil); err != nil {
		t.Fatal(err)
	}
	w.expect("empty reload", kA, kB, kD)
	svcs, slices := s.serviceTable(), s.sliceTable()
	if len(svcs.byIP) != 0 || len(slices.podRefs) != 0 || len(slices.svcSlices) != 0 || len(svcs.nsServices) != 0 {
		t.Fatalf("indexes not empty: byIP=%v podRefs=%v slices=%v ns=%v", svcs.byIP, slices.podRefs, slices.svcSlices, svcs.nsServices)
	}
}

func TestUpsertRejects(t *testing.T) {
	s := New()
	for _, o := range []runtime.Object{
		&corev1.LimitRange{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "x"}},
		service("", "no-namespace"),
		service("ns", ""),
		&splitv1alpha2.TrafficSplit{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "x"}},
	} {
		if err := s.Upsert(o); err == nil {
			t.Errorf("Upsert(%T %v) accepted", o, o)
		}
	}
}

// Readers and writers race freely; run with -race.
func TestConcurrentReadersAndWriters(t *testing.T) {
	s := New()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := Key{"ns", fmt.Sprintf("s%d", r)}
			ch, cancel := s.Watch(ServiceTopic(k))
			defer cancel()
			for {
				select {
				case <-stop:
					return
				case <-ch:
				case <-time.After(time.Millisecond):
				}
				for _, es := range s.EndpointSlices(k) {
					_ = len(es.Endpoints)
				}
				s.Service(k)
				s.TrafficSplits(k)
			}
		}()
	}
	for i := range 2000 {
		n := fmt.Sprintf("s%d", i%8)
		mustUpsert(t, s, service("ns", n, fmt.Sprintf("10.96.0.%d", i%8)), slice("ns", n+"-1", n, fmt.Sprintf("p%d", i)))
	}
	close(stop)
	wg.Wait()
}

func names(es []*discoveryv1.EndpointSlice) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name)
	}
	return out
}

// populated returns a store with n services of 10 endpoints each, their
// pods, and a watcher per service.
func populated(b *testing.B, n int) (*Store, []func()) {
	s := New()
	var cancels []func()
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		pods := make([]string, 10)
		for j := range pods {
			pods[j] = fmt.Sprintf("%s-pod-%d", name, j)
			mustUpsert(b, s, pod("ns", pods[j]))
		}
		mustUpsert(b, s, service("ns", name, fmt.Sprintf("10.96.%d.%d", i/256, i%256)), slice("ns", name+"-x", name, pods...))
		_, cancel := s.Watch(ServiceTopic(Key{"ns", name}))
		cancels = append(cancels, cancel)
	}
	return s, cancels
}

// An EndpointSlice update in a store of 1000 services × 10 endpoints with
// 1000 watchers: the cost must not depend on the store's size.
func BenchmarkUpsertSlice(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			s, cancels := populated(b, n)
			defer func() {
				for _, c := range cancels {
					c()
				}
			}()
			objs := make([]*discoveryv1.EndpointSlice, 2)
			for i := range objs {
				objs[i] = slice("ns", "svc-7-x", "svc-7", "svc-7-pod-0", "svc-7-pod-1")
				objs[i].ResourceVersion = fmt.Sprint(i + 1)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := s.Upsert(objs[i%2]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkUpsertPod(b *testing.B) {
	s, _ := populated(b, 1000)
	objs := []*corev1.Pod{pod("ns", "svc-7-pod-3"), pod("ns", "svc-7-pod-3")}
	objs[0].ResourceVersion, objs[1].ResourceVersion = "1", "2"
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Upsert(objs[i%2]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadEndpointSlices(b *testing.B) {
	s, _ := populated(b, 1000)
	k := Key{"ns", "svc-500"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if len(s.EndpointSlices(k)) != 1 {
			b.Fatal("missing slice")
		}
	}
}
