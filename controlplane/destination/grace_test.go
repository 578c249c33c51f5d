package destination_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/controlplane/destination"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// computed waits until the hub has computed rpc's answer n times: the
// stream has read the store, so an answer (or a held one) is decided.
func computed(t *testing.T, g prometheus.Gatherer, n float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for counter(t, g, "meridian_destination_computes_total", "get") < n {
		if time.Now().After(deadline) {
			t.Fatal("the stream's answer was not computed within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Issue 11: a restarted controller answered with an empty set before the
// workloads registered again, and proxies dropped their endpoints. During
// the startup grace period an empty first answer waits for endpoints.
func TestStartupGraceHoldsEmptyFirstAnswer(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHarness(t, destination.Options{StartupGrace: time.Minute, Metrics: reg})
	h.st.upsertService(service("emojivoto", "web-svc", "10.96.0.10", 80))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := h.client.Get(ctx, &pb.GetDestination{Authority: "web-svc.emojivoto.svc.cluster.local:80"})
	if err != nil {
		t.Fatal(err)
	}
	computed(t, reg, 1) // the empty set is what the store says now
	h.st.upsertSlice(endpointSlice("emojivoto", "web-svc", "web-svc-1", "10.0.0.1"))
	u := recv(t, s, 5*time.Second)
	if a := u.GetAdd(); a == nil || len(a.Addrs) != 1 {
		t.Fatalf("first update = %v, want the endpoint that came during the grace period", u)
	}
}

// The grace period holds an empty answer no longer than it lasts, and never
// holds an unknown authority (its proxy falls back to the original
// destination at once).
func TestStartupGraceEnds(t *testing.T) {
	h := newHarness(t, destination.Options{StartupGrace: 300 * time.Millisecond})
	h.st.upsertService(service("emojivoto", "web-svc", "10.96.0.10", 80))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := h.client.Get(ctx, &pb.GetDestination{Authority: "web-svc.emojivoto.svc.cluster.local:80"})
	if err != nil {
		t.Fatal(err)
	}
	if ne := recv(t, s, 5*time.Second).GetNoEndpoints(); ne == nil || !ne.Exists {
		t.Fatal("want no_endpoints{exists: true} once the grace period ended")
	}

	h2 := newHarness(t, destination.Options{StartupGrace: time.Hour})
	s, err = h2.client.Get(ctx, &pb.GetDestination{Authority: "nope.ns.svc.cluster.local:80"})
	if err != nil {
		t.Fatal(err)
	}
	if ne := recv(t, s, 5*time.Second).GetNoEndpoints(); ne == nil || ne.Exists {
		t.Fatal("want no_endpoints{exists: false} at once for an unknown authority")
	}
	// Nor a traffic split's apex, whose requests go to its backends.
	h2.st.upsertService(service("emojivoto", "web", "10.96.0.11", 80))
	h2.st.upsertService(service("emojivoto", "web-v1", "10.96.0.12", 80))
	h2.st.upsertSplit(store.TrafficSplit{Key: store.Key{Namespace: "emojivoto", Name: "web"}, Service: "web",
		Backends: []store.Backend{{Service: "web-v1", Weight: 100}}})
	s, err = h2.client.Get(ctx, &pb.GetDestination{Authority: "web.emojivoto.svc.cluster.local:80"})
	if err != nil {
		t.Fatal(err)
	}
	if ne := recv(t, s, 5*time.Second).GetNoEndpoints(); ne == nil || !ne.Exists {
		t.Fatal("want no_endpoints{exists: true} at once for a traffic split's apex")
	}
}

// Nothing is answered from a store that has not synced: the answer would
// be built from whatever part of the cluster's state was read so far.
func TestNoAnswerBeforeSynced(t *testing.T) {
	reg := prometheus.NewRegistry()
	synced := make(chan struct{})
	h := newHarness(t, destination.Options{Synced: synced, Metrics: reg})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := h.client.Get(ctx, &pb.GetDestination{Authority: "web-svc.emojivoto.svc.cluster.local:80"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.client.GetProfile(ctx, &pb.GetDestination{Authority: "web-svc.emojivoto.svc.cluster.local:80"})
	if err != nil {
		t.Fatal(err)
	}
	// Both streams are open, waiting for the sync.
	deadline := time.Now().Add(5 * time.Second)
	for gauge(t, reg, "meridian_destination_streams", "get")+gauge(t, reg, "meridian_destination_streams", "get_profile") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the streams did not open within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.st.upsertService(service("emojivoto", "web-svc", "10.96.0.10", 80))
	h.st.upsertSlice(endpointSlice("emojivoto", "web-svc", "web-svc-1", "10.0.0.1"))
	close(synced)
	if a := recv(t, s, 5*time.Second).GetAdd(); a == nil || len(a.Addrs) != 1 {
		t.Fatal("the first answer after the sync is not the synced store's endpoint")
	}
	if fqn := recv(t, p, 5*time.Second).GetFullyQualifiedName(); fqn != "web-svc.emojivoto.svc.cluster.local" {
		t.Fatalf("first profile names %q, want the synced service", fqn)
	}
}

func gauge(t *testing.T, g prometheus.Gatherer, name, rpc string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "rpc" && l.GetValue() == rpc {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return 0
}
