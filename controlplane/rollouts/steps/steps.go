// Package steps is the Rollout step machine: a pure function from a Rollout,
// the facts observed about its ReplicaSets and AnalysisRuns, and the time,
// to the Rollout's next status and the actions that bring the cluster there
// (traffic weights, replica counts, scale-down deadlines, AnalysisRuns to
// create or cancel, when to look again). It makes no API calls: the
// reconciler (controlplane/rollouts, not yet built) gathers the facts and
// carries out the actions. The semantics are Argo Rollouts' (v1.8).
package steps

import (
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// Argo Rollouts' defaults.
const (
	DefaultReplicas                = 1
	DefaultProgressDeadlineSeconds = 600
	DefaultScaleDownDelaySeconds   = 30
	DefaultAbortScaleDownDelay     = 30
)

// ReplicaSet is what the reconciler observed about one of the Rollout's
// ReplicaSets.
type ReplicaSet struct {
	// Hash is its rollouts-pod-template-hash.
	Hash string
	// Replicas is its spec.replicas; Ready and Available its status.
	Replicas, Ready, Available int32
	// ScaleDownDeadline is the deadline recorded on it (Argo's
	// scale-down-deadline annotation); zero when none.
	ScaleDownDeadline time.Time
	// Revision is its rollout.argoproj.io/revision (0 when unknown): the
	// newest old ReplicaSets are the ones scaleDownDelayRevisionLimit keeps.
	Revision int64
}

// AnalysisRun is what the reconciler observed about one AnalysisRun.
type AnalysisRun struct {
	Phase   v1alpha1.AnalysisPhase
	Message string
}

// Input is everything one decision depends on.
type Input struct {
	// Rollout is the Rollout with its template and selector resolved (from
	// the workloadRef's Deployment when it has one) and its status as last
	// written, including what the user set there: abort, promoteFull and
	// cleared pauseConditions (see Promote, Abort, Retry).
	Rollout *v1alpha1.Rollout
	// PodHash is the pod-template hash of spec.template.
	PodHash string
	// ReplicaSets are the Rollout's ReplicaSets.
	ReplicaSets []ReplicaSet
	// AnalysisRuns are the Rollout's AnalysisRuns by name.
	AnalysisRuns map[string]AnalysisRun
	// Now is the time, from the reconciler's (injected) clock.
	Now time.Time
}

// AnalysisKind says why an AnalysisRun was created; the values are Argo's
// rollout-type label values.
type AnalysisKind string

// The kinds of AnalysisRun a Rollout creates.
const (
	AnalysisStep          AnalysisKind = "Step"
	AnalysisBackground    AnalysisKind = "Background"
	AnalysisPrePromotion  AnalysisKind = "PrePromotion"
	AnalysisPostPromotion AnalysisKind = "PostPromotion"
)

// CreateAnalysis asks for an AnalysisRun.
type CreateAnalysis struct {
	// Name is free among the observed runs.
	Name string
	Kind AnalysisKind
	// StepIndex is the canary step, for Step runs.
	StepIndex int32
	// PodHash is the ReplicaSet being judged.
	PodHash  string
	Analysis v1alpha1.RolloutAnalysis
}

// Weights is the traffic split, in percent of the total.
type Weights struct {
	Canary, Stable         int32
	CanaryHash, StableHash string
}

// ScaleDown is a deadline to record on a ReplicaSet: at At it is scaled to 0.
type ScaleDown struct {
	Hash string
	At   time.Time
}

// Output is the decision.
type Output struct {
	// Status is the Rollout's new status.
	Status v1alpha1.RolloutStatus
	// Weights is the split the data plane applies (canary with traffic
	// routing; for blue-green, all traffic to the active hash).
	Weights Weights
	// HeaderRoute is the header route in effect (nil: none).
	HeaderRoute *v1alpha1.SetHeaderRoute
	// Replicas is the desired spec.replicas of each ReplicaSet by hash; a
	// hash with no ReplicaSet yet is one to create.
	Replicas map[string]int32
	// ScaleDowns are deadlines to record on ReplicaSets.
	ScaleDowns []ScaleDown
	// ClearScaleDowns are the hashes of ReplicaSets whose recorded deadline
	// is to be removed: they are wanted again (a retry, a rollback).
	ClearScaleDowns []string
	// Create and Cancel are AnalysisRuns to create, and to terminate (by
	// name).
	Create []CreateAnalysis
	Cancel []string
	// RequeueAfter is when to decide again if nothing changes before; 0:
	// only on change.
	RequeueAfter time.Duration
}

// Reconcile decides the Rollout's next status and actions.
func Reconcile(in Input) Output {
	m := &machine{in: in, r: in.Rollout, st: *in.Rollout.Status.DeepCopy(), out: Output{Replicas: map[string]int32{}}}
	m.run()
	return m.out
}

type machine struct {
	in  Input
	r   *v1alpha1.Rollout
	st  v1alpha1.RolloutStatus
	out Output

	// progressed is set when the Rollout moved (a step, a new ReplicaSet,
	// pods becoming available), which restarts the progress deadline.
	progressed  bool
	abortReason string
	requeue     time.Time
	// scaling holds the ReplicaSets being scaled down in this decision.
	scaling map[string]bool
}

func (m *machine) replicas() int32 {
	if m.r.Spec.Replicas != nil {
		return *m.r.Spec.Replicas
	}
	return DefaultReplicas
}

func (m *machine) rs(hash string) ReplicaSet {
	for _, r := range m.in.ReplicaSets {
		if r.Hash == hash {
			return r
		}
	}
	return ReplicaSet{Hash: hash}
}

func (m *machine) at(t time.Time) {
	if t.After(m.in.Now) && (m.requeue.IsZero() || t.Before(m.requeue)) {
		m.requeue = t
	}
}

func (m *machine) run() {
	now := m.in.Now
	m.st.ObservedGeneration = strconv.FormatInt(m.r.Generation, 10)
	if errs := m.r.Validate(); len(errs) > 0 {
		m.invalid(errs.ToAggregate().Error())
		return
	}
	m.st.Conditions = removeCondition(m.st.Conditions, v1alpha1.InvalidSpec)
	wasPaused := m.st.Phase == v1alpha1.RolloutPhasePaused

	if m.r.Spec.Strategy.Canary != nil {
		m.canary()
	} else {
		m.blueGreen()
	}
	m.limitDelayed()
	m.counts()
	m.phase(wasPaused)
	m.deadlines()
	if !m.requeue.IsZero() {
		m.out.RequeueAfter = m.requeue.Sub(now)
	}
	m.out.Status = m.st
}

// invalid records an InvalidSpec condition and changes nothing else: a
// Rollout the controller cannot read keeps its pods and traffic as they are.
func (m *machine) invalid(msg string) {
	m.setCondition(v1alpha1.InvalidSpec, corev1.ConditionTrue, "InvalidSpec", msg)
	m.st.Phase = v1alpha1.RolloutPhaseDegraded
	m.st.Message = "InvalidSpec: " + msg
	for _, r := range m.in.ReplicaSets {
		m.out.Replicas[r.Hash] = r.Replicas
	}
	if w := m.st.Canary.Weights; w != nil {
		m.out.Weights = Weights{Canary: w.Canary.Weight, Stable: w.Stable.Weight, CanaryHash: w.Canary.PodTemplateHash, StableHash: w.Stable.PodTemplateHash}
	}
	m.out.Status = m.st
}

// newRevision handles a pod-template change: a new hash restarts the
// steps; the stable hash is a rollback that skips them. Blue-green has no
// steps: its currentStepIndex and currentStepHash stay unset, as Argo's.
func (m *machine) newRevision() {
	h := m.in.PodHash
	c := m.r.Spec.Strategy.Canary
	var nSteps int32
	if c != nil {
		nSteps = int32(len(c.Steps))
	}
	setIndex := func(i int32) {
		if c != nil {
			m.st.CurrentStepIndex = ptr(i)
		}
	}
	if c == nil {
		m.st.CurrentStepIndex, m.st.CurrentStepHash = nil, ""
	}
	if m.st.StableRS == "" {
		// First revision: nothing to move traffic from.
		m.st.StableRS = h
		m.st.CurrentPodHash = h
		setIndex(nSteps)
		if c != nil {
			m.st.CurrentStepHash = stepsHash(m.r)
		}
		m.progressed = true
		return
	}
	if m.st.CurrentPodHash != h {
		if m.st.CurrentPodHash != "" {
			m.cancelAll()
			m.st.Abort = false
			m.st.AbortedAt = nil
			m.st.PromoteFull = false
			m.st.PauseConditions = nil
			m.st.ControllerPause = false
			m.st.BlueGreen.ScaleUpPreviewCheckPoint = false
		}
		m.st.CurrentPodHash = h
		setIndex(0)
		m.progressed = true
	}
	if c == nil {
		return
	}
	if h == m.st.StableRS {
		// A rollback to the stable revision skips the steps (Argo's
		// behaviour): that revision has already been judged.
		setIndex(nSteps)
	}
	if hash := stepsHash(m.r); m.st.CurrentStepHash != hash {
		// Changed steps start again from the first (Argo's behaviour).
		if m.st.CurrentStepHash != "" && h != m.st.StableRS {
			m.cancelAll()
			setIndex(0)
			m.st.PauseConditions = nil
			m.st.ControllerPause = false
		}
		m.st.CurrentStepHash = hash
	}
	if m.st.CurrentStepIndex == nil {
		setIndex(0)
	}
}

func (m *machine) cancelAll() {
	for _, s := range []**v1alpha1.RolloutAnalysisRunStatus{
		&m.st.Canary.CurrentStepAnalysisRunStatus, &m.st.Canary.CurrentBackgroundAnalysisRunStatus,
		&m.st.BlueGreen.PrePromotionAnalysisRunStatus, &m.st.BlueGreen.PostPromotionAnalysisRunStatus,
	} {
		m.cancel(s)
	}
}

// cancel terminates a run that has not finished and forgets it.
func (m *machine) cancel(s **v1alpha1.RolloutAnalysisRunStatus) {
	if *s == nil {
		return
	}
	if !m.runPhase(*s).Completed() {
		m.out.Cancel = append(m.out.Cancel, (*s).Name)
	}
	*s = nil
}

// runPhase refreshes a run's recorded status from the observed run.
func (m *machine) runPhase(s *v1alpha1.RolloutAnalysisRunStatus) v1alpha1.AnalysisPhase {
	if r, ok := m.in.AnalysisRuns[s.Name]; ok {
		if r.Phase == "" {
			r.Phase = v1alpha1.AnalysisPhasePending
		}
		s.Status, s.Message = r.Phase, r.Message
	}
	return s.Status
}

// analysis drives one AnalysisRun: it asks for the run when there is none,
// and returns the run's phase.
func (m *machine) analysis(s **v1alpha1.RolloutAnalysisRunStatus, kind AnalysisKind, step int32, base string, a *v1alpha1.RolloutAnalysis) v1alpha1.AnalysisPhase {
	if *s == nil {
		name := m.freeName(base)
		*s = &v1alpha1.RolloutAnalysisRunStatus{Name: name, Status: v1alpha1.AnalysisPhasePending}
		m.out.Create = append(m.out.Create, CreateAnalysis{Name: name, Kind: kind, StepIndex: step, PodHash: m.in.PodHash, Analysis: *a.DeepCopy()})
		m.progressed = true
		return v1alpha1.AnalysisPhasePending
	}
	return m.runPhase(*s)
}

// freeName picks base, or base.1, base.2, ... when a run of that name
// exists already (a retry, or a step run again), as Argo does.
func (m *machine) freeName(base string) string {
	name := base
	for i := 1; ; i++ {
		if _, taken := m.in.AnalysisRuns[name]; !taken && !slices.ContainsFunc(m.out.Create, func(c CreateAnalysis) bool { return c.Name == name }) {
			return name
		}
		name = fmt.Sprintf("%s.%d", base, i)
	}
}

func (m *machine) runName(suffix string) string {
	return fmt.Sprintf("%s-%s-%s", m.r.Name, m.in.PodHash, suffix)
}

// resumed reports (once) that the user promoted a Rollout the controller
// had paused: its pause conditions were cleared.
func (m *machine) resumed() bool {
	if m.st.ControllerPause && len(m.st.PauseConditions) == 0 {
		m.st.ControllerPause = false
		return true
	}
	return false
}

// pauseFor adds a pause condition unless it is there, and returns it.
func (m *machine) pauseFor(reason v1alpha1.PauseReason) *v1alpha1.PauseCondition {
	for i := range m.st.PauseConditions {
		if m.st.PauseConditions[i].Reason == reason {
			return &m.st.PauseConditions[i]
		}
	}
	m.st.PauseConditions = append(m.st.PauseConditions, v1alpha1.PauseCondition{Reason: reason, StartTime: metav1.NewTime(m.in.Now)})
	m.st.ControllerPause = true
	return &m.st.PauseConditions[len(m.st.PauseConditions)-1]
}

func (m *machine) unpause(reason v1alpha1.PauseReason) {
	m.st.PauseConditions = slices.DeleteFunc(m.st.PauseConditions, func(c v1alpha1.PauseCondition) bool { return c.Reason == reason })
	if len(m.st.PauseConditions) == 0 {
		m.st.ControllerPause = false
	}
}

// scaleDownOld scales every ReplicaSet other than keep down, after delay
// (recorded as a deadline on the ReplicaSet, so it survives restarts).
func (m *machine) scaleDownOld(delay time.Duration, keep ...string) {
	for _, r := range m.in.ReplicaSets {
		if slices.Contains(keep, r.Hash) {
			continue
		}
		m.scaleDown(r, delay)
	}
}

func (m *machine) scaleDown(r ReplicaSet, delay time.Duration) {
	if m.scaling == nil {
		m.scaling = map[string]bool{}
	}
	m.scaling[r.Hash] = true
	if r.Replicas == 0 {
		m.out.Replicas[r.Hash] = 0
		return
	}
	at := r.ScaleDownDeadline
	if at.IsZero() {
		at = m.in.Now.Add(delay)
	}
	if !m.in.Now.Before(at) {
		m.out.Replicas[r.Hash] = 0
		return
	}
	m.out.Replicas[r.Hash] = r.Replicas
	if r.ScaleDownDeadline.IsZero() {
		m.out.ScaleDowns = append(m.out.ScaleDowns, ScaleDown{Hash: r.Hash, At: at})
	}
	m.at(at)
}

// limitDelayed applies scaleDownDelayRevisionLimit as Argo does: of the old
// ReplicaSets still running while they wait for their scale-down deadline,
// the newest limit (by revision) keep running and the others go to 0 now.
// The current template's ReplicaSet (an aborted canary or preview waiting
// for abortScaleDownDelaySeconds) is not an old one and is not counted.
func (m *machine) limitDelayed() {
	var limit *int32
	if c := m.r.Spec.Strategy.Canary; c != nil {
		limit = c.ScaleDownDelayRevisionLimit
	} else if bg := m.r.Spec.Strategy.BlueGreen; bg != nil {
		limit = bg.ScaleDownDelayRevisionLimit
	}
	if limit == nil {
		return
	}
	var waiting []ReplicaSet
	for _, r := range m.in.ReplicaSets {
		if r.Hash != m.in.PodHash && m.scaling[r.Hash] && m.out.Replicas[r.Hash] > 0 {
			waiting = append(waiting, r)
		}
	}
	slices.SortStableFunc(waiting, func(a, b ReplicaSet) int { return cmp.Compare(b.Revision, a.Revision) })
	for i, r := range waiting {
		if i < int(*limit) {
			continue
		}
		m.out.Replicas[r.Hash] = 0
		m.out.ScaleDowns = slices.DeleteFunc(m.out.ScaleDowns, func(sd ScaleDown) bool { return sd.Hash == r.Hash })
	}
}

func seconds(p *int32, def int32) time.Duration {
	if p != nil {
		return time.Duration(*p) * time.Second
	}
	return time.Duration(def) * time.Second
}

// weightedReplicas is ceil(weight% × n), as Argo rounds.
func weightedReplicas(n, weight int32) int32 {
	return int32(math.Ceil(float64(n) * float64(weight) / 100))
}

func stepsHash(r *v1alpha1.Rollout) string {
	b, _ := json.Marshal(r.Spec.Strategy.Canary.Steps)
	h := fnv.New32a()
	h.Write(b)
	return strconv.FormatUint(uint64(h.Sum32()), 16)
}

func ptr[T any](v T) *T { return &v }

// counts fills the replica counts and the scale subresource's fields.
func (m *machine) counts() {
	var total, ready, avail int32
	for _, r := range m.in.ReplicaSets {
		total += r.Replicas
		ready += r.Ready
		avail += r.Available
	}
	cur := m.rs(m.in.PodHash)
	if m.st.Replicas != total || m.st.AvailableReplicas != avail || m.st.UpdatedReplicas != cur.Replicas || m.st.ReadyReplicas != ready {
		if avail > m.st.AvailableReplicas || cur.Replicas != m.st.UpdatedReplicas {
			m.progressed = true
		}
	}
	m.st.Replicas, m.st.ReadyReplicas, m.st.AvailableReplicas, m.st.UpdatedReplicas = total, ready, avail, cur.Replicas
	sel := ""
	if s, err := metav1.LabelSelectorAsSelector(m.r.Spec.Selector); err == nil && m.r.Spec.Selector != nil {
		sel = s.String()
	}
	if m.r.Spec.Strategy.BlueGreen != nil && m.st.BlueGreen.ActiveSelector != "" {
		active := v1alpha1.DefaultRolloutUniqueLabelKey + "=" + m.st.BlueGreen.ActiveSelector
		if sel != "" {
			sel += "," + active
		} else {
			sel = active
		}
		m.st.HPAReplicas = m.rs(m.st.BlueGreen.ActiveSelector).Replicas
	} else {
		m.st.HPAReplicas = total
	}
	m.st.Selector = sel
}

// phase computes phase, message and conditions, as Argo's
// CalculateRolloutPhase does, and enforces the progress deadline.
func (m *machine) phase(wasPaused bool) {
	now := m.in.Now
	paused := m.r.Spec.Paused || len(m.st.PauseConditions) > 0
	n := m.replicas()
	complete := m.st.StableRS == m.in.PodHash && m.st.UpdatedReplicas >= n && m.st.AvailableReplicas >= n && m.st.Replicas <= m.st.UpdatedReplicas
	if bg := m.r.Spec.Strategy.BlueGreen; bg != nil && m.st.BlueGreen.ActiveSelector != m.in.PodHash {
		complete = false
	}

	if m.progressed || (wasPaused && !paused) {
		// Progress restarts the deadline; so does leaving a pause, since
		// time paused is not counted.
		m.setCondition(v1alpha1.RolloutProgressing, corev1.ConditionTrue, "ReplicaSetUpdated", fmt.Sprintf("ReplicaSet %q is progressing", m.in.PodHash))
		m.progressCondition().LastUpdateTime = metav1.NewTime(now)
	}
	deadline := seconds(m.r.Spec.ProgressDeadlineSeconds, DefaultProgressDeadlineSeconds)
	exceeded := false
	waiting := m.waitingForPods()
	if !waiting && !complete && !m.st.Abort && m.progressCondition().Reason == "ReplicaSetUpdated" {
		// The pods are there: the Rollout waits on a step (an analysis, a
		// pause), which the progress deadline does not measure (as Argo).
		m.setCondition(v1alpha1.RolloutProgressing, corev1.ConditionTrue, "NewReplicaSetAvailable", fmt.Sprintf("ReplicaSet %q is available", m.in.PodHash))
	}
	if !paused && !complete && !m.st.Abort && (waiting || m.progressCondition().Reason == "ProgressDeadlineExceeded") {
		last := m.progressCondition().LastUpdateTime.Time
		if c := m.progressCondition(); c.Reason == "ProgressDeadlineExceeded" {
			exceeded = true
		} else if !now.Before(last.Add(deadline)) {
			exceeded = true
			m.setCondition(v1alpha1.RolloutProgressing, corev1.ConditionFalse, "ProgressDeadlineExceeded", fmt.Sprintf("ReplicaSet %q has timed out progressing.", m.in.PodHash))
			if m.r.Spec.ProgressDeadlineAbort {
				// Abort now: a second pass applies the abort to traffic
				// and replicas.
				m.st.Abort = true
				m.abortReason = "ProgressDeadlineExceeded"
				m.progressedAbort()
			}
		} else {
			m.at(last.Add(deadline))
		}
	}

	switch {
	case m.st.Abort:
		// Argo names the revision number (its ReplicaSet's
		// rollout.argoproj.io/revision); the hash when it is not known.
		rev := m.in.PodHash
		if r := m.rs(m.in.PodHash).Revision; r > 0 {
			rev = strconv.FormatInt(r, 10)
		}
		msg := "RolloutAborted: Rollout aborted update to revision " + rev
		if m.abortReason != "" {
			msg += ": " + m.abortReason
		} else if m.st.Phase == v1alpha1.RolloutPhaseDegraded && strings.HasPrefix(m.st.Message, msg) {
			// Keep the reason given when the abort was decided.
			msg = m.st.Message
		}
		m.st.Phase = v1alpha1.RolloutPhaseDegraded
		m.st.Message = msg
		m.setCondition(v1alpha1.RolloutProgressing, corev1.ConditionFalse, "RolloutAborted", msg)
	case exceeded:
		m.st.Phase = v1alpha1.RolloutPhaseDegraded
		m.st.Message = "ProgressDeadlineExceeded: " + m.progressCondition().Message
	case paused:
		m.st.Phase = v1alpha1.RolloutPhasePaused
		if len(m.st.PauseConditions) > 0 {
			m.st.Message = string(m.st.PauseConditions[0].Reason)
		} else {
			m.st.Message = "manually paused"
		}
	case !complete:
		m.st.Phase = v1alpha1.RolloutPhaseProgressing
		switch {
		case m.st.UpdatedReplicas < n && m.st.StableRS != m.in.PodHash && m.r.Spec.Strategy.BlueGreen == nil:
			m.st.Message = "more replicas need to be updated"
		case m.st.StableRS != m.in.PodHash && m.r.Spec.Strategy.Canary != nil:
			m.st.Message = "waiting for all steps to complete"
		case m.r.Spec.Strategy.BlueGreen != nil && m.st.BlueGreen.ActiveSelector != m.in.PodHash:
			m.st.Message = "active service cutover pending"
		case m.st.AvailableReplicas < m.st.UpdatedReplicas || m.st.UpdatedReplicas < n:
			m.st.Message = "updated replicas are still becoming available"
		default:
			m.st.Message = "old replicas are pending termination"
		}
	default:
		m.st.Phase = v1alpha1.RolloutPhaseHealthy
		m.st.Message = ""
		m.setCondition(v1alpha1.RolloutProgressing, corev1.ConditionTrue, "NewReplicaSetAvailable", fmt.Sprintf("ReplicaSet %q has successfully progressed.", m.in.PodHash))
	}
	pausedStatus := corev1.ConditionFalse
	if paused {
		pausedStatus = corev1.ConditionTrue
	}
	m.setCondition(v1alpha1.RolloutPaused, pausedStatus, "RolloutPaused", "Rollout is paused")
	done := corev1.ConditionFalse
	if m.st.StableRS == m.in.PodHash {
		done = corev1.ConditionTrue
	}
	m.setCondition(v1alpha1.RolloutCompleted, done, "RolloutCompleted", "Rollout completed update to revision "+m.st.StableRS)
	healthy := corev1.ConditionFalse
	if m.st.Phase == v1alpha1.RolloutPhaseHealthy {
		healthy = corev1.ConditionTrue
	}
	m.setCondition(v1alpha1.RolloutHealthy, healthy, "RolloutHealthy", "Rollout is healthy")
	avail := corev1.ConditionFalse
	if m.st.AvailableReplicas >= n {
		avail = corev1.ConditionTrue
	}
	m.setCondition(v1alpha1.RolloutAvailable, avail, "AvailableReason", "Rollout has minimum availability")
}

// progressedAbort applies an abort decided after the strategy ran (the
// progress deadline): traffic and replicas are decided again.
func (m *machine) progressedAbort() {
	reason := m.abortReason
	m.out = Output{Replicas: map[string]int32{}, Cancel: m.out.Cancel}
	if m.r.Spec.Strategy.Canary != nil {
		m.canary()
	} else {
		m.blueGreen()
	}
	m.abortReason = reason
}

// waitingForPods reports whether a ReplicaSet being scaled up has fewer
// available pods than it is to have.
func (m *machine) waitingForPods() bool {
	for h, n := range m.out.Replicas {
		if r := m.rs(h); n > 0 && r.Available < n && r.ScaleDownDeadline.IsZero() {
			return true
		}
	}
	return false
}

func (m *machine) progressCondition() *v1alpha1.RolloutCondition {
	for i := range m.st.Conditions {
		if m.st.Conditions[i].Type == v1alpha1.RolloutProgressing {
			return &m.st.Conditions[i]
		}
	}
	m.setCondition(v1alpha1.RolloutProgressing, corev1.ConditionTrue, "NewReplicaSetCreated", "")
	return m.progressCondition()
}

func (m *machine) setCondition(t v1alpha1.RolloutConditionType, s corev1.ConditionStatus, reason, msg string) {
	now := metav1.NewTime(m.in.Now)
	for i := range m.st.Conditions {
		c := &m.st.Conditions[i]
		if c.Type != t {
			continue
		}
		if c.Status != s {
			c.LastTransitionTime = now
		}
		if c.Status != s || c.Reason != reason || c.Message != msg {
			c.LastUpdateTime = now
		}
		c.Status, c.Reason, c.Message = s, reason, msg
		return
	}
	m.st.Conditions = append(m.st.Conditions, v1alpha1.RolloutCondition{Type: t, Status: s, Reason: reason, Message: msg, LastUpdateTime: now, LastTransitionTime: now})
}

func removeCondition(cs []v1alpha1.RolloutCondition, t v1alpha1.RolloutConditionType) []v1alpha1.RolloutCondition {
	return slices.DeleteFunc(cs, func(c v1alpha1.RolloutCondition) bool { return c.Type == t })
}

// Promote is `meridian rollout promote`: it resumes a paused Rollout (spec
// and pause conditions) or, when not paused, skips the current canary
// step. full is `promote --full`: every remaining step, pause and analysis
// is skipped.
func Promote(r *v1alpha1.Rollout, full bool) {
	if full {
		r.Status.PromoteFull = true
	}
	if r.Spec.Paused || len(r.Status.PauseConditions) > 0 {
		r.Spec.Paused = false
		r.Status.PauseConditions = nil
		return
	}
	if !full && r.Spec.Strategy.Canary != nil && r.Status.CurrentStepIndex != nil && int(*r.Status.CurrentStepIndex) < len(r.Spec.Strategy.Canary.Steps) {
		r.Status.CurrentStepIndex = ptr(*r.Status.CurrentStepIndex + 1)
	}
}

// Abort is `meridian rollout abort`.
func Abort(r *v1alpha1.Rollout) { r.Status.Abort = true }

// Retry is `meridian rollout retry`: an aborted Rollout starts its steps
// again.
func Retry(r *v1alpha1.Rollout) {
	r.Status.Abort = false
	r.Status.PauseConditions = nil
}

func metavNow(t time.Time) metav1.Time { return metav1.NewTime(t) }

// deadlines keeps one deadline per ReplicaSet and clears the deadlines of
// ReplicaSets no longer being scaled down.
func (m *machine) deadlines() {
	var sd []ScaleDown
	for _, d := range m.out.ScaleDowns {
		if !slices.ContainsFunc(sd, func(x ScaleDown) bool { return x.Hash == d.Hash }) {
			sd = append(sd, d)
		}
	}
	m.out.ScaleDowns = sd
	for _, r := range m.in.ReplicaSets {
		if !r.ScaleDownDeadline.IsZero() && !m.scaling[r.Hash] {
			m.out.ClearScaleDowns = append(m.out.ClearScaleDowns, r.Hash)
		}
	}
}
