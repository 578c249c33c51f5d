package steps

import (
	"fmt"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// canary runs the canary strategy.
func (m *machine) canary() {
	c := m.r.Spec.Strategy.Canary
	steps := c.Steps
	nSteps := int32(len(steps))
	n := m.replicas()
	h := m.in.PodHash
	routed := c.TrafficRouting != nil
	m.newRevision()

	if m.st.Abort {
		m.canaryAbort()
		return
	}
	if m.st.AbortedAt != nil {
		// Retry: the abort was lifted; the steps start again.
		m.st.AbortedAt = nil
		m.st.CurrentStepIndex = ptr(int32(0))
		m.progressed = true
	}
	if m.st.PromoteFull && m.st.StableRS != h {
		m.cancel(&m.st.Canary.CurrentStepAnalysisRunStatus)
		m.st.PauseConditions = nil
		m.st.ControllerPause = false
		m.st.CurrentStepIndex = ptr(nSteps)
	}
	resumed := m.resumed()

	// A step run that belongs to another step (the user skipped it) is
	// cancelled.
	if s := m.st.Canary.CurrentStepAnalysisRunStatus; s != nil && !m.ownsStepRun(s.Name, *m.st.CurrentStepIndex) {
		m.cancel(&m.st.Canary.CurrentStepAnalysisRunStatus)
	}

steps:
	for m.st.StableRS != h && *m.st.CurrentStepIndex < nSteps && !m.r.Spec.Paused {
		i := *m.st.CurrentStepIndex
		step := &steps[i]
		next := func() {
			m.st.CurrentStepIndex = ptr(i + 1)
			m.progressed = true
		}
		switch {
		case step.SetWeight != nil, step.SetCanaryScale != nil:
			want, _ := m.canaryScale(i)
			if m.rs(h).Available < want {
				break steps
			}
			next()
		case step.SetHeaderRoute != nil:
			next()
		case step.Pause != nil:
			d, timed, _ := step.Pause.PauseDuration()
			if resumed {
				m.unpause(v1alpha1.PauseReasonCanaryPauseStep)
				resumed = false
				next()
				continue
			}
			pc := m.pauseFor(v1alpha1.PauseReasonCanaryPauseStep)
			if !timed {
				break steps
			}
			end := pc.StartTime.Add(d)
			if m.in.Now.Before(end) {
				m.at(end)
				break steps
			}
			m.unpause(v1alpha1.PauseReasonCanaryPauseStep)
			next()
		case step.Analysis != nil:
			s := &m.st.Canary.CurrentStepAnalysisRunStatus
			if resumed && *s != nil && (*s).Status == v1alpha1.AnalysisPhaseInconclusive {
				// Promoting an inconclusive analysis accepts it.
				m.unpause(v1alpha1.PauseReasonInconclusiveAnalysis)
				resumed = false
				*s = nil
				next()
				continue
			}
			switch m.analysis(s, AnalysisStep, i, m.runName(fmt.Sprint(i)), step.Analysis) {
			case v1alpha1.AnalysisPhaseSuccessful:
				*s = nil
				next()
				continue
			case v1alpha1.AnalysisPhaseFailed, v1alpha1.AnalysisPhaseError:
				m.st.Abort = true
				m.abortReason = analysisReason(*s)
				m.canaryAbort()
				return
			case v1alpha1.AnalysisPhaseInconclusive:
				m.pauseFor(v1alpha1.PauseReasonInconclusiveAnalysis)
			}
			break steps
		default:
			next()
		}
	}

	// Background analysis, from its starting step until promotion.
	if bg := c.Analysis; bg != nil && m.st.StableRS != h {
		start := int32(0)
		if bg.StartingStep != nil {
			start = *bg.StartingStep
		}
		s := &m.st.Canary.CurrentBackgroundAnalysisRunStatus
		if *m.st.CurrentStepIndex >= start || *s != nil {
			switch m.analysis(s, AnalysisBackground, 0, m.runName("bg"), &bg.RolloutAnalysis) {
			case v1alpha1.AnalysisPhaseFailed, v1alpha1.AnalysisPhaseError:
				m.st.Abort = true
				m.abortReason = analysisReason(*s)
				m.canaryAbort()
				return
			case v1alpha1.AnalysisPhaseInconclusive:
				m.pauseFor(v1alpha1.PauseReasonInconclusiveAnalysis)
			}
		}
	}

	// All steps done: the canary is scaled fully, then promoted.
	if m.st.StableRS != h && *m.st.CurrentStepIndex >= nSteps && !m.r.Spec.Paused && len(m.st.PauseConditions) == 0 {
		if m.rs(h).Available >= n {
			m.st.StableRS = h
			m.st.PromoteFull = false
			m.cancel(&m.st.Canary.CurrentBackgroundAnalysisRunStatus)
			m.cancel(&m.st.Canary.CurrentStepAnalysisRunStatus)
			m.progressed = true
		}
	}

	// Replicas and traffic.
	stable := m.st.StableRS
	delay := time.Duration(0)
	if routed {
		delay = seconds(c.ScaleDownDelaySeconds, DefaultScaleDownDelaySeconds)
	}
	if stable == h {
		m.out.Replicas[h] = n
		m.scaleDownOld(delay, h)
		m.setWeights(0, h, stable)
		m.out.HeaderRoute = nil
		m.st.Canary.CurrentStepAnalysisRunStatus = nil
		return
	}
	idx := *m.st.CurrentStepIndex
	canaryWant, weight := m.canaryScale(idx)
	m.out.Replicas[h] = canaryWant
	stableWant := n
	if !routed || c.DynamicStableScale {
		stableWant = weightedReplicas(n, 100-weight)
	}
	m.out.Replicas[stable] = stableWant
	m.scaleDownOld(delay, h, stable)
	if routed {
		// Traffic moves to the canary only once it has the pods for it;
		// until then it keeps the previous step's weight (Argo's rule).
		if m.rs(h).Available < canaryWant {
			weight = m.previousWeight(idx)
		}
		m.setWeights(weight, h, stable)
		m.out.HeaderRoute = m.headerRoute(idx)
	}
}

// canaryAbort sends all traffic back to stable at once and scales the
// canary down after abortScaleDownDelaySeconds (0: it is kept).
func (m *machine) canaryAbort() {
	c := m.r.Spec.Strategy.Canary
	h, stable, n := m.in.PodHash, m.st.StableRS, m.replicas()
	if m.st.AbortedAt == nil {
		m.st.AbortedAt = ptr(metavNow(m.in.Now))
		m.progressed = true
	}
	m.cancel(&m.st.Canary.CurrentStepAnalysisRunStatus)
	m.cancel(&m.st.Canary.CurrentBackgroundAnalysisRunStatus)
	m.st.CurrentStepIndex = ptr(int32(0))
	m.st.PauseConditions = nil
	m.st.ControllerPause = false
	m.out.Replicas[stable] = n
	if h == stable {
		m.scaleDownOld(0, stable)
		m.setWeights(0, h, stable)
		return
	}
	if c.TrafficRouting == nil {
		// Without traffic routing the replicas are the split: the canary
		// goes at once.
		m.scaleDownOld(0, stable)
	} else {
		delay := seconds(c.AbortScaleDownDelaySeconds, DefaultAbortScaleDownDelay)
		for _, r := range m.in.ReplicaSets {
			switch {
			case r.Hash == stable:
			case r.Hash == h && delay == 0:
				m.out.Replicas[h] = r.Replicas
			case r.Hash == h:
				// The delay runs from the abort, not from this pass.
				if r.ScaleDownDeadline.IsZero() {
					r.ScaleDownDeadline = m.st.AbortedAt.Add(delay)
					if m.in.Now.Before(r.ScaleDownDeadline) {
						m.out.ScaleDowns = append(m.out.ScaleDowns, ScaleDown{Hash: h, At: r.ScaleDownDeadline})
					}
				}
				m.scaleDown(r, delay)
			default:
				m.scaleDown(r, seconds(c.ScaleDownDelaySeconds, DefaultScaleDownDelaySeconds))
			}
		}
	}
	m.setWeights(0, h, stable)
	m.out.HeaderRoute = nil
}

// canaryScale is the canary's desired replicas and traffic weight at step
// idx (len(steps): the end, 100%): the last setWeight up to it, and the
// last setCanaryScale up to it unless matchTrafficWeight reset it.
func (m *machine) canaryScale(idx int32) (replicas, weight int32) {
	c := m.r.Spec.Strategy.Canary
	n := m.replicas()
	if int(idx) >= len(c.Steps) {
		return n, 100
	}
	var scale *v1alpha1.SetCanaryScale
	for i := int32(0); i <= idx; i++ {
		s := &c.Steps[i]
		if s.SetWeight != nil {
			weight = *s.SetWeight
		}
		if s.SetCanaryScale != nil {
			scale = s.SetCanaryScale
			if scale.MatchTrafficWeight {
				scale = nil
			}
		}
	}
	replicas = weightedReplicas(n, weight)
	if scale != nil && c.TrafficRouting != nil {
		switch {
		case scale.Replicas != nil:
			replicas = *scale.Replicas
		case scale.Weight != nil:
			replicas = weightedReplicas(n, *scale.Weight)
		}
	}
	if mp := c.MinPodsPerReplicaSet; mp != nil && c.TrafficRouting != nil && replicas > 0 && replicas < *mp {
		replicas = *mp
	}
	return replicas, weight
}

// previousWeight is the weight before step idx.
func (m *machine) previousWeight(idx int32) int32 {
	steps := m.r.Spec.Strategy.Canary.Steps
	for i := min(int(idx), len(steps)) - 1; i >= 0; i-- {
		if w := steps[i].SetWeight; w != nil {
			return *w
		}
	}
	return 0
}

// headerRoute is the header route set by the last setHeaderRoute up to idx
// (one with no match removes it).
func (m *machine) headerRoute(idx int32) *v1alpha1.SetHeaderRoute {
	steps := m.r.Spec.Strategy.Canary.Steps
	var hr *v1alpha1.SetHeaderRoute
	for i := 0; i <= int(idx) && i < len(steps); i++ {
		if s := steps[i].SetHeaderRoute; s != nil {
			hr = s
			if len(s.Match) == 0 {
				hr = nil
			}
		}
	}
	if hr != nil {
		hr = hr.DeepCopy()
	}
	return hr
}

func (m *machine) setWeights(canary int32, canaryHash, stableHash string) {
	c := m.r.Spec.Strategy.Canary
	m.out.Weights = Weights{Canary: canary, Stable: 100 - canary, CanaryHash: canaryHash, StableHash: stableHash}
	if c.TrafficRouting == nil {
		m.st.Canary.Weights = nil
		return
	}
	if w := m.st.Canary.Weights; w == nil || w.Canary.Weight != canary || w.Canary.PodTemplateHash != canaryHash || w.Stable.PodTemplateHash != stableHash {
		m.progressed = true
	}
	m.st.Canary.Weights = &v1alpha1.TrafficWeights{
		Canary: v1alpha1.WeightDestination{Weight: canary, ServiceName: c.CanaryService, PodTemplateHash: canaryHash},
		Stable: v1alpha1.WeightDestination{Weight: 100 - canary, ServiceName: c.StableService, PodTemplateHash: stableHash},
	}
}

// ownsStepRun reports whether run name is step idx's run (base, or base.N
// after retries).
func (m *machine) ownsStepRun(name string, idx int32) bool {
	base := m.runName(fmt.Sprint(idx))
	return name == base || strings.HasPrefix(name, base+".")
}

func analysisReason(s *v1alpha1.RolloutAnalysisRunStatus) string {
	if s == nil {
		return ""
	}
	msg := fmt.Sprintf("AnalysisRun %q %s", s.Name, s.Status)
	if s.Message != "" {
		msg += ": " + s.Message
	}
	return msg
}
