package local

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis/meridian"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/reconciler"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/steps"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// newRun builds the AnalysisRun c asks for, as the reconciler does (Argo's
// NewAnalysisRunFromTemplates): the templates' metrics, dry-run and
// retention entries concatenated, their args merged, the Rollout's args
// (a value, or the Stable / Latest pod-template hash) set over them. It
// lives in the driver's memory, owned by the Rollout.
func (d *Driver) newRun(ro *v1alpha1.Rollout, c steps.CreateAnalysis, now time.Time) (*run, error) {
	r := &v1alpha1.AnalysisRun{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "AnalysisRun"},
		ObjectMeta: metav1.ObjectMeta{
			Name: c.Name, Namespace: ro.Namespace, UID: uuid.NewUUID(), CreationTimestamp: metav1.NewTime(now),
			Labels: map[string]string{
				v1alpha1.DefaultRolloutUniqueLabelKey: c.PodHash,
				reconciler.RolloutTypeLabel:           string(c.Kind),
			},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ro, v1alpha1.GroupVersion.WithKind("Rollout"))},
		},
	}
	if c.Kind == steps.AnalysisStep {
		r.Labels[reconciler.StepIndexLabel] = strconv.Itoa(int(c.StepIndex))
	}
	maps.Copy(r.Labels, c.Analysis.AnalysisRunMetadata.Labels)
	if len(c.Analysis.AnalysisRunMetadata.Annotations) > 0 {
		r.Annotations = maps.Clone(c.Analysis.AnalysisRunMetadata.Annotations)
	}
	seen := map[string]bool{}
	argAt := map[string]int{}
	var args []v1alpha1.Argument
	for i, t := range c.Analysis.Templates {
		k := store.Key{Namespace: ro.Namespace, Name: t.TemplateName}
		if t.ClusterScope {
			k = store.Key{Name: t.TemplateName}
		}
		d.mu.Lock()
		spec := d.templates[k]
		d.mu.Unlock()
		if spec == nil {
			return nil, fmt.Errorf("analysis templates[%d] %q not found", i, t.TemplateName)
		}
		for _, m := range spec.Metrics {
			if seen[m.Name] {
				return nil, fmt.Errorf("two metrics named %q in the templates", m.Name)
			}
			seen[m.Name] = true
			r.Spec.Metrics = append(r.Spec.Metrics, *m.DeepCopy())
		}
		r.Spec.DryRun = append(r.Spec.DryRun, spec.DryRun...)
		r.Spec.MeasurementRetention = append(r.Spec.MeasurementRetention, spec.MeasurementRetention...)
		for _, a := range spec.Args {
			if j, ok := argAt[a.Name]; ok {
				prev := &args[j]
				switch {
				case prev.Value == nil && prev.ValueFrom == nil:
					args[j] = *a.DeepCopy()
				case a.Value != nil && prev.Value != nil && *a.Value != *prev.Value:
					return nil, fmt.Errorf("arg %q has two values in the templates: %q and %q", a.Name, *prev.Value, *a.Value)
				}
				continue
			}
			argAt[a.Name] = len(args)
			args = append(args, *a.DeepCopy())
		}
	}
	r.Spec.DryRun = append(r.Spec.DryRun, c.Analysis.DryRun...)
	r.Spec.MeasurementRetention = append(r.Spec.MeasurementRetention, c.Analysis.MeasurementRetention...)
	for _, a := range c.Analysis.Args {
		var v string
		switch vf := a.ValueFrom; {
		case vf == nil:
			v = a.Value
		case vf.PodTemplateHashValue != nil && *vf.PodTemplateHashValue == v1alpha1.Stable:
			v = ro.Status.StableRS
		case vf.PodTemplateHashValue != nil && *vf.PodTemplateHashValue == v1alpha1.Latest:
			v = c.PodHash
		default:
			return nil, fmt.Errorf("args %q: local mode resolves a value or valueFrom.podTemplateHashValue (Stable or Latest) only", a.Name)
		}
		if j, ok := argAt[a.Name]; ok {
			args[j].Value, args[j].ValueFrom = &v, nil
		}
	}
	for _, a := range args {
		if a.Value == nil && a.ValueFrom == nil {
			return nil, fmt.Errorf("args.%s was not resolved: give it a value in the Rollout's analysis args or a default in the template", a.Name)
		}
	}
	r.Spec.Args = args
	out := &run{run: r, next: now}
	out.vals, out.err = analysis.ArgValues(args, func(*v1alpha1.ValueFrom) (string, error) {
		return "", fmt.Errorf("valueFrom (a Secret, a field) is not resolved in local mode: give the value")
	})
	return out, nil
}

// measure takes the measurements of Rollout k's runs that are due (the
// analysis package's Step, with the provider), and reports the runs that
// end.
func (d *Driver) measure(ctx context.Context, k store.Key, s *state, now time.Time) {
	d.mu.Lock()
	var due []*run
	for _, name := range sortedKeys(s.runs) {
		r := s.runs[name]
		if !r.run.Status.Phase.Completed() && !r.next.IsZero() && !now.Before(r.next) {
			due = append(due, r)
		}
	}
	d.mu.Unlock()
	for _, r := range due {
		next := r.run.DeepCopy()
		var at time.Time
		if r.err != nil {
			next.Status.Phase, next.Status.Message = v1alpha1.AnalysisPhaseError, r.err.Error()
		} else {
			at = analysis.Step(ctx, next, r.vals, d.o.Provider, now)
		}
		d.mu.Lock()
		r.run, r.next = next, at
		d.mu.Unlock()
		if next.Status.Phase.Completed() {
			if p, ok := d.o.Provider.(*meridian.Provider); ok {
				p.Forget(next.UID)
			}
			line := fmt.Sprintf("rollout %s: analysis %s %s", k, next.Name, next.Status.Phase)
			if v := lastValues(next); v != "" {
				line += " (" + v + ")"
			}
			if next.Status.Message != "" {
				line += ": " + next.Status.Message
			}
			d.progress(line)
		}
	}
}

func metricNames(r *v1alpha1.AnalysisRun) string {
	var ms []string
	for _, m := range r.Spec.Metrics {
		c := m.SuccessCondition
		if c == "" {
			c = "failure: " + m.FailureCondition
		}
		ms = append(ms, m.Name+": "+c)
	}
	return strings.Join(ms, "; ")
}

// lastValues are each metric's measured values, "name=v1,v2".
func lastValues(r *v1alpha1.AnalysisRun) string {
	var out []string
	for _, mr := range r.Status.MetricResults {
		var vs []string
		for _, m := range mr.Measurements {
			if m.Value != "" {
				vs = append(vs, m.Value)
			}
		}
		if len(vs) > 0 {
			out = append(out, mr.Name+"="+strings.Join(vs, ","))
		}
	}
	return strings.Join(out, " ")
}
