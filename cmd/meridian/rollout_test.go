package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/cli/rollout"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/steps"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/")

// rolloutEnv is a kube-apiserver with Meridian's CRDs, a kubeconfig for
// its admin and a client.
type rolloutEnv struct {
	t  *testing.T
	kc string
	c  client.Client
}

func startRolloutEnv(t *testing.T) *rolloutEnv {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	env, cfg := apiserver.StartEnv(t, filepath.Join(filepath.Dir(file), "..", "..", "api", "crds"))
	admin, err := env.AddUser(envtest.User{Name: "rollout-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: rollout.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return &rolloutEnv{t: t, kc: path, c: c}
}

// run runs `meridian rollout ARGS` against the env's API server.
func (e *rolloutEnv) run(ctx context.Context, args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append(append([]string{"rollout"}, args...), "--kubeconfig", e.kc))
	err := root.ExecuteContext(ctx)
	e.t.Logf("meridian rollout %s → %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	return out.String(), errOut.String(), err
}

func (e *rolloutEnv) must(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *rolloutEnv) get(ns, name string) *v1alpha1.Rollout {
	e.t.Helper()
	ro := &v1alpha1.Rollout{}
	e.must(e.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, ro))
	return ro
}

// setStatus writes the Rollout's status as the controller would.
func (e *rolloutEnv) setStatus(ns, name string, f func(*v1alpha1.RolloutStatus)) *v1alpha1.Rollout {
	e.t.Helper()
	ro := e.get(ns, name)
	f(&ro.Status)
	e.must(e.c.Status().Update(context.Background(), ro))
	return ro
}

func twoContainers(app string) []corev1.Container {
	return []corev1.Container{{Name: "app", Image: app}, {Name: "sidecar", Image: "log:v1"}}
}

// canaryRollout is shop/web: a canary with traffic routing, four steps.
func canaryRollout() *v1alpha1.Rollout {
	sel := map[string]string{"app": "web"}
	return &v1alpha1.Rollout{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: v1alpha1.RolloutSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel}, Spec: corev1.PodSpec{Containers: twoContainers("app:v2")}},
			Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{
				CanaryService: "web-canary", StableService: "web-stable",
				TrafficRouting: &v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{}},
				Steps: []v1alpha1.CanaryStep{{SetWeight: ptr.To[int32](20)}, {Pause: &v1alpha1.RolloutPause{}},
					{SetWeight: ptr.To[int32](50)}, {Pause: &v1alpha1.RolloutPause{Duration: ptr.To(intstr.FromString("30s"))}}},
			}},
		},
	}
}

const (
	stableHash = "5f8c7d9b4"
	canaryHash = "6d4f6b7c9"
)

// ownedRS creates a ReplicaSet of ro for hash, at revision rev, with its
// pods (the ReplicaSet controller's and kubelet's part, written by the
// test): ready ones, the first with restarts.
func (e *rolloutEnv) ownedRS(ro *v1alpha1.Rollout, hash string, rev, replicas int, image string, restarts int32) *appsv1.ReplicaSet {
	e.t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app": ro.Name, v1alpha1.DefaultRolloutUniqueLabelKey: hash}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: ro.Name + "-" + hash, Namespace: ro.Namespace, Labels: labels,
			Annotations:     map[string]string{rollout.RevisionAnnotation: strconv.Itoa(rev)},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ro, v1alpha1.GroupVersion.WithKind("Rollout"))}},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To(int32(replicas)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: twoContainers(image)}}},
	}
	e.must(e.c.Create(ctx, rs))
	rs.Status = appsv1.ReplicaSetStatus{Replicas: int32(replicas), ReadyReplicas: int32(replicas), AvailableReplicas: int32(replicas),
		FullyLabeledReplicas: int32(replicas), ObservedGeneration: rs.Generation}
	e.must(e.c.Status().Update(ctx, rs))
	for i := range replicas {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: rs.Name + "-" + []string{"8kq2p", "x7w4n", "r2d9m"}[i], Namespace: ro.Namespace, Labels: labels,
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(rs, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))}},
			Spec: rs.Spec.Template.Spec,
		}
		e.must(e.c.Create(ctx, pod))
		var r int32
		if i == 0 {
			r = restarts
		}
		running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{
			{Name: "app", Ready: true, State: running, RestartCount: r, Image: image},
			{Name: "sidecar", Ready: true, State: running, Image: "log:v1"}}}
		e.must(e.c.Status().Update(ctx, pod))
	}
	return rs
}

// pausedCanary creates shop/web paused at its first pause step, 20% of
// traffic on the canary, with both ReplicaSets, their pods and a step
// AnalysisRun.
func (e *rolloutEnv) pausedCanary() *v1alpha1.Rollout {
	e.t.Helper()
	ctx := context.Background()
	e.must(e.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}))
	ro := canaryRollout()
	e.must(e.c.Create(ctx, ro))
	e.ownedRS(ro, stableHash, 1, 2, "app:v1", 2)
	e.ownedRS(ro, canaryHash, 2, 1, "app:v2", 0)
	run := &v1alpha1.AnalysisRun{
		ObjectMeta: metav1.ObjectMeta{Name: "web-" + canaryHash + "-1", Namespace: "shop",
			Annotations:     map[string]string{rollout.RevisionAnnotation: "2"},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ro, v1alpha1.GroupVersion.WithKind("Rollout"))}},
		Spec: v1alpha1.AnalysisRunSpec{Metrics: []v1alpha1.Metric{{Name: "success-rate",
			Provider: v1alpha1.MetricProvider{Meridian: &v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianSuccessRate}}}}},
	}
	e.must(e.c.Create(ctx, run))
	run.Status = v1alpha1.AnalysisRunStatus{Phase: v1alpha1.AnalysisPhaseSuccessful,
		RunSummary: v1alpha1.RunSummary{Count: 3, Successful: 2, Inconclusive: 1}}
	e.must(e.c.Status().Update(ctx, run))
	return e.setStatus("shop", "web", func(s *v1alpha1.RolloutStatus) {
		*s = v1alpha1.RolloutStatus{
			Phase: v1alpha1.RolloutPhasePaused, Message: "CanaryPauseStep", ObservedGeneration: "1",
			CurrentStepIndex: ptr.To[int32](1), CurrentPodHash: canaryHash, StableRS: stableHash, ControllerPause: true,
			PauseConditions: []v1alpha1.PauseCondition{{Reason: v1alpha1.PauseReasonCanaryPauseStep, StartTime: metav1.Now()}},
			Replicas:        3, UpdatedReplicas: 1, ReadyReplicas: 3, AvailableReplicas: 3, HPAReplicas: 3,
			Canary: v1alpha1.CanaryStatus{Weights: &v1alpha1.TrafficWeights{
				Canary: v1alpha1.WeightDestination{Weight: 20, PodTemplateHash: canaryHash},
				Stable: v1alpha1.WeightDestination{Weight: 80, PodTemplateHash: stableHash}}},
		}
	})
}

// fixClock sets the CLI's clock 3 hours after the newest object of the
// namespace was created, so every age reads "3h".
func (e *rolloutEnv) fixClock(ns string) {
	e.t.Helper()
	var newest time.Time
	var pods corev1.PodList
	e.must(e.c.List(context.Background(), &pods, client.InNamespace(ns)))
	for _, p := range pods.Items {
		if p.CreationTimestamp.After(newest) {
			newest = p.CreationTimestamp.Time
		}
	}
	var runs v1alpha1.AnalysisRunList
	e.must(e.c.List(context.Background(), &runs, client.InNamespace(ns)))
	for _, r := range runs.Items {
		if r.CreationTimestamp.After(newest) {
			newest = r.CreationTimestamp.Time
		}
	}
	at := newest.Add(3 * time.Hour)
	rolloutNow = func() time.Time { return at }
	e.t.Cleanup(func() { rolloutNow = time.Now })
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if got != string(want) {
		t.Fatalf("%s differs:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// The read commands on a real API server: get's tree and list's table
// (golden, with a fixed clock), their JSON and YAML, -A, and the errors
// that name the object.
func TestRolloutGetList(t *testing.T) {
	e := startRolloutEnv(t)
	ctx := context.Background()
	e.pausedCanary()
	// A blue-green rollout in another namespace, healthy.
	e.must(e.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "pay"}}))
	bg := canaryRollout()
	bg.Namespace, bg.Name = "pay", "api"
	bg.Spec.Strategy = v1alpha1.RolloutStrategy{BlueGreen: &v1alpha1.BlueGreenStrategy{ActiveService: "api", PreviewService: "api-preview"}}
	e.must(e.c.Create(ctx, bg))
	e.setStatus("pay", "api", func(s *v1alpha1.RolloutStatus) {
		*s = v1alpha1.RolloutStatus{Phase: v1alpha1.RolloutPhaseHealthy, ObservedGeneration: "1", CurrentPodHash: "7b7b7b7b7",
			StableRS: "7b7b7b7b7", Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2,
			BlueGreen: v1alpha1.BlueGreenStatus{ActiveSelector: "7b7b7b7b7"}}
	})
	e.fixClock("shop")

	out, _, err := e.run(ctx, "get", "web", "-n", "shop")
	e.must(err)
	checkGolden(t, "rollout_get.golden", out)

	out, _, err = e.run(ctx, "get", "web", "-n", "shop", "-o", "json")
	e.must(err)
	var in rollout.Info
	e.must(json.Unmarshal([]byte(out), &in))
	if in.Status != "Paused" || in.SetWeight != "20" || in.ActualWeight != "20" || len(in.ReplicaSets) != 2 ||
		!in.ReplicaSets[0].Canary || len(in.ReplicaSets[1].Pods) != 2 || in.AnalysisRuns[0].Successful != 2 {
		t.Fatalf("get -o json: %+v", in)
	}

	out, _, err = e.run(ctx, "list", "-n", "shop")
	e.must(err)
	checkGolden(t, "rollout_list.golden", out)
	out, _, err = e.run(ctx, "list", "-A")
	e.must(err)
	if !strings.HasPrefix(out, "NAMESPACE") || !strings.Contains(out, "pay ") || !strings.Contains(out, "BlueGreen") || strings.Index(out, "pay") > strings.Index(out, "shop") {
		t.Fatalf("list -A:\n%s", out)
	}
	out, _, err = e.run(ctx, "list", "-A", "-o", "yaml")
	e.must(err)
	var rows []rollout.Row
	e.must(yaml.Unmarshal([]byte(out), &rows))
	if len(rows) != 2 || rows[0].Name != "api" || rows[0].Status != "Healthy" || rows[1].Step != "1/4" {
		t.Fatalf("list -o yaml: %+v", rows)
	}
	_, errOut, err := e.run(ctx, "list", "-n", "empty")
	if err != nil || errOut != "No rollouts found in namespace empty.\n" {
		t.Fatalf("empty list: %v %q", err, errOut)
	}

	_, _, err = e.run(ctx, "get", "nope", "-n", "shop")
	if err == nil || err.Error() != "rollout shop/nope not found" {
		t.Fatalf("get nope: %v", err)
	}
	_, _, err = e.run(ctx, "promote", "nope", "-n", "shop")
	if err == nil || err.Error() != "rollout shop/nope not found" {
		t.Fatalf("promote nope: %v", err)
	}
	if _, _, err = e.run(ctx, "get"); err == nil || err.Error() != "name one rollout (meridian rollout get NAME), not 0 arguments" {
		t.Fatalf("get without a name: %v", err)
	}
	if _, _, err = e.run(ctx, "list", "-o", "wide"); err == nil || !strings.Contains(err.Error(), `--output "wide"`) {
		t.Fatalf("-o wide: %v", err)
	}
}

// Every command that changes a Rollout, on a real API server: the patch
// lands where Argo's plugin puts it (status through the status
// subresource), read back, and promote, abort and retry make exactly the
// changes of steps.Promote, steps.Abort and steps.Retry, which the step
// machine reads.
func TestRolloutCommands(t *testing.T) {
	e := startRolloutEnv(t)
	ctx := context.Background()
	before := e.pausedCanary()
	e.fixClock("shop")

	// sameAs checks that what the CLI wrote is what the step machine's
	// function makes of the Rollout as it was.
	sameAs := func(what string, before *v1alpha1.Rollout, f func(*v1alpha1.Rollout)) *v1alpha1.Rollout {
		t.Helper()
		want := before.DeepCopy()
		f(want)
		got := e.get("shop", "web")
		gs, ws := got.Status, want.Status
		gj, _ := json.Marshal(struct {
			P bool
			S v1alpha1.RolloutStatus
		}{got.Spec.Paused, gs})
		wj, _ := json.Marshal(struct {
			P bool
			S v1alpha1.RolloutStatus
		}{want.Spec.Paused, ws})
		if string(gj) != string(wj) {
			t.Fatalf("%s:\n got %s\nwant %s", what, gj, wj)
		}
		return got
	}

	// promote, paused: the pause conditions go, nothing else.
	out, _, err := e.run(ctx, "promote", "web", "-n", "shop")
	e.must(err)
	if out != "rollout 'web' promoted\n" {
		t.Fatalf("promote: %q", out)
	}
	before = sameAs("promote (paused)", before, func(r *v1alpha1.Rollout) { steps.Promote(r, false) })
	if before.Status.PauseConditions != nil || *before.Status.CurrentStepIndex != 1 {
		t.Fatalf("promote: %+v", before.Status)
	}
	// promote, not paused: the current step is skipped.
	_, _, err = e.run(ctx, "promote", "web", "-n", "shop")
	e.must(err)
	before = sameAs("promote (running)", before, func(r *v1alpha1.Rollout) { steps.Promote(r, false) })
	if *before.Status.CurrentStepIndex != 2 {
		t.Fatalf("promote skipped to %d", *before.Status.CurrentStepIndex)
	}

	// pause and resume: spec.paused.
	out, _, err = e.run(ctx, "pause", "web", "-n", "shop")
	e.must(err)
	if out != "rollout 'web' paused\n" || !e.get("shop", "web").Spec.Paused {
		t.Fatalf("pause: %q", out)
	}
	_, _, err = e.run(ctx, "resume", "web", "-n", "shop")
	e.must(err)
	if e.get("shop", "web").Spec.Paused {
		t.Fatal("resume left spec.paused")
	}
	// promote of a manually paused rollout unpauses it, without a skip.
	_, _, err = e.run(ctx, "pause", "web", "-n", "shop")
	e.must(err)
	before = e.get("shop", "web")
	_, _, err = e.run(ctx, "promote", "web", "-n", "shop")
	e.must(err)
	before = sameAs("promote (spec.paused)", before, func(r *v1alpha1.Rollout) { steps.Promote(r, false) })
	if before.Spec.Paused || *before.Status.CurrentStepIndex != 2 {
		t.Fatalf("promote of a paused rollout: paused %v step %d", before.Spec.Paused, *before.Status.CurrentStepIndex)
	}

	// promote --full: status.promoteFull.
	out, _, err = e.run(ctx, "promote", "web", "-n", "shop", "--full")
	e.must(err)
	if out != "rollout 'web' fully promoted\n" {
		t.Fatalf("promote --full: %q", out)
	}
	before = sameAs("promote --full", before, func(r *v1alpha1.Rollout) { steps.Promote(r, true) })
	if !before.Status.PromoteFull {
		t.Fatal("promote --full did not set status.promoteFull")
	}

	// abort, then retry.
	out, _, err = e.run(ctx, "abort", "web", "-n", "shop")
	e.must(err)
	if out != "rollout 'web' aborted\n" {
		t.Fatalf("abort: %q", out)
	}
	before = sameAs("abort", before, steps.Abort)
	if !before.Status.Abort {
		t.Fatal("abort did not set status.abort")
	}
	e.setStatus("shop", "web", func(s *v1alpha1.RolloutStatus) {
		s.PauseConditions = []v1alpha1.PauseCondition{{Reason: v1alpha1.PauseReasonInconclusiveAnalysis, StartTime: metav1.Now()}}
	})
	before = e.get("shop", "web")
	out, _, err = e.run(ctx, "retry", "web", "-n", "shop")
	e.must(err)
	if out != "rollout 'web' retried\n" {
		t.Fatalf("retry: %q", out)
	}
	before = sameAs("retry", before, steps.Retry)
	if before.Status.Abort || before.Status.PauseConditions != nil {
		t.Fatalf("retry: %+v", before.Status)
	}
	// --full on a fully promoted rollout sets nothing (it would skip the
	// next update's steps).
	e.setStatus("shop", "web", func(s *v1alpha1.RolloutStatus) { s.StableRS, s.PromoteFull = canaryHash, false })
	_, _, err = e.run(ctx, "promote", "web", "-n", "shop", "--full")
	e.must(err)
	if e.get("shop", "web").Status.PromoteFull {
		t.Fatal("promote --full of a promoted rollout set promoteFull")
	}

	// restart --in: spec.restartAt, from the CLI's clock.
	out, _, err = e.run(ctx, "restart", "web", "-n", "shop", "--in", "10m")
	e.must(err)
	if want := rolloutNow().Add(10 * time.Minute).UTC().Truncate(time.Second); out != "rollout 'web' restarts in 10m0s\n" ||
		!e.get("shop", "web").Spec.RestartAt.Time.Equal(want) {
		t.Fatalf("restart: %q, restartAt %v, want %v", out, e.get("shop", "web").Spec.RestartAt, want)
	}

	// set image: the template's container; an unknown one is named with
	// the ones there are.
	out, _, err = e.run(ctx, "set", "image", "web", "app=app:v3", "-n", "shop")
	e.must(err)
	if ro := e.get("shop", "web"); out != "rollout \"web\" image updated\n" || ro.Spec.Template.Spec.Containers[0].Image != "app:v3" ||
		ro.Spec.Template.Spec.Containers[1].Image != "log:v1" {
		t.Fatalf("set image: %q %+v", out, ro.Spec.Template.Spec.Containers)
	}
	_, _, err = e.run(ctx, "set", "image", "web", "foo=x:1", "-n", "shop")
	if err == nil || err.Error() != "container foo not in rollout web: has app, sidecar" {
		t.Fatalf("set image foo: %v", err)
	}
	if _, _, err = e.run(ctx, "set", "image", "web", "app", "-n", "shop"); err == nil || !strings.Contains(err.Error(), "want CONTAINER=IMAGE") {
		t.Fatalf("set image without =: %v", err)
	}

	// undo: revision 1's template (app:v1), without the hash label.
	out, _, err = e.run(ctx, "undo", "web", "-n", "shop")
	e.must(err)
	ro := e.get("shop", "web")
	if out != "rollout 'web' undo (to revision 1)\n" || ro.Spec.Template.Spec.Containers[0].Image != "app:v1" ||
		ro.Spec.Template.Labels[v1alpha1.DefaultRolloutUniqueLabelKey] != "" || ro.Spec.Template.Labels["app"] != "web" {
		t.Fatalf("undo: %q %+v", out, ro.Spec.Template)
	}
	out, _, err = e.run(ctx, "undo", "web", "-n", "shop", "--to-revision", "1")
	e.must(err)
	if out != "skipped rollback (current template already matches revision 1)\n" {
		t.Fatalf("undo again: %q", out)
	}
	_, _, err = e.run(ctx, "undo", "web", "-n", "shop", "--to-revision", "2")
	e.must(err)
	if img := e.get("shop", "web").Spec.Template.Spec.Containers[0].Image; img != "app:v2" {
		t.Fatalf("undo --to-revision 2: %s", img)
	}
	_, _, err = e.run(ctx, "undo", "web", "-n", "shop", "--to-revision", "7")
	if err == nil || err.Error() != "rollout shop/web has no revision 7 (it has 1, 2: ReplicaSets it controls, annotated rollout.argoproj.io/revision)" {
		t.Fatalf("undo --to-revision 7: %v", err)
	}

	// A Rollout with a workloadRef: set image and undo change the
	// Deployment.
	sel := map[string]string{"app": "cart"}
	e.must(e.c.Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "cart", Namespace: "shop"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](0), Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel}, Spec: corev1.PodSpec{Containers: twoContainers("cart:v2")}}}}))
	cart := canaryRollout()
	cart.Name, cart.Spec.Template = "cart", nil
	cart.Spec.Selector = &metav1.LabelSelector{MatchLabels: sel}
	cart.Spec.WorkloadRef = &v1alpha1.ObjectRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "cart"}
	e.must(e.c.Create(ctx, cart))
	e.ownedRS(cart, "9c9c9c9c9", 1, 1, "cart:v1", 0)
	e.ownedRS(cart, "8d8d8d8d8", 2, 1, "cart:v2", 0)
	out, _, err = e.run(ctx, "set", "image", "cart", "sidecar=log:v2", "-n", "shop")
	e.must(err)
	d := &appsv1.Deployment{}
	e.must(e.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "cart"}, d))
	if out != "deployment \"cart\" image updated\n" || d.Spec.Template.Spec.Containers[1].Image != "log:v2" {
		t.Fatalf("set image on a workloadRef: %q %+v", out, d.Spec.Template.Spec.Containers)
	}
	_, _, err = e.run(ctx, "set", "image", "cart", "db=x", "-n", "shop")
	if err == nil || err.Error() != "container db not in deployment cart (rollout cart's workloadRef): has app, sidecar" {
		t.Fatalf("set image db: %v", err)
	}
	_, _, err = e.run(ctx, "undo", "cart", "-n", "shop")
	e.must(err)
	e.must(e.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "cart"}, d))
	if d.Spec.Template.Spec.Containers[0].Image != "cart:v1" || d.Spec.Template.Labels[v1alpha1.DefaultRolloutUniqueLabelKey] != "" {
		t.Fatalf("undo on a workloadRef: %+v", d.Spec.Template)
	}
}

// status: the phase and message; exit status 0 for Healthy, an error
// (exit 1) for Degraded and when --timeout passes; --watch follows the
// changes until the rollout is Healthy.
func TestRolloutStatus(t *testing.T) {
	e := startRolloutEnv(t)
	ctx := context.Background()
	e.pausedCanary()

	out, _, err := e.run(ctx, "status", "web", "-n", "shop", "--watch=false")
	e.must(err)
	if out != "Paused - CanaryPauseStep\n" {
		t.Fatalf("status: %q", out)
	}
	out, _, err = e.run(ctx, "status", "web", "-n", "shop", "--timeout", "1s")
	if !errors.Is(err, errRolloutNotHealthy) || !strings.Contains(err.Error(), "still Paused after --timeout 1s") || out != "Paused - CanaryPauseStep\n" {
		t.Fatalf("status --timeout: %v %q", err, out)
	}
	// A spec change the controller has not seen yet is Progressing,
	// whatever the status says.
	ro := e.get("shop", "web")
	ro.Spec.Replicas = ptr.To[int32](3)
	e.must(e.c.Update(ctx, ro))
	out, _, err = e.run(ctx, "status", "web", "-n", "shop", "--watch=false", "-o", "json")
	e.must(err)
	if !strings.Contains(out, `"phase": "Progressing"`) || !strings.Contains(out, "waiting for rollout spec update to be observed") {
		t.Fatalf("status of an unobserved generation: %s", out)
	}
	e.setStatus("shop", "web", func(s *v1alpha1.RolloutStatus) {
		s.ObservedGeneration = "2"
		s.Phase, s.Message, s.Abort = v1alpha1.RolloutPhaseDegraded, "RolloutAborted: metric \"success-rate\" assessed Failed", true
	})
	_, _, err = e.run(ctx, "status", "web", "-n", "shop")
	if !errors.Is(err, errRolloutNotHealthy) || err.Error() != `rollout shop/web is Degraded: RolloutAborted: metric "success-rate" assessed Failed: rollout not healthy` {
		t.Fatalf("status of a degraded rollout: %v", err)
	}
}

// The watches: `status` follows the controller's status writes until
// Healthy; `get --watch` redraws on a change and stops with its context.
func TestRolloutWatch(t *testing.T) {
	e := startRolloutEnv(t)
	e.pausedCanary()
	e.fixClock("shop")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	type result struct {
		out string
		err error
	}
	// The controller's part, once the watch has printed its first line:
	// progressing, then healthy.
	var outMu sync.Mutex
	var statusOut bytes.Buffer
	done := make(chan result, 1)
	go func() {
		root := newRoot()
		root.SetOut(syncWriter{&outMu, &statusOut})
		root.SetErr(&bytes.Buffer{})
		root.SetArgs([]string{"rollout", "status", "web", "-n", "shop", "--kubeconfig", e.kc, "--timeout", "50s"})
		err := root.ExecuteContext(ctx)
		outMu.Lock()
		defer outMu.Unlock()
		done <- result{statusOut.String(), err}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	printed := func(s string) func() bool {
		return func() bool {
			outMu.Lock()
			defer outMu.Unlock()
			return strings.Contains(statusOut.String(), s)
		}
	}
	waitFor("the first status line", printed("Paused - CanaryPauseStep\n"))
	e.setStatus("shop", "web", func(s *v1alpha1.RolloutStatus) {
		s.PauseConditions, s.ControllerPause = nil, false
		s.Phase, s.Message = v1alpha1.RolloutPhaseProgressing, "more replicas need to be updated"
	})
	waitFor("the progressing line", printed("Progressing - more replicas need to be updated\n"))
	e.setStatus("shop", "web", func(s *v1alpha1.RolloutStatus) {
		s.Phase, s.Message, s.StableRS = v1alpha1.RolloutPhaseHealthy, "", canaryHash
	})
	r := <-done
	if r.err != nil || r.out != "Paused - CanaryPauseStep\nProgressing - more replicas need to be updated\nHealthy\n" {
		t.Fatalf("status --watch: %v %q", r.err, r.out)
	}

	// get --watch: a frame now, another after a change, and an end when
	// its context ends.
	var getOut bytes.Buffer
	gctx, gcancel := context.WithCancel(ctx)
	gdone := make(chan result, 1)
	go func() {
		root := newRoot()
		root.SetOut(syncWriter{&outMu, &getOut})
		root.SetErr(&bytes.Buffer{})
		root.SetArgs([]string{"rollout", "get", "web", "-n", "shop", "--kubeconfig", e.kc, "--watch"})
		err := root.ExecuteContext(gctx)
		outMu.Lock()
		defer outMu.Unlock()
		gdone <- result{getOut.String(), err}
	}()
	frames := func(n int) func() bool {
		return func() bool {
			outMu.Lock()
			defer outMu.Unlock()
			return strings.Count(getOut.String(), "Name:") >= n
		}
	}
	waitFor("the first frame", frames(1))
	e.setStatus("shop", "web", func(s *v1alpha1.RolloutStatus) {
		s.Phase, s.Message = v1alpha1.RolloutPhaseDegraded, "RolloutAborted: by the test"
	})
	waitFor("the second frame", frames(2))
	gcancel()
	select {
	case r := <-gdone:
		if r.err != nil || strings.Count(r.out, "Name:") != 2 || !strings.Contains(r.out, "Status:          ✔ Healthy") ||
			!strings.Contains(r.out, "Message:         RolloutAborted: by the test") {
			t.Fatalf("get --watch: %v\n%s", r.err, r.out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("get --watch did not end with its context")
	}
}

// syncWriter serializes writes to a buffer the test reads meanwhile.
type syncWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
