package dashboard

import (
	"fmt"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/cli/rollout"
	"github.com/meridian-mesh/meridian/viz/golden"
	"github.com/meridian-mesh/meridian/viz/stat"
)

// Rollout is one Rollout as the dashboard shows it.
type Rollout struct {
	Rollout        *v1alpha1.Rollout       // spec and status as stored
	Stable, Canary []golden.Proxy          // proxies of the stable and the canary pods (by pod-template hash)
	Runs           []*v1alpha1.AnalysisRun // optional: its AnalysisRuns, newest first
}

// RolloutRow is a Rollout in the snapshot: where it is in its steps, the
// weights, and the stable's and the canary's golden metrics side by side.
type RolloutRow struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Strategy  string `json:"strategy"` // Canary, BlueGreen
	// Phase and Message as Argo's clients read them (cli/rollout.Phase).
	Phase   string `json:"phase"`
	Message string `json:"message"`
	// Steps are the canary's steps as written ("setWeight: 20", "pause:
	// 30s", "pause", "analysis: success-rate"); CurrentStepIndex is
	// status.currentStepIndex (len(Steps) once all have run; null before
	// the controller set it, and without steps).
	Steps            []string `json:"steps"`
	CurrentStepIndex *int32   `json:"currentStepIndex"`
	Step             string   `json:"step"` // "n/N", "-"
	// Weights are the canary's and the stable's shares of traffic; null
	// for blue-green.
	Weights         *Weights                  `json:"weights"`
	StableHash      string                    `json:"stableHash"` // status.stableRS
	CanaryHash      string                    `json:"canaryHash"` // status.currentPodHash
	PauseConditions []v1alpha1.PauseCondition `json:"pauseConditions"`
	// PauseUntil is when the current timed pause step ends (its
	// CanaryPauseStep condition's start plus the step's duration); null
	// otherwise.
	PauseUntil *metav1.Time `json:"pauseUntil"`
	Abort      bool         `json:"abort"`
	// Analysis is the latest AnalysisRun; null without one.
	Analysis *Analysis `json:"analysis"`
	// Stable and Canary are what their pods served (inbound) over the
	// window: Kind "stable" / "canary", Name the pod-template hash. The
	// canary has no proxies once it is the stable (fully promoted).
	Stable stat.Row `json:"stable"`
	Canary stat.Row `json:"canary"`
}

// Weights are the traffic split between the canary and the stable.
type Weights struct {
	Canary int32 `json:"canary"`
	Stable int32 `json:"stable"`
	// From says where they come from: "status" (status.canary.weights,
	// what the controller set on the data plane) or "steps" (what the
	// current step asks, cli/rollout.SetWeight: without traffic routing,
	// or before the controller wrote weights).
	From string `json:"from"`
	// Verified is status.canary.weights.verified: the data plane applied
	// them.
	Verified *bool `json:"verified,omitempty"`
}

// Analysis is an AnalysisRun's phase and runSummary counts.
type Analysis struct {
	Name         string `json:"name"`
	Phase        string `json:"phase"`
	Message      string `json:"message,omitempty"`
	Successful   int32  `json:"successful"`
	Failed       int32  `json:"failed"`
	Inconclusive int32  `json:"inconclusive"`
	Error        int32  `json:"error"`
}

// newRolloutRow makes r's row; stable and canary are the pairs of reads
// of its stable's and canary's proxies.
func newRolloutRow(r Rollout, stable, canary []stat.Pair, canaryProxies int) RolloutRow {
	ro := r.Rollout
	phase, msg := rollout.Phase(ro)
	row := RolloutRow{
		Namespace: ro.Namespace, Name: ro.Name, Strategy: rollout.Strategy(ro),
		Phase: string(phase), Message: msg,
		Steps: []string{}, Step: "-",
		StableHash: ro.Status.StableRS, CanaryHash: ro.Status.CurrentPodHash,
		PauseConditions: append([]v1alpha1.PauseCondition{}, ro.Status.PauseConditions...),
		Abort:           ro.Status.Abort,
		Stable:          stat.Summarize(ro.Namespace, "stable", ro.Status.StableRS, len(r.Stable), len(r.Stable), "inbound", stable),
		Canary:          stat.Summarize(ro.Namespace, "canary", ro.Status.CurrentPodHash, canaryProxies, canaryProxies, "inbound", canary),
	}
	if c := ro.Spec.Strategy.Canary; c != nil {
		for _, s := range c.Steps {
			row.Steps = append(row.Steps, StepString(s))
		}
		if len(c.Steps) > 0 {
			row.CurrentStepIndex = ro.Status.CurrentStepIndex
		}
		row.Step = rollout.Step(ro)
		row.PauseUntil = pauseUntil(ro)
		if w := ro.Status.Canary.Weights; w != nil {
			row.Weights = &Weights{Canary: w.Canary.Weight, Stable: w.Stable.Weight, From: "status", Verified: w.Verified}
		} else {
			sw := rollout.SetWeight(ro)
			row.Weights = &Weights{Canary: sw, Stable: 100 - sw, From: "steps"}
		}
	}
	if len(r.Runs) > 0 && r.Runs[0] != nil {
		run := r.Runs[0]
		s := run.Status.RunSummary
		row.Analysis = &Analysis{Name: run.Name, Phase: string(run.Status.Phase), Message: run.Status.Message,
			Successful: s.Successful, Failed: s.Failed, Inconclusive: s.Inconclusive, Error: s.Error}
		if row.Analysis.Phase == "" {
			row.Analysis.Phase = string(v1alpha1.AnalysisPhasePending)
		}
	}
	return row
}

// pauseUntil is when the current step, a pause with a duration, ends.
func pauseUntil(ro *v1alpha1.Rollout) *metav1.Time {
	i := ro.Status.CurrentStepIndex
	steps := ro.Spec.Strategy.Canary.Steps
	if i == nil || *i < 0 || int(*i) >= len(steps) || steps[*i].Pause == nil {
		return nil
	}
	d, timed, err := steps[*i].Pause.PauseDuration()
	if !timed || err != nil {
		return nil
	}
	for _, c := range ro.Status.PauseConditions {
		if c.Reason == v1alpha1.PauseReasonCanaryPauseStep {
			t := metav1.NewTime(c.StartTime.Add(d))
			return &t
		}
	}
	return nil
}

// promoted reports whether the Rollout's canary is its stable: there is
// no canary to show apart.
func promoted(ro *v1alpha1.Rollout) bool {
	return ro.Status.StableRS != "" && ro.Status.StableRS == ro.Status.CurrentPodHash
}

// StepString is a canary step as its YAML reads: "setWeight: 20",
// "pause: 30s", "pause" (until promoted), "analysis: a, b",
// "setCanaryScale: weight 20" / "replicas 3" / "matchTrafficWeight",
// "setHeaderRoute: NAME x-canary=yes".
func StepString(s v1alpha1.CanaryStep) string {
	switch {
	case s.SetWeight != nil:
		return fmt.Sprintf("setWeight: %d", *s.SetWeight)
	case s.Pause != nil:
		d := s.Pause.Duration
		if d == nil {
			return "pause"
		}
		if d.Type == intstr.Int {
			return fmt.Sprintf("pause: %ds", d.IntVal)
		}
		if _, err := strconv.Atoi(d.StrVal); err == nil {
			return "pause: " + d.StrVal + "s" // a bare number is seconds (Argo's reading)
		}
		return "pause: " + d.StrVal
	case s.Analysis != nil:
		var names []string
		for _, t := range s.Analysis.Templates {
			n := t.TemplateName
			if t.ClusterScope {
				n += " (cluster)"
			}
			names = append(names, n)
		}
		return "analysis: " + strings.Join(names, ", ")
	case s.SetCanaryScale != nil:
		c := s.SetCanaryScale
		switch {
		case c.Weight != nil:
			return fmt.Sprintf("setCanaryScale: weight %d", *c.Weight)
		case c.Replicas != nil:
			return fmt.Sprintf("setCanaryScale: replicas %d", *c.Replicas)
		case c.MatchTrafficWeight:
			return "setCanaryScale: matchTrafficWeight"
		}
		return "setCanaryScale"
	case s.SetHeaderRoute != nil:
		h := s.SetHeaderRoute
		parts := []string{"setHeaderRoute: " + h.Name}
		for _, m := range h.Match {
			if v := m.HeaderValue; v != nil {
				switch {
				case v.Exact != "":
					parts = append(parts, m.HeaderName+"="+v.Exact)
				case v.Prefix != "":
					parts = append(parts, m.HeaderName+"="+v.Prefix+"*")
				case v.Regex != "":
					parts = append(parts, m.HeaderName+"~"+v.Regex)
				}
			}
		}
		if len(h.Match) == 0 {
			parts = append(parts, "(removed)")
		}
		return strings.Join(parts, " ")
	}
	return "?"
}
