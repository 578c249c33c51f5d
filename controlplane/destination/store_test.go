package destination_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/destination"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// testStore is the real store with the writes the tests make, as the
// sources would make them.
type testStore struct {
	t *testing.T
	*store.Store
}

func newTestStore(t *testing.T) *testStore { return &testStore{t: t, Store: store.New()} }

func (s *testStore) reader() store.Reader     { return s.Store }
func (s *testStore) notifier() store.Notifier { return s.Store }
func (s *testStore) registry() destination.WorkloadRegistry {
	return destination.RegistryFunc(s.Store.RegisterWorkload)
}

func (s *testStore) must(err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatal(err)
	}
}

func (s *testStore) upsert(o runtime.Object) { s.t.Helper(); s.must(s.Upsert(o)) }
func (s *testStore) delete(o runtime.Object) { s.t.Helper(); s.must(s.Delete(o)) }

func (s *testStore) upsertService(svc *corev1.Service)         { s.t.Helper(); s.upsert(svc) }
func (s *testStore) upsertSlice(sl *discoveryv1.EndpointSlice) { s.t.Helper(); s.upsert(sl) }
func (s *testStore) upsertProfile(sp *v1alpha1.ServiceProfile) { s.t.Helper(); s.upsert(sp) }
func (s *testStore) upsertSplit(ts store.TrafficSplit) {
	s.t.Helper()
	s.must(s.UpsertTrafficSplit(ts))
}

func (s *testStore) deleteService(ns, name string) {
	s.t.Helper()
	s.delete(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
}

func (s *testStore) deleteSlice(ns, name string) {
	s.t.Helper()
	s.delete(&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
}
