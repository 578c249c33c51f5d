package reconciler

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/steps"
)

// Argo Rollouts' labels and annotations, kept so that Argo's tools read
// Meridian's objects.
const (
	RolloutTypeLabel          = "rollout-type"
	StepIndexLabel            = "step-index"
	RevisionAnnotation        = "rollout.argoproj.io/revision"
	DesiredReplicasAnnotation = "rollout.argoproj.io/desired-replicas"
	ScaleDownDeadlineKey      = "scale-down-deadline"
	ManagedByAnnotation       = "argo-rollouts.argoproj.io/managed-by-rollouts"
)

// analysisRefs lists every (template reference, field path) the Rollout's
// strategy names, so that a missing template is reported before anything
// is done.
func analysisRefs(ro *v1alpha1.Rollout) map[string][]v1alpha1.RolloutAnalysisTemplate {
	refs := map[string][]v1alpha1.RolloutAnalysisTemplate{}
	add := func(path string, a *v1alpha1.RolloutAnalysis) {
		if a != nil {
			refs[path] = a.Templates
		}
	}
	if c := ro.Spec.Strategy.Canary; c != nil {
		for i, s := range c.Steps {
			add(fmt.Sprintf("spec.strategy.canary.steps[%d].analysis", i), s.Analysis)
		}
		if c.Analysis != nil {
			add("spec.strategy.canary.analysis", &c.Analysis.RolloutAnalysis)
		}
	}
	if b := ro.Spec.Strategy.BlueGreen; b != nil {
		add("spec.strategy.blueGreen.prePromotionAnalysis", b.PrePromotionAnalysis)
		add("spec.strategy.blueGreen.postPromotionAnalysis", b.PostPromotionAnalysis)
	}
	return refs
}

// templateSpec reads one referenced template; the error names it.
func (r *Reconciler) templateSpec(ctx context.Context, ns string, t v1alpha1.RolloutAnalysisTemplate) (*v1alpha1.AnalysisTemplateSpec, error) {
	if t.ClusterScope {
		var ct v1alpha1.ClusterAnalysisTemplate
		if err := r.cache.Get(ctx, types.NamespacedName{Name: t.TemplateName}, &ct); err != nil {
			return nil, err
		}
		return &ct.Spec, nil
	}
	var at v1alpha1.AnalysisTemplate
	if err := r.cache.Get(ctx, types.NamespacedName{Namespace: ns, Name: t.TemplateName}, &at); err != nil {
		return nil, err
	}
	return &at.Spec, nil
}

// missingTemplate returns the InvalidSpec message for the first template
// the Rollout names that does not exist, "" when all do.
func (r *Reconciler) missingTemplate(ctx context.Context, ro *v1alpha1.Rollout) (string, error) {
	refs := analysisRefs(ro)
	paths := make([]string, 0, len(refs))
	for p := range refs {
		paths = append(paths, p)
	}
	sortStrings(paths)
	for _, p := range paths {
		for i, t := range refs[p] {
			_, err := r.templateSpec(ctx, ro.Namespace, t)
			if apierrors.IsNotFound(err) {
				kind := "AnalysisTemplate " + ro.Namespace + "/" + t.TemplateName
				if t.ClusterScope {
					kind = "ClusterAnalysisTemplate " + t.TemplateName
				}
				return fmt.Sprintf("%s.templates[%d]: %s not found", p, i, kind), nil
			}
			if err != nil {
				return "", err
			}
		}
	}
	return "", nil
}

// newAnalysisRun builds the AnalysisRun c asks for, as Argo's
// analysisutil.NewAnalysisRunFromTemplates does: the templates' metrics,
// dry-run and retention entries concatenated (a metric name twice is an
// error), their args merged (the same name must agree), and the Rollout's
// args resolved and set over them; every arg must end with a value or a
// valueFrom.
func (r *Reconciler) newAnalysisRun(ctx context.Context, ro *v1alpha1.Rollout, c steps.CreateAnalysis, revision string) (*v1alpha1.AnalysisRun, error) {
	run := &v1alpha1.AnalysisRun{
		ObjectMeta: metav1.ObjectMeta{
			Name:      c.Name,
			Namespace: ro.Namespace,
			Labels: map[string]string{
				v1alpha1.DefaultRolloutUniqueLabelKey: c.PodHash,
				RolloutTypeLabel:                      string(c.Kind),
			},
			Annotations:     map[string]string{RevisionAnnotation: revision},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ro, v1alpha1.GroupVersion.WithKind("Rollout"))},
		},
	}
	if c.Kind == steps.AnalysisStep {
		run.Labels[StepIndexLabel] = strconv.Itoa(int(c.StepIndex))
	}
	maps.Copy(run.Labels, c.Analysis.AnalysisRunMetadata.Labels)
	maps.Copy(run.Annotations, c.Analysis.AnalysisRunMetadata.Annotations)

	seen := map[string]bool{}
	var args []v1alpha1.Argument
	argAt := map[string]int{}
	for i, t := range c.Analysis.Templates {
		spec, err := r.templateSpec(ctx, ro.Namespace, t)
		if err != nil {
			return nil, fmt.Errorf("analysis templates[%d] %q: %w", i, t.TemplateName, err)
		}
		for _, m := range spec.Metrics {
			if seen[m.Name] {
				return nil, fmt.Errorf("two metrics named %q in the templates of AnalysisRun %s", m.Name, c.Name)
			}
			seen[m.Name] = true
			run.Spec.Metrics = append(run.Spec.Metrics, *m.DeepCopy())
		}
		run.Spec.DryRun = append(run.Spec.DryRun, spec.DryRun...)
		run.Spec.MeasurementRetention = append(run.Spec.MeasurementRetention, spec.MeasurementRetention...)
		for _, a := range spec.Args {
			if j, ok := argAt[a.Name]; ok {
				// Argo's MergeArgs: a value set in one template wins over
				// none in another; two different values conflict.
				prev := &args[j]
				switch {
				case prev.Value == nil && prev.ValueFrom == nil:
					args[j] = *a.DeepCopy()
				case a.Value != nil && prev.Value != nil && *a.Value != *prev.Value:
					return nil, fmt.Errorf("arg %q has two values in the templates of AnalysisRun %s: %q and %q", a.Name, c.Name, *prev.Value, *a.Value)
				}
				continue
			}
			argAt[a.Name] = len(args)
			args = append(args, *a.DeepCopy())
		}
	}
	run.Spec.DryRun = append(run.Spec.DryRun, c.Analysis.DryRun...)
	run.Spec.MeasurementRetention = append(run.Spec.MeasurementRetention, c.Analysis.MeasurementRetention...)
	for _, a := range c.Analysis.Args {
		v, err := resolveArg(ro, c.PodHash, a)
		if err != nil {
			return nil, err
		}
		j, ok := argAt[a.Name]
		if !ok {
			// Argo ignores an arg no template declares.
			continue
		}
		args[j].Value, args[j].ValueFrom = &v, nil
	}
	for _, a := range args {
		if a.Value == nil && a.ValueFrom == nil {
			return nil, fmt.Errorf("args.%s was not resolved: give it a value in the Rollout's analysis args or a default in the template", a.Name)
		}
	}
	run.Spec.Args = args
	return run, nil
}

// resolveArg is a Rollout analysis arg's value: its value, the stable or
// latest pod-template hash, or a field of the Rollout.
func resolveArg(ro *v1alpha1.Rollout, latest string, a v1alpha1.AnalysisRunArgument) (string, error) {
	vf := a.ValueFrom
	switch {
	case vf == nil:
		return a.Value, nil
	case vf.PodTemplateHashValue != nil:
		switch *vf.PodTemplateHashValue {
		case v1alpha1.Stable:
			return ro.Status.StableRS, nil
		case v1alpha1.Latest:
			return latest, nil
		}
		return "", fmt.Errorf("args %q: valueFrom.podTemplateHashValue %q: must be Stable or Latest", a.Name, *vf.PodTemplateHashValue)
	case vf.FieldRef != nil:
		v, err := fieldPath(ro, vf.FieldRef.FieldPath)
		if err != nil {
			return "", fmt.Errorf("args %q: valueFrom.fieldRef.fieldPath %q: %w", a.Name, vf.FieldRef.FieldPath, err)
		}
		return v, nil
	}
	return "", fmt.Errorf("args %q: valueFrom needs podTemplateHashValue or fieldRef", a.Name)
}

// fieldPath evaluates a field path on the Rollout as Argo does:
// metadata.labels['k'] and metadata.annotations['k'], and dotted paths
// with [n] list indexes into the object (spec.template.spec.containers[0].image).
func fieldPath(ro *v1alpha1.Rollout, path string) (string, error) {
	for _, m := range []struct {
		prefix string
		from   map[string]string
	}{{"metadata.labels", ro.Labels}, {"metadata.annotations", ro.Annotations}} {
		if rest, ok := strings.CutPrefix(path, m.prefix); ok && strings.HasPrefix(rest, "[") {
			k := strings.Trim(rest, "[]'\"")
			v, ok := m.from[k]
			if !ok {
				return "", fmt.Errorf("%s has no key %q", m.prefix, k)
			}
			return v, nil
		}
	}
	b, err := json.Marshal(ro)
	if err != nil {
		return "", err
	}
	var cur any
	if err := json.Unmarshal(b, &cur); err != nil {
		return "", err
	}
	for _, part := range strings.Split(path, ".") {
		name, idx, hasIdx := strings.Cut(part, "[")
		obj, ok := cur.(map[string]any)
		if !ok {
			return "", fmt.Errorf("%q is not an object", name)
		}
		if cur, ok = obj[name]; !ok {
			return "", fmt.Errorf("no field %q", name)
		}
		if hasIdx {
			n, err := strconv.Atoi(strings.TrimSuffix(idx, "]"))
			list, ok := cur.([]any)
			if err != nil || !ok || n < 0 || n >= len(list) {
				return "", fmt.Errorf("%q has no element [%s", name, idx)
			}
			cur = list[n]
		}
	}
	switch v := cur.(type) {
	case string:
		return v, nil
	case nil:
		return "", nil
	default:
		b, _ := json.Marshal(v)
		return string(b), nil
	}
}

// terminate sets spec.terminate on a run (the runner then stops it).
func (r *Reconciler) terminate(ctx context.Context, ns, name string) error {
	run := &v1alpha1.AnalysisRun{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	err := r.client.Patch(ctx, run, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"terminate":true}}`)))
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
