// Package local drives Rollouts in local mode (a store directory, no API
// server): it runs the same step machine (controlplane/rollouts/steps) and
// the same analysis (controlplane/rollouts/analysis with the meridian
// provider) as the Kubernetes reconciler, over facts it gathers from a
// ReplicaSets implementation that runs the instances (in `meridian demo`,
// the launcher), and writes each Rollout's status into the directory's
// status file, from which the controller compiles the traffic split for
// every proxy in one update (`trafficRouting.meridian: {}`).
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis/meridian"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/reconciler"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/steps"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/traffic"
	"github.com/meridian-mesh/meridian/controlplane/store"
	storelocal "github.com/meridian-mesh/meridian/controlplane/store/local"
)

// StatusFile is the file of the directory the driver writes the Rollouts'
// statuses to (a store/local status file).
const StatusFile = "meridian-rollouts" + storelocal.StatusSuffix

// DefaultInterval is how often the driver decides and reads the directory.
const DefaultInterval = 250 * time.Millisecond

// ReplicaSets plays the ReplicaSet controller and the kubelet of local
// mode: it runs the instances of a Rollout's pod templates. Its methods are
// called from one goroutine at a time per Rollout; Pods may be called from
// any goroutine.
type ReplicaSets interface {
	// Scale makes n instances of the Rollout's template of hash run,
	// starting or stopping instances in the background. template is the
	// Rollout's current template when hash is its hash, else nil: the
	// implementation runs the template it was given for that hash before
	// (an error if it has none and n > 0).
	Scale(ro *v1alpha1.Rollout, hash string, template *corev1.PodTemplateSpec, n int32) error
	// ReplicaSets are what is observed of the Rollout's instances, by
	// hash: Replicas (the count last asked), Ready (serving), Available
	// (ready, and known to the control plane's endpoints).
	ReplicaSets(ro *v1alpha1.Rollout) []steps.ReplicaSet
	// Pods are the running instances of namespace ns as Pods: labels (the
	// template's and rollouts-pod-template-hash), Running, the IP, and a
	// meridian-proxy container with its meridian-admin port, as
	// controlplane/rollouts/analysis/meridian reads them.
	Pods(ns string) []corev1.Pod
}

// Options configure a Driver.
type Options struct {
	// Dir is the store directory (the controller's --store=dir:).
	Dir string
	// ReplicaSets runs the instances.
	ReplicaSets ReplicaSets
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Interval is how often the driver reads the directory and decides
	// (default DefaultInterval).
	Interval time.Duration
	// Compile are the controller's compile options (to verify the split).
	Compile compile.Options
	// Provider measures the analysis (default: the meridian provider
	// reading the instances' proxies' admin ports).
	Provider analysis.Provider
	// Progress, when set, gets a line for each step of each Rollout:
	// steps, weights, analysis results, abort, promotion.
	Progress func(string)
	Log      *slog.Logger
}

// Driver drives the Rollouts of a store directory.
type Driver struct {
	o    Options
	view *store.Store // the directory, as the controller loads it

	// pass is held by a whole decision pass and by Act: a user's action
	// lands between two passes, never under a decision made from the
	// status before it (the API server's resourceVersion check does this
	// for the reconciler).
	pass sync.Mutex

	mu        sync.Mutex
	specs     map[store.Key]*v1alpha1.Rollout              // as declared (with the directory's status)
	templates map[store.Key]*v1alpha1.AnalysisTemplateSpec // cluster ones with no namespace
	rollouts  map[store.Key]*state
	loaded    chan struct{}
	written   time.Time // the status file's last modification time
	dirty     bool      // the status file is behind (under pass)
}

// state is what the driver holds for one Rollout.
type state struct {
	status    *v1alpha1.RolloutStatus // as last written: the truth, not the directory's copy
	uid       types.UID
	created   metav1.Time
	runs      map[string]*run
	deadlines map[string]time.Time // scale-down deadlines by hash
	last      progress
}

type run struct {
	run  *v1alpha1.AnalysisRun
	vals map[string]string
	next time.Time
	err  error // the args could not be resolved
}

type progress struct {
	phase   v1alpha1.RolloutPhase
	message string
	step    string
	weights string
}

// New returns a Driver; Run runs it.
func New(o Options) (*Driver, error) {
	if o.Dir == "" {
		return nil, errors.New("local rollouts: no store directory")
	}
	if o.ReplicaSets == nil {
		return nil, errors.New("local rollouts: no ReplicaSets to run the instances")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Compile.ClusterDomain == "" {
		o.Compile.ClusterDomain = compile.DefaultClusterDomain
	}
	d := &Driver{o: o, view: store.New(store.WithClusterDomain(o.Compile.ClusterDomain)),
		specs: map[store.Key]*v1alpha1.Rollout{}, templates: map[store.Key]*v1alpha1.AnalysisTemplateSpec{},
		rollouts: map[store.Key]*state{}, loaded: make(chan struct{})}
	if d.o.Provider == nil {
		d.o.Provider = &meridian.Provider{Client: objects{d}}
	}
	return d, nil
}

// Run drives the Rollouts until ctx ends.
func (d *Driver) Run(ctx context.Context) error {
	watchErr := make(chan error, 1)
	go func() {
		var once sync.Once
		watchErr <- storelocal.Watch(ctx, d.o.Dir, d.view, d.o.Log, storelocal.Interval(d.o.Interval),
			storelocal.OnObjects(d.objects), storelocal.OnStatus(func(storelocal.Status) { once.Do(func() { close(d.loaded) }) }))
	}()
	select {
	case err := <-watchErr:
		if err != nil {
			return fmt.Errorf("local rollouts: %w", err)
		}
		return nil
	case <-d.loaded:
	}
	t := time.NewTicker(d.o.Interval)
	defer t.Stop()
	for {
		d.decideAll(ctx)
		select {
		case <-ctx.Done():
			<-watchErr
			return nil
		case <-t.C:
		}
	}
}

// objects takes the Rollouts and analysis templates of a directory load.
func (d *Driver) objects(objs []runtime.Object) {
	specs := map[store.Key]*v1alpha1.Rollout{}
	templates := map[store.Key]*v1alpha1.AnalysisTemplateSpec{}
	for _, o := range objs {
		switch x := o.(type) {
		case *v1alpha1.Rollout:
			specs[store.Key{Namespace: x.Namespace, Name: x.Name}] = x
		case *v1alpha1.AnalysisTemplate:
			templates[store.Key{Namespace: x.Namespace, Name: x.Name}] = &x.Spec
		case *v1alpha1.ClusterAnalysisTemplate:
			templates[store.Key{Name: x.Name}] = &x.Spec
		}
	}
	d.mu.Lock()
	d.specs, d.templates = specs, templates
	d.mu.Unlock()
}

// decideAll decides every Rollout once and writes the statuses that changed.
func (d *Driver) decideAll(ctx context.Context) {
	d.pass.Lock()
	defer d.pass.Unlock()
	d.mu.Lock()
	keys := make([]store.Key, 0, len(d.specs))
	for k := range d.specs {
		keys = append(keys, k)
	}
	for k := range d.rollouts {
		if d.specs[k] == nil {
			delete(d.rollouts, k) // deleted from the directory: its status goes too
		}
	}
	d.mu.Unlock()
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	changed := false
	for _, k := range keys {
		if d.decide(ctx, k) {
			changed = true
		}
	}
	if changed || d.dirty {
		// A failed write is tried again at the next decision.
		d.dirty = false
		if err := d.writeStatuses(); err != nil {
			d.dirty = true
			d.o.Log.Error("local rollouts: writing the status file", "file", filepath.Join(d.o.Dir, StatusFile), "err", err)
		}
	}
}

// ErrNotFound is Act's error for a Rollout the directory does not declare.
var ErrNotFound = errors.New("not found")

// Act applies a user's action to Rollout namespace/name's status, as
// `meridian rollout promote`, `abort` and `retry` patch the status
// subresource in a cluster (f is steps.Promote, steps.Abort or
// steps.Retry): between two decision passes, written with the next. Only
// the status is kept: the spec is the directory's.
func (d *Driver) Act(namespace, name string, f func(*v1alpha1.Rollout)) error {
	d.pass.Lock()
	defer d.pass.Unlock()
	k := store.Key{Namespace: namespace, Name: name}
	ro, s := d.rollout(k)
	if ro == nil {
		return fmt.Errorf("rollout %s/%s: %w", namespace, name, ErrNotFound)
	}
	f(ro)
	d.setStatus(k, s, ro.Status)
	d.dirty = true
	return nil
}

// rollout is Rollout k as the driver decides it: the declared spec with the
// status last written.
func (d *Driver) rollout(k store.Key) (*v1alpha1.Rollout, *state) {
	d.mu.Lock()
	defer d.mu.Unlock()
	spec := d.specs[k]
	if spec == nil {
		return nil, nil
	}
	s := d.rollouts[k]
	if s == nil {
		// First sight: the status the directory holds (a previous run's).
		s = &state{status: spec.Status.DeepCopy(), uid: uuid.NewUUID(), created: metav1.NewTime(d.o.Now()), runs: map[string]*run{}, deadlines: map[string]time.Time{}}
		d.rollouts[k] = s
	}
	ro := spec.DeepCopy()
	ro.UID = s.uid
	if ro.CreationTimestamp.IsZero() {
		ro.CreationTimestamp = s.created // when the driver first saw it
	}
	ro.Status = *s.status.DeepCopy()
	return ro, s
}

// decide makes one decision for Rollout k and carries it out; it reports
// whether the status changed.
func (d *Driver) decide(ctx context.Context, k store.Key) bool {
	ro, s := d.rollout(k)
	if ro == nil {
		return false
	}
	now := d.o.Now()
	if msg := d.unsupported(ro); msg != "" {
		return d.setStatus(k, s, invalid(ro, msg, now))
	}
	hash := reconciler.PodTemplateHash(ro.Spec.Template, ro.Status.CollisionCount)
	rss := d.o.ReplicaSets.ReplicaSets(ro)
	d.mu.Lock()
	for i := range rss {
		rss[i].ScaleDownDeadline = s.deadlines[rss[i].Hash]
	}
	in := steps.Input{Rollout: ro, PodHash: hash, ReplicaSets: rss, AnalysisRuns: map[string]steps.AnalysisRun{}, Now: now}
	for name, r := range s.runs {
		in.AnalysisRuns[name] = steps.AnalysisRun{Phase: r.run.Status.Phase, Message: r.run.Status.Message}
	}
	d.mu.Unlock()
	out := steps.Reconcile(in)
	st := out.Status
	if len(ro.Validate()) > 0 {
		return d.setStatus(k, s, st) // InvalidSpec, and nothing else changes
	}

	// New instances first, then the traffic (the status), then the
	// scale-downs (which the step machine delays until traffic has left).
	observed := map[string]int32{}
	for _, rs := range rss {
		observed[rs.Hash] = rs.Replicas
	}
	scale := func(up bool) {
		for _, h := range sortedKeys(out.Replicas) {
			n := out.Replicas[h]
			if (up && n > observed[h]) || (!up && n < observed[h]) {
				var tmpl *corev1.PodTemplateSpec
				if h == hash {
					tmpl = ro.Spec.Template
				}
				if err := d.o.ReplicaSets.Scale(ro, h, tmpl, n); err != nil {
					d.o.Log.Error("local rollouts: scaling", "rollout", k, "hash", h, "replicas", n, "err", err)
					continue
				}
				d.progress(fmt.Sprintf("rollout %s: %s %s-%s to %d", k, map[bool]string{true: "scaled up", false: "scaled down"}[up], ro.Name, h, n))
			}
		}
	}
	scale(true)
	if w := st.Canary.Weights; w != nil {
		c := ro.Spec.Strategy.Canary
		w.Canary.ServiceName, w.Stable.ServiceName = c.CanaryService, c.StableService
		// The split is what the directory compiles once it holds this
		// status: verified from the driver's own view of it, as the
		// reconciler's Router verifies from the controller's store.
		view := ro.DeepCopy()
		view.Status = *st.DeepCopy()
		ok, err := traffic.New(traffic.Options{Store: d.view, Compile: d.o.Compile}).For(view)
		if err == nil {
			v, err := ok.Verify(ctx, view, out.Weights)
			if err == nil {
				w.Verified = &v
			}
		}
	}
	scale(false)

	d.mu.Lock()
	for _, sd := range out.ScaleDowns {
		s.deadlines[sd.Hash] = sd.At
	}
	for _, h := range out.ClearScaleDowns {
		delete(s.deadlines, h)
	}
	for h := range s.deadlines {
		if out.Replicas[h] == 0 && observed[h] == 0 {
			delete(s.deadlines, h)
		}
	}
	d.mu.Unlock()
	for _, c := range out.Create {
		r, err := d.newRun(ro, c, now)
		if err != nil {
			st = invalid(&v1alpha1.Rollout{ObjectMeta: ro.ObjectMeta, Status: st}, fmt.Sprintf("AnalysisRun %s: %v", c.Name, err), now)
			break
		}
		d.mu.Lock()
		s.runs[c.Name] = r
		d.mu.Unlock()
		d.progress(fmt.Sprintf("rollout %s: analysis %s started (%s)", k, c.Name, metricNames(r.run)))
	}
	for _, name := range out.Cancel {
		d.mu.Lock()
		if r := s.runs[name]; r != nil && !r.run.Spec.Terminate {
			r.run = r.run.DeepCopy()
			r.run.Spec.Terminate = true
			r.next = now
		}
		d.mu.Unlock()
	}
	d.measure(ctx, k, s, now)
	return d.setStatus(k, s, st)
}

// unsupported says why local mode cannot drive ro ("" when it can): it
// routes only with Meridian's own split, and its Services and templates
// must be declared.
func (d *Driver) unsupported(ro *v1alpha1.Rollout) string {
	c := ro.Spec.Strategy.Canary
	switch {
	case ro.Spec.WorkloadRef != nil:
		return "spec.workloadRef: local mode has no Deployments; give the Rollout a template"
	case c == nil:
		return "spec.strategy.blueGreen: local mode drives canary Rollouts only"
	case !compile.MeridianRouted(ro):
		return "spec.strategy.canary.trafficRouting: local mode routes with Meridian's own split only (meridian: {}, with stableService and canaryService)"
	}
	for _, svc := range []struct{ field, name string }{{"canaryService", c.CanaryService}, {"stableService", c.StableService}} {
		if _, ok := d.view.Service(store.Key{Namespace: ro.Namespace, Name: svc.name}); !ok {
			return fmt.Sprintf("spec.strategy.canary.%s: Service %s/%s not found", svc.field, ro.Namespace, svc.name)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, s := range c.Steps {
		if s.Analysis == nil {
			continue
		}
		for j, t := range s.Analysis.Templates {
			k := store.Key{Namespace: ro.Namespace, Name: t.TemplateName}
			kind := "AnalysisTemplate " + k.String()
			if t.ClusterScope {
				k, kind = store.Key{Name: t.TemplateName}, "ClusterAnalysisTemplate "+t.TemplateName
			}
			if d.templates[k] == nil {
				return fmt.Sprintf("spec.strategy.canary.steps[%d].analysis.templates[%d]: %s not found", i, j, kind)
			}
		}
	}
	if c.Analysis != nil {
		return "spec.strategy.canary.analysis: local mode runs step analyses only (background analysis is not driven here)"
	}
	return ""
}

// invalid is ro's status with InvalidSpec msg (phase Degraded), nothing else changed.
func invalid(ro *v1alpha1.Rollout, msg string, now time.Time) v1alpha1.RolloutStatus {
	st := *ro.Status.DeepCopy()
	st.ObservedGeneration = strconv.FormatInt(ro.Generation, 10)
	found := false
	for i := range st.Conditions {
		if c := &st.Conditions[i]; c.Type == v1alpha1.InvalidSpec {
			found = true
			if c.Status != corev1.ConditionTrue || c.Message != msg {
				c.Status, c.Reason, c.Message = corev1.ConditionTrue, "InvalidSpec", msg
				c.LastUpdateTime, c.LastTransitionTime = metav1.NewTime(now), metav1.NewTime(now)
			}
		}
	}
	if !found {
		st.Conditions = append(st.Conditions, v1alpha1.RolloutCondition{Type: v1alpha1.InvalidSpec, Status: corev1.ConditionTrue,
			Reason: "InvalidSpec", Message: msg, LastUpdateTime: metav1.NewTime(now), LastTransitionTime: metav1.NewTime(now)})
	}
	st.Phase = v1alpha1.RolloutPhaseDegraded
	st.Message = "InvalidSpec: " + msg
	return st
}

// setStatus records st as Rollout k's status and reports a change.
func (d *Driver) setStatus(k store.Key, s *state, st v1alpha1.RolloutStatus) bool {
	d.mu.Lock()
	changed := !equality.Semantic.DeepEqual(*s.status, st)
	if changed {
		s.status = st.DeepCopy()
	}
	d.mu.Unlock()
	if changed {
		d.report(k, s, st)
	}
	return changed
}

// report writes the progress lines of a status change.
func (d *Driver) report(k store.Key, s *state, st v1alpha1.RolloutStatus) {
	d.mu.Lock()
	spec := d.specs[k]
	d.mu.Unlock()
	var p progress
	p.phase, p.message = st.Phase, st.Message
	if st.Abort {
		p.step = "aborted"
	} else if spec != nil && spec.Spec.Strategy.Canary != nil && st.CurrentStepIndex != nil {
		stepsN := len(spec.Spec.Strategy.Canary.Steps)
		i := int(*st.CurrentStepIndex)
		p.step = fmt.Sprintf("step %d/%d", min(i+1, stepsN), stepsN)
		if i < stepsN {
			p.step += " " + describeStep(spec.Spec.Strategy.Canary.Steps[i])
		} else {
			p.step = fmt.Sprintf("step %d/%d done", stepsN, stepsN)
		}
	}
	if w := st.Canary.Weights; w != nil {
		p.weights = fmt.Sprintf("stable %d%% (%s)", w.Stable.Weight, w.Stable.PodTemplateHash)
		if w.Canary.Weight > 0 || w.Canary.PodTemplateHash != w.Stable.PodTemplateHash {
			p.weights += fmt.Sprintf(", canary %d%% (%s)", w.Canary.Weight, w.Canary.PodTemplateHash)
		}
	}
	last := s.last
	s.last = p
	if p.step != last.step || p.weights != last.weights {
		line := fmt.Sprintf("rollout %s: %s", k, p.step)
		if p.step == "" {
			line = fmt.Sprintf("rollout %s:", k)
		}
		if p.weights != "" {
			line += "; traffic " + p.weights
		}
		d.progress(line)
	}
	if p.phase != last.phase || p.message != last.message {
		line := fmt.Sprintf("rollout %s: %s", k, p.phase)
		if p.message != "" {
			line += " - " + p.message
		}
		if st.Abort {
			line += " (aborted: all traffic back to stable " + st.StableRS + ")"
		} else if p.phase == v1alpha1.RolloutPhaseHealthy && st.StableRS != "" {
			line += " (stable " + st.StableRS + ")"
		}
		d.progress(line)
	}
}

func describeStep(s v1alpha1.CanaryStep) string {
	switch {
	case s.SetWeight != nil:
		return fmt.Sprintf("setWeight %d", *s.SetWeight)
	case s.Pause != nil && s.Pause.Duration != nil:
		return "pause " + s.Pause.Duration.String()
	case s.Pause != nil:
		return "pause (until promoted)"
	case s.Analysis != nil:
		var ts []string
		for _, t := range s.Analysis.Templates {
			ts = append(ts, t.TemplateName)
		}
		return "analysis " + strings.Join(ts, ",")
	case s.SetCanaryScale != nil:
		return "setCanaryScale"
	case s.SetHeaderRoute != nil:
		return "setHeaderRoute"
	}
	return ""
}

func (d *Driver) progress(line string) {
	d.o.Log.Info(line)
	if d.o.Progress != nil {
		d.o.Progress(line)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// adminAddr is a Pod's proxy admin address (its IP and meridian-admin port).
func adminAddr(p *corev1.Pod) (string, bool) {
	port, err := meridian.AdminPort(p)
	if err != nil || p.Status.PodIP == "" {
		return "", false
	}
	return net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(port))), true
}
