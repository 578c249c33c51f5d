package rollout

import (
	"fmt"
	"strconv"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// Phase is the Rollout's phase and message as a client should read them
// (Argo Rollouts' GetRolloutPhase): the status's own only once the
// controller has seen the current generation and any promote; before that,
// Progressing with what it waits for.
func Phase(ro *v1alpha1.Rollout) (v1alpha1.RolloutPhase, string) {
	if !generationObserved(ro) {
		return v1alpha1.RolloutPhaseProgressing, "waiting for rollout spec update to be observed"
	}
	// A promote cleared the pause conditions the controller set; it has not
	// acted on it yet.
	if ro.Status.ControllerPause && len(ro.Status.PauseConditions) == 0 {
		return v1alpha1.RolloutPhaseProgressing, "waiting for rollout to unpause"
	}
	if ro.Status.Phase != "" {
		return ro.Status.Phase, ro.Status.Message
	}
	return computePhase(ro)
}

// generationObserved: observedGeneration is a string (Argo's); one that is
// not a number (an old controller's hash, or none yet) holds nothing back,
// as in Argo.
func generationObserved(ro *v1alpha1.Rollout) bool {
	g, err := strconv.ParseInt(ro.Status.ObservedGeneration, 10, 64)
	return err != nil || g >= ro.Generation
}

// computePhase is Argo's CalculateRolloutPhase, for a status the
// controller wrote without a phase.
func computePhase(ro *v1alpha1.Rollout) (v1alpha1.RolloutPhase, string) {
	for _, c := range ro.Status.Conditions {
		if c.Type == v1alpha1.InvalidSpec {
			return v1alpha1.RolloutPhaseDegraded, fmt.Sprintf("%s: %s", v1alpha1.InvalidSpec, c.Message)
		}
		if c.Reason == "RolloutAborted" || c.Reason == "ProgressDeadlineExceeded" {
			return v1alpha1.RolloutPhaseDegraded, fmt.Sprintf("%s: %s", c.Reason, c.Message)
		}
	}
	if ro.Spec.Paused {
		return v1alpha1.RolloutPhasePaused, "manually paused"
	}
	if len(ro.Status.PauseConditions) > 0 {
		return v1alpha1.RolloutPhasePaused, string(ro.Status.PauseConditions[0].Reason)
	}
	if ro.Spec.RestartAt != nil && (ro.Status.RestartedAt == nil || !ro.Spec.RestartAt.Equal(ro.Status.RestartedAt)) {
		return v1alpha1.RolloutPhaseProgressing, "rollout is restarting"
	}
	if ro.Status.UpdatedReplicas < desired(ro) {
		return v1alpha1.RolloutPhaseProgressing, "more replicas need to be updated"
	}
	if ro.Status.AvailableReplicas < ro.Status.UpdatedReplicas {
		return v1alpha1.RolloutPhaseProgressing, "updated replicas are still becoming available"
	}
	promoted := ro.Status.StableRS != "" && ro.Status.StableRS == ro.Status.CurrentPodHash
	if bg := ro.Spec.Strategy.BlueGreen; bg != nil {
		if ro.Status.BlueGreen.ActiveSelector == "" || ro.Status.BlueGreen.ActiveSelector != ro.Status.CurrentPodHash {
			return v1alpha1.RolloutPhaseProgressing, "active service cutover pending"
		}
		if !promoted {
			if s := ro.Status.BlueGreen.PostPromotionAnalysisRunStatus; bg.PostPromotionAnalysis != nil && (s == nil || !s.Status.Completed()) {
				return v1alpha1.RolloutPhaseProgressing, "waiting for analysis to complete"
			}
			return v1alpha1.RolloutPhaseProgressing, "waiting for post-promotion verification to complete"
		}
	} else if c := ro.Spec.Strategy.Canary; c != nil {
		if c.TrafficRouting == nil && ro.Status.Replicas > ro.Status.UpdatedReplicas {
			return v1alpha1.RolloutPhaseProgressing, "old replicas are pending termination"
		}
		if !promoted {
			return v1alpha1.RolloutPhaseProgressing, "waiting for all steps to complete"
		}
	}
	return v1alpha1.RolloutPhaseHealthy, ""
}

// desired is spec.replicas, 1 when unset.
func desired(ro *v1alpha1.Rollout) int32 {
	if ro.Spec.Replicas == nil {
		return 1
	}
	return *ro.Spec.Replicas
}

// Strategy is "Canary", "BlueGreen" or "unknown".
func Strategy(ro *v1alpha1.Rollout) string {
	switch {
	case ro.Spec.Strategy.Canary != nil:
		return "Canary"
	case ro.Spec.Strategy.BlueGreen != nil:
		return "BlueGreen"
	}
	return "unknown"
}

// currentStep is the canary step being run and its index; the step is nil
// when every step has run (the index is then len(steps)) or there are none
// (the index is then nil too).
func currentStep(ro *v1alpha1.Rollout) (*v1alpha1.CanaryStep, *int32) {
	c := ro.Spec.Strategy.Canary
	if c == nil || len(c.Steps) == 0 {
		return nil, nil
	}
	var i int32
	if ro.Status.CurrentStepIndex != nil {
		i = *ro.Status.CurrentStepIndex
	}
	if int(i) >= len(c.Steps) || i < 0 {
		return nil, &i
	}
	return &c.Steps[i], &i
}

// SetWeight is the weight the steps ask for at the current step (Argo's
// GetCurrentSetWeight): 0 when aborted, 100 once every step has run, else
// the last setWeight up to the current step.
func SetWeight(ro *v1alpha1.Rollout) int32 {
	if ro.Status.Abort {
		return 0
	}
	step, i := currentStep(ro)
	if step == nil {
		return 100
	}
	for j := *i; j >= 0; j-- {
		if w := ro.Spec.Strategy.Canary.Steps[j].SetWeight; w != nil {
			return *w
		}
	}
	return 0
}

// Step is "n/N" for a canary with steps, else "-".
func Step(ro *v1alpha1.Rollout) string {
	c := ro.Spec.Strategy.Canary
	if c == nil || len(c.Steps) == 0 || ro.Status.CurrentStepIndex == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d", *ro.Status.CurrentStepIndex, len(c.Steps))
}

// ActualWeight is the canary's share of traffic now (Argo's): with traffic
// routing the weight the controller set on the data plane
// (status.canary.weights); without, the canary ReplicaSet's available pods
// over the Rollout's. canaryAvailable is the former's available pods.
func ActualWeight(ro *v1alpha1.Rollout, canaryAvailable int32) string {
	c := ro.Spec.Strategy.Canary
	if c == nil {
		return "-"
	}
	if step, _ := currentStep(ro); step == nil {
		return "100"
	}
	if ro.Status.AvailableReplicas <= 0 {
		return "0"
	}
	if c.TrafficRouting == nil {
		return strconv.Itoa(int(canaryAvailable * 100 / ro.Status.AvailableReplicas))
	}
	if w := ro.Status.Canary.Weights; w != nil {
		return strconv.Itoa(int(w.Canary.Weight))
	}
	return strconv.Itoa(int(SetWeight(ro)))
}
