package reconciler

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

func TestRunsToDelete(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	run := func(name, hash string, phase v1alpha1.AnalysisPhase, age int) v1alpha1.AnalysisRun {
		r := v1alpha1.AnalysisRun{}
		r.Name = name
		r.Labels = map[string]string{v1alpha1.DefaultRolloutUniqueLabelKey: hash}
		r.CreationTimestamp = metav1.NewTime(base.Add(-time.Duration(age) * time.Minute))
		r.Status.Phase = phase
		return r
	}
	runs := []v1alpha1.AnalysisRun{
		run("ok-1", "a", v1alpha1.AnalysisPhaseSuccessful, 1),
		run("ok-2", "a", v1alpha1.AnalysisPhaseSuccessful, 2),
		run("ok-3", "a", v1alpha1.AnalysisPhaseSuccessful, 3),
		run("bad-1", "b", v1alpha1.AnalysisPhaseFailed, 1),
		run("bad-2", "b", v1alpha1.AnalysisPhaseInconclusive, 2),
		run("bad-3", "b", v1alpha1.AnalysisPhaseError, 3),
		run("running-old", "a", v1alpha1.AnalysisPhaseRunning, 9),
		run("gone", "c", v1alpha1.AnalysisPhaseSuccessful, 0),
		run("current", "a", v1alpha1.AnalysisPhaseSuccessful, 10),
	}
	hashes := map[string]bool{"a": true, "b": true}
	st := v1alpha1.RolloutStatus{}
	st.Canary.CurrentStepAnalysisRunStatus = &v1alpha1.RolloutAnalysisRunStatus{Name: "current"}
	i32 := func(v int32) *int32 { return &v }
	for _, tc := range []struct {
		name  string
		limit *v1alpha1.AnalysisRunStrategy
		want  []string
	}{
		// Defaults (5 and 5): only the run whose ReplicaSet is gone.
		{"defaults", nil, []string{"gone"}},
		{"one each", &v1alpha1.AnalysisRunStrategy{SuccessfulRunHistoryLimit: i32(1), UnsuccessfulRunHistoryLimit: i32(1)}, []string{"bad-2", "bad-3", "gone", "ok-2", "ok-3"}},
		{"none kept", &v1alpha1.AnalysisRunStrategy{SuccessfulRunHistoryLimit: i32(0), UnsuccessfulRunHistoryLimit: i32(0)}, []string{"bad-1", "bad-2", "bad-3", "gone", "ok-1", "ok-2", "ok-3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ro := &v1alpha1.Rollout{}
			ro.Spec.Analysis = tc.limit
			got := runsToDelete(ro, runs, st, hashes)
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("deleted %v, want %v (never the current or a running one)", got, tc.want)
			}
		})
	}
}
