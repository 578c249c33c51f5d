// Package rolloutstep measures how fast a Rollout's setWeight step reaches
// the proxies when Meridian routes it with its own split
// (trafficRouting.meridian: {}): the Rollout's status.canary.weights is
// written to a real kube-apiserver (envtest) as the reconciler writes it,
// read by the controller's Kubernetes source into its store, compiled into
// the stable Service's profile by the destination API, streamed over
// loopback TCP in TLS 1.3 (the controller's API certificate, verified by
// SPIFFE ID as meridian-proxy verifies it) to -proxies proxies, each its own
// connection, destination client (proxy/dstclient) and outbound cache
// (proxy/outbound), and applied there. The figure is the time from the
// status write until every proxy has applied the new weights (issue 15:
// p99 over 100 steps with 100 proxies under 100 ms).
//
//	export KUBEBUILDER_ASSETS=$(hack/kube-assets.sh)
//	go test -run '^$' -bench SetWeight -benchtime 1x ./bench/rolloutstep
//
// It is a benchmark, not a test: `go test` without -bench runs nothing here.
package rolloutstep

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/destination"
	"github.com/meridian-mesh/meridian/controlplane/identity"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/controlplane/store/kube"
	"github.com/meridian-mesh/meridian/proxy/dstclient"
	"github.com/meridian-mesh/meridian/proxy/outbound"
	"github.com/meridian-mesh/meridian/proxy/profile"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

var (
	proxies = flag.Int("proxies", 100, "proxies subscribed to the stable Service")
	steps   = flag.Int("steps", 100, "setWeight steps measured")
	pods    = flag.Int("pods", 10, "ready pods of each pod-template hash")
	gap     = flag.Duration("gap", 50*time.Millisecond, "pause after every proxy has applied a step, before the next")
	target  = flag.Duration("target", 100*time.Millisecond, "the p99 the RESULT line's target_met compares with")
)

const (
	ns         = "bench"
	stableSvc  = "web-stable"
	canarySvc  = "web-canary"
	stableHash = "6d4f6b7c9"
	canaryHash = "5f8c7d9b4"
	apiID      = "spiffe://cluster.local/ns/meridian/sa/meridian-controller"
)

var (
	stableAuthority = stableSvc + "." + ns + ".svc." + compile.DefaultClusterDomain + ":80"
	canarySubset    = canaryHash + "." + stableAuthority
	stableSubset    = stableHash + "." + stableAuthority
)

// BenchmarkSetWeight runs -steps setWeight steps, each one write of the
// Rollout's status, and reports, per step, the time from the write until
// every one of -proxies proxies has applied the new split, with a RESULT
// line (p50, p99, max; target p99 < 100 ms).
func BenchmarkSetWeight(b *testing.B) {
	apiserver.Need(b)
	cfg := apiserver.Start(b, crd("meridian.io_rollouts.yaml"), crd("meridian.io_serviceprofiles.yaml"))
	cfg.QPS, cfg.Burst = 1000, 1000
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	scheme, err := kube.Scheme()
	if err != nil {
		b.Fatal(err)
	}
	kc, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		b.Fatal(err)
	}
	ro := objects(ctx, b, kc)

	// The controller's part, as controlplane/controller builds it in
	// Kubernetes mode: the informers into the store, the destination API
	// answering once they synced, over TLS with a SPIFFE certificate from
	// the identity CA.
	log := slog.New(slog.DiscardHandler)
	st := store.New(store.WithClusterDomain(compile.DefaultClusterDomain))
	synced := make(chan struct{})
	srcDone := make(chan error, 1)
	go func() {
		srcDone <- kube.Run(ctx, cfg, st, kube.WithLogger(log), kube.WithReady(func() { close(synced) }))
	}()
	defer func() { cancel(); <-srcDone }()
	reg := prometheus.NewRegistry()
	dst := destination.New(st, st, destination.Options{
		Compile: compile.Options{ClusterDomain: compile.DefaultClusterDomain, TrustDomain: compile.DefaultTrustDomain},
		Log:     log, Metrics: reg, Synced: synced,
	})
	serverTLS, clientTLS := apiTLS(b)
	rec := newRecorder(*proxies)
	g := grpc.NewServer(
		// Not the controller's: times each profile message the server
		// hands to gRPC, to split a step's time between the hub and the
		// streams' sends.
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, sendTimer{ss, rec})
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.Creds(credentials.NewTLS(serverTLS)),
	)
	pb.RegisterDestinationServer(g, dst)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go g.Serve(ln)
	defer g.Stop()

	// The proxies: each its own connection, destination client and
	// outbound cache, holding the stable Service and both hash subsets
	// (what a proxy that has routed requests through the split holds).
	for i := range *proxies {
		cc, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), dstclient.DialOptions(credentials.NewTLS(clientTLS.Clone()))...)
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		dc := dstclient.New(cc, dstclient.Options{Token: ns + "/client-" + strconv.Itoa(i), Log: log,
			OnProfile: func(authority string, p *profile.Profile) {
				if authority == stableAuthority {
					rec.applied(i, p)
				}
			}})
		oc := outbound.New(outbound.Options{Resolver: dc, Namespace: ns})
		defer oc.Close()
		for _, a := range []string{stableAuthority, stableSubset, canarySubset} {
			d, err := oc.Get(ctx, a)
			if err != nil {
				b.Fatalf("proxy %d: %s: %v", i, a, err)
			}
			if a != stableAuthority && len(d.Target().Balancer.Endpoints()) != *pods {
				b.Fatalf("proxy %d: subset %s has %d endpoints, want %d", i, a, len(d.Target().Balancer.Endpoints()), *pods)
			}
		}
		rec.dests = append(rec.dests, oc)
	}

	// When the store holds each step's status: the informer's share.
	stored := watchStore(ctx, st)

	var times []stepTimes
	// Warm-up step, not counted: the first write after start-up pays for
	// connections and caches no later step does.
	weight := int32(5)
	ro = step(ctx, b, kc, ro, rec, stored, weight).ro
	computes0, msgs0 := counter(b, reg, "meridian_destination_computes_total", "get_profile", ""), counter(b, reg, "meridian_destination_updates_total", "get_profile", "profile")
	cpu0, load0 := cpuTime(), loadAvg()
	wait0, kwait0 := runWait(os.Getpid()), childrenRunWait()
	t0 := time.Now()
	for b.Loop() {
		for s := range *steps {
			weight = triangle(s)
			r := step(ctx, b, kc, ro, rec, stored, weight)
			ro = r.ro
			times = append(times, r.stepTimes)
			time.Sleep(*gap)
		}
	}
	cpu, wall, load1 := cpuTime()-cpu0, time.Since(t0), loadAvg()
	// Time our threads, and etcd's and kube-apiserver's, spent runnable
	// but waiting for a CPU: what other work on the machine cost the run.
	wait, kwait := runWait(os.Getpid())-wait0, childrenRunWait()-kwait0
	computes := counter(b, reg, "meridian_destination_computes_total", "get_profile", "") - computes0
	msgs := counter(b, reg, "meridian_destination_updates_total", "get_profile", "profile") - msgs0

	// What a request sees now: every proxy's stable destination splits by
	// the last weights.
	for i, oc := range rec.dests {
		d, err := oc.Get(ctx, stableAuthority)
		if err != nil {
			b.Fatal(err)
		}
		if got := canaryShare(d.Target().Profile()); got != weight {
			b.Fatalf("proxy %d: its stable destination's profile gives the canary %d%%, want %d%%", i, got, weight)
		}
	}

	n := len(times)
	col := func(f func(stepTimes) time.Duration) []time.Duration {
		out := make([]time.Duration, n)
		for i, t := range times {
			out[i] = f(t)
		}
		return out
	}
	fromStore := col(func(t stepTimes) time.Duration { return t.all - t.store })
	all, first := col(func(t stepTimes) time.Duration { return t.all }), col(func(t stepTimes) time.Duration { return t.first })
	write, inStore := col(func(t stepTimes) time.Duration { return t.write }), col(func(t stepTimes) time.Duration { return t.store })
	// The step's stages: the informer (write → store), the hub's
	// computation (store → first send), the fan-out over the streams
	// (first → last send) and the last message's way into its proxy.
	// The store watch is woken by the same notification as the hub and
	// sometimes runs after it: a negative difference counts as 0.
	compute := col(func(t stepTimes) time.Duration { return max(0, t.firstSend-t.store) })
	fanout := col(func(t stepTimes) time.Duration { return t.lastSend - t.firstSend })
	deliver := col(func(t stepTimes) time.Duration { return t.all - t.lastSend })
	slices.SortFunc(times, func(a, b stepTimes) int { return int(b.all - a.all) })
	for _, w := range times[:min(5, n)] {
		b.Logf("slow step: setWeight %d: write answered %v, in the store %v, first send %v, last send %v, first proxy %v, last proxy %v",
			w.weight, ms(w.write), ms(w.store), ms(w.firstSend), ms(w.lastSend), ms(w.first), ms(w.all))
	}
	stage := func(name string, ds []time.Duration) string {
		return fmt.Sprintf("%s p50 %v p99 %v max %v", name, ms(q(ds, .5)), ms(q(ds, .99)), ms(q(ds, 1)))
	}
	b.Logf("%d steps, %d proxies: %s; %s; %s; stages: %s; %s; %s; %s; %d profile computations and %d profile messages for %d writes; this process used %.2f cores over %v; load average %.2f before, %.2f after",
		n, *proxies, stage("all applied", all), stage("first proxy", first), stage("write answered", write),
		stage("informer (write → store)", inStore), stage("hub (store → first send)", compute), stage("fan-out (first → last send)", fanout), stage("last send → last proxy applied", deliver),
		computes, msgs, n, cpu.Seconds()/wall.Seconds(), wall.Round(time.Millisecond), load0, load1)
	b.Logf("Meridian's part, %s; waiting for a CPU: this process %v (%.0f ms per s), etcd and kube-apiserver %v (%.0f ms per s)",
		stage("store → every proxy applied", fromStore), wait.Round(time.Millisecond), float64(wait.Milliseconds())/wall.Seconds(), kwait.Round(time.Millisecond), float64(kwait.Milliseconds())/wall.Seconds())
	fmt.Printf("RESULT rollout-step proxies=%d steps=%d p50_ms=%.1f p99_ms=%.1f max_ms=%.1f from_store_p50_ms=%.1f from_store_p99_ms=%.1f first_proxy_p99_ms=%.1f store_p50_ms=%.1f store_p99_ms=%.1f hub_p99_ms=%.1f fanout_p99_ms=%.1f write_p99_ms=%.1f computes_per_step=%.2f messages_per_step=%.1f cpu_wait_ms_per_s=%.0f kube_cpu_wait_ms_per_s=%.0f load_avg=%.1f target_met=%t\n",
		*proxies, n, msf(q(all, .5)), msf(q(all, .99)), msf(q(all, 1)), msf(q(fromStore, .5)), msf(q(fromStore, .99)), msf(q(first, .99)), msf(q(inStore, .5)), msf(q(inStore, .99)),
		msf(q(compute, .99)), msf(q(fanout, .99)), msf(q(write, .99)),
		float64(computes)/float64(n), float64(msgs)/float64(n), float64(wait.Milliseconds())/wall.Seconds(), float64(kwait.Milliseconds())/wall.Seconds(),
		max(load0, load1), q(all, .99) < *target)
	b.ReportMetric(msf(q(all, .99)), "p99-ms")
}

// triangle is step s's canary weight: 10, 20, … 90, 80, … 10, 20, …, so
// that every step changes the split.
func triangle(s int) int32 {
	k := s % 16
	if k < 9 {
		return int32(10 * (k + 1))
	}
	return int32(10 * (17 - k))
}

// stepTimes are one step's times, from the start of the status write:
// its answer, the store holding it, the first and the last profile message
// handed to a stream's Send, and the first and the last proxy applying it.
type stepTimes struct {
	weight                                        int32
	write, store, firstSend, lastSend, first, all time.Duration
}

type stepResult struct {
	stepTimes
	ro *v1alpha1.Rollout
}

// step writes ro's status with the canary at weight, as the reconciler
// writes a setWeight step (Status().Update of the whole object), and waits
// until every proxy has applied it.
func step(ctx context.Context, b *testing.B, kc client.Client, ro *v1alpha1.Rollout, rec *recorder, stored *storeWatch, weight int32) stepResult {
	ro = ro.DeepCopy()
	ro.Status.Canary.Weights.Canary.Weight = weight
	ro.Status.Canary.Weights.Stable.Weight = 100 - weight
	ro.Status.CurrentStepIndex = ptr(ro.Status.CurrentStepIndex, 1)
	done := rec.expect(weight)
	storedAt := stored.expect(weight)
	t0 := time.Now()
	rec.start(t0)
	if err := kc.Status().Update(ctx, ro); err != nil {
		b.Fatalf("setWeight %d: writing the Rollout's status: %v", weight, err)
	}
	wrote := time.Since(t0)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		b.Fatalf("setWeight %d: %d of %d proxies applied it within 10s", weight, rec.count(), *proxies)
	}
	var inStore time.Duration
	select {
	case at := <-storedAt:
		inStore = at.Sub(t0)
	case <-time.After(time.Second):
		b.Fatalf("setWeight %d: every proxy has it, the store watch did not see it", weight)
	}
	t := rec.result()
	t.weight, t.write, t.store = weight, wrote, inStore
	return stepResult{t, ro}
}

func ptr(p *int32, add int32) *int32 {
	v := add
	if p != nil {
		v += *p
	}
	return &v
}

// recorder collects, for the step in progress, when each proxy applied a
// profile with the step's canary weight.
type recorder struct {
	n     int
	dests []*outbound.Cache

	mu     sync.Mutex
	want   int32
	t0     time.Time
	seen   []bool
	got    int
	sends  int
	times  stepTimes
	done   chan struct{}
	active bool
}

func newRecorder(n int) *recorder { return &recorder{n: n, seen: make([]bool, n)} }

func (r *recorder) expect(weight int32) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.want, r.got, r.sends, r.times, r.active = weight, 0, 0, stepTimes{}, false
	clear(r.seen)
	r.done = make(chan struct{})
	return r.done
}

// start is the write's time; applies before it cannot belong to the step.
func (r *recorder) start(t0 time.Time) {
	r.mu.Lock()
	r.t0, r.active = t0, true
	r.mu.Unlock()
}

func (r *recorder) applied(i int, p *profile.Profile) {
	now := time.Now()
	share := canaryShare(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.active || share != r.want || r.seen[i] {
		return
	}
	r.seen[i] = true
	d := now.Sub(r.t0)
	if r.got == 0 {
		r.times.first = d
	}
	r.times.all = max(r.times.all, d)
	// Done once every proxy has it and every stream has sent it (a
	// proxy may decode before the server's Send returns).
	if r.got++; r.got == r.n && r.sends >= r.n {
		close(r.done)
	}
}

// sent records a profile message handed to a stream's Send at now.
func (r *recorder) sent(m *pb.DestinationProfile, now time.Time) {
	// Read from the message itself: the server's path gains no compile.
	p := &profile.Profile{}
	for _, d := range m.GetDstOverrides() {
		p.Splits = append(p.Splits, profile.Split{Authority: d.GetAuthority(), Weight: d.GetWeight()})
	}
	share := canaryShare(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.active || share != r.want || !hasSplit(p) {
		return
	}
	d := now.Sub(r.t0)
	if r.sends == 0 {
		r.times.firstSend = d
	}
	r.times.lastSend = max(r.times.lastSend, d)
	if r.sends++; r.got == r.n && r.sends == r.n {
		close(r.done)
	}
}

func hasSplit(p *profile.Profile) bool {
	for _, s := range p.Splits {
		if s.Authority == canarySubset {
			return true
		}
	}
	return false
}

// sendTimer is a server stream that tells rec of each profile message.
type sendTimer struct {
	grpc.ServerStream
	rec *recorder
}

func (s sendTimer) SendMsg(m any) error {
	if p, ok := m.(*pb.DestinationProfile); ok {
		s.rec.sent(p, time.Now())
	}
	return s.ServerStream.SendMsg(m)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got
}

func (r *recorder) result() stepTimes {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.times
}

// canaryShare is the canary subset's share of p's split, in percent
// (rounded); 0 without a split.
func canaryShare(p *profile.Profile) int32 {
	var total, canary uint64
	for _, s := range p.Splits {
		total += uint64(s.Weight)
		if s.Authority == canarySubset {
			canary += uint64(s.Weight)
		}
	}
	if total == 0 {
		return 0
	}
	return int32(math.Round(float64(canary) * 100 / float64(total)))
}

// storeWatch reports when the store first holds a Rollout status with the
// expected canary weight, woken as the destination API's computations are
// (the stable Service's topic).
type storeWatch struct {
	mu   sync.Mutex
	want int32
	ch   chan time.Time
}

func watchStore(ctx context.Context, st *store.Store) *storeWatch {
	w := &storeWatch{want: -1}
	key := store.Key{Namespace: ns, Name: stableSvc}
	changed, stop := st.Watch(store.ServiceTopic(key))
	go func() {
		defer stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			now := time.Now()
			for _, ro := range st.Rollouts(key) {
				if wt := ro.Status.Canary.Weights; wt != nil {
					w.mu.Lock()
					if wt.Canary.Weight == w.want && w.ch != nil {
						w.ch <- now // buffered: one per step
						w.ch = nil
					}
					w.mu.Unlock()
				}
			}
		}
	}()
	return w
}

func (w *storeWatch) expect(weight int32) <-chan time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan time.Time, 1)
	w.want, w.ch = weight, ch
	return ch
}

// objects creates what a Rollout in its canary phase has in the cluster:
// the stable and canary Services, -pods ready pods of each pod-template
// hash behind them (Pods and EndpointSlices: envtest runs no controllers,
// so the benchmark writes what the ReplicaSet and EndpointSlice
// controllers would), and the Rollout routed by Meridian with all traffic
// on stable, as its reconciler leaves it before the first step.
func objects(ctx context.Context, b *testing.B, kc client.Client) *v1alpha1.Rollout {
	must := func(err error) {
		b.Helper()
		if err != nil {
			b.Fatal(err)
		}
	}
	must(kc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	labels := map[string]string{"app": "web"}
	for _, name := range []string{stableSvc, canarySvc} {
		must(kc.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}))
	}
	template := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.example/web:1"}}}}
	for h, hash := range []string{stableHash, canaryHash} {
		svc := []string{stableSvc, canarySvc}[h]
		port, portName, proto, ready := int32(8080), "http", corev1.ProtocolTCP, true
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
		}
		for p := range *pods {
			name := fmt.Sprintf("web-%s-%d", hash, p)
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
				Labels: map[string]string{"app": "web", v1alpha1.DefaultRolloutUniqueLabelKey: hash}}, Spec: template.Spec}
			must(kc.Create(ctx, pod))
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.5.%d.%d", h, p+1)},
				Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name, UID: pod.UID}})
		}
		must(kc.Create(ctx, sl))
	}
	replicas, w := int32(2**pods), int32(10)
	ro := &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}, Spec: v1alpha1.RolloutSpec{
		Replicas: &replicas,
		Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: &template,
		Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{
			StableService: stableSvc, CanaryService: canarySvc,
			TrafficRouting: &v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{}},
			Steps:          []v1alpha1.CanaryStep{{SetWeight: &w}, {Pause: &v1alpha1.RolloutPause{}}},
		}},
	}}
	if errs := ro.Validate(); len(errs) > 0 {
		b.Fatalf("the benchmark's Rollout is invalid: %v", errs)
	}
	must(kc.Create(ctx, ro))
	ro.Status = v1alpha1.RolloutStatus{
		Phase: v1alpha1.RolloutPhaseProgressing, StableRS: stableHash, CurrentPodHash: canaryHash,
		Canary: v1alpha1.CanaryStatus{Weights: &v1alpha1.TrafficWeights{
			Stable: v1alpha1.WeightDestination{ServiceName: stableSvc, PodTemplateHash: stableHash, Weight: 100},
			Canary: v1alpha1.WeightDestination{ServiceName: canarySvc, PodTemplateHash: canaryHash, Weight: 0},
		}},
	}
	must(kc.Status().Update(ctx, ro))
	return ro
}

// apiTLS returns the controller API's TLS configuration (TLS 1.3, a SPIFFE
// certificate for apiID issued by a new identity CA, client certificates
// verified if given) and meridian-proxy's for reaching it (the trust
// anchors, the server's SPIFFE ID required): controlplane/controller's
// apiCert.tlsConfig and cmd/meridian-proxy's controlPlaneCreds.
func apiTLS(b *testing.B) (server, client *tls.Config) {
	td := spiffeid.RequireTrustDomainFromString(compile.DefaultTrustDomain)
	ca, err := identity.Generate(td)
	if err != nil {
		b.Fatal(err)
	}
	id := spiffeid.RequireFromString(apiID)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	leaf, chain, err := ca.Issue(id, key.Public(), 24*time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range ca.Roots {
		pool.AddCert(r)
	}
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{"h2"},
		Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: key, Leaf: leaf}},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
	}
	client = tlsconfig.TLSClientConfig(x509bundle.FromX509Authorities(td, ca.Roots), tlsconfig.AuthorizeID(id))
	client.MinVersion = tls.VersionTLS13
	return server, client
}

// counter reads a counter of reg by its rpc (and kind) labels.
func counter(b *testing.B, reg *prometheus.Registry, name, rpc, kind string) int64 {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label(m, "rpc") == rpc && (kind == "" || label(m, "kind") == kind) {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return int64(n)
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// cpuTime is the CPU time this process has used (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runWait is the time pid's threads have spent waiting on a run queue
// (/proc/PID/task/*/schedstat, second field), 0 if unknown.
func runWait(pid int) time.Duration {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/schedstat")
	var ns int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			ns += v
		}
	}
	return time.Duration(ns)
}

// childrenRunWait is runWait summed over this process's children (envtest
// runs etcd and kube-apiserver as such).
func childrenRunWait() time.Duration {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	me := strconv.Itoa(os.Getpid())
	var d time.Duration
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut after ')'.
		_, rest, ok := strings.Cut(string(b), ") ")
		if f := strings.Fields(rest); ok && len(f) >= 2 && f[1] == me {
			pid, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Dir(st), "/proc/"), "/"))
			d += runWait(pid)
		}
	}
	return d
}

// loadAvg is the machine's 1-minute load average (0 if unknown).
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b) + " 0")[0], 64)
	return f
}

func crd(file string) string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(self), "..", "..", "api", "crds", file)
}

// q is the quantile f of ds (nearest rank); 1 is the maximum.
func q(ds []time.Duration, f float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(f*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
func msf(d time.Duration) float64      { return float64(d.Microseconds()) / 1000 }
