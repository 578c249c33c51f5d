// Package reconciler carries out what the Rollout step machine
// (controlplane/rollouts/steps) decides: it gathers the facts about each
// Rollout (its template, ReplicaSets, AnalysisRuns), asks steps.Reconcile,
// and makes the cluster match the answer — ReplicaSets created and scaled,
// Service selectors, the traffic Router's weights, AnalysisRuns created and
// terminated, the status written. Argo Rollouts v1.8's semantics and names.
package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/traffic"
)

// Options configure a Reconciler.
type Options struct {
	// Config reaches the API server.
	Config *rest.Config
	// Routers returns the traffic Router for a Rollout with trafficRouting
	// (it is not called for one without).
	Routers func(*v1alpha1.Rollout) (traffic.Router, error)
	// Now is the clock (default time.Now); tests move their own.
	Now func() time.Time
	// Resync is how often every Rollout is decided again though nothing
	// changed (default 5m), a safety net for missed events.
	Resync time.Duration
	// Namespace, when set, limits the reconciler to one namespace's
	// Rollouts (and the objects it reads to that namespace's); empty: all.
	Namespace string
	// Workers is how many Rollouts are reconciled at once (default 2).
	Workers int
	Log     *slog.Logger
}

// Reconciler reconciles every Rollout of the cluster.
type Reconciler struct {
	o      Options
	scheme *runtime.Scheme
	cache  cache.Cache
	// client writes; reader reads from the API server itself (the Rollout
	// a decision starts from must be the latest, else an old status would
	// be decided again).
	client client.Client
	queue  workqueue.TypedRateLimitingInterface[string]

	mu sync.Mutex
	// gone holds deleted Rollouts until their Router has removed what it
	// wrote.
	gone map[string]*v1alpha1.Rollout
}

// New returns a Reconciler; Start runs it.
func New(o Options) (*Reconciler, error) {
	if o.Config == nil {
		return nil, errors.New("rollouts reconciler: no API server configuration")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Resync <= 0 {
		o.Resync = 5 * time.Minute
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	co := cache.Options{Scheme: s, SyncPeriod: &o.Resync}
	if o.Namespace != "" {
		co.DefaultNamespaces = map[string]cache.Config{o.Namespace: {}}
	}
	c, err := cache.New(o.Config, co)
	if err != nil {
		return nil, err
	}
	cl, err := client.New(o.Config, client.Options{Scheme: s})
	if err != nil {
		return nil, err
	}
	return &Reconciler{o: o, scheme: s, cache: c, client: cl, gone: map[string]*v1alpha1.Rollout{}}, nil
}

// Start watches and reconciles until ctx ends.
func (r *Reconciler) Start(ctx context.Context) error {
	r.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer r.queue.ShutDown()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	cacheErr := make(chan error, 1)
	go func() { cacheErr <- r.cache.Start(ctx) }()

	// Each kind's events map to the Rollouts they concern.
	watch := []struct {
		obj client.Object
		to  func(client.Object) []string
	}{
		{&v1alpha1.Rollout{}, func(o client.Object) []string { return []string{key(o.GetNamespace(), o.GetName())} }},
		{&appsv1.ReplicaSet{}, r.owner},
		{&v1alpha1.AnalysisRun{}, r.owner},
		{&appsv1.Deployment{}, r.inNamespace},
		{&corev1.Service{}, r.inNamespace},
		{&v1alpha1.AnalysisTemplate{}, r.inNamespace},
		{&v1alpha1.ClusterAnalysisTemplate{}, r.inNamespace},
	}
	for _, w := range watch {
		inf, err := r.cache.GetInformer(ctx, w.obj)
		if err != nil {
			return fmt.Errorf("rollouts reconciler: watching %T: %w", w.obj, err)
		}
		to := w.to
		add := func(o any) {
			if obj, ok := o.(client.Object); ok {
				for _, k := range to(obj) {
					r.queue.Add(k)
				}
			}
		}
		_, isRollout := w.obj.(*v1alpha1.Rollout)
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    add,
			UpdateFunc: func(_, o any) { add(o) },
			DeleteFunc: func(o any) {
				if t, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
					o = t.Obj
				}
				if ro, ok := o.(*v1alpha1.Rollout); ok && isRollout && ro.Spec.Strategy.Canary != nil && ro.Spec.Strategy.Canary.TrafficRouting != nil {
					r.mu.Lock()
					r.gone[key(ro.Namespace, ro.Name)] = ro
					r.mu.Unlock()
				}
				add(o)
			},
		}); err != nil {
			return err
		}
	}
	if !r.cache.WaitForCacheSync(ctx) {
		cancel()
		if err := <-cacheErr; err != nil {
			return fmt.Errorf("rollouts reconciler: cache: %w", err)
		}
		return ctx.Err()
	}
	r.o.Log.Info("rollouts reconciler: started")
	var wg sync.WaitGroup
	for range r.o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r.next(ctx) {
			}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-cacheErr:
	}
	r.queue.ShutDown()
	cancel()
	wg.Wait()
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

func (r *Reconciler) next(ctx context.Context) bool {
	k, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(k)
	after, err := r.sync(ctx, k)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			r.o.Log.Warn("rollouts reconciler: will retry", "rollout", k, "err", err)
		}
		r.queue.AddRateLimited(k)
	default:
		r.queue.Forget(k)
		if after > 0 {
			r.queue.AddAfter(k, after)
		}
	}
	return true
}

func key(ns, name string) string { return ns + "/" + name }

// owner is the Rollout that controls o.
func (r *Reconciler) owner(o client.Object) []string {
	if ref := metav1.GetControllerOf(o); ref != nil && ref.Kind == "Rollout" && ref.APIVersion == v1alpha1.GroupVersion.String() {
		return []string{key(o.GetNamespace(), ref.Name)}
	}
	return nil
}

// inNamespace is every Rollout of o's namespace (all of them for a
// cluster-scoped o): a Deployment, Service or template may be the one a
// Rollout waits for.
func (r *Reconciler) inNamespace(o client.Object) []string {
	var l v1alpha1.RolloutList
	var opts []client.ListOption
	if ns := o.GetNamespace(); ns != "" {
		opts = append(opts, client.InNamespace(ns))
	}
	if err := r.cache.List(context.Background(), &l, opts...); err != nil {
		return nil
	}
	keys := make([]string, 0, len(l.Items))
	for _, ro := range l.Items {
		keys = append(keys, key(ro.Namespace, ro.Name))
	}
	return keys
}

func sortStrings(s []string) { slices.Sort(s) }

// isOwnedBy reports whether ro controls o.
func isOwnedBy(o metav1.Object, ro *v1alpha1.Rollout) bool {
	ref := metav1.GetControllerOf(o)
	return ref != nil && ref.UID == ro.UID
}
