package steps

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// world is a simulated cluster around the step machine: it applies each
// decision as the reconciler will (status written back, ReplicaSets
// scaled, deadlines recorded, runs created and terminated), with pods that
// become available when the test says so, and an injected clock.
type world struct {
	t    *testing.T
	ro   *v1alpha1.Rollout
	hash string
	rss  map[string]*ReplicaSet
	runs map[string]AnalysisRun
	// created lists every run created, in order; cancelled those cancelled.
	created   []CreateAnalysis
	cancelled []string
	now       time.Time
	// ready makes scaled-up pods available at once; lag makes them
	// available at the next step instead (as real pods, a moment later).
	ready, lag bool
	// verified, when set, is what the router answers for the weights
	// written (the reconciler's Verified); unset, no verification.
	verified *bool
	last     Output
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newWorld(t *testing.T, manifest string) *world {
	t.Helper()
	ro := &v1alpha1.Rollout{}
	if err := yaml.UnmarshalStrict([]byte(manifest), ro); err != nil {
		t.Fatal(err)
	}
	ro.Generation = 1
	w := &world{t: t, ro: ro, hash: "v1", rss: map[string]*ReplicaSet{}, runs: map[string]AnalysisRun{}, now: t0, ready: true}
	w.step() // the first revision is promoted at once
	w.step()
	return w
}

// step makes one decision and applies it.
func (w *world) step() Output {
	w.t.Helper()
	if w.lag {
		for _, r := range w.rss {
			r.Ready, r.Available = r.Replicas, r.Replicas
		}
	}
	var rss []ReplicaSet
	for _, r := range w.rss {
		rss = append(rss, *r)
	}
	slices.SortFunc(rss, func(a, b ReplicaSet) int { return strings.Compare(a.Hash, b.Hash) })
	runs := map[string]AnalysisRun{}
	for k, v := range w.runs {
		runs[k] = v
	}
	out := Reconcile(Input{Rollout: w.ro.DeepCopy(), PodHash: w.hash, ReplicaSets: rss, AnalysisRuns: runs, Now: w.now})
	w.ro.Status = out.Status
	if v := w.verified; v != nil && w.ro.Status.Canary.Weights != nil {
		w.ro.Status.Canary.Weights.Verified = ptr(*v)
	}
	for h, n := range out.Replicas {
		r := w.rss[h]
		if r == nil {
			r = &ReplicaSet{Hash: h, Revision: int64(len(w.rss) + 1)}
			w.rss[h] = r
		}
		r.Replicas = n
		if (w.ready && !w.lag) || n < r.Available {
			r.Ready, r.Available = n, n
		}
	}
	for _, d := range out.ScaleDowns {
		w.rss[d.Hash].ScaleDownDeadline = d.At
	}
	for _, h := range out.ClearScaleDowns {
		w.rss[h].ScaleDownDeadline = time.Time{}
	}
	for _, c := range out.Create {
		if _, dup := w.runs[c.Name]; dup {
			w.t.Fatalf("run %s created twice", c.Name)
		}
		w.runs[c.Name] = AnalysisRun{Phase: v1alpha1.AnalysisPhaseRunning}
		w.created = append(w.created, c)
	}
	w.cancelled = append(w.cancelled, out.Cancel...)
	w.last = out
	return out
}

// settle steps until the decision stops changing (at most 10 times).
func (w *world) settle() Output {
	w.t.Helper()
	var out Output
	for range 10 {
		prev := w.ro.Status.DeepCopy()
		before := map[string]int32{}
		for h, r := range w.rss {
			before[h] = r.Replicas
		}
		out = w.step()
		same := statusEqual(prev, &w.ro.Status) && len(out.Create) == 0
		for h, n := range out.Replicas {
			if b, ok := before[h]; !ok || b != n {
				same = false
			}
		}
		if same {
			return out
		}
	}
	return out
}

func statusEqual(a, b *v1alpha1.RolloutStatus) bool {
	x, _ := yaml.Marshal(a)
	y, _ := yaml.Marshal(b)
	return string(x) == string(y)
}

func (w *world) advance(d time.Duration) { w.now = w.now.Add(d) }

// update changes the pod template (a new revision).
func (w *world) update(hash string) {
	w.hash = hash
	w.ro.Generation++
	w.ro.Spec.Template.Spec.Containers[0].Image = "app:" + hash
}

func (w *world) finish(name string, phase v1alpha1.AnalysisPhase, msg string) {
	w.t.Helper()
	if _, ok := w.runs[name]; !ok {
		w.t.Fatalf("no run %s; runs %v", name, w.runs)
	}
	w.runs[name] = AnalysisRun{Phase: phase, Message: msg}
}

func (w *world) expect(phase v1alpha1.RolloutPhase, step int32, canaryWeight int32) {
	w.t.Helper()
	st := w.ro.Status
	if st.Phase != phase || st.CurrentStepIndex == nil || *st.CurrentStepIndex != step || w.last.Weights.Canary != canaryWeight {
		idx := "nil"
		if st.CurrentStepIndex != nil {
			idx = string(rune('0' + *st.CurrentStepIndex))
		}
		w.t.Fatalf("phase %s (%s) step %s weight %d; want %s step %d weight %d\npause %v", st.Phase, st.Message, idx, w.last.Weights.Canary, phase, step, canaryWeight, st.PauseConditions)
	}
}

func (w *world) replicas(hash string) int32 {
	if r := w.rss[hash]; r != nil {
		return r.Replicas
	}
	return -1
}

const canaryYAML = `
apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: web, namespace: demo}
spec:
  replicas: 5
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "app:v1"}]}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      trafficRouting: {meridian: {}, managedRoutes: [{name: beta}]}
      steps:
      - setWeight: 20
      - pause: {}
      - setWeight: 40
      - pause: {duration: 30s}
      - analysis: {templates: [{templateName: success-rate}]}
      - setWeight: 60
      - pause: {duration: 10}
`

func TestFirstRevisionIsPromotedAtOnce(t *testing.T) {
	w := newWorld(t, canaryYAML)
	w.expect(v1alpha1.RolloutPhaseHealthy, 7, 0)
	st := w.ro.Status
	if st.StableRS != "v1" || st.CurrentPodHash != "v1" || w.replicas("v1") != 5 || st.ObservedGeneration != "1" {
		t.Fatalf("status %+v replicas %d", st, w.replicas("v1"))
	}
	if st.HPAReplicas != 5 || st.Selector != "app=web" || st.AvailableReplicas != 5 || st.UpdatedReplicas != 5 {
		t.Fatalf("counts %+v", st)
	}
	if w.last.Weights != (Weights{Canary: 0, Stable: 100, CanaryHash: "v1", StableHash: "v1"}) {
		t.Fatalf("weights %+v", w.last.Weights)
	}
	if len(w.created) != 0 {
		t.Fatalf("runs %v", w.created)
	}
}

// The whole canary: every step type in order, then promotion and the old
// stable's delayed scale-down.
func TestCanarySteps(t *testing.T) {
	w := newWorld(t, canaryYAML)
	w.update("v2")

	// setWeight 20: the canary is scaled to ceil(20% of 5) = 1 first; the
	// weight moves only once its pod is available.
	w.ready = false
	w.step()
	if w.replicas("v2") != 1 || w.replicas("v1") != 5 || w.last.Weights.Canary != 0 {
		t.Fatalf("v2 %d v1 %d weight %d", w.replicas("v2"), w.replicas("v1"), w.last.Weights.Canary)
	}
	w.expect(v1alpha1.RolloutPhaseProgressing, 0, 0)
	w.ready = true
	w.rss["v2"].Available = 1
	w.settle()

	// pause {}: waits for promote, however long.
	w.expect(v1alpha1.RolloutPhasePaused, 1, 20)
	if w.ro.Status.Canary.Weights.Canary.Weight != 20 || w.ro.Status.Canary.Weights.Stable.PodTemplateHash != "v1" {
		t.Fatalf("status weights %+v", w.ro.Status.Canary.Weights)
	}
	if len(w.ro.Status.PauseConditions) != 1 || w.ro.Status.PauseConditions[0].Reason != v1alpha1.PauseReasonCanaryPauseStep || !w.ro.Status.ControllerPause {
		t.Fatalf("pause %+v", w.ro.Status)
	}
	w.advance(24 * time.Hour)
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 1, 20)
	if w.last.RequeueAfter != 0 {
		t.Fatalf("an untimed pause requeues after %v", w.last.RequeueAfter)
	}
	Promote(w.ro, false)
	w.settle()

	// setWeight 40, then pause 30s: waits, asks to be requeued, moves on.
	w.expect(v1alpha1.RolloutPhasePaused, 3, 40)
	if w.replicas("v2") != 2 || w.last.RequeueAfter != 30*time.Second {
		t.Fatalf("v2 %d requeue %v", w.replicas("v2"), w.last.RequeueAfter)
	}
	w.advance(29 * time.Second)
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 3, 40)
	w.advance(time.Second)
	w.settle()

	// analysis: a run is created and waited for.
	w.expect(v1alpha1.RolloutPhaseProgressing, 4, 40)
	if len(w.created) != 1 || w.created[0].Name != "web-v2-4" || w.created[0].Kind != AnalysisStep || w.created[0].StepIndex != 4 || w.created[0].Analysis.Templates[0].TemplateName != "success-rate" {
		t.Fatalf("created %+v", w.created)
	}
	if s := w.ro.Status.Canary.CurrentStepAnalysisRunStatus; s == nil || s.Name != "web-v2-4" || s.Status != v1alpha1.AnalysisPhaseRunning {
		t.Fatalf("run status %+v", s)
	}
	w.advance(time.Hour)
	w.settle()
	w.expect(v1alpha1.RolloutPhaseProgressing, 4, 40)
	w.finish("web-v2-4", v1alpha1.AnalysisPhaseSuccessful, "")
	w.settle()

	// setWeight 60, pause 10 (seconds as a number).
	w.expect(v1alpha1.RolloutPhasePaused, 6, 60)
	if w.ro.Status.Canary.CurrentStepAnalysisRunStatus != nil {
		t.Fatal("finished step run still in status")
	}
	w.advance(10 * time.Second)
	w.step()

	// End of steps: the canary is scaled fully, then promoted: stable is
	// v2, all traffic to it, the old stable kept for scaleDownDelaySeconds.
	w.settle()
	if w.ro.Status.StableRS != "v2" || w.replicas("v2") != 5 || w.replicas("v1") != 5 {
		t.Fatalf("stable %s v2 %d v1 %d", w.ro.Status.StableRS, w.replicas("v2"), w.replicas("v1"))
	}
	if w.last.Weights != (Weights{Canary: 0, Stable: 100, CanaryHash: "v2", StableHash: "v2"}) {
		t.Fatalf("weights %+v", w.last.Weights)
	}
	if d := w.rss["v1"].ScaleDownDeadline; !d.Equal(w.now.Add(30 * time.Second)) {
		t.Fatalf("v1 deadline %v, want now+30s", d)
	}
	w.expect(v1alpha1.RolloutPhaseProgressing, 7, 0) // old replicas pending termination
	if w.ro.Status.Message != "old replicas are pending termination" {
		t.Fatalf("message %q", w.ro.Status.Message)
	}
	w.advance(30 * time.Second)
	w.settle()
	if w.replicas("v1") != 0 {
		t.Fatalf("v1 %d after the delay", w.replicas("v1"))
	}
	w.expect(v1alpha1.RolloutPhaseHealthy, 7, 0)
	if c := condition(w.ro, v1alpha1.RolloutCompleted); c == nil || c.Status != corev1.ConditionTrue {
		t.Fatalf("Completed %+v", c)
	}
}

func condition(r *v1alpha1.Rollout, t v1alpha1.RolloutConditionType) *v1alpha1.RolloutCondition {
	for i := range r.Status.Conditions {
		if r.Status.Conditions[i].Type == t {
			return &r.Status.Conditions[i]
		}
	}
	return nil
}

// A setWeight step waits until its weights are verified (Argo's rule), so
// the timed pause after it runs at the weight from its start: the pause
// starts when the verification is read, not when the weight was written.
func TestSetWeightWaitsForVerifiedWeights(t *testing.T) {
	w := newWorld(t, strings.Replace(canaryYAML, "      - pause: {}\n", "      - pause: {duration: 20s}\n", 1))
	w.verified = ptr(false)
	w.update("v2")
	w.settle()
	w.expect(v1alpha1.RolloutPhaseProgressing, 0, 20)
	if wt := w.ro.Status.Canary.Weights; wt.Canary.Weight != 20 || wt.Canary.PodTemplateHash != "v2" || *wt.Verified {
		t.Fatalf("status weights %+v", wt)
	}
	if len(w.ro.Status.PauseConditions) != 0 {
		t.Fatalf("paused before the weight was verified: %+v", w.ro.Status.PauseConditions)
	}
	w.advance(time.Minute)
	w.settle()
	w.expect(v1alpha1.RolloutPhaseProgressing, 0, 20)

	// Verified: the next pass ends the step, and the pause starts then.
	w.verified = ptr(true)
	w.step() // the reconciler's pass that verifies
	w.expect(v1alpha1.RolloutPhaseProgressing, 0, 20)
	start := w.now
	w.advance(time.Second)
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 1, 20)
	if pc := w.ro.Status.PauseConditions; len(pc) != 1 || !pc[0].StartTime.Time.Equal(start.Add(time.Second)) {
		t.Fatalf("pause conditions %+v, want one from %v", pc, start.Add(time.Second))
	}
	if w.last.RequeueAfter != 20*time.Second {
		t.Fatalf("requeue after %v, want the pause's 20s", w.last.RequeueAfter)
	}
	w.advance(20 * time.Second)
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 3, 40) // setWeight 40 verified at once

	// Weights verified at the same percentage for another revision do not
	// end the new one's setWeight step, even with its pods there.
	w = newWorld(t, canaryYAML)
	w.verified = ptr(true)
	w.update("v2")
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 1, 20)
	w.rss["v3"] = &ReplicaSet{Hash: "v3", Replicas: 1, Ready: 1, Available: 1, Revision: 3}
	w.update("v3")
	w.step()
	w.expect(v1alpha1.RolloutPhaseProgressing, 0, 20)
	w.step()
	w.expect(v1alpha1.RolloutPhasePaused, 1, 20)
}

// The analysis step's outcomes: Failed and Error abort, Inconclusive
// pauses with the reason until promoted.
func TestCanaryAnalysisOutcomes(t *testing.T) {
	for _, tc := range []struct {
		phase  v1alpha1.AnalysisPhase
		want   v1alpha1.RolloutPhase
		reason string
	}{
		{v1alpha1.AnalysisPhaseFailed, v1alpha1.RolloutPhaseDegraded, "RolloutAborted"},
		{v1alpha1.AnalysisPhaseError, v1alpha1.RolloutPhaseDegraded, "RolloutAborted"},
		{v1alpha1.AnalysisPhaseInconclusive, v1alpha1.RolloutPhasePaused, "InconclusiveAnalysisRun"},
	} {
		t.Run(string(tc.phase), func(t *testing.T) {
			w := newWorld(t, `
apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "app:v1"}]}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      abortScaleDownDelaySeconds: 10
      trafficRouting: {meridian: {}}
      steps:
      - setWeight: 25
      - analysis: {templates: [{templateName: t}]}
      - setWeight: 50
`)
			w.update("v2")
			w.settle()
			w.expect(v1alpha1.RolloutPhaseProgressing, 1, 25)
			w.finish("web-v2-1", tc.phase, `Metric "sr" assessed `+string(tc.phase))
			w.settle()
			st := w.ro.Status
			if st.Phase != tc.want || !strings.HasPrefix(st.Message, tc.reason) {
				t.Fatalf("phase %s message %q", st.Phase, st.Message)
			}
			if tc.want == v1alpha1.RolloutPhaseDegraded {
				// All traffic back to stable at once; the canary goes
				// after abortScaleDownDelaySeconds.
				if w.last.Weights.Canary != 0 || !st.Abort || st.AbortedAt == nil || !strings.Contains(st.Message, `Metric "sr" assessed`) {
					t.Fatalf("weights %+v status %+v", w.last.Weights, st)
				}
				if w.replicas("v2") != 1 || !w.rss["v2"].ScaleDownDeadline.Equal(st.AbortedAt.Add(10*time.Second)) {
					t.Fatalf("v2 %d deadline %v", w.replicas("v2"), w.rss["v2"].ScaleDownDeadline)
				}
				w.advance(10 * time.Second)
				w.settle()
				if w.replicas("v2") != 0 || w.replicas("v1") != 4 || w.ro.Status.Phase != v1alpha1.RolloutPhaseDegraded {
					t.Fatalf("v2 %d v1 %d phase %s", w.replicas("v2"), w.replicas("v1"), w.ro.Status.Phase)
				}
				return
			}
			// Inconclusive: paused with the reason, the canary keeps its
			// weight; promote accepts the analysis and moves on.
			if st.PauseConditions[0].Reason != v1alpha1.PauseReasonInconclusiveAnalysis || w.last.Weights.Canary != 25 {
				t.Fatalf("status %+v weights %+v", st, w.last.Weights)
			}
			Promote(w.ro, false)
			w.settle()
			w.advance(30 * time.Second)
			w.settle()
			w.expect(v1alpha1.RolloutPhaseHealthy, 3, 0)
			if w.ro.Status.StableRS != "v2" {
				t.Fatalf("stable %s", w.ro.Status.StableRS)
			}
		})
	}
}

// abort sends all traffic to stable at once; retry starts the steps again
// at step 0, with a new AnalysisRun.
func TestAbortAndRetry(t *testing.T) {
	w := newWorld(t, canaryYAML)
	w.update("v2")
	w.settle()
	Promote(w.ro, false)
	w.advance(30 * time.Second)
	w.settle()
	w.advance(30 * time.Second)
	w.settle()
	w.expect(v1alpha1.RolloutPhaseProgressing, 4, 40)

	Abort(w.ro)
	w.step()
	st := w.ro.Status
	if st.Phase != v1alpha1.RolloutPhaseDegraded || w.last.Weights.Canary != 0 || w.last.Weights.Stable != 100 || *st.CurrentStepIndex != 0 {
		t.Fatalf("after abort: %+v weights %+v", st, w.last.Weights)
	}
	// Argo's message names the revision number of the aborted update.
	if st.Message != "RolloutAborted: Rollout aborted update to revision 2" {
		t.Fatalf("message %q", st.Message)
	}
	if !slices.Contains(w.last.Cancel, "web-v2-4") || st.Canary.CurrentStepAnalysisRunStatus != nil {
		t.Fatalf("cancel %v", w.last.Cancel)
	}
	if st.Canary.Weights.Canary.Weight != 0 || st.Canary.Weights.Stable.Weight != 100 {
		t.Fatalf("status weights %+v", st.Canary.Weights)
	}
	// Default abortScaleDownDelaySeconds: 30.
	if w.replicas("v2") != 2 || !w.rss["v2"].ScaleDownDeadline.Equal(w.now.Add(30*time.Second)) {
		t.Fatalf("v2 %d deadline %v", w.replicas("v2"), w.rss["v2"].ScaleDownDeadline)
	}
	w.advance(time.Minute)
	w.settle()
	if w.replicas("v2") != 0 {
		t.Fatalf("v2 %d", w.replicas("v2"))
	}

	Retry(w.ro)
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 1, 20)
	if w.ro.Status.AbortedAt != nil || w.ro.Status.Abort || w.replicas("v2") != 1 || !w.rss["v2"].ScaleDownDeadline.IsZero() {
		t.Fatalf("after retry: %+v v2 %+v", w.ro.Status, w.rss["v2"])
	}
	Promote(w.ro, false)
	w.advance(30 * time.Second)
	w.settle()
	w.advance(30 * time.Second)
	w.settle()
	// The step's run is made again under a free name.
	if n := len(w.created); n != 2 || w.created[1].Name != "web-v2-4.1" {
		t.Fatalf("created %+v", w.created)
	}
}

// promote --full skips every remaining step, pause and analysis.
func TestPromoteFull(t *testing.T) {
	w := newWorld(t, canaryYAML)
	w.update("v2")
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 1, 20)
	Promote(w.ro, true)
	w.settle()
	if w.ro.Status.StableRS != "v2" || w.ro.Status.PromoteFull || len(w.created) != 0 || w.last.Weights.StableHash != "v2" {
		t.Fatalf("status %+v created %v", w.ro.Status, w.created)
	}
	w.advance(30 * time.Second)
	w.settle()
	w.expect(v1alpha1.RolloutPhaseHealthy, 7, 0)
}

// promote on a Rollout that is not paused skips the current step: here an
// analysis step, whose run is cancelled.
func TestPromoteSkipsStep(t *testing.T) {
	w := newWorld(t, canaryYAML)
	w.update("v2")
	w.settle()
	Promote(w.ro, false)
	w.advance(30 * time.Second)
	w.settle()
	w.advance(30 * time.Second)
	w.settle()
	w.expect(v1alpha1.RolloutPhaseProgressing, 4, 40)
	Promote(w.ro, false)
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 6, 60)
	if !slices.Contains(w.cancelled, "web-v2-4") {
		t.Fatalf("cancelled %v", w.cancelled)
	}
}

// A template change mid-rollout restarts the steps for the new hash; the
// replaced canary is cancelled and scaled down.
func TestTemplateChangeRestartsSteps(t *testing.T) {
	w := newWorld(t, canaryYAML)
	w.update("v2")
	w.settle()
	Promote(w.ro, false)
	w.advance(30 * time.Second)
	w.settle()
	w.advance(30 * time.Second)
	w.settle()
	w.expect(v1alpha1.RolloutPhaseProgressing, 4, 40)

	w.update("v3")
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 1, 20)
	st := w.ro.Status
	if st.CurrentPodHash != "v3" || st.StableRS != "v1" || w.last.Weights.CanaryHash != "v3" || w.replicas("v3") != 1 {
		t.Fatalf("status %+v v3 %d", st, w.replicas("v3"))
	}
	if !slices.Contains(w.cancelled, "web-v2-4") {
		t.Fatalf("cancelled %v", w.cancelled)
	}
	if w.replicas("v2") != 2 || w.rss["v2"].ScaleDownDeadline.IsZero() {
		t.Fatalf("v2 %+v", w.rss["v2"])
	}
	w.advance(30 * time.Second)
	w.settle()
	if w.replicas("v2") != 0 {
		t.Fatalf("v2 %d", w.replicas("v2"))
	}
}

// scaleDownDelayRevisionLimit keeps only the newest old ReplicaSets
// running while they wait for their deadline; the older ones go at once.
func TestScaleDownDelayRevisionLimit(t *testing.T) {
	for _, tc := range []struct {
		limit  string
		v1, v2 int32 // replicas of the old ReplicaSets after v3's promotion
	}{
		{"", 5, 5},
		{"scaleDownDelayRevisionLimit: 1", 0, 5},
		{"scaleDownDelayRevisionLimit: 0", 0, 0},
	} {
		t.Run(tc.limit, func(t *testing.T) {
			w := newWorld(t, strings.Replace(canaryYAML, "      steps:", "      "+tc.limit+"\n      steps:", 1))
			for _, h := range []string{"v2", "v3"} {
				w.update(h)
				w.settle()
				Promote(w.ro, true)
				w.settle()
			}
			if w.ro.Status.StableRS != "v3" || w.replicas("v3") != 5 || w.replicas("v1") != tc.v1 || w.replicas("v2") != tc.v2 {
				t.Fatalf("stable %s v1 %d v2 %d v3 %d; want v3 v1 %d v2 %d v3 5", w.ro.Status.StableRS, w.replicas("v1"), w.replicas("v2"), w.replicas("v3"), tc.v1, tc.v2)
			}
			w.advance(30 * time.Second)
			w.settle()
			if w.replicas("v1") != 0 || w.replicas("v2") != 0 {
				t.Fatalf("after the delay: v1 %d v2 %d", w.replicas("v1"), w.replicas("v2"))
			}
		})
	}
}

// Changing the steps mid-rollout starts them again (their hash is
// currentStepHash).
func TestChangedStepsRestart(t *testing.T) {
	w := newWorld(t, canaryYAML)
	hash := w.ro.Status.CurrentStepHash
	w.update("v2")
	w.settle()
	Promote(w.ro, false)
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 3, 40)
	w.ro.Spec.Strategy.Canary.Steps[3].Pause.Duration = nil
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 1, 20)
	if w.ro.Status.CurrentStepHash == hash || w.ro.Status.CurrentStepHash == "" {
		t.Fatalf("step hash %q", w.ro.Status.CurrentStepHash)
	}
}

// A change back to the stable hash is a rollback: the steps are skipped.
func TestRollbackToStableSkipsSteps(t *testing.T) {
	w := newWorld(t, canaryYAML)
	w.update("v2")
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 1, 20)
	w.update("v1")
	w.settle()
	st := w.ro.Status
	if st.StableRS != "v1" || *st.CurrentStepIndex != 7 || len(st.PauseConditions) != 0 || w.last.Weights.Canary != 0 || w.last.Weights.CanaryHash != "v1" {
		t.Fatalf("status %+v weights %+v", st, w.last.Weights)
	}
	w.advance(30 * time.Second)
	w.settle()
	if w.replicas("v2") != 0 || w.replicas("v1") != 5 {
		t.Fatalf("v2 %d v1 %d", w.replicas("v2"), w.replicas("v1"))
	}
	w.expect(v1alpha1.RolloutPhaseHealthy, 7, 0)
}

// setCanaryScale sets the canary's replicas apart from its weight, until
// matchTrafficWeight; setHeaderRoute is recorded for the router.
func TestSetCanaryScaleAndHeaderRoute(t *testing.T) {
	w := newWorld(t, `
apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  replicas: 10
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "app:v1"}]}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      trafficRouting: {meridian: {}, managedRoutes: [{name: beta}]}
      steps:
      - setCanaryScale: {replicas: 3}
      - setHeaderRoute: {name: beta, match: [{headerName: x-beta, headerValue: {exact: "yes"}}]}
      - pause: {}
      - setCanaryScale: {weight: 50}
      - setWeight: 10
      - pause: {}
      - setCanaryScale: {matchTrafficWeight: true}
      - setHeaderRoute: {name: beta}
      - pause: {}
`)
	w.update("v2")
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 2, 0)
	if w.replicas("v2") != 3 || w.replicas("v1") != 10 {
		t.Fatalf("v2 %d v1 %d", w.replicas("v2"), w.replicas("v1"))
	}
	if hr := w.last.HeaderRoute; hr == nil || hr.Name != "beta" || hr.Match[0].HeaderName != "x-beta" {
		t.Fatalf("header route %+v", hr)
	}
	Promote(w.ro, false)
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 5, 10)
	if w.replicas("v2") != 5 {
		t.Fatalf("v2 %d, want 50%% of 10", w.replicas("v2"))
	}
	Promote(w.ro, false)
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 8, 10)
	if w.replicas("v2") != 1 || w.last.HeaderRoute != nil {
		t.Fatalf("v2 %d header route %+v", w.replicas("v2"), w.last.HeaderRoute)
	}
}

// Without traffic routing the replicas are the split: ceil(w%) canary pods,
// ceil((100-w)%) stable ones, and no weights in status.
func TestBasicCanaryAndDynamicStableScale(t *testing.T) {
	basic := strings.Replace(canaryYAML, "      trafficRouting: {meridian: {}, managedRoutes: [{name: beta}]}\n", "", 1)
	w := newWorld(t, basic)
	w.update("v2")
	w.settle()
	if w.replicas("v2") != 1 || w.replicas("v1") != 4 || w.ro.Status.Canary.Weights != nil {
		t.Fatalf("v2 %d v1 %d weights %+v", w.replicas("v2"), w.replicas("v1"), w.ro.Status.Canary.Weights)
	}
	dyn := strings.Replace(canaryYAML, "stableService: web-stable\n", "stableService: web-stable\n      dynamicStableScale: true\n", 1)
	w = newWorld(t, dyn)
	w.update("v2")
	w.settle()
	if w.replicas("v2") != 1 || w.replicas("v1") != 4 || w.last.Weights.Canary != 20 {
		t.Fatalf("v2 %d v1 %d weights %+v", w.replicas("v2"), w.replicas("v1"), w.last.Weights)
	}
}

func TestSpecPausedAndProgressDeadline(t *testing.T) {
	w := newWorld(t, strings.Replace(canaryYAML, "  replicas: 5\n", "  replicas: 5\n  progressDeadlineSeconds: 60\n", 1))
	w.ro.Spec.Paused = true
	w.ready = false
	w.update("v2")
	w.settle()
	if w.ro.Status.Phase != v1alpha1.RolloutPhasePaused || w.ro.Status.Message != "manually paused" || *w.ro.Status.CurrentStepIndex != 0 {
		t.Fatalf("status %+v", w.ro.Status)
	}
	// Time paused does not count against the deadline.
	w.advance(time.Hour)
	w.settle()
	w.ro.Spec.Paused = false
	w.settle()
	if w.ro.Status.Phase != v1alpha1.RolloutPhaseProgressing {
		t.Fatalf("phase %s (%s)", w.ro.Status.Phase, w.ro.Status.Message)
	}
	if w.last.RequeueAfter != 60*time.Second {
		t.Fatalf("requeue %v", w.last.RequeueAfter)
	}
	w.advance(60 * time.Second)
	w.settle()
	if w.ro.Status.Phase != v1alpha1.RolloutPhaseDegraded || !strings.HasPrefix(w.ro.Status.Message, "ProgressDeadlineExceeded") || w.ro.Status.Abort {
		t.Fatalf("status %+v", w.ro.Status)
	}

	// With progressDeadlineAbort the update is aborted.
	w = newWorld(t, strings.Replace(canaryYAML, "  replicas: 5\n", "  replicas: 5\n  progressDeadlineSeconds: 60\n  progressDeadlineAbort: true\n", 1))
	w.ready = false
	w.update("v2")
	w.settle()
	w.advance(61 * time.Second)
	w.settle()
	if w.ro.Status.Phase != v1alpha1.RolloutPhaseDegraded || !w.ro.Status.Abort || w.last.Weights.Canary != 0 || !strings.Contains(w.ro.Status.Message, "ProgressDeadlineExceeded") {
		t.Fatalf("status %+v", w.ro.Status)
	}
}

func TestBackgroundAnalysis(t *testing.T) {
	w := newWorld(t, strings.Replace(canaryYAML, "      steps:\n", "      analysis: {templates: [{templateName: bg}], startingStep: 2}\n      steps:\n", 1))
	w.update("v2")
	w.settle()
	if len(w.created) != 0 {
		t.Fatalf("background run before its starting step: %v", w.created)
	}
	Promote(w.ro, false)
	w.settle()
	if len(w.created) != 1 || w.created[0].Name != "web-v2-bg" || w.created[0].Kind != AnalysisBackground {
		t.Fatalf("created %+v", w.created)
	}
	w.finish("web-v2-bg", v1alpha1.AnalysisPhaseFailed, "failed (1) > failureLimit (0)")
	w.settle()
	if w.ro.Status.Phase != v1alpha1.RolloutPhaseDegraded || w.last.Weights.Canary != 0 {
		t.Fatalf("status %+v", w.ro.Status)
	}
}

func TestInvalidSpecChangesNothing(t *testing.T) {
	w := newWorld(t, canaryYAML)
	w.ro.Spec.Strategy.Canary.Steps[0].SetWeight = ptr(int32(150))
	w.update("v2")
	w.step()
	if w.ro.Status.Phase != v1alpha1.RolloutPhaseDegraded || !strings.Contains(w.ro.Status.Message, "spec.strategy.canary.steps[0].setWeight") {
		t.Fatalf("status %+v", w.ro.Status)
	}
	if w.replicas("v1") != 5 || w.replicas("v2") != -1 || w.last.Weights.Stable != 100 {
		t.Fatalf("v1 %d v2 %d", w.replicas("v1"), w.replicas("v2"))
	}
	if c := condition(w.ro, v1alpha1.InvalidSpec); c == nil || c.Status != corev1.ConditionTrue {
		t.Fatalf("InvalidSpec %+v", c)
	}
}

const blueGreenYAML = `
apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "app:v1"}]}
  strategy:
    blueGreen:
      activeService: web-active
      previewService: web-preview
      autoPromotionEnabled: false
      scaleDownDelaySeconds: 20
      prePromotionAnalysis: {templates: [{templateName: smoke}]}
      postPromotionAnalysis: {templates: [{templateName: smoke}]}
`

// Blue-green: preview, pre-promotion analysis, a pause for promote, the
// switch, post-promotion analysis, then the old ReplicaSet's delayed
// scale-down.
func TestBlueGreen(t *testing.T) {
	w := newWorld(t, blueGreenYAML)
	if w.ro.Status.Phase != v1alpha1.RolloutPhaseHealthy || w.ro.Status.CurrentStepIndex != nil || w.ro.Status.CurrentStepHash != "" {
		t.Fatalf("status %+v", w.ro.Status)
	}
	if bg := w.ro.Status.BlueGreen; bg.ActiveSelector != "v1" || w.ro.Status.Selector != "app=web,rollouts-pod-template-hash=v1" || w.ro.Status.HPAReplicas != 3 {
		t.Fatalf("status %+v", w.ro.Status)
	}
	w.update("v2")
	w.settle()
	st := w.ro.Status
	if st.BlueGreen.PreviewSelector != "v2" || st.BlueGreen.ActiveSelector != "v1" || w.replicas("v2") != 3 || w.last.Weights.StableHash != "v1" {
		t.Fatalf("preview: %+v", st.BlueGreen)
	}
	if len(w.created) != 1 || w.created[0].Name != "web-v2-pre" || w.created[0].Kind != AnalysisPrePromotion {
		t.Fatalf("created %+v", w.created)
	}
	w.finish("web-v2-pre", v1alpha1.AnalysisPhaseSuccessful, "")
	w.settle()
	if w.ro.Status.Phase != v1alpha1.RolloutPhasePaused || w.ro.Status.PauseConditions[0].Reason != v1alpha1.PauseReasonBlueGreenPause {
		t.Fatalf("status %+v", w.ro.Status)
	}
	Promote(w.ro, false)
	w.settle()
	st = w.ro.Status
	if st.BlueGreen.ActiveSelector != "v2" || st.StableRS != "v1" || w.last.Weights.StableHash != "v2" {
		t.Fatalf("after the switch: %+v", st)
	}
	if len(w.created) != 2 || w.created[1].Kind != AnalysisPostPromotion {
		t.Fatalf("created %+v", w.created)
	}
	w.finish("web-v2-post", v1alpha1.AnalysisPhaseSuccessful, "")
	w.settle()
	if w.ro.Status.StableRS != "v2" || w.replicas("v1") != 3 || !w.rss["v1"].ScaleDownDeadline.Equal(w.now.Add(20*time.Second)) {
		t.Fatalf("status %+v v1 %+v", w.ro.Status, w.rss["v1"])
	}
	w.advance(20 * time.Second)
	w.settle()
	if w.replicas("v1") != 0 || w.ro.Status.Phase != v1alpha1.RolloutPhaseHealthy || w.ro.Status.Selector != "app=web,rollouts-pod-template-hash=v2" {
		t.Fatalf("status %+v v1 %d", w.ro.Status, w.replicas("v1"))
	}
}

// A failed post-promotion analysis aborts: the active Service switches
// back to the stable ReplicaSet at once.
func TestBlueGreenPostPromotionFailureSwitchesBack(t *testing.T) {
	w := newWorld(t, blueGreenYAML)
	w.update("v2")
	w.settle()
	w.finish("web-v2-pre", v1alpha1.AnalysisPhaseSuccessful, "")
	w.settle()
	Promote(w.ro, false)
	w.settle()
	w.finish("web-v2-post", v1alpha1.AnalysisPhaseFailed, "error rate")
	w.settle()
	st := w.ro.Status
	if st.Phase != v1alpha1.RolloutPhaseDegraded || st.BlueGreen.ActiveSelector != "v1" || w.last.Weights.StableHash != "v1" || st.StableRS != "v1" {
		t.Fatalf("status %+v", st)
	}
	w.advance(30 * time.Second)
	w.settle()
	if w.replicas("v2") != 0 || w.replicas("v1") != 3 {
		t.Fatalf("v2 %d v1 %d", w.replicas("v2"), w.replicas("v1"))
	}
}

// autoPromotionSeconds promotes on its own after the wait; previewReplicaCount
// runs fewer preview pods until then.
func TestBlueGreenAutoPromotionSeconds(t *testing.T) {
	w := newWorld(t, `
apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "app:v1"}]}
  strategy:
    blueGreen:
      activeService: web-active
      autoPromotionSeconds: 60
      previewReplicaCount: 1
`)
	w.update("v2")
	w.settle()
	if w.replicas("v2") != 1 || w.ro.Status.Phase != v1alpha1.RolloutPhasePaused || w.last.RequeueAfter != time.Minute {
		t.Fatalf("v2 %d status %+v requeue %v", w.replicas("v2"), w.ro.Status, w.last.RequeueAfter)
	}
	w.advance(time.Minute)
	w.settle()
	if w.replicas("v2") != 4 || w.ro.Status.BlueGreen.ActiveSelector != "v2" || w.ro.Status.StableRS != "v2" || !w.ro.Status.BlueGreen.ScaleUpPreviewCheckPoint {
		t.Fatalf("v2 %d status %+v", w.replicas("v2"), w.ro.Status)
	}
}

// Without traffic routing the split is the replica counts closest to the
// weight (Argo's approximation), not a rounding of each side.
func TestApproximateCounts(t *testing.T) {
	for _, tc := range []struct{ n, weight, surge, canary, stable int32 }{
		{5, 20, 2, 1, 4},
		{4, 10, 0, 1, 3},  // never 0 canary pods for a weight in 1..99
		{10, 15, 0, 2, 8}, // 1.5 is a tie: the larger
		{3, 50, 1, 2, 2},  // a surge pod gives an exact 50%
		{3, 50, 0, 2, 1},  // without surge, the tie goes up
		{1, 50, 0, 1, 0},  // one replica, no surge
		{5, 0, 2, 0, 5},   // 0%
		{5, 100, 2, 5, 0}, // 100%
		{0, 50, 1, 0, 0},  // no replicas
		{10, 33, 3, 3, 7}, // 3.3 → 3
		{10, 37, 3, 4, 7}, // 4 of 11 (36.4%) is closer than 4 of 10
	} {
		c, s := approximateCounts(tc.n, tc.weight, tc.surge)
		if c != tc.canary || s != tc.stable {
			t.Errorf("n %d weight %d surge %d: %d/%d, want %d/%d", tc.n, tc.weight, tc.surge, c, s, tc.canary, tc.stable)
		}
	}
}

// A basic canary moves replicas within maxSurge and maxUnavailable, with
// pods that take a step to become available.
func TestBasicCanaryPacing(t *testing.T) {
	w := newWorld(t, `
apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "app:v1"}]}
  strategy:
    canary:
      maxSurge: 1
      maxUnavailable: 0
      steps:
      - setWeight: 50
      - pause: {}
`)
	w.lag = true
	w.update("v2")
	check := func() {
		t.Helper()
		var total, avail int32
		for _, r := range w.rss {
			total += r.Replicas
			avail += r.Available
		}
		if total > 5 || avail < 4 {
			t.Fatalf("%d replicas (max 5), %d available (min 4): %+v %+v", total, avail, *w.rss["v1"], *w.rss["v2"])
		}
	}
	for range 20 {
		w.step()
		check()
		if w.ro.Status.Phase == v1alpha1.RolloutPhasePaused {
			break
		}
	}
	w.expect(v1alpha1.RolloutPhasePaused, 1, 0) // no traffic routing: no weights
	if w.replicas("v2") != 2 || w.replicas("v1") != 2 {
		t.Fatalf("v2 %d v1 %d", w.replicas("v2"), w.replicas("v1"))
	}
	Promote(w.ro, false)
	for range 20 {
		w.step()
		check()
	}
	w.expect(v1alpha1.RolloutPhaseHealthy, 2, 0)
	if w.replicas("v2") != 4 || w.replicas("v1") != 0 {
		t.Fatalf("v2 %d v1 %d", w.replicas("v2"), w.replicas("v1"))
	}

	// An abort moves back the same way.
	w.update("v3")
	for range 20 {
		w.step()
		check()
	}
	w.expect(v1alpha1.RolloutPhasePaused, 1, 0)
	Abort(w.ro)
	for range 20 {
		w.step()
		check()
	}
	if w.replicas("v3") != 0 || w.replicas("v2") != 4 || w.ro.Status.Phase != v1alpha1.RolloutPhaseDegraded {
		t.Fatalf("v3 %d v2 %d phase %s", w.replicas("v3"), w.replicas("v2"), w.ro.Status.Phase)
	}
}

// With dynamicStableScale the stable is scaled down only once traffic has
// left it, and an abort returns traffic to it as its pods come back; the
// canary keeps its pods until it has no traffic.
func TestDynamicStableScale(t *testing.T) {
	w := newWorld(t, `
apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "app:v1"}]}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      dynamicStableScale: true
      abortScaleDownDelaySeconds: 10
      trafficRouting: {meridian: {}}
      steps:
      - setWeight: 50
      - pause: {}
`)
	w.lag = true
	w.update("v2")
	w.step()
	if w.replicas("v2") != 2 || w.replicas("v1") != 4 {
		t.Fatalf("before traffic moves: v2 %d v1 %d", w.replicas("v2"), w.replicas("v1"))
	}
	w.step() // canary pods available: traffic moves
	if w.last.Weights.Canary != 50 || w.replicas("v1") != 4 {
		t.Fatalf("weight %d v1 %d", w.last.Weights.Canary, w.replicas("v1"))
	}
	w.settle()
	w.expect(v1alpha1.RolloutPhasePaused, 1, 50)
	if w.replicas("v1") != 2 {
		t.Fatalf("after traffic moved: v1 %d", w.replicas("v1"))
	}

	Abort(w.ro)
	w.step()
	if w.replicas("v1") != 4 || w.last.Weights.Canary != 50 || w.replicas("v2") != 2 {
		t.Fatalf("abort, stable not back yet: v1 %d weight %d v2 %d", w.replicas("v1"), w.last.Weights.Canary, w.replicas("v2"))
	}
	w.step() // stable pods available: all traffic to stable
	if w.last.Weights.Canary != 0 || w.replicas("v2") != 2 || !w.rss["v2"].ScaleDownDeadline.Equal(w.now.Add(10*time.Second)) {
		t.Fatalf("weight %d v2 %+v", w.last.Weights.Canary, *w.rss["v2"])
	}
	w.advance(10 * time.Second)
	w.settle()
	if w.replicas("v2") != 0 || w.ro.Status.Phase != v1alpha1.RolloutPhaseDegraded {
		t.Fatalf("v2 %d phase %s", w.replicas("v2"), w.ro.Status.Phase)
	}
}
