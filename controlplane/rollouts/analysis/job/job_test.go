package job

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

func kube(t *testing.T) client.Client {
	t.Helper()
	cfg := apiserver.Start(t)
	s := runtime.NewScheme()
	clientgoscheme.AddToScheme(s)
	v1alpha1.AddToScheme(s)
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func jobMetric() v1alpha1.Metric {
	return v1alpha1.Metric{Name: "smoke", Provider: v1alpha1.MetricProvider{Job: &v1alpha1.JobMetric{
		Metadata: metav1.ObjectMeta{Labels: map[string]string{"team": "a"}, Annotations: map[string]string{"note": "n"}},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "t", Image: "busybox", Command: []string{"true"}}}}}},
	}}}
}

// finish plays the Job controller: it marks the Job as the API server
// requires (start and completion times, the success or failure target
// condition first).
func finish(t *testing.T, c client.Client, ns, name string, ok bool) {
	t.Helper()
	j := &batchv1.Job{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, j); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	j.Status.StartTime = &now
	if ok {
		j.Status.CompletionTime = &now
		j.Status.Succeeded = 1
		j.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now},
		}
	} else {
		j.Status.Failed = 1
		j.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", LastTransitionTime: now},
			{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit", LastTransitionTime: now},
		}
	}
	if err := c.Status().Update(context.Background(), j); err != nil {
		t.Fatal(err)
	}
}

func TestJobProvider(t *testing.T) {
	c := kube(t)
	ctx := context.Background()
	run := &v1alpha1.AnalysisRun{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "default", UID: types.UID("0c2a3e7e-1111-4a5b-9c7d-000000000001")}}
	p := &Provider{Client: c, Poll: time.Second}
	m := jobMetric()

	r, err := p.Measure(ctx, run, m, nil)
	if err != nil || r.ResumeAfter != time.Second {
		t.Fatalf("%+v %v", r, err)
	}
	name := r.Metadata[NameKey]
	if name != string(run.UID)+".smoke.1" {
		t.Fatalf("job name %q", name)
	}
	j := &batchv1.Job{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, j); err != nil {
		t.Fatal(err)
	}
	if ref := metav1.GetControllerOf(j); ref == nil || ref.UID != run.UID || ref.Kind != "AnalysisRun" || ref.APIVersion != "meridian.io/v1alpha1" {
		t.Fatalf("owner %+v", ref)
	}
	if j.Labels[RunUIDLabel] != string(run.UID) || j.Labels["team"] != "a" || j.Annotations[RunNameAnnotation] != "r" || j.Annotations[MetricAnnotation] != "smoke" || j.Annotations["note"] != "n" {
		t.Fatalf("labels %v annotations %v", j.Labels, j.Annotations)
	}
	// Created again (the status was lost): the same Job is adopted.
	if r2, err := p.Measure(ctx, run, m, nil); err != nil || r2.Metadata[NameKey] != name {
		t.Fatalf("again: %+v %v", r2, err)
	}
	inFlight := &v1alpha1.Measurement{Phase: v1alpha1.AnalysisPhaseRunning, Metadata: map[string]string{NameKey: name}}
	if r, err := p.Measure(ctx, run, m, inFlight); err != nil || r.ResumeAfter == 0 || r.Phase != "" {
		t.Fatalf("running: %+v %v", r, err)
	}
	finish(t, c, "default", name, true)
	if r, err := p.Measure(ctx, run, m, inFlight); err != nil || r.Phase != v1alpha1.AnalysisPhaseSuccessful {
		t.Fatalf("complete: %+v %v", r, err)
	}

	// The second measurement's Job fails.
	run.Status.MetricResults = []v1alpha1.MetricResult{{Name: "smoke", Count: 1}}
	r, err = p.Measure(ctx, run, m, nil)
	if err != nil || r.Metadata[NameKey] != string(run.UID)+".smoke.2" {
		t.Fatalf("%+v %v", r, err)
	}
	finish(t, c, "default", r.Metadata[NameKey], false)
	inFlight = &v1alpha1.Measurement{Metadata: r.Metadata}
	if r, err := p.Measure(ctx, run, m, inFlight); err != nil || r.Phase != v1alpha1.AnalysisPhaseFailed || !strings.Contains(r.Message, "BackoffLimitExceeded") {
		t.Fatalf("failed: %+v %v", r, err)
	}

	// Terminate deletes the Job; a Job gone is an error for a measurement.
	if err := p.Terminate(ctx, run, m, inFlight); err != nil {
		t.Fatal(err)
	}
	err = c.Get(ctx, client.ObjectKey{Namespace: "default", Name: inFlight.Metadata[NameKey]}, &batchv1.Job{})
	if err == nil {
		// Foreground deletion: the object stays until its dependents are
		// gone, with a deletion timestamp.
		j := &batchv1.Job{}
		c.Get(ctx, client.ObjectKey{Namespace: "default", Name: inFlight.Metadata[NameKey]}, j)
		if j.DeletionTimestamp == nil {
			t.Fatal("job not deleted")
		}
	} else if !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if err := p.Terminate(ctx, run, m, &v1alpha1.Measurement{Metadata: map[string]string{NameKey: "gone"}}); err != nil {
		t.Fatalf("terminating a job already gone: %v", err)
	}
	if _, err := p.Measure(ctx, run, m, &v1alpha1.Measurement{Metadata: map[string]string{NameKey: "gone"}}); err == nil || !strings.Contains(err.Error(), "deleted before it finished") {
		t.Fatalf("gone: %v", err)
	}

	// A Job of that name owned by someone else is not adopted.
	other := *run
	other.UID = "0c2a3e7e-1111-4a5b-9c7d-000000000002"
	clash := New(&other, m)
	clash.Name = Name(run, "smoke")
	clash.Name = strings.Replace(clash.Name, ".2", ".3", 1)
	if err := c.Create(ctx, clash); err != nil {
		t.Fatal(err)
	}
	run.Status.MetricResults[0].Count = 2
	if _, err := p.Measure(ctx, run, m, nil); err == nil || !strings.Contains(err.Error(), "is not this run's") {
		t.Fatalf("clash: %v", err)
	}

	// A spec the API server rejects is an error naming the Job.
	bad := jobMetric()
	bad.Provider.Job.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyAlways
	run.Status.MetricResults[0].Count = 5
	if _, err := p.Measure(ctx, run, bad, nil); err == nil || !strings.Contains(err.Error(), "creating job default/") || !strings.Contains(err.Error(), "restartPolicy") {
		t.Fatalf("bad spec: %v", err)
	}

	// Garbage collection: a run's metric's Jobs beyond the retention go,
	// oldest first (measurements 9 and 10 of 9..12 with a limit of 2);
	// another metric's stay.
	gc := &v1alpha1.AnalysisRun{ObjectMeta: metav1.ObjectMeta{Name: "gc", Namespace: "default", UID: "0c2a3e7e-1111-4a5b-9c7d-000000000009"}}
	other2 := jobMetric()
	other2.Name = "other"
	for n := int32(8); n < 12; n++ {
		gc.Status.MetricResults = []v1alpha1.MetricResult{{Name: "smoke", Count: n}, {Name: "other", Count: n}}
		if _, err := p.Measure(ctx, gc, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Measure(ctx, gc, other2, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.GarbageCollect(ctx, gc, "smoke", 2); err != nil {
		t.Fatal(err)
	}
	var list batchv1.JobList
	if err := c.List(ctx, &list, client.MatchingLabels{RunUIDLabel: string(gc.UID)}); err != nil {
		t.Fatal(err)
	}
	deleted := map[string]bool{}
	for _, j := range list.Items {
		// No garbage collector here: a foreground deletion leaves the Job
		// marked until its pods are gone.
		deleted[strings.TrimPrefix(j.Name, string(gc.UID)+".")] = j.DeletionTimestamp != nil
	}
	want := map[string]bool{"smoke.9": true, "smoke.10": true, "smoke.11": false, "smoke.12": false, "other.12": false}
	if fmt.Sprint(deleted) != fmt.Sprint(want) {
		t.Fatalf("jobs deleted %v, want %v", deleted, want)
	}
}
