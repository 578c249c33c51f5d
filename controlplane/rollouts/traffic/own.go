package traffic

import (
	"context"
	"errors"

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

// ErrHeaderRouteUnsupported: the proxies' profiles carry one split per
// authority, with no header match of its own.
var ErrHeaderRouteUnsupported = errors.New("setHeaderRoute is not supported by this traffic router: a proxy's profile splits an authority's traffic by weight only and has no header-matched split; use trafficRouting.meridian.httpRoute for header routes")

func (r *ownRouter) SetHeaderRoute(_ context.Context, _ *v1alpha1.Rollout, hr *v1alpha1.SetHeaderRoute) error {
	if hr == nil || len(hr.Match) == 0 {
		return nil
	}
	return ErrHeaderRouteUnsupported
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
