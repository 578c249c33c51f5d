package controller

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meridian-mesh/meridian/controlplane/controller/runnable"
	"github.com/meridian-mesh/meridian/controlplane/identity"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// leakOptions ignore what is not Run's: goroutines from before the test.
func leakOptions() []goleak.Option {
	return []goleak.Option{goleak.IgnoreCurrent()}
}

// writerProbe is a writer that records while it runs.
type writerProbe struct {
	running atomic.Int32
	started atomic.Int32
}

func (w *writerProbe) Start(ctx context.Context) error {
	w.started.Add(1)
	w.running.Add(1)
	defer w.running.Add(-1)
	<-ctx.Done()
	return nil
}

// Every goroutine the controller starts in local mode (source, API,
// admin, issuer watch, writers) is gone when Run returns.
func TestControllerLocalStopsEverything(t *testing.T) {
	defer goleak.VerifyNone(t, leakOptions()...)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "demo.yaml"), []byte(controllerYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	w := &writerProbe{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Store: "dir:" + dir, DestinationAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
			TrustDomain: "example.org", DefaultNamespace: "demo", ShutdownGrace: 100 * time.Millisecond,
			IdentityIssuerDir: t.TempDir(), IdentityIssuerReload: 10 * time.Millisecond,
			Log:     quietLog(),
			Writers: []runnable.Runnable{w},
		}, nil)
	}()
	waitFor(t, func() bool { return w.running.Load() == 1 }, "the writer runs (local mode: no election)")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w.running.Load() != 0 {
		t.Fatal("a writer still runs after Run returned")
	}
}

// A store that never syncs (an API server that cannot be reached) fails
// Run, and leaves nothing behind either (destination's wait for the first
// sync included).
func TestControllerStoreNeverSyncs(t *testing.T) {
	defer goleak.VerifyNone(t, leakOptions()...)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	err = Run(context.Background(), Options{Store: "kube", RestConfig: &rest.Config{Host: "https://" + addr, Timeout: time.Second},
		DestinationAddr: "127.0.0.1:0", ShutdownGrace: 100 * time.Millisecond, Log: quietLog()}, nil)
	if err == nil || !strings.Contains(err.Error(), "store kube") {
		t.Fatalf("Run: %v, want the store's error", err)
	}
}

// One component failing stops the others, and Run returns its error only
// once they have all stopped.
func TestControllerComponentFails(t *testing.T) {
	defer goleak.VerifyNone(t, leakOptions()...)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "demo.yaml"), []byte(controllerYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	other := &writerProbe{}
	boom := errors.New("boom")
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Options{Store: "dir:" + dir, DestinationAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
			TrustDomain: "example.org", ShutdownGrace: 100 * time.Millisecond, Log: quietLog(),
			Writers: []runnable.Runnable{other, runnable.Func(func(ctx context.Context) error {
				for other.running.Load() == 0 {
					time.Sleep(time.Millisecond)
				}
				return boom
			})},
		}, nil)
	}()
	select {
	case err := <-done:
		if !errors.Is(err, boom) {
			t.Fatalf("Run: %v, want boom", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after a component failed")
	}
	if other.started.Load() != 1 || other.running.Load() != 0 {
		t.Fatalf("the other writer: started %d, running %d", other.started.Load(), other.running.Load())
	}
}

// In kube mode, with the proxy injector on and the writers under the
// Lease: two controllers against one kube-apiserver; only one runs the
// writers, both serve; the leader stopping hands the writers to the other
// within the lease time; every goroutine of the stopped one is gone.
func TestControllerKubeTwoReplicas(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	cfg := apiserver.Start(t, filepath.Join(filepath.Dir(file), "..", "..", "api", "crds"))
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "meridian"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// From here on, every goroutine is the controllers'.
	defer goleak.VerifyNone(t, leakOptions()...)
	issuerDir := t.TempDir()
	ca, err := identity.Generate(spiffeid.RequireTrustDomainFromString("cluster.local"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteDir(issuerDir); err != nil {
		t.Fatal(err)
	}
	const lease = 3 * time.Second

	type replica struct {
		id      string
		w       *writerProbe
		stop    context.CancelFunc
		done    chan error
		webhook chan string
	}
	start := func(id string, c *rest.Config) *replica {
		r := &replica{id: id, w: &writerProbe{}, done: make(chan error, 1), webhook: make(chan string, 1)}
		rctx, stop := context.WithCancel(ctx)
		r.stop = stop
		go func() {
			r.done <- Run(rctx, Options{Store: "kube", RestConfig: c, DestinationAddr: "127.0.0.1:0", ShutdownGrace: time.Second,
				IdentityIssuerDir: issuerDir, Log: quietLog(),
				Webhook:        WebhookOptions{Addr: "127.0.0.1:0", Namespace: "meridian", Ready: func(a string) { r.webhook <- a }},
				Writers:        []runnable.Runnable{r.w},
				LeaderElection: LeaderElectionOptions{Identity: id, LeaseDuration: lease, RenewDeadline: 2 * time.Second, RetryPeriod: 250 * time.Millisecond},
			}, nil)
		}()
		select {
		case <-r.webhook: // both replicas serve the injector
		case err := <-r.done:
			t.Fatalf("%s: %v", id, err)
		}
		return r
	}
	holder := func() string {
		l, err := cs.CoordinationV1().Leases("meridian").Get(ctx, DefaultLease, metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}

	a := start("a", cfg)
	waitFor(t, func() bool { return a.w.running.Load() == 1 && holder() == "a" }, "a leads")
	b := start("b", rest.CopyConfig(cfg))
	time.Sleep(lease)
	if b.w.started.Load() != 0 || holder() != "a" {
		t.Fatalf("b started its writers %d times while a leads (holder %q)", b.w.started.Load(), holder())
	}
	// The injector's certificate was made by the leader, and the
	// follower serves the same one.
	if _, err := cs.CoreV1().Secrets("meridian").Get(ctx, DefaultWebhookSecret, metav1.GetOptions{}); err != nil {
		t.Fatalf("the leader did not make the serving Secret: %v", err)
	}

	stopped := time.Now()
	a.stop()
	if err := <-a.done; err != nil {
		t.Fatal(err)
	}
	if a.w.running.Load() != 0 {
		t.Fatal("a's writer still runs after Run returned")
	}
	waitFor(t, func() bool { return b.w.running.Load() == 1 && holder() == "b" }, "b takes the writers over")
	if took := time.Since(stopped); took > lease {
		t.Fatalf("b took over %v after a stopped, more than the lease duration %v", took, lease)
	}
	b.stop()
	if err := <-b.done; err != nil {
		t.Fatal(err)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
