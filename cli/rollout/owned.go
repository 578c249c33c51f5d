package rollout

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// Owned is a Rollout with the pods of its ReplicaSets, by pod-template
// hash, and its AnalysisRuns: what a view that follows every Rollout of a
// namespace needs (the viz dashboard).
type Owned struct {
	Rollout *v1alpha1.Rollout
	// Pods are the pods of the ReplicaSets the Rollout owns, by their
	// rollouts-pod-template-hash label: Pods[status.stableRS] are the
	// stable's, Pods[status.currentPodHash] the canary's.
	Pods map[string][]corev1.Pod
	// Runs are its AnalysisRuns, newest first (SortRunsNewestFirst).
	Runs []*v1alpha1.AnalysisRun
}

// ListOwned reads the Rollouts of the namespace, or of every namespace,
// with what they own (by ownerReference, as NewInfo reads it), sorted by
// namespace and name. Four lists: Rollouts, hashed ReplicaSets, hashed
// pods, AnalysisRuns. ErrNotInstalled when the API server does not serve
// Rollouts.
func (c *Client) ListOwned(ctx context.Context, allNamespaces bool) ([]Owned, error) {
	var opts []client.ListOption
	where := "namespace " + c.Namespace
	if !allNamespaces {
		opts = append(opts, client.InNamespace(c.Namespace))
	} else {
		where = "all namespaces"
	}
	var ros v1alpha1.RolloutList
	if err := c.C.List(ctx, &ros, opts...); err != nil {
		if meta404(err) {
			return nil, ErrNotInstalled
		}
		return nil, fmt.Errorf("listing the Rollouts of %s: %w", where, err)
	}
	if len(ros.Items) == 0 {
		return []Owned{}, nil
	}
	var (
		rss  appsv1.ReplicaSetList
		pods corev1.PodList
		runs v1alpha1.AnalysisRunList
	)
	sel := client.MatchingLabelsSelector{Selector: hashed()}
	if err := c.C.List(ctx, &rss, append(opts, sel)...); err != nil {
		return nil, fmt.Errorf("listing the ReplicaSets of %s: %w", where, err)
	}
	if err := c.C.List(ctx, &pods, append(opts, sel)...); err != nil {
		return nil, fmt.Errorf("listing the pods of %s: %w", where, err)
	}
	if err := c.C.List(ctx, &runs, opts...); err != nil {
		return nil, fmt.Errorf("listing the AnalysisRuns of %s: %w", where, err)
	}
	out := make([]Owned, 0, len(ros.Items))
	for i := range ros.Items {
		ro := &ros.Items[i]
		o := Owned{Rollout: ro, Pods: map[string][]corev1.Pod{}, Runs: []*v1alpha1.AnalysisRun{}}
		for j := range rss.Items {
			rs := &rss.Items[j]
			h := rs.Labels[v1alpha1.DefaultRolloutUniqueLabelKey]
			if rs.Namespace != ro.Namespace || !ownedBy(rs.OwnerReferences, ro.UID) {
				continue
			}
			for k := range pods.Items {
				if p := &pods.Items[k]; ownedBy(p.OwnerReferences, rs.UID) {
					o.Pods[h] = append(o.Pods[h], *p)
				}
			}
		}
		for j := range runs.Items {
			if run := &runs.Items[j]; ownedBy(run.OwnerReferences, ro.UID) {
				o.Runs = append(o.Runs, run)
			}
		}
		SortRunsNewestFirst(o.Runs)
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b Owned) int {
		return cmp.Or(strings.Compare(a.Rollout.Namespace, b.Rollout.Namespace), strings.Compare(a.Rollout.Name, b.Rollout.Name))
	})
	return out, nil
}

// SortRunsNewestFirst orders AnalysisRuns by creation, newest first; runs
// created in the same second by revision, then name, both descending (the
// reconciler's names end in a counter: a longer name is a higher count).
func SortRunsNewestFirst(runs []*v1alpha1.AnalysisRun) {
	slices.SortStableFunc(runs, func(a, b *v1alpha1.AnalysisRun) int {
		return cmp.Or(b.CreationTimestamp.Compare(a.CreationTimestamp.Time),
			cmp.Compare(revision(b.Annotations), revision(a.Annotations)),
			cmp.Compare(len(b.Name), len(a.Name)), strings.Compare(b.Name, a.Name))
	})
}
