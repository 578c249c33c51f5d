package kube

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	splitv1alpha1 "github.com/meridian-mesh/meridian/api/split/v1alpha1"
	splitv1alpha2 "github.com/meridian-mesh/meridian/api/split/v1alpha2"
	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/conversion/conversiontest"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// The tests here run against a real kube-apiserver and etcd (envtest). They
// need KUBEBUILDER_ASSETS: a directory holding the etcd and kube-apiserver
// binaries, which `make test` sets (hack/kube-assets.sh).

var (
	envOnce sync.Once
	testEnv *envtest.Environment
	envCfg  *rest.Config
	envErr  error
	// convSrv is the TrafficSplit conversion webhook the CRD is pointed at
	// (its strategy is Webhook), for the life of the test binary.
	convSrv *conversiontest.Server
)

// testCRDs are api/crds with the conversion webhook at convSrv.
func testCRDs(t *testing.T) []*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	crds, err := convSrv.CRDs(crdDir())
	if err != nil {
		t.Fatal(err)
	}
	return crds
}

func crdDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "api", "crds")
}

// sharedAPIServer starts the shared envtest control plane with our CRDs and the
// SMI CRD installed, or skips the test without KUBEBUILDER_ASSETS.
func sharedAPIServer(t *testing.T) *rest.Config {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: this test needs the etcd and kube-apiserver binaries; `make test` sets it (see hack/kube-assets.sh)")
	}
	envOnce.Do(func() {
		ctrllog.SetLogger(logr.Discard())
		convSrv = conversiontest.NewServer()
		testEnv = &envtest.Environment{}
		if envCfg, envErr = testEnv.Start(); envErr != nil {
			return
		}
		envErr = convSrv.Install(envCfg, crdDir())
	})
	if envErr != nil {
		t.Fatalf("starting kube-apiserver and etcd from KUBEBUILDER_ASSETS=%s: %v", os.Getenv("KUBEBUILDER_ASSETS"), envErr)
	}
	return envCfg
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testEnv != nil {
		if err := testEnv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}
	os.Exit(code)
}

func newClient(t *testing.T, cfg *rest.Config) client.Client {
	t.Helper()
	scheme, err := Scheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// createNamespace creates a namespace named base-N, new to the API server
// (shared by -count's runs, and envtest never finishes deleting one), and
// returns its name.
func createNamespace(t *testing.T, c client.Client, base string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", base, nsSeq.Add(1))
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

var nsSeq atomic.Int64

// fromYAML decodes a manifest into an unstructured object, so that the API
// server, not our Go types, judges it.
func fromYAML(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}

func profileHead(ns string) string {
	return `apiVersion: meridian.io/v1alpha1
kind: ServiceProfile
metadata:
  name: web.validation.svc.cluster.local
  namespace: ` + ns + `
spec:
`
}

func TestAPIServerValidatesServiceProfiles(t *testing.T) {
	cfg := sharedAPIServer(t)
	c := newClient(t, cfg)
	ctx := context.Background()
	ns := createNamespace(t, c, "validation")

	for _, tc := range []struct {
		name string
		spec string
		want []string // every one must be in the error
	}{
		{
			name: "status out of range",
			spec: `  routes:
  - name: r
    condition: {method: GET}
    responseClasses:
    - condition: {status: {min: 700}}
      isFailure: true
`,
			want: []string{"spec.routes[0].responseClasses[0].condition.status.min", "599"},
		},
		{
			name: "status range upside down",
			spec: `  routes:
  - name: r
    condition: {method: GET}
    responseClasses:
    - condition: {status: {min: 500, max: 400}}
`,
			want: []string{"spec.routes[0].responseClasses[0].condition.status", "min must not be greater than max"},
		},
		{
			name: "bad timeout",
			spec: `  routes:
  - name: r
    condition: {method: GET}
    timeout: soon
`,
			want: []string{"spec.routes[0].timeout", "should match"},
		},
		{
			name: "route without a condition",
			spec: `  routes:
  - name: r
`,
			want: []string{"spec.routes[0].condition", "Required value"},
		},
		{
			name: "empty condition",
			spec: `  routes:
  - name: r
    condition: {}
`,
			want: []string{"spec.routes[0].condition", "at least 1"},
		},
		{
			name: "retry ratio as a string",
			spec: `  retryBudget:
    retryRatio: "lots"
    minRetriesPerSecond: 10
    ttl: 10s
`,
			want: []string{"spec.retryBudget.retryRatio", "number"},
		},
		{
			name: "retry budget without a ttl",
			spec: `  retryBudget:
    retryRatio: 0.2
    minRetriesPerSecond: 10
`,
			want: []string{"spec.retryBudget.ttl", "Required value"},
		},
		{
			name: "opaque port out of range",
			spec: `  opaquePorts: [0]
`,
			want: []string{"spec.opaquePorts[0]", "greater than or equal to 1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Create(ctx, fromYAML(t, profileHead(ns)+tc.spec))
			if err == nil {
				t.Fatal("the API server accepted an invalid ServiceProfile")
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("error %v is not Invalid", err)
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}

	// A valid, Linkerd-shaped profile is accepted and round-trips through
	// the API server (the ratio stays 0.2, the quantity weight "500m").
	valid := profileHead(ns) + `  routes:
  - name: GET /api/list
    condition:
      all:
      - method: GET
      - not: {pathRegex: /api/admin.*}
    responseClasses:
    - condition: {status: {min: 500, max: 599}}
      isFailure: true
    isRetryable: true
    timeout: 250ms
  retryBudget:
    retryRatio: 0.2
    minRetriesPerSecond: 10
    ttl: 10s
  dstOverrides:
  - authority: web-v2.validation.svc.cluster.local:80
    weight: 500m
  opaquePorts: [3306]
`
	if err := c.Create(ctx, fromYAML(t, valid)); err != nil {
		t.Fatalf("valid profile rejected: %v", err)
	}
	var got v1alpha1.ServiceProfile
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web.validation.svc.cluster.local"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.RetryBudget == nil || got.Spec.RetryBudget.RetryRatio != "0.2" {
		t.Errorf("retryRatio after a round trip: %+v", got.Spec.RetryBudget)
	}
	if r := got.Spec.Routes[0]; r.Timeout != "250ms" || r.Condition.All[1].Not.PathRegex != "/api/admin.*" {
		t.Errorf("route after a round trip: %+v", r)
	}
	if w := got.Spec.DstOverrides[0].Weight; w.MilliValue() != 500 {
		t.Errorf("dstOverrides weight after a round trip: %v", w.String())
	}
	if errs := got.Validate(); len(errs) > 0 {
		t.Errorf("the stored profile fails our own validation: %v", errs)
	}
}

func TestAPIServerValidatesTrafficSplits(t *testing.T) {
	c := newClient(t, sharedAPIServer(t))
	ns := createNamespace(t, c, "split-validation")
	for _, tc := range []struct{ name, manifest, want string }{
		{"no backends", `apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: s, namespace: split-validation}
spec: {service: web, backends: []}
`, "spec.backends"},
		{"negative weight", `apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: s, namespace: split-validation}
spec: {service: web, backends: [{service: web-v1, weight: -1}]}
`, "spec.backends[0].weight"},
		{"string weight in v1alpha2", `apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: s, namespace: split-validation}
spec: {service: web, backends: [{service: web-v1, weight: "500m"}]}
`, "spec.backends[0].weight"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Create(context.Background(), fromYAML(t, strings.ReplaceAll(tc.manifest, "namespace: split-validation", "namespace: "+ns)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Create = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// eventually polls cond until it holds or 20 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// woken waits for a watcher's wake-up.
func woken(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("watcher not woken: %s", what)
	}
}

// start runs the kube source into a new store until the test ends, and
// waits until it is ready.
func start(t *testing.T, cfg *rest.Config) *store.Store {
	t.Helper()
	st := store.New()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	log := testLogger(t) // its cleanup runs after Run's below
	go func() {
		done <- Run(ctx, cfg, st, WithReady(func() { close(ready) }), WithLogger(log))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		done <- err // for the cleanup, which waits for Run's end
		t.Fatalf("Run returned before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("Run not ready after 60s")
	}
	return st
}

func endpointSlice(ns, name, svc string, ips ...string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
	}
	for i, ip := range ips {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: fmt.Sprintf("%s-%d", svc, i)},
		})
	}
	return es
}

func addresses(st *store.Store, k store.Key) []string {
	var out []string
	for _, es := range st.EndpointSlices(k) {
		for _, ep := range es.Endpoints {
			out = append(out, ep.Addresses...)
		}
	}
	slices.Sort(out)
	return out
}

func TestRunFillsTheStore(t *testing.T) {
	cfg := sharedAPIServer(t)
	c := newClient(t, cfg)
	ctx := context.Background()
	ns := createNamespace(t, c, "fill")

	// Something exists before the source starts: it is in the store once
	// Run says it is ready.
	before := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "before"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
	if err := c.Create(ctx, before); err != nil {
		t.Fatal(err)
	}
	st := start(t, cfg)
	if _, ok := st.Service(store.Key{Namespace: ns, Name: "before"}); !ok {
		t.Fatal("a service created before Run is not in the store when Run is ready")
	}
	if _, ok := st.Namespace(ns); !ok {
		t.Fatal("namespace missing")
	}

	web := store.Key{Namespace: ns, Name: "web"}
	changed, stop := st.Watch(store.ServiceTopic(web))
	defer stop()

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
	if err := c.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP == "" {
		t.Fatal("the API server assigned no cluster IP")
	}
	woken(t, "service created", changed)
	eventually(t, "web by cluster IP", func() bool {
		k, ok := st.ServiceByClusterIP(svc.Spec.ClusterIP)
		return ok && k == web
	})

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-0", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"}}},
	}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	es := endpointSlice(ns, "web-abc", "web", "10.1.0.1")
	if err := c.Create(ctx, es); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the endpoint slice", func() bool { return slices.Equal(addresses(st, web), []string{"10.1.0.1"}) })
	// Pods and slices come through informers of their own: the slice's
	// arrival says nothing of the pod's.
	eventually(t, "the pod", func() bool {
		_, ok := st.Pod(store.Key{Namespace: ns, Name: "web-0"})
		return ok
	})

	// A pod the slice references wakes the service.
	drain(changed)
	pod.Labels["version"] = "2"
	if err := c.Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	woken(t, "pod behind the slice updated", changed)

	// Updating the slice wakes the watcher and serves the new endpoints.
	drain(changed)
	es.Endpoints = endpointSlice(ns, "", "web", "10.1.0.1", "10.1.0.2").Endpoints
	if err := c.Update(ctx, es); err != nil {
		t.Fatal(err)
	}
	woken(t, "slice updated", changed)
	eventually(t, "two endpoints", func() bool { return slices.Equal(addresses(st, web), []string{"10.1.0.1", "10.1.0.2"}) })

	profile := &v1alpha1.ServiceProfile{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web." + ns + ".svc.cluster.local"},
		Spec: v1alpha1.ServiceProfileSpec{
			Routes: []v1alpha1.RouteSpec{{
				Name:      "GET /",
				Condition: &v1alpha1.RequestMatch{Method: "GET", PathRegex: "/"},
				Timeout:   "1s",
			}},
			RetryBudget: &v1alpha1.RetryBudget{RetryRatio: "0.2", MinRetriesPerSecond: 10, TTL: "10s"},
		},
	}
	drain(changed)
	if err := c.Create(ctx, profile); err != nil {
		t.Fatal(err)
	}
	woken(t, "profile created", changed)
	eventually(t, "the profile", func() bool {
		p, ok := st.ServiceProfile(web)
		return ok && p.Spec.RetryBudget != nil && p.Spec.RetryBudget.RetryRatio == "0.2"
	})

	// A v1alpha2 split, and one written as Argo Rollouts does: v1alpha1
	// with string weights. Both are read, whatever version is watched.
	v2 := &splitv1alpha2.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-v2"},
		Spec: splitv1alpha2.TrafficSplitSpec{Service: "web", Backends: []splitv1alpha2.TrafficSplitBackend{
			{Service: "web-stable", Weight: 90}, {Service: "web-canary", Weight: 10},
		}},
	}
	v1 := &splitv1alpha1.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-v1"},
		Spec: splitv1alpha1.TrafficSplitSpec{Service: "web", Backends: []splitv1alpha1.TrafficSplitBackend{
			{Service: "web-stable", Weight: resource.MustParse("750m")}, {Service: "web-canary", Weight: resource.MustParse("250m")},
		}},
	}
	canary := store.Key{Namespace: ns, Name: "web-canary"}
	canaryChanged, stopCanary := st.Watch(store.ServiceTopic(canary))
	defer stopCanary()
	drain(changed)
	for _, obj := range []client.Object{v2, v1} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	woken(t, "splits created (apex)", changed)
	woken(t, "splits created (backend)", canaryChanged)
	eventually(t, "both splits", func() bool {
		splits := st.TrafficSplits(web)
		if len(splits) != 2 {
			return false
		}
		w1, w2 := splits[0].Backends, splits[1].Backends // sorted by name: web-v1, web-v2
		return splits[0].Key.Name == "web-v1" && len(w1) == 2 && len(w2) == 2 &&
			w1[0].Weight == 3*w1[1].Weight && w1[1].Weight > 0 && // 750m:250m
			w2[0].Weight == 9*w2[1].Weight && w2[1].Weight > 0 // 90:10
	})

	// Deletes remove them and wake the watchers.
	drain(changed)
	if err := c.Delete(ctx, es); err != nil {
		t.Fatal(err)
	}
	woken(t, "slice deleted", changed)
	eventually(t, "no endpoints", func() bool { return len(st.EndpointSlices(web)) == 0 })
	for _, obj := range []client.Object{profile, v1, v2, svc} {
		if err := c.Delete(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "profile, splits and service gone", func() bool {
		_, p := st.ServiceProfile(web)
		_, s := st.Service(web)
		_, ip := st.ServiceByClusterIP(svc.Spec.ClusterIP)
		return !p && !s && !ip && len(st.TrafficSplits(web)) == 0
	})
}

func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

// Without the optional CRDs, Run still starts and serves the core kinds.
func TestRunWithoutOptionalCRDs(t *testing.T) {
	sharedAPIServer(t) // skips without KUBEBUILDER_ASSETS
	// An API server of its own that never had the CRDs: uninstalling them
	// from the shared one and installing them again raced their deletion
	// (a CRD still terminating is deleted after its reinstall).
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the test's own API server: %v", err)
		}
	})
	c := newClient(t, cfg)
	ns := createNamespace(t, c, "nocrds")
	st := start(t, cfg)
	if err := c.Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the service", func() bool {
		_, ok := st.Service(store.Key{Namespace: ns, Name: "web"})
		return ok
	})
}

func newMapper(versions ...string) *meta.DefaultRESTMapper {
	var gvs []schema.GroupVersion
	for _, v := range versions {
		gvs = append(gvs, schema.GroupVersion{Group: splitGK.Group, Version: v})
	}
	return meta.NewDefaultRESTMapper(gvs)
}

func TestSplitVersionPreference(t *testing.T) {
	for _, tc := range []struct {
		served []string
		want   string
	}{
		{[]string{"v1alpha2", "v1alpha1", "v1alpha3"}, "v1alpha1"},
		{[]string{"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"}, "v1alpha4"}, // the storage version: no conversion webhook
		{[]string{"v1alpha2", "v1alpha3"}, "v1alpha3"},
		{[]string{"v1alpha2"}, "v1alpha2"},
		{nil, ""},
	} {
		m := newMapper(tc.served...)
		for _, v := range tc.served {
			m.Add(splitGK.WithVersion(v), meta.RESTScopeNamespace)
		}
		obj, err := splitVersion(m)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if obj != nil {
			got = obj.GetObjectKind().GroupVersionKind().Version
		}
		if got != tc.want {
			t.Errorf("served %v: watching %q, want %q", tc.served, got, tc.want)
		}
	}
	m := newMapper("v1beta1")
	m.Add(splitGK.WithVersion("v1beta1"), meta.RESTScopeNamespace)
	if _, err := splitVersion(m); err == nil || !strings.Contains(err.Error(), "v1beta1") {
		t.Errorf("only an unknown version served: %v", err)
	}
}

// testLogger logs to t until the test ends.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, nil))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}
