// Package traffic moves a Rollout's traffic between its stable and canary
// (or active and preview) pods through Meridian's data plane.
//
// The rollouts reconciler decides the split (controlplane/rollouts/steps);
// a Router makes the data plane apply it. One Router per trafficRouting
// form of a Rollout: `meridian: {}` (Meridian's own, nothing for the user to
// write), `meridian: {httpRoute}` and `meridian: {trafficSplit}` (weights
// set on an object the user owns), and Argo's `smi`.
package traffic

import (
	"context"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/steps"
)

// Router applies a Rollout's traffic decision to the data plane. Calls for
// one Rollout are never concurrent; a Router is safe for use by several
// Rollouts at once. Every method is idempotent: the reconciler calls them
// on every pass with the current decision, not only on change.
type Router interface {
	// SetWeights makes the data plane send w.Canary percent of the
	// Rollout's traffic to the pods of w.CanaryHash and w.Stable percent to
	// those of w.StableHash. The switch is atomic: no request sees an empty
	// or half-switched backend set, in particular when the stable hash
	// itself changes (promotion) or the canary weight drops to 0 (abort).
	SetWeights(ctx context.Context, ro *v1alpha1.Rollout, w steps.Weights) error
	// SetHeaderRoute sends requests matching hr to the canary whatever the
	// weights; nil removes every header route the Rollout set.
	SetHeaderRoute(ctx context.Context, ro *v1alpha1.Rollout, hr *v1alpha1.SetHeaderRoute) error
	// Verify reports whether the data plane serves w (Argo's
	// status.canary.weights.verified): false, nil while it is still
	// propagating.
	Verify(ctx context.Context, ro *v1alpha1.Rollout, w steps.Weights) (bool, error)
	// Remove undoes what the Router wrote for ro (the Rollout was deleted or
	// its trafficRouting changed): objects it created are deleted, weights it
	// set on the user's objects are returned to all-stable.
	Remove(ctx context.Context, ro *v1alpha1.Rollout) error
}
