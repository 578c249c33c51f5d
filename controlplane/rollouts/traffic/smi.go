package traffic

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/steps"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// smiRouter is Argo Rollouts' SMI router: a TrafficSplit the Rollout owns,
// apex rootService (default: the stable Service), backends the canary and
// the stable Services with the weights. Meridian's data plane obeys it.
type smiRouter struct{ o Options }

func smiNames(ro *v1alpha1.Rollout) (split, root string) {
	_, stable := services(ro)
	s := ro.Spec.Strategy.Canary.TrafficRouting.SMI
	split, root = ro.Name, stable
	if s.TrafficSplitName != "" {
		split = s.TrafficSplitName
	}
	if s.RootService != "" {
		root = s.RootService
	}
	return split, root
}

func (r *smiRouter) SetWeights(ctx context.Context, ro *v1alpha1.Rollout, w steps.Weights) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error { return r.setWeights(ctx, ro, w) })
}

func (r *smiRouter) setWeights(ctx context.Context, ro *v1alpha1.Rollout, w steps.Weights) error {
	name, root := smiNames(ro)
	canary, stable := services(ro)
	gvk, err := splitVersion(ctx, r.o.Client)
	if err != nil {
		return fmt.Errorf("spec.strategy.canary.trafficRouting.smi: %w", err)
	}
	backends := []any{
		map[string]any{"service": canary, "weight": int64(w.Canary)},
		map[string]any{"service": stable, "weight": int64(w.Stable)},
	}
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(gvk)
	err = r.o.Client.Get(ctx, types.NamespacedName{Namespace: ro.Namespace, Name: name}, cur)
	switch {
	case apierrors.IsNotFound(err):
		ts := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"service": root, "backends": backends}}}
		ts.SetGroupVersionKind(gvk)
		ts.SetNamespace(ro.Namespace)
		ts.SetName(name)
		ts.SetOwnerReferences([]metav1.OwnerReference{ownerRef(ro)})
		if err := r.o.Client.Create(ctx, ts); err != nil {
			return fmt.Errorf("creating TrafficSplit %s/%s: %w", ro.Namespace, name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("reading TrafficSplit %s/%s: %w", ro.Namespace, name, err)
	}
	if !ownedBy(cur, ro) {
		return fmt.Errorf("TrafficSplit %s/%s (spec.strategy.canary.trafficRouting.smi.trafficSplitName) exists and is not controlled by Rollout %s: delete it, or name another", ro.Namespace, name, ro.Name)
	}
	spec, _, _ := unstructured.NestedMap(cur.Object, "spec")
	if spec["service"] == root && sameBackends(spec["backends"], backends) {
		return nil
	}
	if err := unstructured.SetNestedField(cur.Object, root, "spec", "service"); err != nil {
		return err
	}
	if err := unstructured.SetNestedSlice(cur.Object, backends, "spec", "backends"); err != nil {
		return err
	}
	if err := r.o.Client.Update(ctx, cur); err != nil {
		return fmt.Errorf("updating TrafficSplit %s/%s: %w", ro.Namespace, name, err)
	}
	return nil
}

func (r *smiRouter) SetHeaderRoute(_ context.Context, _ *v1alpha1.Rollout, hr *v1alpha1.SetHeaderRoute) error {
	if hr == nil || len(hr.Match) == 0 {
		return nil
	}
	return fmt.Errorf("spec.strategy.canary.trafficRouting.smi: %w", ErrHeaderRouteUnsupported)
}

// Verify: the TrafficSplit has the weights and, with a store, the root
// Service's compiled profile splits as they say.
func (r *smiRouter) Verify(ctx context.Context, ro *v1alpha1.Rollout, w steps.Weights) (bool, error) {
	name, root := smiNames(ro)
	return verifySplit(ctx, r.o, ro, name, root, w)
}

func verifySplit(ctx context.Context, o Options, ro *v1alpha1.Rollout, name, root string, w steps.Weights) (bool, error) {
	canary, stable := services(ro)
	gvk, err := splitVersion(ctx, o.Client)
	if err != nil {
		return false, err
	}
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(gvk)
	if err := o.Client.Get(ctx, types.NamespacedName{Namespace: ro.Namespace, Name: name}, cur); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	if root == "" {
		root, _, _ = unstructured.NestedString(cur.Object, "spec", "service")
	}
	got := splitWeights(cur)
	if got[canary] != int64(w.Canary)*1000 || got[stable] != int64(w.Stable)*1000 {
		return false, nil
	}
	if o.Store == nil {
		return true, nil
	}
	shares, ok := profileShares(o, store.Key{Namespace: ro.Namespace, Name: root})
	if !ok {
		return false, nil
	}
	want := map[string]int64{}
	for svc, wt := range got {
		want[svcHost(ro.Namespace, svc, o)] += wt
	}
	return sameShares(shares, want), nil
}

func svcHost(ns, svc string, o Options) string {
	return svc + "." + ns + ".svc." + clusterDomain(o)
}

func clusterDomain(o Options) string {
	if o.Compile.ClusterDomain != "" {
		return o.Compile.ClusterDomain
	}
	return "cluster.local"
}

// splitWeights reads spec.backends of an unstructured TrafficSplit of any
// version, in thousandths (v1alpha1's quantities: "500m" → 500, 20 →
// 20000).
func splitWeights(ts *unstructured.Unstructured) map[string]int64 {
	out := map[string]int64{}
	bs, _, _ := unstructured.NestedSlice(ts.Object, "spec", "backends")
	for _, b := range bs {
		m, _ := b.(map[string]any)
		svc, _ := m["service"].(string)
		out[svc] += weightOf(m["weight"])
	}
	return out
}

func weightOf(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x * 1000
	case float64:
		return int64(x * 1000)
	case string:
		if q, err := resource.ParseQuantity(x); err == nil {
			return q.MilliValue()
		}
	}
	return 0
}

func sameBackends(cur any, want []any) bool {
	cs, ok := cur.([]any)
	if !ok || len(cs) != len(want) {
		return false
	}
	for i := range cs {
		c, _ := cs[i].(map[string]any)
		w := want[i].(map[string]any)
		if c["service"] != w["service"] || weightOf(c["weight"]) != w["weight"].(int64)*1000 {
			return false
		}
	}
	return true
}

// Remove deletes the TrafficSplit the Rollout owns.
func (r *smiRouter) Remove(ctx context.Context, ro *v1alpha1.Rollout) error {
	name, _ := smiNames(ro)
	gvk, err := splitVersion(ctx, r.o.Client)
	if err != nil {
		return err
	}
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(gvk)
	if err := r.o.Client.Get(ctx, types.NamespacedName{Namespace: ro.Namespace, Name: name}, cur); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !ownedBy(cur, ro) {
		return nil
	}
	return client.IgnoreNotFound(r.o.Client.Delete(ctx, cur))
}

var rolloutGVK = schema.GroupVersionKind{Group: v1alpha1.GroupVersion.Group, Version: v1alpha1.GroupVersion.Version, Kind: "Rollout"}

func ownerRef(ro *v1alpha1.Rollout) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{APIVersion: rolloutGVK.GroupVersion().String(), Kind: rolloutGVK.Kind, Name: ro.Name, UID: ro.UID, Controller: &t, BlockOwnerDeletion: &t}
}

func ownedBy(obj metav1.Object, ro *v1alpha1.Rollout) bool {
	for _, o := range obj.GetOwnerReferences() {
		if o.Kind == rolloutGVK.Kind && o.Name == ro.Name && (ro.UID == "" || o.UID == ro.UID) && o.Controller != nil && *o.Controller {
			return true
		}
	}
	return false
}
