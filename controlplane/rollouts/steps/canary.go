package steps

import (
	"fmt"
	"math"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

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
			if !m.atTarget(i) {
				break steps
			}
			if step.SetWeight != nil && routed && !m.weightVerified(i) {
				// Argo's rule: a setWeight step is done once the router
				// verified the weight, so a pause after it runs at it.
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
		if m.rs(h).Available >= n && m.rs(h).Replicas >= n {
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
	canaryWant, stableWant, weight := m.targets(idx)
	if !routed {
		canaryWant, stableWant = m.pace(canaryWant, stableWant)
	}
	m.out.Replicas[h] = canaryWant
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

// targets is where step idx takes the canary and the stable: their replicas
// and the canary's traffic weight. With traffic routing the canary has
// ceil(weight%) of the replicas (or its setCanaryScale) and the stable all
// of them, or with dynamicStableScale ceil((100-weight)%) but never fewer
// than the traffic it still receives needs. Without traffic routing the
// replicas are the split: the counts closest to the weight.
func (m *machine) targets(idx int32) (canary, stable, weight int32) {
	c := m.r.Spec.Strategy.Canary
	n := m.replicas()
	canary, weight = m.canaryScale(idx)
	if c.TrafficRouting == nil {
		canary, stable = approximateCounts(n, weight, m.maxSurge())
		return canary, stable, weight
	}
	stable = n
	if c.DynamicStableScale {
		scaleWeight := weight
		if sc := m.currentCanaryScale(idx); sc != nil {
			scaleWeight = 0
			if sc.Weight != nil {
				scaleWeight = *sc.Weight
			}
		}
		stable = weightedReplicas(n, 100-scaleWeight)
		if w := m.st.Canary.Weights; w != nil {
			stable = max(stable, weightedReplicas(n, w.Stable.Weight))
		}
		stable = m.minPods(stable)
	}
	return canary, stable, weight
}

// atTarget reports whether step idx's replicas are there: the canary's
// available (and, with dynamicStableScale, the stable's); without traffic
// routing, both ReplicaSets at their counts and the older ones gone.
func (m *machine) atTarget(idx int32) bool {
	c := m.r.Spec.Strategy.Canary
	canaryWant, stableWant, _ := m.targets(idx)
	cr, sr := m.rs(m.in.PodHash), m.rs(m.st.StableRS)
	if cr.Available < canaryWant {
		return false
	}
	if c.TrafficRouting != nil {
		return !c.DynamicStableScale || sr.Available >= stableWant
	}
	if cr.Replicas != canaryWant || sr.Replicas != stableWant || sr.Available < stableWant {
		return false
	}
	for _, r := range m.in.ReplicaSets {
		if r.Hash != cr.Hash && r.Hash != sr.Hash && r.Replicas > 0 {
			return false
		}
	}
	return true
}

// weightVerified reports whether the weights last written (the status as
// read) are step idx's and the router verified them, or does not verify
// (Verified unset). The reconciler writes Verified for the weights it
// routed; until it is true the step waits, and so does a pause after it.
func (m *machine) weightVerified(idx int32) bool {
	w := m.in.Rollout.Status.Canary.Weights
	_, _, weight := m.targets(idx)
	if w == nil || w.Canary.Weight != weight || w.Canary.PodTemplateHash != m.in.PodHash || w.Stable.PodTemplateHash != m.st.StableRS {
		return false
	}
	return w.Verified == nil || *w.Verified
}

// maxSurge and maxUnavailable resolve the strategy's bounds against the
// replicas (surge rounded up, unavailable down; 25% each by default).
func (m *machine) maxSurge() int32 {
	return resolveBound(m.r.Spec.Strategy.Canary.MaxSurge, m.replicas(), true)
}

func (m *machine) maxUnavailable() int32 {
	u := resolveBound(m.r.Spec.Strategy.Canary.MaxUnavailable, m.replicas(), false)
	return min(u, m.replicas())
}

func resolveBound(v *intstr.IntOrString, n int32, up bool) int32 {
	if v == nil {
		v = ptr(intstr.FromString("25%"))
	}
	x, err := intstr.GetScaledValueFromIntOrPercent(v, int(n), up)
	if err != nil || x < 0 {
		return 0
	}
	return int32(x)
}

// approximateCounts splits n replicas by weight for a canary without
// traffic routing, as Argo does: of the canary counts ceil and floor of
// weight% (and, when maxSurge allows one replica more, the same over n+1),
// the one whose share is closest to the weight; on a tie the larger. A
// weight strictly between 0 and 100 leaves at least one pod on each side
// when there are two or more.
func approximateCounts(n, weight, surge int32) (canary, stable int32) {
	if n == 0 {
		return 0, 0
	}
	type option struct{ canary, total int32 }
	exact := func(total int32) float64 { return float64(total) * float64(weight) / 100 }
	tied := func(total int32) bool { _, f := math.Modf(exact(total)); return f == 0.5 }
	hi, lo := int32(math.Ceil(exact(n))), int32(math.Floor(exact(n)))
	zeroOK := weight == 0 || weight == 100 || (n == 1 && surge == 0)
	var opts []option
	if hi < n || zeroOK {
		opts = append(opts, option{hi, n})
	}
	if !tied(n) && (lo != 0 || zeroOK) {
		opts = append(opts, option{lo, n})
	}
	if surge > 0 {
		opts = append(opts, option{hi, n + 1})
		if !tied(n+1) && (lo != 0 || zeroOK) {
			opts = append(opts, option{lo, n + 1})
		}
	}
	if len(opts) == 0 {
		return 0, n
	}
	delta := func(o option) float64 { return math.Abs(float64(o.canary)*100/float64(o.total) - float64(weight)) }
	best := opts[0]
	for _, o := range opts[1:] {
		if delta(o) < delta(best) {
			best = o
		}
	}
	return best.canary, best.total - best.canary
}

// pace moves the canary's and the stable's replicas toward their targets
// within maxSurge (pods above the replicas) and maxUnavailable (available
// pods below them), as Argo's basic canary does: scale up into the surge
// first (the stable, then the canary), scale older ReplicaSets down before
// these two, then scale down only what keeps enough pods available,
// counting the side being scaled up by its desired replicas rather than
// its available ones.
func (m *machine) pace(wantCanary, wantStable int32) (canary, stable int32) {
	n := m.replicas()
	cr, sr := m.rs(m.in.PodHash), m.rs(m.st.StableRS)
	canary, stable = cr.Replicas, sr.Replicas
	var others int32
	for _, r := range m.in.ReplicaSets {
		if r.Hash != cr.Hash && r.Hash != sr.Hash {
			others += r.Replicas
		}
	}
	maxTotal := n + m.maxSurge()
	room := maxTotal - (canary + stable + others)
	if stable < wantStable && room > 0 {
		add := min(room, wantStable-stable)
		stable += add
		room -= add
	}
	if canary < wantCanary && room > 0 {
		canary += min(room, wantCanary-canary)
	}
	if others > 0 {
		return canary, stable
	}
	minAvail := n - m.maxUnavailable()
	increasing := wantCanary >= cr.Replicas
	counted := func(r ReplicaSet, ignoreAvailability bool) int32 {
		if r.Replicas < r.Available || ignoreAvailability {
			return r.Replicas
		}
		return r.Available
	}
	total := counted(cr, !increasing) + counted(sr, increasing)
	if total <= minAvail {
		return canary, stable
	}
	down := total - minAvail
	drain := func(r ReplicaSet, want, count int32) int32 {
		if r.Replicas > want {
			return max(want, r.Replicas-down)
		}
		return count
	}
	// adjust keeps the pair within the surge, giving back to the adjusted
	// side what availability still needs.
	adjust := func(dr, ar ReplicaSet, dCount, aCount int32) (int32, int32) {
		over := max(0, aCount+dCount-maxTotal)
		avail := min(dr.Available, dCount)
		aCount -= over
		avail += min(ar.Available, aCount)
		extra := max(0, ar.Available-aCount)
		aCount += min(extra, max(0, minAvail-avail))
		dCount -= max(0, aCount+dCount-maxTotal)
		return dCount, aCount
	}
	if !increasing {
		canary = drain(cr, wantCanary, canary)
		canary, stable = adjust(cr, sr, canary, stable)
	} else {
		stable = drain(sr, wantStable, stable)
		stable, canary = adjust(sr, cr, stable, canary)
	}
	return canary, stable
}

func (m *machine) minPods(count int32) int32 {
	c := m.r.Spec.Strategy.Canary
	if count == 0 || c.MinPodsPerReplicaSet == nil || c.TrafficRouting == nil {
		return count
	}
	return max(count, *c.MinPodsPerReplicaSet)
}

// canaryAbort sends all traffic back to stable at once and scales the
// canary down after abortScaleDownDelaySeconds (0: it is kept). With
// dynamicStableScale the stable may have fewer pods than all the traffic
// needs: it is scaled back up and traffic returns to it as its pods become
// available, and the canary keeps its pods until it has no traffic left.
// Without traffic routing the replicas are the split: the canary is scaled
// down and the stable up within maxSurge and maxUnavailable.
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
	m.out.HeaderRoute = nil
	if h == stable {
		m.scaleDownOld(0, stable)
		m.setWeights(0, h, stable)
		return
	}
	if c.TrafficRouting == nil {
		canary, st := m.pace(0, n)
		m.out.Replicas[h], m.out.Replicas[stable] = canary, st
		m.scaleDownOld(0, h, stable)
		m.setWeights(0, h, stable)
		return
	}
	weight := int32(0)
	if c.DynamicStableScale && n > 0 {
		carried := m.rs(stable).Available * 100 / n
		weight = max(0, 100-carried)
		if w := m.st.Canary.Weights; w != nil {
			weight = min(weight, w.Canary.Weight)
		} else {
			weight = 0
		}
	}
	delay := seconds(c.AbortScaleDownDelaySeconds, DefaultAbortScaleDownDelay)
	for _, r := range m.in.ReplicaSets {
		switch {
		case r.Hash == stable:
		case r.Hash == h && (delay == 0 || weight > 0):
			m.out.Replicas[h] = r.Replicas
		case r.Hash == h:
			// The delay runs from the abort (with dynamicStableScale, from
			// when the canary's traffic is gone), not from this pass.
			if r.ScaleDownDeadline.IsZero() {
				from := m.st.AbortedAt.Time
				if c.DynamicStableScale {
					from = m.in.Now
				}
				r.ScaleDownDeadline = from.Add(delay)
				if m.in.Now.Before(r.ScaleDownDeadline) {
					m.out.ScaleDowns = append(m.out.ScaleDowns, ScaleDown{Hash: h, At: r.ScaleDownDeadline})
				}
			}
			m.scaleDown(r, delay)
		default:
			m.scaleDown(r, seconds(c.ScaleDownDelaySeconds, DefaultScaleDownDelaySeconds))
		}
	}
	m.setWeights(weight, h, stable)
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
	for i := int32(0); i <= idx; i++ {
		if w := c.Steps[i].SetWeight; w != nil {
			weight = *w
		}
	}
	replicas = m.minPods(weightedReplicas(n, weight))
	if sc := m.currentCanaryScale(idx); sc != nil {
		switch {
		case sc.Replicas != nil:
			replicas = *sc.Replicas
		case sc.Weight != nil:
			replicas = m.minPods(weightedReplicas(n, *sc.Weight))
		}
	}
	return replicas, weight
}

// currentCanaryScale is the setCanaryScale in effect at step idx: the last
// one up to it, unless it is matchTrafficWeight; only with traffic routing.
func (m *machine) currentCanaryScale(idx int32) *v1alpha1.SetCanaryScale {
	c := m.r.Spec.Strategy.Canary
	if c.TrafficRouting == nil {
		return nil
	}
	for i := min(int(idx), len(c.Steps)-1); i >= 0; i-- {
		if sc := c.Steps[i].SetCanaryScale; sc != nil {
			if sc.MatchTrafficWeight {
				return nil
			}
			return sc
		}
	}
	return nil
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
