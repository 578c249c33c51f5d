package launch

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/cli/rollout"
	rolloutlocal "github.com/meridian-mesh/meridian/controlplane/rollouts/local"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/reconciler"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/steps"
	"github.com/meridian-mesh/meridian/controlplane/store/local"
	pb "github.com/meridian-mesh/meridian/demo/proto/emojivotopb"
	"github.com/meridian-mesh/meridian/demo/voting"
	"github.com/meridian-mesh/meridian/internal/names"
)

// The demo's Rollout (manifests/voting-rollout.yaml).
const (
	RolloutName = "voting"
	// RolloutFile holds the Rollout voting, its canary Service and its
	// analysis template.
	RolloutFile = "voting-rollout.yaml"
	// FailureRateEnv is the environment variable of the voting container
	// of the Rollout's template that sets voting.Server.FailureRate: the
	// launcher runs the template with it, as a kubelet would run an image.
	FailureRateEnv = "VOTING_FAILURE_RATE"
	// instancesFile is where the launcher declares the instances it runs
	// (a Pod each, with its credential's hash) and their endpoints (an
	// EndpointSlice of the stable Service each, once serving).
	instancesFile = "demo-rollout-instances.yaml"
)

// Rollout versions for Options.Rollout.
const (
	RolloutOff  = ""
	RolloutBad  = "bad"  // voting v2 fails 40% more votes: the analysis aborts it
	RolloutGood = "good" // voting v2 as good as v1: promoted to 100%
)

// The v1 template's lines and the v2 each version puts in their place.
const (
	v1Template = "image: meridian.io/demo/voting:v1\n        env: [{name: VOTING_FAILURE_RATE, value: \"0\"}]"
	v2BadRate  = "0.4"
	v2Template = "image: meridian.io/demo/voting:v2\n        env: [{name: VOTING_FAILURE_RATE, value: %q}]"
)

// RolloutOptions configure the demo's rollout of voting v2.
type RolloutOptions struct {
	// Version is the v2 rolled out: RolloutBad, RolloutGood, or RolloutOff
	// (voting runs as a plain workload, no Rollout).
	Version string
	// Delay is how long after the demo is up v2 is applied (default 15s).
	Delay time.Duration
	// Pause, Window and ScaleDownDelay, when set, replace the demo's own
	// manifest's pause durations (20s), analysis window (30s) and
	// scale-down delays (10s); tests make them short. Not applied to a
	// --manifests directory, whose Rollout is the user's.
	Pause, Window, ScaleDownDelay time.Duration
	// Settle is how long an instance's endpoint is given to reach the
	// control plane's store (polled every second) before it is counted
	// available, and before a stopping instance stops (default 2s).
	Settle time.Duration
	// Interval is how often the rollout driver decides (default 250ms).
	Interval time.Duration
	// Progress gets the driver's progress lines (steps, weights, analysis
	// results, abort, promotion).
	Progress func(string)
}

// rolloutManifest is the demo's voting-rollout.yaml with o's durations.
func rolloutManifest(o RolloutOptions) ([]byte, error) {
	b, err := manifests.ReadFile("manifests/" + RolloutFile)
	if err != nil {
		return nil, err
	}
	for _, r := range []struct {
		old string
		d   time.Duration
		sec bool
	}{{"duration: 20s", o.Pause, false}, {"window: 30s", o.Window, false},
		{"scaleDownDelaySeconds: 10", o.ScaleDownDelay, true}, {"abortScaleDownDelaySeconds: 10", o.ScaleDownDelay, true}} {
		if r.d <= 0 {
			continue
		}
		if !bytes.Contains(b, []byte(r.old)) {
			return nil, fmt.Errorf("the demo's %s has no %q to change", RolloutFile, r.old)
		}
		key, _, _ := bytes.Cut([]byte(r.old), []byte(":"))
		val := fmt.Sprintf("%dms", r.d.Milliseconds())
		if r.sec {
			val = strconv.Itoa(int(r.d.Round(time.Second) / time.Second))
		}
		b = bytes.ReplaceAll(b, []byte(r.old), []byte(string(key)+": "+val))
	}
	return b, nil
}

// applyV2 changes the Rollout's template in dir to voting v2 (version bad
// or good), as `meridian rollout set image` would on a cluster: the
// directory is local mode's API.
func applyV2(dir, version string) error {
	path := filepath.Join(dir, RolloutFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !bytes.Contains(b, []byte(v1Template)) {
		return fmt.Errorf("%s: the Rollout's template is not the demo's voting v1 (%q): not changed", path, v1Template)
	}
	rate := "0"
	if version == RolloutBad {
		rate = v2BadRate
	}
	b = bytes.Replace(b, []byte(v1Template), []byte(fmt.Sprintf(v2Template, rate)), 1)
	return writeFileAt(path, b, time.Now())
}

// writeFileAt replaces path with data at once (a hidden file renamed over
// it) with modification time mtime.
func writeFileAt(path string, data []byte, mtime time.Time) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Chtimes(tmp, mtime, mtime); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// instances is the ReplicaSet controller and the kubelet of the demo's
// Rollout: it runs each template's instances in-process (a voting server
// and its sidecar), declares each as a Pod labelled with its template's
// hash (so it may register, and the meridian analysis provider finds its
// proxy), and lists the serving ones in an EndpointSlice of the stable
// Service (the compilers split it by that hash).
type instances struct {
	d      *Demo
	ctx    context.Context
	o      Options
	dir    string
	settle time.Duration

	mu        sync.Mutex
	templates map[string]*corev1.PodTemplateSpec // by hash
	revisions map[string]int                     // by hash, in the order first run
	created   map[string]time.Time               // by hash
	desired   map[string]int32
	running   map[string][]*instance // by hash, oldest first
	written   time.Time
}

// instance is one running voting instance.
type instance struct {
	name, hash string
	created    time.Time
	labels     map[string]string
	credential string
	svc        *Service
	cancel     context.CancelFunc
	// readyAt is when its endpoint was declared; zero while starting.
	readyAt  time.Time
	stopping bool // its endpoint is withdrawn; it stops after settle
	gone     bool // its proxy is stopped: no longer a Pod
	failed   error
}

var _ rolloutlocal.ReplicaSets = (*instances)(nil)

func newInstances(ctx context.Context, d *Demo, o Options, dir string) *instances {
	settle := o.Rollout.Settle
	if settle <= 0 {
		settle = 2 * time.Second
	}
	return &instances{d: d, ctx: ctx, o: o, dir: dir, settle: settle, templates: map[string]*corev1.PodTemplateSpec{},
		revisions: map[string]int{}, created: map[string]time.Time{},
		desired: map[string]int32{}, running: map[string][]*instance{}}
}

// Scale starts or stops instances of hash's template to make n run.
func (s *instances) Scale(ro *v1alpha1.Rollout, hash string, tmpl *corev1.PodTemplateSpec, n int32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tmpl != nil {
		s.templates[hash] = tmpl.DeepCopy()
		if s.revisions[hash] == 0 {
			s.revisions[hash] = len(s.revisions) + 1
			s.created[hash] = time.Now()
		}
	}
	t := s.templates[hash]
	if t == nil && n > 0 {
		return fmt.Errorf("no template known for pod-template hash %s", hash)
	}
	s.desired[hash] = n
	var live []*instance
	for _, in := range s.running[hash] {
		if !in.stopping && in.failed == nil {
			live = append(live, in)
		}
	}
	for i := int32(len(live)); i < n; i++ {
		rate, err := failureRate(t)
		if err != nil {
			return fmt.Errorf("rollout %s/%s template %s: %w", ro.Namespace, ro.Name, hash, err)
		}
		var raw [32]byte
		if _, err := crand.Read(raw[:]); err != nil {
			return err
		}
		labels := map[string]string{}
		for k, v := range t.Labels {
			labels[k] = v
		}
		labels[v1alpha1.DefaultRolloutUniqueLabelKey] = hash
		in := &instance{name: ro.Name + "-" + hash + "-" + rand.String(5), hash: hash, created: time.Now(), labels: labels, credential: hex.EncodeToString(raw[:])}
		s.running[hash] = append(s.running[hash], in)
		s.d.wg.Add(1)
		go func() { defer s.d.wg.Done(); s.start(in, t, rate) }()
	}
	// The newest go first, as a ReplicaSet scales down.
	for i := len(live) - 1; i >= int(n) && i >= 0; i-- {
		in := live[i]
		in.stopping = true
		s.d.wg.Add(1)
		go func() { defer s.d.wg.Done(); s.stop(in) }()
	}
	return s.writeLocked()
}

// failureRate is the template's voting container's FailureRateEnv.
func failureRate(t *corev1.PodTemplateSpec) (float64, error) {
	for _, c := range t.Spec.Containers {
		if c.Name != "voting" {
			continue
		}
		for _, e := range c.Env {
			if e.Name == FailureRateEnv {
				v, err := strconv.ParseFloat(e.Value, 64)
				if err != nil || v < 0 || v > 1 {
					return 0, fmt.Errorf("containers[voting].env %s %q: a fraction from 0 to 1", FailureRateEnv, e.Value)
				}
				return v, nil
			}
		}
		return 0, nil
	}
	return 0, errors.New("spec.template.spec.containers: no container named voting (the demo runs voting instances only)")
}

// start runs one instance: the voting server, its sidecar (declared, then
// registered), and its endpoint once it serves with its certificate.
func (s *instances) start(in *instance, t *corev1.PodTemplateSpec, rate float64) {
	fail := func(err error) {
		s.o.Log.Error("rollout instance did not start", "instance", in.name, "err", err)
		s.mu.Lock()
		in.failed = err
		s.mu.Unlock()
	}
	ctx, cancel := context.WithCancel(s.ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		fail(err)
		return
	}
	srv := grpc.NewServer()
	pb.RegisterVotingServiceServer(srv, &voting.Server{FailureRate: rate})
	s.d.goServe(in.name, func() error { return srv.Serve(ln) })
	account := t.Spec.ServiceAccountName
	if account == "" {
		account = "voting"
	}
	svc, err := s.d.startProxy(ctx, s.o, sidecarSpec{name: in.name, account: account, app: ln.Addr(), inboundAddr: "127.0.0.1:0",
		credential: in.credential, labels: in.labels, backoffMax: time.Second, registerAfter: 1200 * time.Millisecond})
	if err != nil {
		cancel()
		srv.Stop()
		fail(err)
		return
	}
	// The server stops with the instance, or with the demo.
	s.d.goServe(in.name+" stop", func() error { <-ctx.Done(); srv.GracefulStop(); return nil })
	s.mu.Lock()
	in.svc = svc
	in.cancel = cancel
	stopping := in.stopping
	err = s.writeLocked() // its declaration: it may register now
	s.mu.Unlock()
	if stopping {
		return // stop runs it down
	}
	if err != nil {
		fail(err)
		return
	}
	for _, ch := range []<-chan struct{}{svc.registered, svc.Identity.Ready()} {
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if in.stopping {
		return
	}
	in.readyAt = time.Now()
	if err := s.writeLocked(); err != nil {
		s.o.Log.Error("rollout instance endpoint not declared", "instance", in.name, "err", err)
	}
}

// stop withdraws an instance's endpoint, gives proxies time to drop it,
// then stops it and its declaration.
func (s *instances) stop(in *instance) {
	select {
	case <-time.After(s.settle):
	case <-s.ctx.Done():
	}
	s.mu.Lock()
	in.gone = true
	if in.cancel != nil {
		in.cancel()
	}
	s.running[in.hash] = slices.DeleteFunc(s.running[in.hash], func(x *instance) bool { return x == in })
	if err := s.writeLocked(); err != nil {
		s.o.Log.Error("rollout instance declaration not removed", "instance", in.name, "err", err)
	}
	s.mu.Unlock()
}

// ReplicaSets are the instances by hash: desired, ready (endpoint
// declared), available (and settled into the control plane's store).
func (s *instances) ReplicaSets(*v1alpha1.Rollout) []steps.ReplicaSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	hashes := map[string]bool{}
	for h := range s.desired {
		hashes[h] = true
	}
	for h := range s.running {
		hashes[h] = true
	}
	var out []steps.ReplicaSet
	for h := range hashes {
		rs := steps.ReplicaSet{Hash: h, Replicas: s.desired[h], Revision: int64(s.revisions[h])}
		for _, in := range s.running[h] {
			if in.stopping || in.readyAt.IsZero() {
				continue
			}
			rs.Ready++
			if now.Sub(in.readyAt) >= s.settle {
				rs.Available++
			}
		}
		out = append(out, rs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Hash < out[j].Hash })
	return out
}

// Pods are the declared, running instances as Pods.
func (s *instances) Pods(ns string) []corev1.Pod {
	if ns != "" && ns != Namespace {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []corev1.Pod
	for _, h := range sortedHashes(s.running) {
		for _, in := range s.running[h] {
			if in.svc != nil && !in.gone {
				out = append(out, s.pod(in))
			}
		}
	}
	return out
}

// Instances are the running instances' proxies (for metrics and summaries).
func (s *instances) Instances() []Proxy {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Proxy
	for _, h := range sortedHashes(s.running) {
		for _, in := range s.running[h] {
			if in.svc != nil && !in.gone {
				out = append(out, Proxy{Name: in.name, Admin: in.svc.Admin, Metrics: in.svc.Proxy.Metrics().Gatherer()})
			}
		}
	}
	return out
}

func sortedHashes(m map[string][]*instance) []string {
	hs := make([]string, 0, len(m))
	for h := range m {
		hs = append(hs, h)
	}
	sort.Strings(hs)
	return hs
}

// pod is an instance's declaration: its labels, credential and service
// account, its proxy container and admin port, running at 127.0.0.1.
func (s *instances) pod(in *instance) corev1.Pod {
	_, adminPort, _ := net.SplitHostPort(in.svc.Admin.String())
	port, _ := strconv.Atoi(adminPort)
	account := "voting"
	if t := s.templates[in.hash]; t != nil && t.Spec.ServiceAccountName != "" {
		account = t.Spec.ServiceAccountName
	}
	return corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: in.name, Namespace: Namespace, Labels: in.labels,
			Annotations: map[string]string{names.AnnotationCredentialSHA256: local.CredentialSHA256(in.credential)}},
		Spec: corev1.PodSpec{ServiceAccountName: account, Containers: []corev1.Container{{Name: "voting"},
			{Name: names.ProxyContainerName, Ports: []corev1.ContainerPort{{Name: names.AdminPortName, ContainerPort: int32(port)}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1"},
	}
}

// writeLocked writes the instances file: every started instance's Pod and
// the ready ones' EndpointSlices of the stable Service (voting-svc).
func (s *instances) writeLocked() error {
	if s.ctx.Err() != nil {
		return nil // the demo is stopping: its files go with it
	}
	var b bytes.Buffer
	b.WriteString("# Written by meridian demo for this run: the instances its Rollout runs (a Pod\n" +
		"# each, with the SHA-256 of a credential only its proxy was given) and their\n" +
		"# endpoints (an EndpointSlice of the stable Service each, once serving).\n")
	add := func(obj any) error {
		y, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		b.WriteString("---\n")
		b.Write(y)
		return nil
	}
	for _, h := range sortedHashes(s.running) {
		for _, in := range s.running[h] {
			if in.svc == nil || in.gone {
				continue
			}
			if err := add(s.pod(in)); err != nil {
				return err
			}
			if in.readyAt.IsZero() || in.stopping {
				continue
			}
			_, inPort, _ := net.SplitHostPort(in.svc.Inbound.String())
			port, _ := strconv.Atoi(inPort)
			portName, p32, ready := "grpc", int32(port), true
			sl := discoveryv1.EndpointSlice{
				TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
				ObjectMeta: metav1.ObjectMeta{Name: in.name, Namespace: Namespace,
					Labels: map[string]string{discoveryv1.LabelServiceName: "voting-svc"}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &p32}},
				Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"127.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
					TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: Namespace, Name: in.name}}},
			}
			if err := add(sl); err != nil {
				return err
			}
		}
	}
	mtime := time.Now()
	if !mtime.After(s.written) {
		mtime = s.written.Add(time.Millisecond)
	}
	s.written = mtime
	return writeFileAt(filepath.Join(s.dir, instancesFile), b.Bytes(), mtime)
}

// startRollout runs voting as the Rollout: the driver (the same step
// machine and analysis as on a cluster) over the instances the launcher
// runs. It returns once the Rollout is Healthy with its v1 serving, so the
// demo's traffic starts against a working voting service.
func (d *Demo) startRollout(runCtx, ctx context.Context, o Options) error {
	d.instances = newInstances(runCtx, d, o, d.Manifests)
	drv, err := rolloutlocal.New(rolloutlocal.Options{Dir: d.Manifests, ReplicaSets: d.instances, Interval: o.Rollout.Interval,
		Progress: o.Rollout.Progress, Log: o.Log.With("component", "rollouts")})
	if err != nil {
		return err
	}
	d.Rollout = drv
	d.goServe("rollout driver", func() error { return drv.Run(runCtx) })
	d.cleanup = append(d.cleanup, func() {
		os.Remove(filepath.Join(d.Manifests, instancesFile))
		os.Remove(filepath.Join(d.Manifests, rolloutlocal.StatusFile))
	})
	deadline := time.After(30 * time.Second)
	for {
		ros, _ := drv.Rollouts(ctx)
		for _, r := range ros {
			ro := r.Rollout
			if ro.Name != RolloutName || ro.Namespace != Namespace {
				continue
			}
			if ro.Status.Phase == v1alpha1.RolloutPhaseHealthy && ro.Status.AvailableReplicas > 0 {
				return nil
			}
		}
		select {
		case err := <-d.errs:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			msg := "not found in " + filepath.Join(d.Manifests, RolloutFile)
			for _, r := range ros {
				if r.Rollout.Name == RolloutName {
					msg = fmt.Sprintf("%s: %s", r.Rollout.Status.Phase, r.Rollout.Status.Message)
				}
			}
			return fmt.Errorf("the Rollout %s/%s did not become Healthy within 30s (%s)", Namespace, RolloutName, msg)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// scheduleV2 applies voting v2 to the Rollout once the demo has been up for
// Options.Rollout.Delay.
func (d *Demo) scheduleV2(ctx context.Context, o Options) {
	delay := o.Rollout.Delay
	if delay <= 0 {
		delay = 15 * time.Second
	}
	d.goServe("rollout v2", func() error {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		if err := applyV2(d.Manifests, o.Rollout.Version); err != nil {
			o.Log.Error("voting v2 not applied", "err", err)
			if o.Rollout.Progress != nil {
				o.Rollout.Progress("voting v2 not applied: " + err.Error())
			}
			return nil
		}
		if o.Rollout.Progress != nil {
			o.Rollout.Progress(fmt.Sprintf("rollout %s/%s: template changed to voting v2 (%s) in %s", Namespace, RolloutName, o.Rollout.Version, filepath.Join(d.Manifests, RolloutFile)))
		}
		return nil
	})
}

// Objects are the demo's Rollout and what it owns as Kubernetes objects,
// for `meridian rollout get --demo`: a ReplicaSet per template the
// instances ran (owned by the Rollout, with its revision), the instances as
// its pods, and the AnalysisRuns (with the revision of their hash).
func (d *Demo) Objects(ctx context.Context) (rollout.Objects, error) {
	o := rollout.Objects{Rollouts: []v1alpha1.Rollout{}, ReplicaSets: []appsv1.ReplicaSet{}, Pods: []corev1.Pod{}, AnalysisRuns: []v1alpha1.AnalysisRun{}}
	if d.Rollout == nil {
		return o, nil
	}
	ros, err := d.Rollout.Rollouts(ctx)
	if err != nil {
		return o, err
	}
	s := d.instances
	rss := s.ReplicaSets(nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range ros {
		ro := r.Rollout
		if ro.Name != RolloutName || ro.Namespace != Namespace {
			continue
		}
		o.Rollouts = append(o.Rollouts, *ro)
		owner := []metav1.OwnerReference{*metav1.NewControllerRef(ro, v1alpha1.GroupVersion.WithKind("Rollout"))}
		rsUID := func(h string) types.UID { return types.UID(string(ro.UID) + "-" + h) }
		for _, rs := range rss {
			t := s.templates[rs.Hash]
			if t == nil {
				continue
			}
			n := rs.Replicas
			tmpl := *t.DeepCopy()
			o.ReplicaSets = append(o.ReplicaSets, appsv1.ReplicaSet{
				TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "ReplicaSet"},
				ObjectMeta: metav1.ObjectMeta{Name: ro.Name + "-" + rs.Hash, Namespace: ro.Namespace, UID: rsUID(rs.Hash),
					CreationTimestamp: metav1.NewTime(s.created[rs.Hash]), OwnerReferences: owner,
					Labels:      map[string]string{v1alpha1.DefaultRolloutUniqueLabelKey: rs.Hash},
					Annotations: map[string]string{reconciler.RevisionAnnotation: strconv.Itoa(s.revisions[rs.Hash])}},
				Spec: appsv1.ReplicaSetSpec{Replicas: &n, Template: tmpl},
				Status: appsv1.ReplicaSetStatus{Replicas: int32(len(s.running[rs.Hash])), ReadyReplicas: rs.Ready,
					AvailableReplicas: rs.Available},
			})
			for _, in := range s.running[rs.Hash] {
				if in.svc == nil || in.gone {
					continue
				}
				p := s.pod(in)
				p.CreationTimestamp = metav1.NewTime(in.created)
				p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: ro.Name + "-" + rs.Hash,
					UID: rsUID(rs.Hash), Controller: ptrTo(true)}}
				ready := !in.readyAt.IsZero() && !in.stopping
				running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(in.created)}}
				p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "voting", Ready: ready, State: running},
					{Name: names.ProxyContainerName, Ready: ready, State: running}}
				if in.stopping {
					p.DeletionTimestamp = ptrTo(metav1.NewTime(in.created)) // Terminating
				}
				o.Pods = append(o.Pods, p)
			}
		}
		for _, run := range r.Runs {
			run = run.DeepCopy()
			if rev := s.revisions[run.Labels[v1alpha1.DefaultRolloutUniqueLabelKey]]; rev > 0 {
				if run.Annotations == nil {
					run.Annotations = map[string]string{}
				}
				run.Annotations[reconciler.RevisionAnnotation] = strconv.Itoa(rev)
			}
			o.AnalysisRuns = append(o.AnalysisRuns, *run)
		}
	}
	return o, nil
}

func ptrTo[T any](v T) *T { return &v }

// ObjectsHandler serves Objects as JSON (rollout.DemoPath).
func (d *Demo) ObjectsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o, err := d.Objects(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(o)
	})
}

// ActHandler serves the CLI's promote, abort and retry in local mode
// (`meridian rollout promote voting --demo`): POST
// rollout.DemoPath/{namespace}/{name}/{action}, action one of
// rollout.DemoPromote, DemoPromoteFull, DemoAbort, DemoRetry; 204 once the
// driver holds it (applied with its next pass).
func (d *Demo) ActHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.Rollout == nil {
			http.Error(w, "this demo runs no Rollout (--rollout=off)", http.StatusNotFound)
			return
		}
		var f func(*v1alpha1.Rollout)
		switch a := r.PathValue("action"); a {
		case rollout.DemoPromote:
			f = func(ro *v1alpha1.Rollout) { steps.Promote(ro, false) }
		case rollout.DemoPromoteFull:
			f = func(ro *v1alpha1.Rollout) { steps.Promote(ro, true) }
		case rollout.DemoAbort:
			f = steps.Abort
		case rollout.DemoRetry:
			f = steps.Retry
		default:
			http.Error(w, fmt.Sprintf("action %q: allowed are %s, %s, %s and %s", a, rollout.DemoPromote, rollout.DemoPromoteFull, rollout.DemoAbort, rollout.DemoRetry), http.StatusBadRequest)
			return
		}
		switch err := d.Rollout.Act(r.PathValue("namespace"), r.PathValue("name"), f); {
		case errors.Is(err, rolloutlocal.ErrNotFound):
			http.Error(w, err.Error(), http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
}

// Rollouts are the demo's Rollouts as the dashboard shows them (none when
// Options.Rollout is off).
func (d *Demo) Rollouts(ctx context.Context) ([]rolloutlocal.Rollout, error) {
	if d.Rollout == nil {
		return nil, nil
	}
	return d.Rollout.Rollouts(ctx)
}
