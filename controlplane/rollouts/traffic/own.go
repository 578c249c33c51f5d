package traffic

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/steps"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// ownRouter is `meridian: {}`: Meridian's own split, with no object for
// the user. The Rollout's status.canary.weights is the input: the
// destination API compiles, for the stable Service, a profile splitting its
// traffic between the pods of the stable hash and those of the canary hash
// (controlplane/compile: rolloutSplit). One write of the Rollout's status
// switches both sides for every proxy at once, so there is nothing to
// write here; Verify reports when the store has compiled it.
type ownRouter struct{ o Options }

func (r *ownRouter) SetWeights(context.Context, *v1alpha1.Rollout, steps.Weights) error { return nil }

// SetHeaderRoute writes nothing either: like the weights, the header route
// is derived from the Rollout by the compiler (compile.RolloutHeaderRoute:
// the last setHeaderRoute step up to status.currentStepIndex, while a
// canary is in progress and not aborted), which gives the stable Service's
// profile a route matching the headers whose split is 100% the canary's
// pods. It appears and goes with the status write that moves the step (or
// promotes, or aborts), in the same profile update as the weights. Here
// the match is checked, and that the Rollout being written derives the
// route the step machine asks for (ro carries the status being written).
func (r *ownRouter) SetHeaderRoute(_ context.Context, ro *v1alpha1.Rollout, hr *v1alpha1.SetHeaderRoute) error {
	if hr == nil || len(hr.Match) == 0 {
		return nil
	}
	if _, err := compile.HeaderRouteMatch(hr); err != nil {
		return fmt.Errorf("spec.strategy.canary.steps[].%w", err)
	}
	got := compile.RolloutHeaderRoute(ro)
	if got == nil || got.Name != hr.Name || !reflect.DeepEqual(got.Match, hr.Match) {
		return fmt.Errorf("Rollout %s/%s: the header route %q the steps ask for is not the one its status.currentStepIndex (%v) and status.canary.weights give", ro.Namespace, ro.Name, hr.Name, ptrString(ro.Status.CurrentStepIndex))
	}
	return nil
}

// ErrHeaderRouteUnsupported: an SMI TrafficSplit (smi, meridian.trafficSplit)
// has no header matches.
var ErrHeaderRouteUnsupported = errors.New("setHeaderRoute is not supported by this traffic router: an SMI TrafficSplit has no header matches; use trafficRouting.meridian: {} or trafficRouting.meridian.httpRoute for header routes")

func ptrString(p *int32) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// Verify reports whether the store holds the Rollout with these weights
// and compiles them for the stable Service: the profile every proxy gets
// splits between the subsets of w's hashes in w's proportions (a side
// without ready pods gets none: then the data plane does not serve w yet).
func (r *ownRouter) Verify(_ context.Context, ro *v1alpha1.Rollout, w steps.Weights) (bool, error) {
	if r.o.Store == nil {
		return false, nil
	}
	_, stable := services(ro)
	k := store.Key{Namespace: ro.Namespace, Name: stable}
	got, ok := profileShares(r.o, k)
	if !ok {
		return false, nil
	}
	want := map[string]int64{}
	if w.Stable > 0 && w.StableHash != "" {
		want[w.StableHash+"."+compile.FQDN(k, r.o.Compile)] += int64(w.Stable)
	}
	if w.Canary > 0 && w.CanaryHash != "" {
		want[w.CanaryHash+"."+compile.FQDN(k, r.o.Compile)] += int64(w.Canary)
	}
	return sameShares(got, want), nil
}

func (r *ownRouter) Remove(context.Context, *v1alpha1.Rollout) error { return nil }
