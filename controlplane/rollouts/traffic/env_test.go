package traffic_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/conversion/conversiontest"
	"github.com/meridian-mesh/meridian/controlplane/meshroute"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/controlplane/store/kube"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// env is one API server for the package's tests (with api/crds, the
// TrafficSplit conversion webhook and the Gateway API CRDs), the
// controller's store filled from it by the Kubernetes source, and the mesh
// routes' status writer, as the controller runs them.
type env struct {
	cfg    *rest.Config
	client client.Client
	store  *store.Store
}

var (
	envOnce   sync.Once
	shared    *env
	sharedErr error
	stopEnv   func()
)

func TestMain(m *testing.M) {
	code := m.Run()
	if stopEnv != nil {
		stopEnv()
	}
	os.Exit(code)
}

func testEnv(t *testing.T) *env {
	t.Helper()
	apiserver.Need(t)
	envOnce.Do(func() { shared, sharedErr = startEnv() })
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

func startEnv() (*env, error) {
	// Started by hand, not apiserver.Start: it lives for the whole binary.
	te := &envtest.Environment{CRDDirectoryPaths: []string{apiserver.GatewayAPICRDs()}, ErrorIfCRDPathMissing: true}
	cfg, err := te.Start()
	if err != nil {
		return nil, err
	}
	stop := func() { _ = te.Stop() }
	conv := conversiontest.NewServer()
	_, file, _, _ := runtime.Caller(0)
	if err := conv.Install(cfg, filepath.Join(filepath.Dir(file), "..", "..", "..", "api", "crds")); err != nil {
		stop()
		return nil, err
	}
	scheme, err := kube.Scheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	st := store.New()
	ctx, cancel := context.WithCancel(context.Background())
	synced := make(chan struct{})
	done := make(chan struct{}, 2)
	go func() { _ = kube.Run(ctx, cfg, st, kube.WithReady(func() { close(synced) })); done <- struct{}{} }()
	w := meshroute.New(meshroute.Options{Store: st, Client: gwclient.NewForConfigOrDie(cfg), Synced: synced, Retry: 100 * time.Millisecond})
	go func() { _ = w.Start(ctx); done <- struct{}{} }()
	select {
	case <-synced:
	case <-time.After(60 * time.Second):
		cancel()
		stop()
		return nil, os.ErrDeadlineExceeded
	}
	stopEnv = func() {
		cancel()
		<-done
		<-done
		conv.Close()
		stop()
	}
	return &env{cfg: cfg, client: c, store: st}, nil
}

// namespace creates a namespace of its own for one run of a test (the API
// server outlives -count's runs) with the Services, and returns its name.
func (e *env) namespace(t *testing.T, prefix string, services ...string) string {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("%s-%d", prefix, nsSeq.Add(1))
	if err := e.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	for _, s := range services {
		if err := e.client.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: s}, Spec: corev1.ServiceSpec{
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

var nsSeq atomic.Int64

// rollout creates a canary Rollout over web-stable / web-canary with the
// trafficRouting given, and returns it as the API server has it (its UID).
func (e *env) rollout(t *testing.T, ns string, tr *v1alpha1.RolloutTrafficRouting) *v1alpha1.Rollout {
	t.Helper()
	ro := &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}, Spec: v1alpha1.RolloutSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "web:1"}}}},
		Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{StableService: "web-stable", CanaryService: "web-canary", TrafficRouting: tr}}}}
	if err := e.client.Create(context.Background(), ro); err != nil {
		t.Fatal(err)
	}
	return ro
}

// eventually polls cond for 20 s.
func eventually(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
