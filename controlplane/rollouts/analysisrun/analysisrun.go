// Package analysisrun runs AnalysisRuns: it watches the runs (and the Jobs
// they create), takes each running run's measurements when they are due
// with the metric's provider (meridian, prometheus, web, job), judges and
// accounts them (controlplane/rollouts/analysis), writes the run's status
// through the status subresource, and looks again when the next
// measurement is due. It is a writer: it runs on the leader only.
package analysisrun

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis/job"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis/meridian"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis/prometheus"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis/web"
)

// DefaultWorkers is how many runs are reconciled at once. A measurement
// blocks its worker for at most its provider's timeout (a web or prometheus
// request); meridian windows and jobs do not block one.
const DefaultWorkers = 4

// Masked replaces a Secret's value in what the runner writes (Argo's mask).
const Masked = "*****"

// Options configure the runner.
type Options struct {
	// Workers reconcile runs at once (DefaultWorkers).
	Workers int
	Log     *slog.Logger
	// Now is the clock (time.Now).
	Now func() time.Time
	// MeridianRead reads a pod's proxy (meridian.HTTPReader by default;
	// tests read proxies on loopback).
	MeridianRead meridian.Reader
	// JobPoll is how often an unfinished Job is looked at without a watch
	// event (job.DefaultPoll).
	JobPoll time.Duration
	// CRDRetry is how often the runner looks for the AnalysisRun CRD when
	// it is not installed (30s).
	CRDRetry time.Duration
}

// Controller is the AnalysisRun runner.
type Controller struct {
	o         Options
	cache     cache.Cache
	client    client.Client // direct: status writes, Jobs, Secrets, Rollouts, Pods
	providers Providers
	proxies   *http.Transport // the meridian provider's, to the pods' proxies
	queue     workqueue.TypedRateLimitingInterface[types.NamespacedName]
}

// Scheme is the types the runner reads and writes.
func Scheme() *kruntime.Scheme {
	s := kruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// New makes the runner for the cluster cfg reaches.
func New(cfg *rest.Config, o Options) (*Controller, error) {
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CRDRetry <= 0 {
		o.CRDRetry = 30 * time.Second
	}
	s := Scheme()
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		return nil, err
	}
	owned, err := labels.NewRequirement(job.RunUIDLabel, selection.Exists, nil)
	if err != nil {
		return nil, err
	}
	ca, err := cache.New(cfg, cache.Options{
		Scheme:           s,
		DefaultTransform: cache.TransformStripManagedFields(),
		// Only the Jobs runs made.
		ByObject: map[client.Object]cache.ByObject{&batchv1.Job{}: {Label: labels.NewSelector().Add(*owned)}},
	})
	if err != nil {
		return nil, err
	}
	proxies := http.DefaultTransport.(*http.Transport).Clone()
	read := o.MeridianRead
	if read == nil {
		read = meridian.HTTPReader(&http.Client{Timeout: 10 * time.Second, Transport: proxies})
	}
	return &Controller{
		o:       o,
		cache:   ca,
		client:  c,
		proxies: proxies,
		providers: Providers{
			Meridian:   &meridian.Provider{Client: c, Read: read},
			Prometheus: &prometheus.Provider{},
			Web:        &web.Provider{},
			Job:        &job.Provider{Client: c, Cache: ca, Poll: o.JobPoll},
		},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[types.NamespacedName](),
			workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "analysisruns"}),
	}, nil
}

// Start runs the runner until ctx ends (the Lease is lost, or shutdown):
// the watches, then the workers; it returns after every worker has.
func (c *Controller) Start(ctx context.Context) error {
	defer c.queue.ShutDown()
	defer c.closeIdle()
	runs, err := c.cache.GetInformer(ctx, &v1alpha1.AnalysisRun{})
	for meta.IsNoMatchError(err) {
		// The CRD is not installed (yet): wait for it rather than stop the
		// controller's other writers.
		c.o.Log.Warn("the AnalysisRun CRD is not installed; the runner waits for it", "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.o.CRDRetry):
		}
		runs, err = c.cache.GetInformer(ctx, &v1alpha1.AnalysisRun{})
	}
	if err != nil {
		return fmt.Errorf("watching analysisruns: %w", err)
	}
	if _, err := runs.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { c.enqueue(o) },
		UpdateFunc: func(_, o any) { c.enqueue(o) },
		DeleteFunc: func(o any) {
			if t, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if run, ok := o.(*v1alpha1.AnalysisRun); ok {
				c.providers.forget(run.UID)
			}
		},
	}); err != nil {
		return err
	}
	jobs, err := c.cache.GetInformer(ctx, &batchv1.Job{})
	if err != nil {
		return fmt.Errorf("watching jobs: %w", err)
	}
	if _, err := jobs.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { c.enqueueJobRun(o) },
		UpdateFunc: func(_, o any) { c.enqueueJobRun(o) },
		DeleteFunc: func(o any) {
			if t, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			c.enqueueJobRun(o)
		},
	}); err != nil {
		return err
	}
	cacheDone := make(chan error, 1)
	go func() { cacheDone <- c.cache.Start(ctx) }()
	if !c.cache.WaitForCacheSync(ctx) {
		<-cacheDone
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("analysisrun: the caches of runs and jobs did not sync")
	}
	c.o.Log.Info("analysisrun runner started", "workers", c.o.Workers)
	var wg sync.WaitGroup
	for range c.o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	return <-cacheDone
}

// closeIdle closes the providers' kept-alive connections, so that nothing
// of the runner outlives Start.
func (c *Controller) closeIdle() {
	c.proxies.CloseIdleConnections()
	for _, pr := range []analysis.Provider{c.providers.Meridian, c.providers.Prometheus, c.providers.Web, c.providers.Job} {
		if i, ok := pr.(interface{ CloseIdleConnections() }); ok {
			i.CloseIdleConnections()
		}
	}
}

func (c *Controller) enqueue(o any) {
	if run, ok := o.(*v1alpha1.AnalysisRun); ok {
		c.queue.Add(types.NamespacedName{Namespace: run.Namespace, Name: run.Name})
	}
}

func (c *Controller) enqueueJobRun(o any) {
	if j, ok := o.(*batchv1.Job); ok && j.Annotations[job.RunNameAnnotation] != "" {
		c.queue.Add(types.NamespacedName{Namespace: j.Namespace, Name: j.Annotations[job.RunNameAnnotation]})
	}
}

func (c *Controller) next(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	after, err := c.Reconcile(ctx, key)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			c.o.Log.Warn("analysisrun not reconciled; retrying", "run", key.String(), "error", err)
		}
		c.queue.AddRateLimited(key)
	default:
		c.queue.Forget(key)
		if after > 0 {
			c.queue.AddAfter(key, after)
		}
	}
	return true
}

// Reconcile takes a run's due measurements and writes its status; it
// returns when the run next needs a look (0: it waits on nothing but a
// change).
func (c *Controller) Reconcile(ctx context.Context, key types.NamespacedName) (time.Duration, error) {
	cur := &v1alpha1.AnalysisRun{}
	if err := c.cache.Get(ctx, key, cur); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, nil
		}
		return 0, err
	}
	if cur.Status.Phase.Completed() {
		c.providers.forget(cur.UID)
		return 0, nil
	}
	run := cur.DeepCopy()
	now := c.o.Now()
	r := &resolver{ctx: ctx, c: c.client, run: run}
	var next time.Time
	vals, err := analysis.ArgValues(run.Spec.Args, r.resolve)
	if err != nil {
		// A bad run is Error, saying which argument and why.
		analysis.Assess(run, now) // startedAt, summaries
		run.Status.Phase = v1alpha1.AnalysisPhaseError
		run.Status.Message = "spec.args: " + err.Error()
	} else {
		c.wake(ctx, run, now)
		next = analysis.Step(ctx, run, vals, c.providers, now)
	}
	mask(run, r.secrets)
	if !equality.Semantic.DeepEqual(cur.Status, run.Status) {
		if err := c.client.Status().Update(ctx, run); err != nil {
			return 0, fmt.Errorf("writing the status of analysisrun %s: %w", key, err)
		}
		if run.Status.Phase != cur.Status.Phase {
			c.o.Log.Info("analysisrun", "run", key.String(), "phase", run.Status.Phase, "message", run.Status.Message)
		}
		c.collect(ctx, run)
	}
	if run.Status.Phase.Completed() {
		c.providers.forget(run.UID)
		return 0, nil
	}
	if next.IsZero() {
		return 0, nil
	}
	return max(next.Sub(c.o.Now()), time.Millisecond), nil
}

// collect deletes what the providers left behind measurements the run no
// longer keeps (Jobs beyond the measurement retention), as Argo does. A
// failure is logged: the next write tries again.
func (c *Controller) collect(ctx context.Context, run *v1alpha1.AnalysisRun) {
	for i := range run.Spec.Metrics {
		metric := &run.Spec.Metrics[i]
		pr, err := c.providers.For(metric)
		if err != nil {
			continue
		}
		if gc, ok := pr.(collector); ok {
			if err := gc.GarbageCollect(ctx, run, metric.Name, analysis.Retention(&run.Spec, metric.Name)); err != nil {
				c.o.Log.Warn("analysisrun garbage collection", "run", run.Namespace+"/"+run.Name, "metric", metric.Name, "error", err)
			}
		}
	}
}

// wake makes in-flight measurements due now when waiting for their resumeAt
// would only delay the run: the run is terminating (spec.terminate, or a
// metric decided it), so the measurement ends "Metric Terminated" and its
// Job goes at once; or the provider sees it is done (its Job finished:
// the Job watch brought the run here).
func (c *Controller) wake(ctx context.Context, run *v1alpha1.AnalysisRun, now time.Time) {
	terminating := analysis.Terminating(run)
	for i := range run.Status.MetricResults {
		res := &run.Status.MetricResults[i]
		if res.Phase.Completed() || len(res.Measurements) == 0 {
			continue
		}
		m := &res.Measurements[len(res.Measurements)-1]
		if m.FinishedAt != nil || m.ResumeAt == nil || !m.ResumeAt.After(now) {
			continue
		}
		if terminating {
			m.ResumeAt = nil
			continue
		}
		metric := metricNamed(run, res.Name)
		if metric == nil {
			continue
		}
		if pr, err := c.providers.For(metric); err == nil {
			if f, ok := pr.(finisher); ok && f.Finished(ctx, run, m) {
				m.ResumeAt = nil
			}
		}
	}
}

func metricNamed(run *v1alpha1.AnalysisRun, name string) *v1alpha1.Metric {
	for i := range run.Spec.Metrics {
		if run.Spec.Metrics[i].Name == name {
			return &run.Spec.Metrics[i]
		}
	}
	return nil
}

// mask replaces the Secrets' values in the status's messages, values and
// metadata (a query or URL with a token substituted, an error echoing it).
func mask(run *v1alpha1.AnalysisRun, secrets []string) {
	if len(secrets) == 0 {
		return
	}
	m := func(s string) string {
		for _, v := range secrets {
			s = strings.ReplaceAll(s, v, Masked)
		}
		return s
	}
	run.Status.Message = m(run.Status.Message)
	for i := range run.Status.MetricResults {
		res := &run.Status.MetricResults[i]
		res.Message = m(res.Message)
		for k, v := range res.Metadata {
			res.Metadata[k] = m(v)
		}
		for j := range res.Measurements {
			ms := &res.Measurements[j]
			ms.Message, ms.Value = m(ms.Message), m(ms.Value)
			for k, v := range ms.Metadata {
				ms.Metadata[k] = m(v)
			}
		}
	}
}
