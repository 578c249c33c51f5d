package steps

import (
	"time"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// blueGreen runs the blue-green strategy: the new ReplicaSet comes up behind
// the preview Service, is judged (prePromotionAnalysis), waits for promotion
// (autoPromotionEnabled, autoPromotionSeconds), takes the active Service at
// once, is judged again (postPromotionAnalysis), and only then becomes
// stable; the old ReplicaSet is scaled down after scaleDownDelaySeconds.
func (m *machine) blueGreen() {
	bg := m.r.Spec.Strategy.BlueGreen
	n := m.replicas()
	h := m.in.PodHash
	m.newRevision()
	st := &m.st.BlueGreen
	if st.ActiveSelector == "" {
		st.ActiveSelector = m.st.StableRS
	}
	stable := m.st.StableRS
	delay := seconds(bg.ScaleDownDelaySeconds, DefaultScaleDownDelaySeconds)

	if m.st.Abort && h != stable {
		if m.st.AbortedAt == nil {
			m.st.AbortedAt = ptr(metavNow(m.in.Now))
			m.progressed = true
		}
		m.cancel(&st.PrePromotionAnalysisRunStatus)
		m.cancel(&st.PostPromotionAnalysisRunStatus)
		m.st.PauseConditions = nil
		m.st.ControllerPause = false
		st.ActiveSelector = stable
		st.ScaleUpPreviewCheckPoint = false
		m.out.Replicas[stable] = n
		abortDelay := seconds(bg.AbortScaleDownDelaySeconds, DefaultAbortScaleDownDelay)
		for _, r := range m.in.ReplicaSets {
			switch {
			case r.Hash == stable:
			case r.Hash == h && abortDelay == 0:
				m.out.Replicas[h] = r.Replicas
			case r.Hash == h:
				if r.ScaleDownDeadline.IsZero() {
					r.ScaleDownDeadline = m.st.AbortedAt.Add(abortDelay)
					if m.in.Now.Before(r.ScaleDownDeadline) {
						m.out.ScaleDowns = append(m.out.ScaleDowns, ScaleDown{Hash: h, At: r.ScaleDownDeadline})
					}
				}
				m.scaleDown(r, abortDelay)
			default:
				m.scaleDown(r, delay)
			}
		}
		m.bgWeights()
		return
	}
	if !m.st.Abort && m.st.AbortedAt != nil {
		// Retry.
		m.st.AbortedAt = nil
		m.progressed = true
	}

	if h == stable {
		// Healthy, or rolled back to the stable revision: no preview, no
		// analysis.
		m.cancel(&st.PrePromotionAnalysisRunStatus)
		m.cancel(&st.PostPromotionAnalysisRunStatus)
		st.ActiveSelector, st.PreviewSelector = h, h
		m.out.Replicas[h] = n
		m.scaleDownOld(delay, h)
		m.bgWeights()
		return
	}

	// The user's promote (or an elapsed autoPromotionSeconds) leaves
	// controllerPause set with no pause condition: it holds until the
	// switch, so the Rollout does not pause again on the way.
	resumed := m.st.ControllerPause && len(m.st.PauseConditions) == 0
	if bg.PreviewService != "" {
		st.PreviewSelector = h
	}
	want := n
	if bg.PreviewReplicaCount != nil && !st.ScaleUpPreviewCheckPoint && st.ActiveSelector != h {
		want = *bg.PreviewReplicaCount
	}
	m.out.Replicas[h] = want
	m.out.Replicas[stable] = n
	m.scaleDownOld(delay, h, stable)
	defer m.bgWeights()

	if st.ActiveSelector != h {
		if m.r.Spec.Paused || m.rs(h).Available < want {
			return
		}
		if pre := bg.PrePromotionAnalysis; pre != nil && !m.st.PromoteFull {
			s := &st.PrePromotionAnalysisRunStatus
			if !(resumed && *s != nil && (*s).Status == v1alpha1.AnalysisPhaseInconclusive) {
				switch m.analysis(s, AnalysisPrePromotion, 0, m.runName("pre"), pre) {
				case v1alpha1.AnalysisPhaseSuccessful:
				case v1alpha1.AnalysisPhaseFailed, v1alpha1.AnalysisPhaseError:
					m.st.Abort = true
					m.abortReason = analysisReason(*s)
					m.blueGreen()
					return
				case v1alpha1.AnalysisPhaseInconclusive:
					m.pauseFor(v1alpha1.PauseReasonInconclusiveAnalysis)
					return
				default:
					return
				}
			} else {
				// Promoting an inconclusive analysis accepts it.
				(*s).Status = v1alpha1.AnalysisPhaseSuccessful
			}
		}
		if !m.st.PromoteFull && !resumed {
			auto := bg.AutoPromotionEnabled == nil || *bg.AutoPromotionEnabled
			switch {
			case !auto:
				m.pauseFor(v1alpha1.PauseReasonBlueGreenPause)
				return
			case bg.AutoPromotionSeconds > 0:
				pc := m.pauseFor(v1alpha1.PauseReasonBlueGreenPause)
				end := pc.StartTime.Add(time.Duration(bg.AutoPromotionSeconds) * time.Second)
				if m.in.Now.Before(end) {
					m.at(end)
					return
				}
				m.unpause(v1alpha1.PauseReasonBlueGreenPause)
				m.st.ControllerPause = true
			}
		}
		if bg.PreviewReplicaCount != nil && !st.ScaleUpPreviewCheckPoint {
			st.ScaleUpPreviewCheckPoint = true
			m.out.Replicas[h] = n
			m.progressed = true
		}
		if m.rs(h).Available < n {
			return
		}
		// The switch: the active Service selects the new pods, at once.
		st.ActiveSelector = h
		m.st.ControllerPause = false
		resumed = false
		m.progressed = true
	}
	m.out.Replicas[h] = n

	if post := bg.PostPromotionAnalysis; post != nil && !m.st.PromoteFull {
		s := &st.PostPromotionAnalysisRunStatus
		if !(resumed && *s != nil && (*s).Status == v1alpha1.AnalysisPhaseInconclusive) {
			switch m.analysis(s, AnalysisPostPromotion, 0, m.runName("post"), post) {
			case v1alpha1.AnalysisPhaseSuccessful:
			case v1alpha1.AnalysisPhaseFailed, v1alpha1.AnalysisPhaseError:
				m.st.Abort = true
				m.abortReason = analysisReason(*s)
				m.blueGreen()
				return
			case v1alpha1.AnalysisPhaseInconclusive:
				m.pauseFor(v1alpha1.PauseReasonInconclusiveAnalysis)
				return
			default:
				return
			}
		}
		m.st.ControllerPause = false
	}
	// Promoted: the new ReplicaSet is stable; the old one goes after the
	// delay, once every proxy has stopped sending to it.
	m.st.StableRS = h
	m.st.PromoteFull = false
	m.progressed = true
	m.scaleDownOld(delay, h)
}

func (m *machine) bgWeights() {
	a := m.st.BlueGreen.ActiveSelector
	m.out.Weights = Weights{Stable: 100, StableHash: a, CanaryHash: m.in.PodHash}
}
