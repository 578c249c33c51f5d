package reconciler

import (
	"context"
	"fmt"
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
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/steps"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/traffic"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// One API server for the package's tests (each test has its namespace and
// its reconciler): starting one takes seconds.
var (
	envCfg *rest.Config
	nsSeq  atomic.Int32
)

func TestMain(m *testing.M) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		os.Exit(m.Run()) // the tests skip
	}
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{CRDDirectoryPaths: []string{crdDir()}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting kube-apiserver and etcd:", err)
		os.Exit(1)
	}
	envCfg = cfg
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

func crdDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "api", "crds")
}

// fakeRouter records what the reconciler asks of it.
type fakeRouter struct {
	mu      sync.Mutex
	weights []steps.Weights
	headers []*v1alpha1.SetHeaderRoute
	removed int
	// stableSel, when set, reads the stable Service's selector at each new
	// split, to check the order of the two.
	stableSel func() string
	sels      []string
}

func (f *fakeRouter) SetWeights(_ context.Context, _ *v1alpha1.Rollout, w steps.Weights) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.weights); n == 0 || f.weights[n-1] != w {
		f.weights = append(f.weights, w)
		if f.stableSel != nil {
			f.sels = append(f.sels, f.stableSel())
		}
	}
	return nil
}

func (f *fakeRouter) SetHeaderRoute(_ context.Context, _ *v1alpha1.Rollout, hr *v1alpha1.SetHeaderRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.headers = append(f.headers, hr)
	return nil
}

func (f *fakeRouter) Verify(context.Context, *v1alpha1.Rollout, steps.Weights) (bool, error) {
	return true, nil
}

func (f *fakeRouter) Remove(context.Context, *v1alpha1.Rollout) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed++
	return nil
}

func (f *fakeRouter) seen() []steps.Weights {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.weights)
}

type harness struct {
	t      *testing.T
	ctx    context.Context
	c      client.Client
	ns     string
	router *fakeRouter
	mu     sync.Mutex
	now    time.Time
	// held are the hashes whose pods kubelet does not make available.
	held map[string]bool
}

// hold keeps the pods of hash unavailable (or, with false, lets them be).
func (h *harness) hold(hash string, held bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held[hash] = held
}

func (h *harness) clock() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.now
}

// advance moves the clock and pokes the Rollout so it is decided again.
func (h *harness) advance(d time.Duration, name string) {
	h.mu.Lock()
	h.now = h.now.Add(d)
	h.mu.Unlock()
	h.poke(name)
}

func (h *harness) poke(name string) {
	ro := &v1alpha1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: name}}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"test/poke":"%d"}}}`, time.Now().UnixNano())
	if err := h.c.Patch(h.ctx, ro, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		h.t.Fatalf("poking %s: %v", name, err)
	}
}

func start(t *testing.T) *harness {
	t.Helper()
	apiserver.Need(t)
	if envCfg == nil {
		t.Fatal("no API server: TestMain could not start one")
	}
	ctx, cancel := context.WithCancel(context.Background())
	ns := fmt.Sprintf("rc-%d-%d", time.Now().UnixNano()%1e6, nsSeq.Add(1))
	h := &harness{t: t, ctx: ctx, ns: ns, router: &fakeRouter{}, held: map[string]bool{}, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r, err := New(Options{Config: envCfg, Namespace: ns, Now: h.clock, Resync: time.Second,
		Routers: func(*v1alpha1.Rollout) (traffic.Router, error) { return h.router, nil }})
	if err != nil {
		t.Fatal(err)
	}
	h.c = r.client
	if err := h.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	// The test's Services go with it (run last: cleanups run in reverse):
	// envtest has no namespace controller to delete them, and their
	// cluster IPs, 256 in envtest's range, ran out by the 15th -count.
	t.Cleanup(func() {
		var l corev1.ServiceList
		if err := h.c.List(context.Background(), &l, client.InNamespace(ns)); err != nil {
			t.Errorf("listing the test's Services: %v", err)
			return
		}
		for i := range l.Items {
			if err := h.c.Delete(context.Background(), &l.Items[i]); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting Service %s: %v", l.Items[i].Name, err)
			}
		}
	})
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); h.kubelet() }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if err := <-done; err != nil {
			t.Errorf("reconciler: %v", err)
		}
	})
	return h
}

// kubelet plays the ReplicaSet controller and the kubelet: every
// ReplicaSet's pods are at once ready and available.
func (h *harness) kubelet() {
	for h.ctx.Err() == nil {
		var l appsv1.ReplicaSetList
		if err := h.c.List(h.ctx, &l, client.InNamespace(h.ns)); err == nil {
			for _, rs := range l.Items {
				n := replicasOf(&rs)
				h.mu.Lock()
				held := h.held[rs.Labels[v1alpha1.DefaultRolloutUniqueLabelKey]]
				h.mu.Unlock()
				if held {
					continue
				}
				if rs.Status.Replicas == n && rs.Status.AvailableReplicas == n && rs.Status.ObservedGeneration == rs.Generation {
					continue
				}
				rs.Status = appsv1.ReplicaSetStatus{Replicas: n, ReadyReplicas: n, AvailableReplicas: n, FullyLabeledReplicas: n, ObservedGeneration: rs.Generation}
				_ = h.c.Status().Update(h.ctx, &rs)
			}
		}
		select {
		case <-h.ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (h *harness) create(o client.Object) {
	h.t.Helper()
	o.SetNamespace(h.ns)
	if err := h.c.Create(h.ctx, o); err != nil {
		h.t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
	}
}

func (h *harness) rollout(name string) *v1alpha1.Rollout {
	h.t.Helper()
	ro := &v1alpha1.Rollout{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Namespace: h.ns, Name: name}, ro); err != nil {
		h.t.Fatal(err)
	}
	return ro
}

// eventually polls cond until it holds or 20 s pass.
func (h *harness) eventually(what string, cond func() (bool, string)) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("%s: timed out; last: %s", what, last)
}

func (h *harness) rs(name string) *appsv1.ReplicaSet {
	rs := &appsv1.ReplicaSet{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Namespace: h.ns, Name: name}, rs); err != nil {
		return nil
	}
	return rs
}

// waitReplicas waits until ReplicaSet <rollout>-<hash> wants n pods.
func (h *harness) waitReplicas(ro, hash string, n int32) {
	h.t.Helper()
	h.eventually(fmt.Sprintf("ReplicaSet %s-%s at %d", ro, hash, n), func() (bool, string) {
		rs := h.rs(ro + "-" + hash)
		if rs == nil {
			return false, "no ReplicaSet"
		}
		return replicasOf(rs) == n, fmt.Sprintf("replicas %d", replicasOf(rs))
	})
}

func (h *harness) waitStatus(name, what string, cond func(*v1alpha1.RolloutStatus) bool) *v1alpha1.Rollout {
	h.t.Helper()
	var ro *v1alpha1.Rollout
	h.eventually(name+": "+what, func() (bool, string) {
		ro = h.rollout(name)
		return cond(&ro.Status), fmt.Sprintf("phase %s %q stable %s current %s step %v", ro.Status.Phase, ro.Status.Message, ro.Status.StableRS, ro.Status.CurrentPodHash, ro.Status.CurrentStepIndex)
	})
	return ro
}

func (h *harness) service(name string) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}}
	h.create(svc)
	return svc
}

func (h *harness) selector(name string) string {
	svc := &corev1.Service{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Namespace: h.ns, Name: name}, svc); err != nil {
		h.t.Fatal(err)
	}
	return svc.Spec.Selector[v1alpha1.DefaultRolloutUniqueLabelKey]
}

// update changes the Rollout with f, retrying conflicts with the reconciler.
func (h *harness) update(name string, status bool, f func(*v1alpha1.Rollout)) {
	h.t.Helper()
	for {
		ro := h.rollout(name)
		f(ro)
		var err error
		if status {
			err = h.c.Status().Update(h.ctx, ro)
		} else {
			err = h.c.Update(h.ctx, ro)
		}
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) {
			h.t.Fatal(err)
		}
	}
}

func template(image string) *corev1.PodTemplateSpec {
	return &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: image}}},
	}
}

func i32(v int32) *int32 { return &v }

func canaryRollout(name string, steps ...v1alpha1.CanaryStep) *v1alpha1.Rollout {
	return &v1alpha1.Rollout{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.RolloutSpec{
			Replicas: i32(5),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: template("web:1"),
			Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{
				CanaryService: "web-canary", StableService: "web-stable",
				TrafficRouting: &v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{}},
				Steps:          steps,
			}},
		},
	}
}

func TestCanary(t *testing.T) {
	h := start(t)
	h.service("web-canary")
	h.service("web-stable")
	h.router.mu.Lock()
	h.router.stableSel = func() string {
		var svc corev1.Service
		_ = h.c.Get(context.Background(), types.NamespacedName{Namespace: h.ns, Name: "web-stable"}, &svc)
		return svc.Spec.Selector[v1alpha1.DefaultRolloutUniqueLabelKey]
	}
	h.router.mu.Unlock()
	ro := canaryRollout("web",
		v1alpha1.CanaryStep{SetWeight: i32(20)},
		v1alpha1.CanaryStep{Pause: &v1alpha1.RolloutPause{}},
		v1alpha1.CanaryStep{SetWeight: i32(50)},
		v1alpha1.CanaryStep{Pause: &v1alpha1.RolloutPause{Duration: &intstr.IntOrString{Type: intstr.String, StrVal: "60s"}}},
	)
	h.create(ro)

	// The first revision is stable at once.
	h1 := PodTemplateHash(template("web:1"), nil)
	h.waitStatus("web", "healthy on the first revision", func(s *v1alpha1.RolloutStatus) bool {
		return s.StableRS == h1 && s.Phase == v1alpha1.RolloutPhaseHealthy
	})
	h.waitReplicas("web", h1, 5)
	rs1 := h.rs("web-" + h1)
	if rs1.Labels[v1alpha1.DefaultRolloutUniqueLabelKey] != h1 || rs1.Spec.Selector.MatchLabels[v1alpha1.DefaultRolloutUniqueLabelKey] != h1 ||
		rs1.Annotations[RevisionAnnotation] != "1" || rs1.Annotations[DesiredReplicasAnnotation] != "5" || !metav1.IsControlledBy(rs1, h.rollout("web")) {
		t.Fatalf("first ReplicaSet: labels %v selector %v annotations %v owners %v", rs1.Labels, rs1.Spec.Selector, rs1.Annotations, rs1.OwnerReferences)
	}
	if s, c := h.selector("web-stable"), h.selector("web-canary"); s != h1 || c != h1 {
		t.Fatalf("selectors: stable %q canary %q, want %q", s, c, h1)
	}

	// A new template walks the steps.
	h.update("web", false, func(ro *v1alpha1.Rollout) { ro.Spec.Template = template("web:2") })
	h2 := PodTemplateHash(template("web:2"), nil)
	ro = h.waitStatus("web", "paused at step 1", func(s *v1alpha1.RolloutStatus) bool {
		return s.Phase == v1alpha1.RolloutPhasePaused && s.CurrentStepIndex != nil && *s.CurrentStepIndex == 1
	})
	h.waitReplicas("web", h2, 1)
	h.waitReplicas("web", h1, 5)
	if w := ro.Status.Canary.Weights; w == nil || w.Canary.Weight != 20 || w.Canary.ServiceName != "web-canary" || w.Stable.ServiceName != "web-stable" ||
		w.Canary.PodTemplateHash != h2 || w.Stable.PodTemplateHash != h1 {
		t.Fatalf("status.canary.weights = %+v", w)
	}
	h.eventually("verified", func() (bool, string) {
		w := h.rollout("web").Status.Canary.Weights
		return w != nil && w.Verified != nil && *w.Verified, fmt.Sprintf("%+v", w)
	})
	if s, c := h.selector("web-stable"), h.selector("web-canary"); s != h1 || c != h2 {
		t.Fatalf("selectors: stable %q canary %q, want %q %q", s, c, h1, h2)
	}

	h.update("web", true, func(ro *v1alpha1.Rollout) { steps.Promote(ro, false) })
	h.waitStatus("web", "timed pause at step 3", func(s *v1alpha1.RolloutStatus) bool {
		return s.Phase == v1alpha1.RolloutPhasePaused && s.CurrentStepIndex != nil && *s.CurrentStepIndex == 3
	})
	h.waitReplicas("web", h2, 3)
	h.advance(61*time.Second, "web")
	h.waitStatus("web", "promoted", func(s *v1alpha1.RolloutStatus) bool { return s.StableRS == h2 })
	h.waitReplicas("web", h2, 5)
	if s := h.selector("web-stable"); s != h2 {
		t.Fatalf("stable selector %q after promotion, want %q", s, h2)
	}
	// The old stable keeps its pods for scaleDownDelaySeconds (30).
	h.waitReplicas("web", h1, 5)
	h.eventually("scale-down deadline recorded", func() (bool, string) {
		rs := h.rs("web-" + h1)
		return rs.Annotations[ScaleDownDeadlineKey] != "", fmt.Sprint(rs.Annotations)
	})
	h.advance(31*time.Second, "web")
	h.waitReplicas("web", h1, 0)
	h.waitStatus("web", "healthy", func(s *v1alpha1.RolloutStatus) bool { return s.Phase == v1alpha1.RolloutPhaseHealthy })

	// The weights went 20 → 50 → 100 and the stable switched to h2 with
	// the canary at 0, in that order.
	var canary []int32
	for _, w := range h.router.seen() {
		if n := len(canary); n == 0 || canary[n-1] != w.Canary {
			canary = append(canary, w.Canary)
		}
	}
	last := h.router.seen()[len(h.router.seen())-1]
	if !isSubsequence([]int32{20, 50}, canary) || last.Canary != 0 || last.Stable != 100 || last.StableHash != h2 {
		t.Fatalf("weights: canary %v, last %+v", canary, last)
	}
	h.router.mu.Lock()
	defer h.router.mu.Unlock()
	for i, w := range h.router.weights {
		if w.StableHash == h2 && h.router.sels[i] != h2 {
			t.Fatalf("weights %+v applied while the stable Service selected %q", w, h.router.sels[i])
		}
	}
}

func isSubsequence(want, got []int32) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

func TestAnalysisFailureAborts(t *testing.T) {
	h := start(t)
	h.service("web-canary")
	h.service("web-stable")
	h.create(&v1alpha1.AnalysisTemplate{
		ObjectMeta: metav1.ObjectMeta{Name: "success-rate"},
		Spec: v1alpha1.AnalysisTemplateSpec{
			Args: []v1alpha1.Argument{{Name: "service"}, {Name: "hash"}, {Name: "image"}},
			Metrics: []v1alpha1.Metric{{Name: "ok", SuccessCondition: "result == 'ok'",
				Provider: v1alpha1.MetricProvider{Web: &v1alpha1.WebMetric{URL: "http://checker/{{args.service}}/{{args.hash}}"}}}},
		},
	})
	latest := v1alpha1.Latest
	h.create(canaryRollout("web",
		v1alpha1.CanaryStep{SetWeight: i32(20)},
		v1alpha1.CanaryStep{Analysis: &v1alpha1.RolloutAnalysis{
			Templates: []v1alpha1.RolloutAnalysisTemplate{{TemplateName: "success-rate"}},
			Args: []v1alpha1.AnalysisRunArgument{
				{Name: "service", Value: "web"},
				{Name: "hash", ValueFrom: &v1alpha1.ArgumentValueFrom{PodTemplateHashValue: &latest}},
				{Name: "image", ValueFrom: &v1alpha1.ArgumentValueFrom{FieldRef: &v1alpha1.FieldRef{FieldPath: "spec.template.spec.containers[0].image"}}},
			},
		}},
	))
	h1 := PodTemplateHash(template("web:1"), nil)
	h.waitStatus("web", "healthy", func(s *v1alpha1.RolloutStatus) bool { return s.Phase == v1alpha1.RolloutPhaseHealthy })
	h.update("web", false, func(ro *v1alpha1.Rollout) { ro.Spec.Template = template("web:2") })
	h2 := PodTemplateHash(template("web:2"), nil)

	var run v1alpha1.AnalysisRun
	h.eventually("AnalysisRun created", func() (bool, string) {
		var l v1alpha1.AnalysisRunList
		if err := h.c.List(h.ctx, &l, client.InNamespace(h.ns)); err != nil || len(l.Items) == 0 {
			return false, fmt.Sprint(err)
		}
		run = l.Items[0]
		return true, ""
	})
	args := map[string]string{}
	for _, a := range run.Spec.Args {
		if a.Value != nil {
			args[a.Name] = *a.Value
		}
	}
	if run.Name != "web-"+h2+"-1" || args["service"] != "web" || args["hash"] != h2 || args["image"] != "web:2" ||
		run.Labels[RolloutTypeLabel] != "Step" || run.Labels[v1alpha1.DefaultRolloutUniqueLabelKey] != h2 || run.Labels[StepIndexLabel] != "1" ||
		len(run.Spec.Metrics) != 1 || !metav1.IsControlledBy(&run, h.rollout("web")) {
		t.Fatalf("AnalysisRun %s: args %v labels %v metrics %d owners %v", run.Name, args, run.Labels, len(run.Spec.Metrics), run.OwnerReferences)
	}
	// Of its ReplicaSet's revision, though created in a later pass (the
	// e2e test saw one above it).
	if rev := run.Annotations[RevisionAnnotation]; rev != "2" {
		t.Fatalf("AnalysisRun %s: revision %q, want its ReplicaSet's, 2", run.Name, rev)
	}
	run.Status = v1alpha1.AnalysisRunStatus{Phase: v1alpha1.AnalysisPhaseFailed, Message: "Metric \"ok\" assessed Failed"}
	if err := h.c.Status().Update(h.ctx, &run); err != nil {
		t.Fatal(err)
	}
	ro := h.waitStatus("web", "aborted", func(s *v1alpha1.RolloutStatus) bool { return s.Abort && s.Phase == v1alpha1.RolloutPhaseDegraded })
	if !strings.Contains(ro.Status.Message, "RolloutAborted") {
		t.Fatalf("message %q", ro.Status.Message)
	}
	h.eventually("all traffic to stable", func() (bool, string) {
		w := h.router.seen()
		l := w[len(w)-1]
		return l.Canary == 0 && l.Stable == 100 && l.StableHash == h1, fmt.Sprintf("%+v", l)
	})
	// The canary keeps its pods for abortScaleDownDelaySeconds (30).
	h.waitReplicas("web", h2, 1)
	h.advance(31*time.Second, "web")
	h.waitReplicas("web", h2, 0)
	h.waitReplicas("web", h1, 5)
}

func TestWorkloadRefScaleDownOnSuccess(t *testing.T) {
	h := start(t)
	h.create(&v1alpha1.Rollout{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: v1alpha1.RolloutSpec{
			Replicas:    i32(3),
			WorkloadRef: &v1alpha1.ObjectRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "web-dep", ScaleDown: v1alpha1.ScaleDownOnSuccess},
			Strategy:    v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{}},
		},
	})
	ro := h.waitStatus("web", "InvalidSpec", func(s *v1alpha1.RolloutStatus) bool { return s.Phase == v1alpha1.RolloutPhaseDegraded })
	if !strings.Contains(ro.Status.Message, "Deployment "+h.ns+"/web-dep not found") {
		t.Fatalf("message %q", ro.Status.Message)
	}
	h.create(&appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web-dep"},
		Spec: appsv1.DeploymentSpec{Replicas: i32(3), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: *template("web:1")},
	})
	// The hash is of the Deployment's template as the API server stored
	// it (defaulted), as Argo's.
	var d appsv1.Deployment
	if err := h.c.Get(h.ctx, types.NamespacedName{Namespace: h.ns, Name: "web-dep"}, &d); err != nil {
		t.Fatal(err)
	}
	hash := PodTemplateHash(&d.Spec.Template, nil)
	h.waitStatus("web", "healthy", func(s *v1alpha1.RolloutStatus) bool {
		return s.Phase == v1alpha1.RolloutPhaseHealthy && s.StableRS == hash
	})
	h.waitReplicas("web", hash, 3)
	h.eventually("Deployment scaled down", func() (bool, string) {
		var d appsv1.Deployment
		if err := h.c.Get(h.ctx, types.NamespacedName{Namespace: h.ns, Name: "web-dep"}, &d); err != nil {
			return false, err.Error()
		}
		return *d.Spec.Replicas == 0, fmt.Sprint(*d.Spec.Replicas)
	})
	if c := h.rollout("web").Status.Conditions; slices.ContainsFunc(c, func(c v1alpha1.RolloutCondition) bool {
		return c.Type == v1alpha1.InvalidSpec && c.Status == corev1.ConditionTrue
	}) {
		t.Fatalf("InvalidSpec left: %+v", c)
	}
}

func TestBlueGreen(t *testing.T) {
	h := start(t)
	h.service("web-active")
	h.service("web-preview")
	h.create(&v1alpha1.Rollout{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: v1alpha1.RolloutSpec{
			Replicas: i32(2),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: template("web:1"),
			Strategy: v1alpha1.RolloutStrategy{BlueGreen: &v1alpha1.BlueGreenStrategy{
				ActiveService: "web-active", PreviewService: "web-preview", AutoPromotionEnabled: new(bool),
			}},
		},
	})
	h1 := PodTemplateHash(template("web:1"), nil)
	h.waitStatus("web", "healthy", func(s *v1alpha1.RolloutStatus) bool { return s.Phase == v1alpha1.RolloutPhaseHealthy })
	h.eventually("active selector", func() (bool, string) { return h.selector("web-active") == h1, h.selector("web-active") })

	// The preview Service moves only once the new pods are all available
	// (Argo's ensureSVCTargets): before, it would select no ready pod.
	h2 := PodTemplateHash(template("web:2"), nil)
	h.hold(h2, true)
	h.update("web", false, func(ro *v1alpha1.Rollout) { ro.Spec.Template = template("web:2") })
	h.waitReplicas("web", h2, 2)
	h.poke("web")
	time.Sleep(300 * time.Millisecond)
	if p, s := h.selector("web-preview"), h.rollout("web").Status.BlueGreen.PreviewSelector; p != h1 || s != h1 {
		t.Fatalf("with the new pods unavailable: preview Service on %q, status.blueGreen.previewSelector %q, want both %q", p, s, h1)
	}
	h.hold(h2, false)
	h.waitStatus("web", "paused for promotion", func(s *v1alpha1.RolloutStatus) bool { return s.Phase == v1alpha1.RolloutPhasePaused })
	h.eventually("preview selector", func() (bool, string) { return h.selector("web-preview") == h2, h.selector("web-preview") })
	if a := h.selector("web-active"); a != h1 {
		t.Fatalf("active selector %q before promotion, want %q", a, h1)
	}
	h.update("web", true, func(ro *v1alpha1.Rollout) { steps.Promote(ro, false) })
	h.eventually("active switched", func() (bool, string) { return h.selector("web-active") == h2, h.selector("web-active") })
	h.waitStatus("web", "stable", func(s *v1alpha1.RolloutStatus) bool { return s.StableRS == h2 })
}

func TestScaleSubresource(t *testing.T) {
	h := start(t)
	h.service("web-canary")
	h.service("web-stable")
	h.create(canaryRollout("web", v1alpha1.CanaryStep{SetWeight: i32(50)}))
	hash := PodTemplateHash(template("web:1"), nil)
	h.waitStatus("web", "healthy", func(s *v1alpha1.RolloutStatus) bool {
		return s.Phase == v1alpha1.RolloutPhaseHealthy && s.HPAReplicas == 5
	})
	// What an HPA does: write spec.replicas through the scale subresource.
	ro := h.rollout("web")
	sc := &autoscalingv1.Scale{}
	if err := h.c.SubResource("scale").Get(h.ctx, ro, sc); err != nil {
		t.Fatal(err)
	}
	if sc.Status.Selector == "" || sc.Status.Replicas != 5 {
		t.Fatalf("scale status %+v", sc.Status)
	}
	sc.Spec.Replicas = 8
	if err := h.c.SubResource("scale").Update(h.ctx, ro, client.WithSubResourceBody(sc)); err != nil {
		t.Fatal(err)
	}
	h.waitReplicas("web", hash, 8)
	h.waitStatus("web", "8 replicas", func(s *v1alpha1.RolloutStatus) bool { return s.HPAReplicas == 8 && s.AvailableReplicas == 8 })

	// Deleting the Rollout removes what its Router wrote (its ReplicaSets
	// go by owner reference: envtest has no garbage collector to show it).
	if err := h.c.Delete(h.ctx, h.rollout("web")); err != nil {
		t.Fatal(err)
	}
	h.eventually("Router.Remove", func() (bool, string) {
		h.router.mu.Lock()
		defer h.router.mu.Unlock()
		return h.router.removed > 0, fmt.Sprint(h.router.removed)
	})
}

func TestMissingReferences(t *testing.T) {
	h := start(t)
	h.service("web-stable")
	h.create(canaryRollout("web"))
	ro := h.waitStatus("web", "InvalidSpec", func(s *v1alpha1.RolloutStatus) bool { return s.Phase == v1alpha1.RolloutPhaseDegraded })
	want := "spec.strategy.canary.canaryService: Service " + h.ns + "/web-canary not found"
	if !strings.Contains(ro.Status.Message, want) {
		t.Fatalf("message %q, want %q", ro.Status.Message, want)
	}

	bad := canaryRollout("other", v1alpha1.CanaryStep{Analysis: &v1alpha1.RolloutAnalysis{
		Templates: []v1alpha1.RolloutAnalysisTemplate{{TemplateName: "nope"}}}})
	bad.Spec.Strategy.Canary.CanaryService = ""
	h.create(bad)
	ro = h.waitStatus("other", "InvalidSpec", func(s *v1alpha1.RolloutStatus) bool { return s.Phase == v1alpha1.RolloutPhaseDegraded })
	want = "spec.strategy.canary.steps[0].analysis.templates[0]: AnalysisTemplate " + h.ns + "/nope not found"
	if !strings.Contains(ro.Status.Message, want) {
		t.Fatalf("message %q, want %q", ro.Status.Message, want)
	}
	// Nothing else happened: no ReplicaSet, no Service change, no traffic.
	time.Sleep(300 * time.Millisecond)
	var l appsv1.ReplicaSetList
	if err := h.c.List(h.ctx, &l, client.InNamespace(h.ns)); err != nil || len(l.Items) != 0 {
		t.Fatalf("ReplicaSets %d (%v), want none", len(l.Items), err)
	}
	if s := h.selector("web-stable"); s != "" {
		t.Fatalf("stable selector %q, want untouched", s)
	}
	if w := h.router.seen(); len(w) != 0 {
		t.Fatalf("weights %v, want none", w)
	}
}

func TestRestartAt(t *testing.T) {
	h := start(t)
	h.mu.Lock()
	h.now = time.Now() // pods get the API server's real creation time
	h.mu.Unlock()
	h.service("web-canary")
	h.service("web-stable")
	ro := canaryRollout("web")
	ro.Spec.Replicas = i32(2)
	h.create(ro)
	hash := PodTemplateHash(template("web:1"), nil)
	h.waitStatus("web", "healthy", func(s *v1alpha1.RolloutStatus) bool { return s.Phase == v1alpha1.RolloutPhaseHealthy })
	h.waitReplicas("web", hash, 2)
	rs := h.rs("web-" + hash)
	// Envtest has no ReplicaSet controller: the test makes its pods.
	for i := range 2 {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web-%s-%d", hash, i), Labels: rs.Spec.Template.Labels,
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(rs, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))}},
			Spec: rs.Spec.Template.Spec,
		}
		h.create(p)
	}
	time.Sleep(1100 * time.Millisecond) // creation times have whole seconds
	at := metav1.NewTime(time.Now().Truncate(time.Second))
	h.mu.Lock()
	h.now = time.Now().Add(time.Second)
	h.mu.Unlock()
	h.update("web", false, func(ro *v1alpha1.Rollout) { ro.Spec.RestartAt = &at })
	h.eventually("pods evicted", func() (bool, string) {
		var l corev1.PodList
		if err := h.c.List(h.ctx, &l, client.InNamespace(h.ns)); err != nil {
			return false, err.Error()
		}
		return len(l.Items) == 0, fmt.Sprintf("%d pods left", len(l.Items))
	})
	h.waitStatus("web", "restartedAt", func(s *v1alpha1.RolloutStatus) bool {
		return s.RestartedAt != nil && s.RestartedAt.Equal(&at)
	})
}

// canaryMetadata and stableMetadata go on the pod templates and on the pods
// that exist, and change with the role at promotion.
func TestRoleMetadata(t *testing.T) {
	h := start(t)
	h.service("web-canary")
	h.service("web-stable")
	ro := canaryRollout("web", v1alpha1.CanaryStep{SetWeight: i32(20)}, v1alpha1.CanaryStep{Pause: &v1alpha1.RolloutPause{}})
	ro.Spec.Strategy.Canary.CanaryMetadata = &v1alpha1.PodTemplateMetadata{Labels: map[string]string{"role": "canary"}, Annotations: map[string]string{"canary/only": "yes"}}
	ro.Spec.Strategy.Canary.StableMetadata = &v1alpha1.PodTemplateMetadata{Labels: map[string]string{"role": "stable"}}
	h.create(ro)
	h1 := PodTemplateHash(template("web:1"), nil)
	h.waitStatus("web", "healthy", func(s *v1alpha1.RolloutStatus) bool { return s.StableRS == h1 })

	// pod plays the ReplicaSet controller: a pod of rs from its template
	// as it was before the role metadata (no role label).
	pod := func(hash string) string {
		var rs *appsv1.ReplicaSet
		h.eventually("ReplicaSet "+hash, func() (bool, string) { rs = h.rs("web-" + hash); return rs != nil, "" })
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-" + hash + "-a",
			Labels:          map[string]string{"app": "web", v1alpha1.DefaultRolloutUniqueLabelKey: hash},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(rs, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"}}}}
		h.create(p)
		h.poke("web")
		return p.Name
	}
	wait := func(what, hash, pod, role string, canaryAnnotation bool) {
		t.Helper()
		h.eventually(what, func() (bool, string) {
			rs := h.rs("web-" + hash)
			p := &corev1.Pod{}
			if err := h.c.Get(h.ctx, types.NamespacedName{Namespace: h.ns, Name: pod}, p); err != nil {
				return false, err.Error()
			}
			_, ta := rs.Spec.Template.Annotations["canary/only"]
			_, pa := p.Annotations["canary/only"]
			return rs.Spec.Template.Labels["role"] == role && p.Labels["role"] == role && ta == canaryAnnotation && pa == canaryAnnotation &&
					rs.Spec.Template.Labels["app"] == "web" && p.Labels[v1alpha1.DefaultRolloutUniqueLabelKey] == hash,
				fmt.Sprintf("template %v %v, pod %v %v", rs.Spec.Template.Labels, rs.Spec.Template.Annotations, p.Labels, p.Annotations)
		})
	}
	p1 := pod(h1)
	wait("stable metadata on the first revision", h1, p1, "stable", false)

	h.update("web", false, func(ro *v1alpha1.Rollout) { ro.Spec.Template = template("web:2") })
	h2 := PodTemplateHash(template("web:2"), nil)
	h.waitStatus("web", "paused at the canary", func(s *v1alpha1.RolloutStatus) bool { return s.Phase == v1alpha1.RolloutPhasePaused })
	p2 := pod(h2)
	wait("canary metadata on the canary", h2, p2, "canary", true)
	wait("stable metadata kept on the stable", h1, p1, "stable", false)

	h.update("web", true, func(ro *v1alpha1.Rollout) { steps.Promote(ro, true) })
	h.waitStatus("web", "promoted", func(s *v1alpha1.RolloutStatus) bool { return s.StableRS == h2 })
	wait("stable metadata on the promoted canary, canary's taken off", h2, p2, "stable", false)
}
