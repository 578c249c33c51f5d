package traffic

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/steps"
)

// userSplitRouter is `meridian: {trafficSplit: NAME}`: the weights of the
// canary and stable backends of a TrafficSplit the user owns (any other
// backend is left as it is).
type userSplitRouter struct{ o Options }

const userSplitField = "spec.strategy.canary.trafficRouting.meridian.trafficSplit"

func (r *userSplitRouter) get(ctx context.Context, ro *v1alpha1.Rollout) (*unstructured.Unstructured, error) {
	name := ro.Spec.Strategy.Canary.TrafficRouting.Meridian.TrafficSplit
	gvk, err := splitVersion(ctx, r.o.Client)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", userSplitField, err)
	}
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(gvk)
	if err := r.o.Client.Get(ctx, types.NamespacedName{Namespace: ro.Namespace, Name: name}, cur); err != nil {
		return nil, fmt.Errorf("%s: TrafficSplit %s/%s: %w", userSplitField, ro.Namespace, name, err)
	}
	return cur, nil
}

// set gives the canary and stable backends of ts their weights; it
// reports whether anything changed, and an error naming the field when a
// backend is missing.
func setSplitWeights(ts *unstructured.Unstructured, canary, stable string, wc, ws int32) (bool, error) {
	bs, _, _ := unstructured.NestedSlice(ts.Object, "spec", "backends")
	found := map[string]bool{}
	changed := false
	for i, b := range bs {
		m, _ := b.(map[string]any)
		svc, _ := m["service"].(string)
		var w int32
		switch svc {
		case canary:
			w = wc
		case stable:
			w = ws
		default:
			continue
		}
		found[svc] = true
		if weightOf(m["weight"]) != int64(w)*1000 {
			m["weight"] = int64(w)
			bs[i] = m
			changed = true
		}
	}
	for _, s := range []struct{ svc, field string }{{canary, "canaryService"}, {stable, "stableService"}} {
		if !found[s.svc] {
			return false, fmt.Errorf("TrafficSplit %s/%s: spec.backends has no service %q (the Rollout's spec.strategy.canary.%s): add it as a backend", ts.GetNamespace(), ts.GetName(), s.svc, s.field)
		}
	}
	if !changed {
		return false, nil
	}
	return true, unstructured.SetNestedSlice(ts.Object, bs, "spec", "backends")
}

func (r *userSplitRouter) SetWeights(ctx context.Context, ro *v1alpha1.Rollout, w steps.Weights) error {
	return r.set(ctx, ro, w.Canary, w.Stable)
}

func (r *userSplitRouter) set(ctx context.Context, ro *v1alpha1.Rollout, wc, ws int32) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		ts, err := r.get(ctx, ro)
		if err != nil {
			return err
		}
		canary, stable := services(ro)
		changed, err := setSplitWeights(ts, canary, stable, wc, ws)
		if err != nil || !changed {
			return err
		}
		if err := r.o.Client.Update(ctx, ts); err != nil {
			return fmt.Errorf("%s: updating TrafficSplit %s/%s: %w", userSplitField, ts.GetNamespace(), ts.GetName(), err)
		}
		return nil
	})
}

func (r *userSplitRouter) SetHeaderRoute(_ context.Context, _ *v1alpha1.Rollout, hr *v1alpha1.SetHeaderRoute) error {
	if hr == nil || len(hr.Match) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w", userSplitField, ErrHeaderRouteUnsupported)
}

func (r *userSplitRouter) Verify(ctx context.Context, ro *v1alpha1.Rollout, w steps.Weights) (bool, error) {
	return verifySplit(ctx, r.o, ro, ro.Spec.Strategy.Canary.TrafficRouting.Meridian.TrafficSplit, "", w)
}

// Remove returns the split to all-stable.
func (r *userSplitRouter) Remove(ctx context.Context, ro *v1alpha1.Rollout) error {
	err := r.set(ctx, ro, 0, 100)
	if err != nil && isNotFound(err) {
		return nil
	}
	return err
}
