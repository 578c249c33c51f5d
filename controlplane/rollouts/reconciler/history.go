package reconciler

import (
	"context"
	"fmt"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// Argo Rollouts' defaults for spec.analysis.
const (
	DefaultSuccessfulRunHistoryLimit   = 5
	DefaultUnsuccessfulRunHistoryLimit = 5
)

// runsToDelete is Argo's FilterAnalysisRunsToDelete: of the Rollout's
// AnalysisRuns other than the ones its status names, those of a ReplicaSet
// that is gone, and beyond the newest spec.analysis limits the finished ones
// (Successful; Failed, Error or Inconclusive). Running runs are kept.
func runsToDelete(ro *v1alpha1.Rollout, runs []v1alpha1.AnalysisRun, st v1alpha1.RolloutStatus, hashes map[string]bool) []string {
	okLimit, failLimit := int32(DefaultSuccessfulRunHistoryLimit), int32(DefaultUnsuccessfulRunHistoryLimit)
	if a := ro.Spec.Analysis; a != nil {
		if a.SuccessfulRunHistoryLimit != nil {
			okLimit = *a.SuccessfulRunHistoryLimit
		}
		if a.UnsuccessfulRunHistoryLimit != nil {
			failLimit = *a.UnsuccessfulRunHistoryLimit
		}
	}
	current := map[string]bool{}
	for _, s := range []*v1alpha1.RolloutAnalysisRunStatus{
		st.Canary.CurrentStepAnalysisRunStatus, st.Canary.CurrentBackgroundAnalysisRunStatus,
		st.BlueGreen.PrePromotionAnalysisRunStatus, st.BlueGreen.PostPromotionAnalysisRunStatus,
	} {
		if s != nil {
			current[s.Name] = true
		}
	}
	var others []v1alpha1.AnalysisRun
	for _, run := range runs {
		if !current[run.Name] && run.DeletionTimestamp == nil {
			others = append(others, run)
		}
	}
	// Newest first; the name breaks ties so that the choice is stable.
	sort.Slice(others, func(i, j int) bool {
		a, b := others[i].CreationTimestamp, others[j].CreationTimestamp
		if !a.Equal(&b) {
			return b.Before(&a)
		}
		return others[i].Name > others[j].Name
	})
	var del []string
	var ok, failed int32
	for _, run := range others {
		switch {
		case !hashes[run.Labels[v1alpha1.DefaultRolloutUniqueLabelKey]]:
			del = append(del, run.Name)
		case run.Status.Phase == v1alpha1.AnalysisPhaseSuccessful:
			if ok < okLimit {
				ok++
			} else {
				del = append(del, run.Name)
			}
		case run.Status.Phase.Completed():
			if failed < failLimit {
				failed++
			} else {
				del = append(del, run.Name)
			}
		}
	}
	return del
}

// pruneRuns deletes the AnalysisRuns runsToDelete names.
func (r *Reconciler) pruneRuns(ctx context.Context, ro *v1alpha1.Rollout, runs []v1alpha1.AnalysisRun, st v1alpha1.RolloutStatus, hashes map[string]bool) error {
	for _, name := range runsToDelete(ro, runs, st, hashes) {
		run := &v1alpha1.AnalysisRun{}
		run.Namespace, run.Name = ro.Namespace, name
		if err := r.client.Delete(ctx, run); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting AnalysisRun %s/%s beyond the history limits: %w", ro.Namespace, name, err)
		}
	}
	return nil
}
