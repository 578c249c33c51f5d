package rollout

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func canary(steps ...v1alpha1.CanaryStep) *v1alpha1.Rollout {
	return &v1alpha1.Rollout{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "ro-uid", Generation: 1},
		Spec:       v1alpha1.RolloutSpec{Replicas: ptr.To[int32](4), Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{Steps: steps}}},
	}
}

func weight(w int32) v1alpha1.CanaryStep { return v1alpha1.CanaryStep{SetWeight: &w} }

var pause = v1alpha1.CanaryStep{Pause: &v1alpha1.RolloutPause{}}

// Argo's client-side reading of the phase: the controller's phase only
// once it saw the generation and a promote; computed when it wrote none.
func TestPhase(t *testing.T) {
	for _, c := range []struct {
		name  string
		edit  func(*v1alpha1.Rollout)
		phase v1alpha1.RolloutPhase
		msg   string
	}{
		{"status phase", func(r *v1alpha1.Rollout) {
			r.Status.ObservedGeneration, r.Status.Phase, r.Status.Message = "1", "Paused", "CanaryPauseStep"
		}, "Paused", "CanaryPauseStep"},
		{"unobserved generation", func(r *v1alpha1.Rollout) {
			r.Generation, r.Status.ObservedGeneration, r.Status.Phase = 2, "1", "Healthy"
		}, "Progressing", "waiting for rollout spec update to be observed"},
		{"unpausing", func(r *v1alpha1.Rollout) {
			r.Status.ObservedGeneration, r.Status.Phase, r.Status.ControllerPause = "1", "Paused", true
		}, "Progressing", "waiting for rollout to unpause"},
		{"computed: aborted", func(r *v1alpha1.Rollout) {
			r.Status.Conditions = []v1alpha1.RolloutCondition{{Type: "Progressing", Reason: "RolloutAborted", Message: "metric failed"}}
		}, "Degraded", "RolloutAborted: metric failed"},
		{"computed: manually paused", func(r *v1alpha1.Rollout) { r.Spec.Paused = true }, "Paused", "manually paused"},
		{"computed: updating", func(r *v1alpha1.Rollout) { r.Status.UpdatedReplicas = 1 }, "Progressing", "more replicas need to be updated"},
		{"computed: steps", func(r *v1alpha1.Rollout) {
			r.Status.UpdatedReplicas, r.Status.AvailableReplicas, r.Status.Replicas = 4, 4, 4
			r.Status.StableRS, r.Status.CurrentPodHash = "a", "b"
		}, "Progressing", "waiting for all steps to complete"},
		{"computed: healthy", func(r *v1alpha1.Rollout) {
			r.Status.UpdatedReplicas, r.Status.AvailableReplicas, r.Status.Replicas = 4, 4, 4
			r.Status.StableRS, r.Status.CurrentPodHash = "b", "b"
		}, "Healthy", ""},
	} {
		r := canary(weight(20), pause)
		c.edit(r)
		if p, m := Phase(r); p != c.phase || m != c.msg {
			t.Errorf("%s: %s %q, want %s %q", c.name, p, m, c.phase, c.msg)
		}
	}
}

// The set weight is the last setWeight up to the step (0 aborted, 100 at
// the end); the actual weight is the data plane's, or a basic canary's
// share of the available pods.
func TestWeights(t *testing.T) {
	r := canary(weight(10), pause, weight(40), pause)
	r.Status.CurrentStepIndex = ptr.To[int32](3)
	r.Status.AvailableReplicas = 5
	if w, s := SetWeight(r), Step(r); w != 40 || s != "3/4" {
		t.Fatalf("set weight %d step %s", w, s)
	}
	if a := ActualWeight(r, 2); a != "40" {
		t.Fatalf("basic canary: 2 of 5 available is %s%%", a)
	}
	r.Spec.Strategy.Canary.TrafficRouting = &v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{}}
	if a := ActualWeight(r, 2); a != "40" {
		t.Fatalf("routed canary without weights: %s", a)
	}
	r.Status.Canary.Weights = &v1alpha1.TrafficWeights{Canary: v1alpha1.WeightDestination{Weight: 10}}
	if a := ActualWeight(r, 2); a != "10" {
		t.Fatalf("routed canary: %s", a)
	}
	r.Status.Abort = true
	if SetWeight(r) != 0 {
		t.Fatal("aborted set weight")
	}
	r.Status.Abort, r.Status.CurrentStepIndex = false, ptr.To[int32](4)
	if SetWeight(r) != 100 || ActualWeight(r, 0) != "100" {
		t.Fatal("after the last step")
	}
}

// The promote patches are steps.Promote's changes (checked against the
// real function on a real API server in cmd/meridian); here the cases.
func TestPromotePatches(t *testing.T) {
	r := canary(weight(20), pause, weight(50))
	r.Status.CurrentStepIndex = ptr.To[int32](0)
	r.Status.StableRS, r.Status.CurrentPodHash = "a", "b"
	if p := PromotePatches(r, false); p.Spec != nil || p.Status["currentStepIndex"] != int32(1) || len(p.Status) != 1 {
		t.Fatalf("running: %+v", p)
	}
	r.Status.PauseConditions = []v1alpha1.PauseCondition{{Reason: "CanaryPauseStep"}}
	r.Spec.Paused = true
	if p := PromotePatches(r, false); p.Spec["paused"] != false || len(p.Status) != 1 || p.Status["pauseConditions"] != nil {
		t.Fatalf("paused: %+v", p)
	} else if _, ok := p.Status["pauseConditions"]; !ok {
		t.Fatalf("paused: pauseConditions not cleared: %+v", p)
	}
	if p := PromotePatches(r, true); p.Status["promoteFull"] != true {
		t.Fatalf("full: %+v", p)
	}
	r.Status.CurrentPodHash = "a"
	if p := PromotePatches(r, true); p.Status["promoteFull"] != nil {
		t.Fatalf("full when promoted: %+v", p)
	}
	r.Spec.Paused, r.Status.PauseConditions, r.Status.CurrentStepIndex = false, nil, ptr.To[int32](3)
	if p := PromotePatches(r, false); p.Spec != nil || p.Status != nil {
		t.Fatalf("after the last step: %+v", p)
	}
}

// kubectl's pod STATUS words.
func TestPodStatus(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	for _, c := range []struct {
		name   string
		pod    corev1.Pod
		status string
		ready  string
	}{
		{"running", corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}},
			Status: corev1.PodStatus{Phase: "Running", ContainerStatuses: []corev1.ContainerStatus{{Name: "a", Ready: true, State: running}}}}, "Running", "1/1"},
		{"crash loop", corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}},
			Status: corev1.PodStatus{Phase: "Running", ContainerStatuses: []corev1.ContainerStatus{{Name: "a", RestartCount: 4,
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}}}}, "CrashLoopBackOff", "0/1"},
		{"init", corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "init"}}, Containers: []corev1.Container{{Name: "a"}}},
			Status: corev1.PodStatus{Phase: "Pending", InitContainerStatuses: []corev1.ContainerStatus{{Name: "init", State: running}}}}, "Init:0/1", "0/1"},
		{"native sidecar started", corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "meridian-proxy", RestartPolicy: &always}},
			Containers: []corev1.Container{{Name: "a"}}},
			Status: corev1.PodStatus{Phase: "Running", InitContainerStatuses: []corev1.ContainerStatus{{Name: "meridian-proxy", State: running, Started: ptr.To(true)}},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "a", Ready: true, State: running}}}}, "Running", "1/1"},
		{"terminating", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &metav1.Time{Time: t0}}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}},
			Status: corev1.PodStatus{Phase: "Running"}}, "Terminating", "0/1"},
	} {
		p := newPod(&c.pod)
		if p.Status != c.status || p.Ready != c.ready {
			t.Errorf("%s: %s %s, want %s %s", c.name, p.Status, p.Ready, c.status, c.ready)
		}
	}
}

// A blue-green tree: active and preview markers, the scale-down delay of
// the old ReplicaSet, objects of other owners left out.
func TestTreeBlueGreen(t *testing.T) {
	ro := &v1alpha1.Rollout{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "pay", UID: "ro", Generation: 3, CreationTimestamp: metav1.NewTime(t0.Add(-48 * time.Hour))},
		Spec:       v1alpha1.RolloutSpec{Replicas: ptr.To[int32](1), Strategy: v1alpha1.RolloutStrategy{BlueGreen: &v1alpha1.BlueGreenStrategy{ActiveService: "api", PreviewService: "api-preview"}}},
		Status: v1alpha1.RolloutStatus{ObservedGeneration: "3", Phase: "Paused", Message: "BlueGreenPause", StableRS: "old", CurrentPodHash: "new",
			Replicas: 2, UpdatedReplicas: 1, ReadyReplicas: 2, AvailableReplicas: 2,
			BlueGreen: v1alpha1.BlueGreenStatus{ActiveSelector: "old", PreviewSelector: "new"}},
	}
	rs := func(name, hash, rev string, replicas int32, image string, age time.Duration, owner types.UID, ann map[string]string) appsv1.ReplicaSet {
		if ann == nil {
			ann = map[string]string{}
		}
		ann[RevisionAnnotation] = rev
		return appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(name), CreationTimestamp: metav1.NewTime(t0.Add(-age)), Annotations: ann,
				Labels: map[string]string{v1alpha1.DefaultRolloutUniqueLabelKey: hash}, OwnerReferences: []metav1.OwnerReference{{UID: owner}}},
			Spec:   appsv1.ReplicaSetSpec{Replicas: &replicas, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "api", Image: image}}}}},
			Status: appsv1.ReplicaSetStatus{Replicas: replicas, AvailableReplicas: replicas},
		}
	}
	rss := []appsv1.ReplicaSet{
		rs("api-old", "old", "1", 1, "api:v1", 47*time.Hour, "ro", nil),
		rs("api-new", "new", "2", 1, "api:v2", 90*time.Second, "ro", nil),
		rs("api-older", "older", "0", 0, "api:v0", 72*time.Hour, "ro", map[string]string{ScaleDownDeadlineAnnotation: t0.Add(-time.Minute).Format(time.RFC3339)}),
		rs("other", "zzz", "9", 1, "other:v1", time.Hour, "someone-else", nil),
	}
	rss[2].Annotations[RevisionAnnotation] = "bad"
	pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "api-new-1", CreationTimestamp: metav1.NewTime(t0.Add(-80 * time.Second)),
		OwnerReferences: []metav1.OwnerReference{{UID: "api-new"}}},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "api"}}},
		Status: corev1.PodStatus{Phase: "Pending", ContainerStatuses: []corev1.ContainerStatus{{Name: "api", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff"}}}}}}
	run := v1alpha1.AnalysisRun{ObjectMeta: metav1.ObjectMeta{Name: "api-new-pre", CreationTimestamp: metav1.NewTime(t0.Add(-time.Minute)),
		Annotations: map[string]string{RevisionAnnotation: "2"}, OwnerReferences: []metav1.OwnerReference{{UID: "ro"}}},
		Status: v1alpha1.AnalysisRunStatus{Phase: "Failed", RunSummary: v1alpha1.RunSummary{Failed: 1, Error: 2}}}
	var b strings.Builder
	if err := WriteTree(&b, NewInfo(ro, rss, []corev1.Pod{pod}, []v1alpha1.AnalysisRun{run}), t0); err != nil {
		t.Fatal(err)
	}
	want := `Name:            api
Namespace:       pay
Status:          ॥ Paused
Message:         BlueGreenPause
Strategy:        BlueGreen
Images:          api:v1 (active, stable)
                 api:v2 (preview)
Replicas:
  Desired:       1
  Current:       2
  Updated:       1
  Ready:         2
  Available:     2

NAME                  KIND         STATUS              AGE  INFO
⟳ api                 Rollout      ॥ Paused            2d
├──# revision:2
│  ├──⧉ api-new       ReplicaSet   ✔ Healthy           90s  preview
│  │  └──□ api-new-1  Pod          ⚠ ImagePullBackOff  80s  ready:0/1
│  └──α api-new-pre   AnalysisRun  ✖ Failed            60s  ✖ 1,⚠ 2
├──# revision:1
│  └──⧉ api-old       ReplicaSet   ✔ Healthy           47h  stable,active
└──# revision:0
   └──⧉ api-older     ReplicaSet   • ScaledDown        3d   delay:passed
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// The dashboard's "latest AnalysisRun": the newest created; within one
// second the higher revision, then the higher counter at the end of the
// name (-10 after -9).
func TestSortRunsNewestFirst(t *testing.T) {
	run := func(name string, at time.Time, rev string) *v1alpha1.AnalysisRun {
		return &v1alpha1.AnalysisRun{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(at),
			Annotations: map[string]string{RevisionAnnotation: rev}}}
	}
	runs := []*v1alpha1.AnalysisRun{
		run("web-a-1", t0, "1"),
		run("web-b-9", t0.Add(time.Minute), "2"),
		run("web-b-10", t0.Add(time.Minute), "2"),
		run("web-b-2", t0.Add(time.Minute), "3"),
		run("web-b-1", t0.Add(-time.Minute), "4"),
	}
	SortRunsNewestFirst(runs)
	var got []string
	for _, r := range runs {
		got = append(got, r.Name)
	}
	if want := "web-b-2 web-b-10 web-b-9 web-a-1 web-b-1"; strings.Join(got, " ") != want {
		t.Errorf("order %q, want %s", got, want)
	}
}
