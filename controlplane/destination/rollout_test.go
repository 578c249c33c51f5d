package destination_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/destination"
)

func hashedSlice(svc, name string, pods map[string]string) *discoveryv1.EndpointSlice {
	p, portName, tcp := int32(8080), "http", corev1.ProtocolTCP
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &p, Protocol: &tcp}},
	}
	for pod, ip := range pods {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: pod}})
	}
	return sl
}

func rolloutWith(stableHash string, stable int32, canaryHash string, canary int32) *v1alpha1.Rollout {
	return &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: v1alpha1.RolloutSpec{
		Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{StableService: "web-stable", CanaryService: "web-canary",
			TrafficRouting: &v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{}}}}},
		Status: v1alpha1.RolloutStatus{Canary: v1alpha1.CanaryStatus{Weights: &v1alpha1.TrafficWeights{
			Stable: v1alpha1.WeightDestination{ServiceName: "web-stable", PodTemplateHash: stableHash, Weight: stable},
			Canary: v1alpha1.WeightDestination{ServiceName: "web-canary", PodTemplateHash: canaryHash, Weight: canary}}}}}
}

// messages reads s into a channel, so that a test can wait for a message
// or for the absence of one.
func messages[T any](s interface{ Recv() (T, error) }) <-chan T {
	ch := make(chan T, 16)
	go func() {
		defer close(ch)
		for {
			v, err := s.Recv()
			if err != nil {
				return
			}
			ch <- v
		}
	}()
	return ch
}

// Meridian's own split through real streams: one store write of the
// Rollout's status (promotion, abort) reaches a subscribed proxy as one
// profile update switching both sides, while the endpoint sets of the two
// hashes never go empty, whatever the Services' selectors do meanwhile.
func TestRolloutSplitStreams(t *testing.T) {
	h := newHarness(t, destination.Options{})
	h.st.upsertService(service("shop", "web-stable", "10.96.5.1", 80))
	h.st.upsertService(service("shop", "web-canary", "10.96.5.2", 80))
	for pod, hash := range map[string]string{"s1": "aaa", "s2": "aaa", "c1": "bbb"} {
		h.st.upsert(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: pod, Labels: map[string]string{compile.PodTemplateHashLabel: hash}}})
	}
	// Argo's selectors: the stable Service selects aaa, the canary bbb.
	h.st.upsertSlice(hashedSlice("web-stable", "web-stable-1", map[string]string{"s1": "10.5.0.1", "s2": "10.5.0.2"}))
	h.st.upsertSlice(hashedSlice("web-canary", "web-canary-1", map[string]string{"c1": "10.5.0.3"}))
	h.st.upsert(rolloutWith("aaa", 100, "aaa", 0))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const (
		a = "aaa.web-stable.shop.svc.cluster.local:80"
		b = "bbb.web-stable.shop.svc.cluster.local:80"
	)
	prof, err := h.client.GetProfile(ctx, &pb.GetDestination{Authority: "web-stable.shop.svc.cluster.local:80"})
	if err != nil {
		t.Fatal(err)
	}
	profs := messages(prof)
	next := func(what string) *pb.DestinationProfile {
		t.Helper()
		select {
		case p := <-profs:
			return p
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: no profile within 2s", what)
		}
		return nil
	}
	none := func(what string) {
		t.Helper()
		select {
		case p := <-profs:
			t.Fatalf("%s: unexpected profile %s", what, dstString(p))
		case <-time.After(200 * time.Millisecond):
		}
	}
	if got := dstString(next("first")); got != a+"=100" {
		t.Fatalf("steady profile = %s", got)
	}
	views := map[string]*endpointView{}
	var emptied atomic.Value // the subset that lost an endpoint while it had weight
	var promoted atomic.Bool // aaa has no weight left
	for _, auth := range []string{a, b} {
		s, err := h.client.Get(ctx, &pb.GetDestination{Authority: auth})
		if err != nil {
			t.Fatal(err)
		}
		v := newView()
		v.apply(recv(t, s, 2*time.Second))
		views[auth] = v
		// Every later update of the subsets is checked: none may empty them.
		go func() {
			for {
				u, err := s.Recv()
				if err != nil {
					return
				}
				if (u.GetNoEndpoints() != nil || len(u.GetRemove().GetAddrs()) > 0) && (auth == b || !promoted.Load()) {
					emptied.Store(auth)
				}
			}
		}()
	}
	if got := views[a].String(); got != "10.5.0.1:8080,10.5.0.2:8080" {
		t.Fatalf("subset aaa = %s", got)
	}
	if got := views[b].String(); got != "10.5.0.3:8080" {
		t.Fatalf("subset bbb = %s", got)
	}

	step := func(name string, ro *v1alpha1.Rollout, want string) {
		t.Helper()
		h.st.upsert(ro)
		if got := dstString(next(name)); got != want {
			t.Fatalf("%s: profile = %s, want %s", name, got, want)
		}
		// One write, one update: nothing half-switched follows.
		none(name)
	}
	step("setWeight 20", rolloutWith("aaa", 80, "bbb", 20), a+"=80,"+b+"=20")
	step("abort", rolloutWith("aaa", 100, "bbb", 0), a+"=100")
	step("setWeight 50", rolloutWith("aaa", 50, "bbb", 50), a+"=50,"+b+"=50")
	// Promotion: the stable hash becomes bbb in one write. The stable
	// Service still selects aaa (its selector and slices switch later): bbb's
	// pods are served from the canary Service's slice meanwhile.
	step("promote", rolloutWith("bbb", 100, "bbb", 0), b+"=100")
	promoted.Store(true)
	// The selector switch then moves the pods between slices: the profile
	// does not change and bbb's subset keeps its endpoint throughout (aaa's
	// pods leave every slice, with no weight left).
	h.st.upsertSlice(hashedSlice("web-stable", "web-stable-1", map[string]string{"c1": "10.5.0.3"}))
	h.st.upsertSlice(hashedSlice("web-canary", "web-canary-1", map[string]string{}))
	none("selector switch")
	if v := emptied.Load(); v != nil {
		t.Errorf("subset %s lost an endpoint during the rollout", v)
	}
}
