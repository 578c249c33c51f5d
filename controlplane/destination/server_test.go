package destination_test

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/destination"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// harness is a destination server on 127.0.0.1:0 over a store, and a client.
type harness struct {
	st     *testStore
	srv    *destination.Server
	client pb.DestinationClient
	conn   *grpc.ClientConn
	addr   string
}

func newHarness(t *testing.T, o destination.Options) *harness {
	t.Helper()
	st := newTestStore(t)
	if o.Registry == nil {
		o.Registry = st.registry()
	}
	if o.Resync == 0 {
		o.Resync = time.Hour // tests must be woken by the store, not by the resync
	}
	srv := destination.New(st.reader(), st.notifier(), o)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterDestinationServer(g, srv)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	h := &harness{st: st, srv: srv, addr: lis.Addr().String()}
	h.conn = h.dial(t)
	h.client = pb.NewDestinationClient(h.conn)
	return h
}

func (h *harness) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// recv receives one message or fails after a timeout.
func recv[T any](t *testing.T, s interface{ Recv() (T, error) }, within time.Duration) T {
	t.Helper()
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		v, err := s.Recv()
		ch <- res{v, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Recv: %v", r.err)
		}
		return r.v
	case <-time.After(within):
		t.Fatalf("no message within %v", within)
	}
	panic("unreachable")
}

// endpointView applies Get updates to a set, as a proxy would.
type endpointView struct {
	addrs  map[string]*pb.WeightedAddr
	exists bool
	empty  bool // last update was NoEndpoints
}

func newView() *endpointView { return &endpointView{addrs: map[string]*pb.WeightedAddr{}} }

func key(a *pb.TcpAddress) string { return net.JoinHostPort(a.GetIp(), fmt.Sprint(a.GetPort())) }

func (v *endpointView) apply(u *pb.Update) {
	switch x := u.Update.(type) {
	case *pb.Update_Add:
		for _, a := range x.Add.Addrs {
			v.addrs[key(a.Addr)] = a
		}
		v.exists, v.empty = true, false
	case *pb.Update_Remove:
		for _, a := range x.Remove.Addrs {
			delete(v.addrs, key(a))
		}
	case *pb.Update_NoEndpoints:
		clear(v.addrs)
		v.exists, v.empty = x.NoEndpoints.Exists, true
	}
}

func (v *endpointView) String() string {
	var out []string
	for a := range v.addrs {
		out = append(out, a)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// Fixtures.

func service(ns, name, ip string, port int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: ip, Ports: []corev1.ServicePort{
			{Name: "http", Port: port, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
		}},
	}
}

func endpointSlice(ns, svc, name string, ips ...string) *discoveryv1.EndpointSlice {
	pname, p, tcp := "http", int32(8080), corev1.ProtocolTCP
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Port: &p, Protocol: &tcp}},
	}
	for _, ip := range ips {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}})
	}
	return sl
}

func TestGetFirstAnswerAndDiffs(t *testing.T) {
	h := newHarness(t, destination.Options{})
	h.st.upsertService(service("emojivoto", "web-svc", "10.96.0.10", 80))
	h.st.upsertSlice(endpointSlice("emojivoto", "web-svc", "web-svc-1", "10.0.0.1", "10.0.0.2"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	s, err := h.client.Get(ctx, &pb.GetDestination{Authority: "web-svc.emojivoto.svc.cluster.local:80"})
	if err != nil {
		t.Fatal(err)
	}
	v := newView()
	u := recv(t, s, 2*time.Second)
	t.Logf("first answer after %v", time.Since(start))
	add := u.GetAdd()
	if add == nil || len(add.Addrs) != 2 || add.MetricLabels["service"] != "web-svc" || add.MetricLabels["namespace"] != "emojivoto" {
		t.Fatalf("first update = %v", u)
	}
	v.apply(u)
	if v.String() != "10.0.0.1:8080,10.0.0.2:8080" {
		t.Fatalf("view = %s", v)
	}

	// Replace one endpoint: an add, then a remove.
	h.st.upsertSlice(endpointSlice("emojivoto", "web-svc", "web-svc-1", "10.0.0.1", "10.0.0.3"))
	u = recv(t, s, 2*time.Second)
	if a := u.GetAdd(); a == nil || len(a.Addrs) != 1 || key(a.Addrs[0].Addr) != "10.0.0.3:8080" {
		t.Fatalf("second update = %v, want add 10.0.0.3", u)
	}
	v.apply(u)
	u = recv(t, s, 2*time.Second)
	if r := u.GetRemove(); r == nil || len(r.Addrs) != 1 || key(r.Addrs[0]) != "10.0.0.2:8080" {
		t.Fatalf("third update = %v, want remove 10.0.0.2", u)
	}
	v.apply(u)
	if v.String() != "10.0.0.1:8080,10.0.0.3:8080" {
		t.Fatalf("view = %s", v)
	}

	// Everything goes away: NoEndpoints{exists: true}.
	h.st.deleteSlice("emojivoto", "web-svc-1")
	u = recv(t, s, 2*time.Second)
	if ne := u.GetNoEndpoints(); ne == nil || !ne.Exists {
		t.Fatalf("update = %v, want no_endpoints{exists: true}", u)
	}
	// The service goes away: NoEndpoints{exists: false}.
	h.st.deleteService("emojivoto", "web-svc")
	u = recv(t, s, 2*time.Second)
	if ne := u.GetNoEndpoints(); ne == nil || ne.Exists {
		t.Fatalf("update = %v, want no_endpoints{exists: false}", u)
	}
}

func TestGetUnknownAuthorityStaysOpen(t *testing.T) {
	h := newHarness(t, destination.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := h.client.Get(ctx, &pb.GetDestination{Authority: "later.ns.svc.cluster.local:80"})
	if err != nil {
		t.Fatal(err)
	}
	u := recv(t, s, 2*time.Second)
	if ne := u.GetNoEndpoints(); ne == nil || ne.Exists {
		t.Fatalf("first update = %v, want no_endpoints{exists: false}", u)
	}
	// The service appears later, with endpoints.
	h.st.upsertSlice(endpointSlice("ns", "later", "later-1", "10.0.0.9"))
	h.st.upsertService(service("ns", "later", "10.96.0.99", 80))
	v := newView()
	for v.String() != "10.0.0.9:8080" {
		v.apply(recv(t, s, 2*time.Second))
	}
}

func TestGetProfileChanges(t *testing.T) {
	h := newHarness(t, destination.Options{})
	h.st.upsertService(service("test", "podinfo", "10.96.0.20", 9898))
	h.st.upsertService(service("test", "podinfo-stable", "10.96.0.21", 9898))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := h.client.GetProfile(ctx, &pb.GetDestination{Authority: "podinfo.test:9898"})
	if err != nil {
		t.Fatal(err)
	}
	p := recv(t, s, 2*time.Second)
	if p.FullyQualifiedName != "podinfo.test.svc.cluster.local" || len(p.Routes) != 0 || p.RetryBudget.GetRetryRatio() != 0.2 {
		t.Fatalf("first profile = %v", p)
	}

	// A ServiceProfile appears.
	h.st.upsertProfile(&v1alpha1.ServiceProfile{
		ObjectMeta: metav1.ObjectMeta{Namespace: "test", Name: "podinfo.test.svc.cluster.local"},
		Spec: v1alpha1.ServiceProfileSpec{Routes: []v1alpha1.RouteSpec{
			{Name: "GET /", Condition: &v1alpha1.RequestMatch{Method: "GET"}, IsRetryable: true},
		}},
	})
	p = recv(t, s, 2*time.Second)
	if len(p.Routes) != 1 || !p.Routes[0].IsRetryable || p.Routes[0].MetricsLabels["route"] != "GET /" {
		t.Fatalf("profile after ServiceProfile = %v", p)
	}

	// A 90/10 TrafficSplit whose canary does not exist yet.
	h.st.upsertSplit(store.TrafficSplit{
		Key: store.Key{Namespace: "test", Name: "podinfo"}, Service: "podinfo",
		Backends: []store.Backend{{Service: "podinfo-stable", Weight: 90}, {Service: "podinfo-canary", Weight: 10}},
	})
	p = recv(t, s, 2*time.Second)
	if got := dstString(p); got != "podinfo-stable.test.svc.cluster.local:9898=90" {
		t.Fatalf("dst overrides = %s", got)
	}
	// The canary appears: a backend's service is a dependency.
	h.st.upsertService(service("test", "podinfo-canary", "10.96.0.22", 9898))
	p = recv(t, s, 2*time.Second)
	if got := dstString(p); got != "podinfo-stable.test.svc.cluster.local:9898=90,podinfo-canary.test.svc.cluster.local:9898=10" {
		t.Fatalf("dst overrides = %s", got)
	}

	// A change that wakes the stream without changing the profile (an
	// endpoint of the apex) is not sent: the next message is the next real
	// change.
	h.st.upsertSlice(endpointSlice("test", "podinfo", "podinfo-1", "10.0.0.1"))
	h.st.upsertSplit(store.TrafficSplit{
		Key: store.Key{Namespace: "test", Name: "podinfo"}, Service: "podinfo",
		Backends: []store.Backend{{Service: "podinfo-stable", Weight: 0}, {Service: "podinfo-canary", Weight: 100}},
	})
	p = recv(t, s, 2*time.Second)
	if got := dstString(p); got != "podinfo-canary.test.svc.cluster.local:9898=100" {
		t.Fatalf("dst overrides = %s", got)
	}
}

func dstString(p *pb.DestinationProfile) string {
	var out []string
	for _, d := range p.DstOverrides {
		out = append(out, fmt.Sprintf("%s=%d", d.Authority, d.Weight))
	}
	return strings.Join(out, ",")
}

// A subscriber that never reads must not delay another one, even on the
// same connection.
func TestStuckSubscriberDoesNotBlockOthers(t *testing.T) {
	h := newHarness(t, destination.Options{})
	h.st.upsertService(service("big", "web", "10.96.1.1", 80))
	ips := func(gen int) []string {
		var out []string
		for i := range 2000 {
			out = append(out, fmt.Sprintf("10.%d.%d.%d", gen%200, i/250, i%250+1))
		}
		return out
	}
	h.st.upsertSlice(endpointSlice("big", "web", "web-1", ips(0)...))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The stuck subscriber: opens streams and never calls Recv.
	for range 3 {
		if _, err := h.client.Get(ctx, &pb.GetDestination{Authority: "web.big:80"}); err != nil {
			t.Fatal(err)
		}
	}
	live, err := h.client.Get(ctx, &pb.GetDestination{Authority: "web.big:80"})
	if err != nil {
		t.Fatal(err)
	}
	v := newView()
	v.apply(recv(t, live, 2*time.Second))
	// Every generation replaces all 2000 endpoints: ~200 KB of adds and
	// removes per change, far beyond the stuck streams' flow-control
	// windows.
	var worst time.Duration
	for gen := 1; gen <= 20; gen++ {
		want := ips(gen)
		start := time.Now()
		h.st.upsertSlice(endpointSlice("big", "web", "web-1", want...))
		for !(len(v.addrs) == len(want) && v.addrs[want[0]+":8080"] != nil && v.addrs[want[len(want)-1]+":8080"] != nil) {
			v.apply(recv(t, live, 5*time.Second))
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("worst latency of the live subscriber: %v", worst)
	if worst > 2*time.Second {
		t.Fatalf("live subscriber delayed %v", worst)
	}
}

func TestRegister(t *testing.T) {
	h := newHarness(t, destination.Options{Compile: compile.Options{Local: true, DefaultNamespace: "demo"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g, err := h.client.Get(ctx, &pb.GetDestination{Authority: "voting:8080"})
	if err != nil {
		t.Fatal(err)
	}
	if u := recv(t, g, 2*time.Second); u.GetNoEndpoints() == nil {
		t.Fatalf("first update = %v, want no_endpoints", u)
	}

	rctx, unregister := context.WithCancel(ctx)
	r, err := h.client.Register(rctx, &pb.Workload{
		Name: "voting-1", Namespace: "demo", Service: "voting", ServiceAccount: "voting",
		Address: "127.0.0.1:4143", AppPort: 8080,
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := recv(t, r, 2*time.Second)
	if len(reg.Token) < 16 {
		t.Fatalf("registration = %v", reg)
	}
	if w, ok := h.srv.WorkloadByToken(reg.Token); !ok || w.Name != "voting-1" {
		t.Fatalf("WorkloadByToken = %v, %v", w, ok)
	}
	u := recv(t, g, 2*time.Second)
	a := u.GetAdd()
	if a == nil || len(a.Addrs) != 1 || key(a.Addrs[0].Addr) != "127.0.0.1:4143" ||
		a.Addrs[0].Identity != "spiffe://cluster.local/ns/demo/sa/voting" || a.Addrs[0].ProtocolHint != pb.ProtocolHint_PROTOCOL_HINT_H2 {
		t.Fatalf("update after Register = %v", u)
	}

	// The stream ends: the workload is gone.
	unregister()
	u = recv(t, g, 2*time.Second)
	if ne := u.GetNoEndpoints(); ne == nil || ne.Exists {
		t.Fatalf("update after unregister = %v, want no_endpoints{exists: false}", u)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, ok := h.srv.WorkloadByToken(reg.Token); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("token still valid after the stream ended")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Invalid registrations.
	r, err = h.client.Register(ctx, &pb.Workload{Name: "x", Namespace: "demo", Address: "nowhere"})
	if err == nil {
		_, err = r.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad address: %v, want InvalidArgument", err)
	}
}

func TestRegisterUnimplementedWithoutRegistry(t *testing.T) {
	h := newHarness(t, destination.Options{Registry: noRegistry{}})
	r, err := h.client.Register(context.Background(), &pb.Workload{Name: "x", Namespace: "y", Address: "127.0.0.1:1"})
	if err == nil {
		_, err = r.Recv()
	}
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("err = %v", err)
	}
}

type noRegistry struct{}

func (noRegistry) Register(store.Workload) (func(), error) {
	return nil, fmt.Errorf("registration is closed")
}

// A cluster IP that belongs to no service yet names no key to watch: the
// stream resolves it again every Resync until it does.
func TestGetClusterIPAppearsLater(t *testing.T) {
	h := newHarness(t, destination.Options{Resync: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := h.client.Get(ctx, &pb.GetDestination{Authority: "10.96.7.7:80"})
	if err != nil {
		t.Fatal(err)
	}
	if u := recv(t, s, 2*time.Second); u.GetNoEndpoints() == nil || u.GetNoEndpoints().Exists {
		t.Fatalf("first update = %v, want no_endpoints{exists: false}", u)
	}
	h.st.upsertService(service("ns", "late", "10.96.7.7", 80))
	h.st.upsertSlice(endpointSlice("ns", "late", "late-1", "10.0.7.1"))
	v := newView()
	for v.String() != "10.0.7.1:8080" {
		v.apply(recv(t, s, 2*time.Second))
	}
	// From now on the service is watched: a change arrives without polling.
	h.st.upsertSlice(endpointSlice("ns", "late", "late-1", "10.0.7.2"))
	for v.String() != "10.0.7.2:8080" {
		v.apply(recv(t, s, 2*time.Second))
	}
}

// Streams of one authority share its computation: a change costs one
// computation however many proxies watch the service, and a profile that a
// change leaves as it was wakes no GetProfile stream.
func TestStreamsShareComputation(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newHarness(t, destination.Options{Metrics: reg})
	h.st.upsertService(service("ns", "web", "10.96.0.1", 80))
	h.st.upsertSlice(endpointSlice("ns", "web", "web-1", "10.0.0.1"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 20
	var gets []pb.Destination_GetClient
	for range n {
		g, err := h.client.Get(ctx, &pb.GetDestination{Authority: "web.ns:80"})
		if err != nil {
			t.Fatal(err)
		}
		recv(t, g, 2*time.Second)
		gets = append(gets, g)
		p, err := h.client.GetProfile(ctx, &pb.GetDestination{Authority: "web.ns:80"})
		if err != nil {
			t.Fatal(err)
		}
		recv(t, p, 2*time.Second)
	}
	before := counter(t, reg, "meridian_destination_computes_total", "get")
	profBefore := counter(t, reg, "meridian_destination_updates_total", "get_profile")
	h.st.upsertSlice(endpointSlice("ns", "web", "web-1", "10.0.0.2"))
	for _, g := range gets {
		v := newView()
		v.apply(recv(t, g, 2*time.Second)) // the add
		if v.String() != "10.0.0.2:8080" {
			t.Fatalf("update = %s", v)
		}
	}
	if d := counter(t, reg, "meridian_destination_computes_total", "get") - before; d != 1 {
		t.Fatalf("%d streams cost %v computations, want 1", n, d)
	}
	if d := counter(t, reg, "meridian_destination_updates_total", "get_profile") - profBefore; d != 0 {
		t.Fatalf("an endpoint change sent %v profiles, want 0", d)
	}
}

func counter(t *testing.T, g prometheus.Gatherer, name, rpc string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "rpc" && l.GetValue() == rpc {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
