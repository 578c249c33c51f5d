// Package gatewayscale measures how fast the edge gateway serves routes
// applied in bulk: HTTPRoutes created in a real kube-apiserver (envtest),
// read by the controller's Kubernetes source into its store, compiled by
// the controller's gateway compiler behind the gateway API server, and
// streamed to a gateway proxy, all on loopback; the figure is the time from
// the last route's create until every route answers through the proxy.
//
//	export KUBEBUILDER_ASSETS=$(hack/kube-assets.sh)
//	go test -run '^$' -bench RoutesApplied -benchtime 1x ./bench/gatewayscale
//
// It is a benchmark, not a test: `go test` without -bench runs nothing here.
package gatewayscale

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclientset "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/bench/sut"
	compilegateway "github.com/meridian-mesh/meridian/controlplane/compile/gateway"
	gatewayserver "github.com/meridian-mesh/meridian/controlplane/gateway"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/controlplane/store/kube"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/gateway"
	"github.com/meridian-mesh/meridian/proxy/gwclient"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

const ns = "bench"

// BenchmarkRoutesApplied creates -routes HTTPRoutes at once (each its own
// hostname, prefix /, to one Service) and reports the time from the last
// create's answer until every one of them answers 200 through the gateway
// proxy (target: 2 s for 1,000), with a RESULT line. Each iteration creates
// a fresh set and deletes it after.
func BenchmarkRoutesApplied(b *testing.B) {
	n := *routes
	apiserver.Need(b)
	cfg := apiserver.Start(b, apiserver.GatewayAPICRDs())
	// client-go's default 5 QPS would make the applying the bottleneck.
	cfg.QPS, cfg.Burst = 5000, 5000
	cs := kubernetes.NewForConfigOrDie(cfg)
	gc := gwclientset.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	must := func(_ any, err error) {
		b.Helper()
		if err != nil {
			b.Fatal(err)
		}
	}
	p, err := sut.FreePort()
	if err != nil {
		b.Fatal(err)
	}
	port := uint32(p)
	must(cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))
	must(cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{}))
	must(gc.GatewayV1().GatewayClasses().Create(ctx, &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "meridian"},
		Spec: gwv1.GatewayClassSpec{ControllerName: compilegateway.ControllerName}}, metav1.CreateOptions{}))
	must(gc.GatewayV1().Gateways(ns).Create(ctx, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: ns},
		Spec: gwv1.GatewaySpec{GatewayClassName: "meridian", Listeners: []gwv1.Listener{{Name: "http", Port: gwv1.PortNumber(port), Protocol: gwv1.HTTPProtocolType}}}},
		metav1.CreateOptions{}))

	// The controller's part: the Kubernetes source into the store, and the
	// gateway API server computing snapshots as cmd/meridian-controller
	// does (controlplane/controller: Compile over InputFrom).
	log := slog.New(slog.DiscardHandler)
	st := store.New()
	synced := make(chan struct{})
	srcDone := make(chan error, 1)
	go func() {
		srcDone <- kube.Run(ctx, cfg, st, kube.WithGatewayAPI(), kube.WithLogger(log), kube.WithReady(func() { close(synced) }))
	}()
	defer func() { cancel(); <-srcDone }()
	srv := gatewayserver.New(st, gatewayserver.Options{
		Compile: func(key string) (*gatewaypb.Snapshot, []store.Topic, []string) {
			nsName, name, _ := strings.Cut(key, "/")
			k := types.NamespacedName{Namespace: nsName, Name: name}
			res := compilegateway.Compile(compilegateway.InputFrom(st, k), k, compilegateway.Options{})
			topics := []store.Topic{store.GatewayTopic(store.Key{Namespace: nsName, Name: name})}
			if !res.Owned {
				return nil, topics, nil
			}
			return res.Snapshot, topics, nil
		},
		// Identity is not what this measures: the stream is plaintext
		// and every caller may watch.
		Authorize: func(context.Context, string, string) error { return nil },
		Synced:    synced,
		Log:       log,
	})
	gs := grpc.NewServer()
	gatewaypb.RegisterGatewayServer(gs, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go gs.Serve(ln)
	defer gs.Stop()

	// The proxy: Service web's endpoint is a loopback backend.
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer backend.Close()
	res, err := discover.NewStatic([]discover.Destination{{Authority: "web." + ns + ".svc.cluster.local:80",
		Endpoints: []discover.Endpoint{{Addr: backend.Listener.Addr().String()}}}})
	if err != nil {
		b.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{
		Bind:      func(p uint32) string { return "127.0.0.1:" + strconv.Itoa(int(p)) },
		AdminAddr: "127.0.0.1:0", Resolver: res, Log: log, DrainTimeout: time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	gwDone := make(chan error, 1)
	go func() { gwDone <- g.Run(ctx) }()
	defer func() { cancel(); <-gwDone }()
	cc, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	// Each snapshot's arrival and how long the proxy took to apply it, to
	// split the time to serve between the controller and the proxy.
	var (
		applyMu sync.Mutex
		applies []applied
	)
	go gwclient.New(cc, gwclient.Options{Namespace: ns, Name: "edge", Token: ns + "/bench", Log: log}).Run(ctx, func(s *gatewaypb.Snapshot) error {
		t0 := time.Now()
		err := g.Apply(s)
		applyMu.Lock()
		applies = append(applies, applied{at: t0, took: time.Since(t0), hosts: hostsIn(s)})
		applyMu.Unlock()
		return err
	})

	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	gwURL := "http://127.0.0.1:" + strconv.Itoa(int(port)) + "/"
	answers := func(host string) bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, gwURL, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	// A first route, so that the gateway serves before anything is timed.
	createRoute(ctx, b, gc, "warm")
	waitAll(ctx, b, []string{"warm"}, answers, time.Minute)

	var worst time.Duration
	for i := 0; b.Loop(); i++ {
		names := make([]string, n)
		for k := range names {
			names[k] = fmt.Sprintf("r%d-%d", i, k)
		}
		// Applied at once: 32 clients creating in parallel.
		var next atomic.Int64
		var wg sync.WaitGroup
		t0 := time.Now()
		for range 32 {
			wg.Go(func() {
				for k := next.Add(1) - 1; k < int64(n); k = next.Add(1) - 1 {
					createRoute(ctx, b, gc, names[k])
				}
			})
		}
		wg.Wait()
		last := time.Now()
		served := waitAll(ctx, b, names, answers, time.Minute)
		took := served.Sub(last)
		// One more round over routes that all serve: the check's own
		// length, which bounds how late it can see the last route.
		r0 := time.Now()
		waitAll(ctx, b, names, answers, time.Minute)
		round := time.Since(r0)
		worst = max(worst, took)
		// The snapshot that first held every route: when it reached the
		// proxy (after the last create) and how long its Apply took.
		var full applied
		applyMu.Lock()
		snaps := 0
		for _, a := range applies {
			if a.at.After(t0) {
				snaps++
			}
			if a.hosts >= n+1 && full.at.IsZero() && a.at.After(t0) {
				full = a
			}
		}
		applies = applies[:0]
		applyMu.Unlock()
		b.Logf("%d HTTPRoutes created in %v; %d snapshots applied meanwhile; the first with all of them reached the proxy %v after the last create, applied in %v; all serving %v after the last create (a check round of all routes takes %v)",
			n, last.Sub(t0).Round(time.Millisecond), snaps, full.at.Sub(last).Round(time.Millisecond), full.took.Round(time.Millisecond), took.Round(time.Millisecond), round.Round(time.Millisecond))
		fmt.Printf("RESULT gateway-routes routes=%d apply_ms=%d snapshots=%d full_snapshot_at_proxy_ms=%d proxy_apply_ms=%d serving_after_last_apply_ms=%d check_round_ms=%d target_met=%t\n",
			n, last.Sub(t0).Milliseconds(), snaps, full.at.Sub(last).Milliseconds(), full.took.Milliseconds(), took.Milliseconds(), round.Milliseconds(), took <= 2*time.Second)
		b.StopTimer()
		if err := gc.GatewayV1().HTTPRoutes(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "bench=scale"}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(worst.Milliseconds()), "ms-to-serve")
}

// applied is one snapshot the proxy applied.
type applied struct {
	at    time.Time
	took  time.Duration
	hosts int
}

func hostsIn(s *gatewaypb.Snapshot) int {
	n := 0
	for _, p := range s.GetPorts() {
		for _, l := range p.GetListeners() {
			n += len(l.GetHosts())
		}
	}
	return n
}

var routes = flag.Int("routes", 1000, "HTTPRoutes applied at once")

// createRoute creates HTTPRoute name: hostname name.example.com, prefix /,
// to Service web:80, attached to Gateway edge.
func createRoute(ctx context.Context, b *testing.B, gc gwclientset.Interface, name string) {
	port := gwv1.PortNumber(80)
	_, err := gc.GatewayV1().HTTPRoutes(ns).Create(ctx, &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"bench": "scale"}},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "edge"}}},
			Hostnames:       []gwv1.Hostname{gwv1.Hostname(name + ".example.com")},
			Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{
				BackendObjectReference: gwv1.BackendObjectReference{Name: "web", Port: &port}}}}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		b.Error(err)
	}
}

// waitAll polls every route that does not answer yet, in rounds (16 at a
// time, so a round of 1,000 routes is short next to the 2 s target: its
// length is the measurement's resolution), until all answer; it returns
// when the last one first answered. Bounded by limit.
func waitAll(ctx context.Context, b *testing.B, names []string, answers func(host string) bool, limit time.Duration) time.Time {
	pending := append([]string(nil), names...)
	deadline := time.Now().Add(limit)
	var last time.Time
	for len(pending) > 0 {
		if time.Now().After(deadline) || ctx.Err() != nil {
			b.Fatalf("%d of %d routes still not serving after %v (first: %s)", len(pending), len(names), limit, pending[0])
		}
		ok := make([]time.Time, len(pending))
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for k := next.Add(1) - 1; k < int64(len(pending)); k = next.Add(1) - 1 {
					if answers(pending[k] + ".example.com") {
						ok[k] = time.Now()
					}
				}
			})
		}
		wg.Wait()
		rest := pending[:0]
		for k, name := range pending {
			if ok[k].IsZero() {
				rest = append(rest, name)
			} else if ok[k].After(last) {
				last = ok[k]
			}
		}
		pending = rest
		if len(pending) > 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	return last
}
