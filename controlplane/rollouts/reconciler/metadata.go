package reconciler

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// EphemeralMetadataAnnotation records on a ReplicaSet the labels and
// annotations its pods carry for their role (Argo's key and JSON), so that
// they come off when the role ends: canaryMetadata becomes stableMetadata at
// promotion, previewMetadata becomes activeMetadata at the switch.
const EphemeralMetadataAnnotation = "rollout.argoproj.io/ephemeral-metadata"

// roleMetadata is the metadata the pods of hash carry in the status st: as
// Argo, the stable (active) ReplicaSet gets stableMetadata (activeMetadata)
// and the new one, while it is not the stable one, canaryMetadata
// (previewMetadata). Others are left as they are (ok false).
func roleMetadata(ro *v1alpha1.Rollout, st v1alpha1.RolloutStatus, hash string) (md v1alpha1.PodTemplateMetadata, ok bool) {
	var stable, current *v1alpha1.PodTemplateMetadata
	stableHash := st.StableRS
	if c := ro.Spec.Strategy.Canary; c != nil {
		stable, current = c.StableMetadata, c.CanaryMetadata
	} else if bg := ro.Spec.Strategy.BlueGreen; bg != nil {
		stable, current = bg.ActiveMetadata, bg.PreviewMetadata
		if st.BlueGreen.ActiveSelector != "" {
			stableHash = st.BlueGreen.ActiveSelector
		}
	}
	pick := func(p *v1alpha1.PodTemplateMetadata) v1alpha1.PodTemplateMetadata {
		if p == nil {
			return v1alpha1.PodTemplateMetadata{}
		}
		return *p
	}
	switch hash {
	case stableHash:
		return pick(stable), true
	case st.CurrentPodHash:
		return pick(current), true
	}
	return md, false
}

// metadataPatch is the merge patch that takes the metadata prev off and
// puts md on, leaving alone the keys in keep (the selector's labels, which
// role metadata must not change). nil when there is nothing to do for have.
func metadataPatch(prev, md v1alpha1.PodTemplateMetadata, haveLabels, haveAnnotations, keep map[string]string) map[string]any {
	labels := diff(prev.Labels, md.Labels, haveLabels, keep)
	annotations := diff(prev.Annotations, md.Annotations, haveAnnotations, nil)
	if len(labels) == 0 && len(annotations) == 0 {
		return nil
	}
	m := map[string]any{}
	if len(labels) > 0 {
		m["labels"] = labels
	}
	if len(annotations) > 0 {
		m["annotations"] = annotations
	}
	return m
}

func diff(prev, want, have, keep map[string]string) map[string]any {
	d := map[string]any{}
	for k := range prev {
		if _, ok := want[k]; !ok {
			if _, ok := have[k]; ok && keep[k] == "" {
				d[k] = nil
			}
		}
	}
	for k, v := range want {
		if keep[k] != "" {
			continue
		}
		if cur, ok := have[k]; !ok || cur != v {
			d[k] = v
		}
	}
	return d
}

func recorded(rs *appsv1.ReplicaSet) v1alpha1.PodTemplateMetadata {
	var md v1alpha1.PodTemplateMetadata
	if v := rs.Annotations[EphemeralMetadataAnnotation]; v != "" {
		_ = json.Unmarshal([]byte(v), &md) // unreadable: as if none was recorded
	}
	return md
}

// syncMetadata puts each ReplicaSet's role metadata on its pod template
// and on its pods that exist, and takes the previous role's off.
func (r *Reconciler) syncMetadata(ctx context.Context, ro *v1alpha1.Rollout, byHash map[string]*appsv1.ReplicaSet, st v1alpha1.RolloutStatus) error {
	for hash, rs := range byHash {
		md, ok := roleMetadata(ro, st, hash)
		if !ok {
			continue
		}
		prev := recorded(rs)
		keep := map[string]string{}
		if rs.Spec.Selector != nil {
			maps.Copy(keep, rs.Spec.Selector.MatchLabels)
		}
		keep[v1alpha1.DefaultRolloutUniqueLabelKey] = hash
		b, _ := json.Marshal(md)
		tmpl := metadataPatch(prev, md, rs.Spec.Template.Labels, rs.Spec.Template.Annotations, keep)
		if tmpl != nil || rs.Annotations[EphemeralMetadataAnnotation] != string(b) && (len(md.Labels)+len(md.Annotations)+len(prev.Labels)+len(prev.Annotations)) > 0 {
			patch := map[string]any{"metadata": map[string]any{"annotations": map[string]any{EphemeralMetadataAnnotation: string(b)}}}
			if tmpl != nil {
				patch["spec"] = map[string]any{"template": map[string]any{"metadata": tmpl}}
			}
			if err := r.patchRS(ctx, rs, patch); err != nil {
				return err
			}
		}
		if len(md.Labels)+len(md.Annotations)+len(prev.Labels)+len(prev.Annotations) == 0 {
			continue
		}
		// The pods the ReplicaSet made before: new ones get it from the
		// template.
		sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
		if err != nil {
			continue
		}
		var pods corev1.PodList
		if err := r.client.List(ctx, &pods, client.InNamespace(ro.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
			return err
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if !isControlledBy(p, rs) || p.DeletionTimestamp != nil {
				continue
			}
			pm := metadataPatch(prev, md, p.Labels, p.Annotations, keep)
			if pm == nil {
				continue
			}
			b, _ := json.Marshal(map[string]any{"metadata": pm})
			if err := r.client.Patch(ctx, p, client.RawPatch(types.MergePatchType, b)); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("pod %s/%s: role metadata: %w", p.Namespace, p.Name, err)
			}
		}
	}
	return nil
}
