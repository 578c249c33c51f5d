// Package job is the analysis provider that runs a Kubernetes Job per
// measurement, as Argo Rollouts' job provider does: the Job is created from
// the metric's metadata and spec, owned by the run, and the measurement
// stays in flight until the Job completes (Successful) or fails (Failed).
package job

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis"
)

// Keys on the Jobs and the measurements (Argo's, under meridian.io).
const (
	// NameKey is the measurement's metadata key holding its Job's name.
	NameKey = "job-name"
	// RunNameAnnotation and MetricAnnotation name the run and the metric
	// on the Job.
	RunNameAnnotation = "analysisrun.meridian.io/name"
	MetricAnnotation  = "analysisrun.meridian.io/metric-name"
	// RunUIDLabel is the run's UID on the Job; the runner watches only the
	// Jobs that carry it.
	RunUIDLabel = "analysisrun.meridian.io/uid"
)

// DefaultPoll is how often an unfinished Job is looked at when no watch
// says it changed (the runner wakes a measurement as soon as its Job
// finishes: Finished).
const DefaultPoll = 30 * time.Second

// Provider runs Jobs. Client writes (create, delete) and reads what Cache
// does not have yet; Cache, when set, is the runner's informer cache of
// the Jobs it watches.
type Provider struct {
	Client client.Client
	Cache  client.Reader
	// Poll is how soon an unfinished Job is looked at again (DefaultPoll).
	Poll time.Duration
}

var (
	_ analysis.Provider   = (*Provider)(nil)
	_ analysis.Terminator = (*Provider)(nil)
)

// Name is the Job of a run's metric's nth measurement: Argo's
// "<run uid>.<metric>.<n>", n counting every measurement taken so far
// (count + errors) plus one, so that a measurement retried after its status
// was lost finds the Job it created.
func Name(run *v1alpha1.AnalysisRun, metric string) string {
	n := int32(1)
	for _, r := range run.Status.MetricResults {
		if r.Name == metric {
			n = r.Count + r.Error + 1
		}
	}
	return fmt.Sprintf("%s.%s.%d", run.UID, metric, n)
}

// New is the Job of a new measurement.
func New(run *v1alpha1.AnalysisRun, metric v1alpha1.Metric) *batchv1.Job {
	jm := metric.Provider.Job
	labels := maps.Clone(jm.Metadata.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[RunUIDLabel] = string(run.UID)
	ann := maps.Clone(jm.Metadata.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	ann[RunNameAnnotation] = run.Name
	ann[MetricAnnotation] = metric.Name
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:            Name(run, metric.Name),
			Namespace:       run.Namespace,
			Labels:          labels,
			Annotations:     ann,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(run, v1alpha1.GroupVersion.WithKind("AnalysisRun"))},
		},
		Spec: *jm.Spec.DeepCopy(),
	}
}

// Measure creates the measurement's Job (a new measurement) or looks at it
// (one in flight).
func (p *Provider) Measure(ctx context.Context, run *v1alpha1.AnalysisRun, metric v1alpha1.Metric, inFlight *v1alpha1.Measurement) (analysis.Result, error) {
	if metric.Provider.Job == nil {
		return analysis.Result{}, fmt.Errorf("metric %s has no job provider", metric.Name)
	}
	if inFlight == nil || inFlight.Metadata[NameKey] == "" {
		return p.create(ctx, run, metric)
	}
	name := inFlight.Metadata[NameKey]
	j, err := p.get(ctx, run.Namespace, name)
	if apierrors.IsNotFound(err) {
		return analysis.Result{}, fmt.Errorf("job %s/%s was deleted before it finished", run.Namespace, name)
	}
	if err != nil {
		return analysis.Result{}, fmt.Errorf("job %s/%s: %w", run.Namespace, name, err)
	}
	switch phase, msg := Outcome(j); phase {
	case "":
		return analysis.Result{ResumeAfter: p.poll(), Metadata: map[string]string{NameKey: name}}, nil
	default:
		return analysis.Result{Phase: phase, Message: msg, Metadata: map[string]string{NameKey: name}}, nil
	}
}

func (p *Provider) poll() time.Duration {
	if p.Poll > 0 {
		return p.Poll
	}
	return DefaultPoll
}

func (p *Provider) create(ctx context.Context, run *v1alpha1.AnalysisRun, metric v1alpha1.Metric) (analysis.Result, error) {
	j := New(run, metric)
	err := p.Client.Create(ctx, j)
	if apierrors.IsAlreadyExists(err) {
		// Created by this measurement before its status was written.
		existing := &batchv1.Job{}
		if gerr := p.Client.Get(ctx, client.ObjectKeyFromObject(j), existing); gerr != nil {
			return analysis.Result{}, fmt.Errorf("job %s/%s exists and cannot be read: %w", j.Namespace, j.Name, gerr)
		}
		if ref := metav1.GetControllerOf(existing); ref == nil || ref.UID != run.UID {
			return analysis.Result{}, fmt.Errorf("job %s/%s exists and is not this run's", j.Namespace, j.Name)
		}
		err = nil
	}
	if err != nil {
		return analysis.Result{}, fmt.Errorf("creating job %s/%s from provider.job: %w", j.Namespace, j.Name, err)
	}
	return analysis.Result{ResumeAfter: p.poll(), Metadata: map[string]string{NameKey: j.Name}}, nil
}

func (p *Provider) get(ctx context.Context, ns, name string) (*batchv1.Job, error) {
	j := &batchv1.Job{}
	key := client.ObjectKey{Namespace: ns, Name: name}
	if p.Cache != nil {
		err := p.Cache.Get(ctx, key, j)
		if err == nil || !apierrors.IsNotFound(err) {
			return j, err
		}
		// Not in the cache yet (just created): ask the API server.
	}
	return j, p.Client.Get(ctx, key, j)
}

// Outcome is a Job's verdict: Successful once it is Complete, Failed once it
// has Failed, "" while it runs.
func Outcome(j *batchv1.Job) (v1alpha1.AnalysisPhase, string) {
	for _, c := range j.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return v1alpha1.AnalysisPhaseSuccessful, ""
		case batchv1.JobFailed:
			msg := fmt.Sprintf("job %s/%s failed", j.Namespace, j.Name)
			if c.Reason != "" || c.Message != "" {
				msg += fmt.Sprintf(": %s %s", c.Reason, c.Message)
			}
			return v1alpha1.AnalysisPhaseFailed, msg
		}
	}
	return "", ""
}

// Finished reports whether an in-flight measurement's Job has finished, from
// the cache: the runner then takes it at once instead of at its resumeAt.
func (p *Provider) Finished(ctx context.Context, run *v1alpha1.AnalysisRun, inFlight *v1alpha1.Measurement) bool {
	name := inFlight.Metadata[NameKey]
	if name == "" || p.Cache == nil {
		return false
	}
	j := &batchv1.Job{}
	if err := p.Cache.Get(ctx, client.ObjectKey{Namespace: run.Namespace, Name: name}, j); err != nil {
		return false
	}
	phase, _ := Outcome(j)
	return phase != ""
}

// Terminate deletes the in-flight measurement's Job (and its pods, in the
// foreground), as Argo does when a run stops.
func (p *Provider) Terminate(ctx context.Context, run *v1alpha1.AnalysisRun, _ v1alpha1.Metric, inFlight *v1alpha1.Measurement) error {
	name := inFlight.Metadata[NameKey]
	if name == "" {
		return errors.New("job metadata reference missing")
	}
	j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: run.Namespace, Name: name}}
	err := p.Client.Delete(ctx, j, client.PropagationPolicy(metav1.DeletePropagationForeground))
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting job %s/%s: %w", run.Namespace, name, err)
	}
	return nil
}

// GarbageCollect deletes a run's metric's oldest Jobs beyond limit (the
// metric's measurement retention), as Argo does: the measurements they
// backed are no longer in the run's status.
func (p *Provider) GarbageCollect(ctx context.Context, run *v1alpha1.AnalysisRun, metric string, limit int) error {
	var r client.Reader = p.Client
	if p.Cache != nil {
		r = p.Cache
	}
	var list batchv1.JobList
	if err := r.List(ctx, &list, client.InNamespace(run.Namespace), client.MatchingLabels{RunUIDLabel: string(run.UID)}); err != nil {
		return err
	}
	var jobs []*batchv1.Job
	for i := range list.Items {
		if j := &list.Items[i]; j.Annotations[MetricAnnotation] == metric && j.DeletionTimestamp == nil {
			jobs = append(jobs, j)
		}
	}
	if len(jobs) <= limit {
		return nil
	}
	// Oldest first: by creation, then by the measurement number the name
	// ends with (creation times are to the second).
	sort.Slice(jobs, func(a, b int) bool {
		if !jobs[a].CreationTimestamp.Equal(&jobs[b].CreationTimestamp) {
			return jobs[a].CreationTimestamp.Before(&jobs[b].CreationTimestamp)
		}
		return number(jobs[a].Name) < number(jobs[b].Name)
	})
	for _, j := range jobs[:len(jobs)-limit] {
		err := p.Client.Delete(ctx, j, client.PropagationPolicy(metav1.DeletePropagationForeground))
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting job %s/%s (beyond the measurement retention): %w", j.Namespace, j.Name, err)
		}
	}
	return nil
}

// number is the measurement number a Job's name ends with (0 if none).
func number(name string) int {
	n, _ := strconv.Atoi(name[strings.LastIndexByte(name, '.')+1:])
	return n
}
