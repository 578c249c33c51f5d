// Package meridian is the analysis provider that needs no Prometheus: it
// measures a golden metric (success rate, request rate, a latency
// percentile) of a Rollout's canary or stable pods from their own proxies'
// /metrics, read at both ends of a window and summed as `meridian viz stat`
// sums them (viz/golden, viz/stat): the inbound side, what the pods served.
package meridian

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis"
	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/viz/golden"
	"github.com/meridian-mesh/meridian/viz/stat"
)

// DefaultWindow is a measurement's window without `window`.
const DefaultWindow = time.Minute

// DefaultAdminPort is the proxy's admin port when its container names none
// (controlplane/inject's default).
const DefaultAdminPort = 4191

// Metadata keys on a measurement.
const (
	PodsKey     = "pods"     // how many pods were read (at both ends, once done)
	RequestsKey = "requests" // responses in the window
)

// Reader reads a pod's proxy's /metrics (Prometheus text format) on its
// admin port.
type Reader func(ctx context.Context, pod *corev1.Pod, port int32) ([]byte, error)

// HTTPReader reads the proxy at the pod's IP directly: the controller runs
// in the cluster, so it needs no API server pod proxy (which `viz stat`
// uses from outside).
func HTTPReader(c *http.Client) Reader {
	return func(ctx context.Context, pod *corev1.Pod, port int32) ([]byte, error) {
		u := "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(port))) + "/metrics"
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
		}
		return io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	}
}

// Provider measures meridian metrics. A measurement takes `window`: the
// first call reads every pod's proxy and keeps the reads (in memory, per run
// and metric), and returns the measurement in flight until the window has
// passed; the call that resumes it reads them again and computes the
// figures over the pairs. No worker waits out a window. A measurement
// resumed by a controller that does not hold its first reads (restarted,
// or a new leader) starts its window again.
type Provider struct {
	// Client reads the run's Rollout and its pods.
	Client client.Reader
	// Read reads a proxy (HTTPReader by default; tests read proxies on
	// loopback).
	Read Reader

	mu     sync.Mutex
	starts map[key]map[string]stat.Scrape // first reads, by source name
}

type key struct {
	run    types.UID
	metric string
}

var (
	_ analysis.Provider   = (*Provider)(nil)
	_ analysis.Terminator = (*Provider)(nil)
)

var defaultReader = HTTPReader(&http.Client{Timeout: 10 * time.Second})

// Measure starts a measurement's window (a new one, or one whose first reads
// this process does not have) or ends it.
func (p *Provider) Measure(ctx context.Context, run *v1alpha1.AnalysisRun, metric v1alpha1.Metric, inFlight *v1alpha1.Measurement) (analysis.Result, error) {
	mm := metric.Provider.Meridian
	if mm == nil {
		return analysis.Result{}, fmt.Errorf("metric %s has no meridian provider", metric.Name)
	}
	window, err := Window(mm)
	if err != nil {
		return analysis.Result{}, err
	}
	if _, err := Figure(mm, nil); err != nil {
		return analysis.Result{}, err // an unknown metric, before any read
	}
	pods, err := p.Pods(ctx, run, mm.Target)
	if err != nil {
		return analysis.Result{}, err
	}
	srcs := p.sources(pods)
	reads := golden.ReadAll(ctx, srcs)
	for _, r := range reads {
		if r.Err != nil {
			return analysis.Result{}, r.Err
		}
	}
	k := key{run.UID, metric.Name}
	p.mu.Lock()
	if p.starts == nil {
		p.starts = map[key]map[string]stat.Scrape{}
	}
	first, resumed := p.starts[k]
	if inFlight == nil || !resumed {
		first := make(map[string]stat.Scrape, len(srcs))
		for i, s := range srcs {
			first[s.Name()] = reads[i].Scrape
		}
		p.starts[k] = first
		p.mu.Unlock()
		return analysis.Result{ResumeAfter: window, Metadata: map[string]string{PodsKey: strconv.Itoa(len(srcs))}}, nil
	}
	delete(p.starts, k)
	p.mu.Unlock()
	var pairs []stat.Pair
	for i, s := range srcs {
		if before, ok := first[s.Name()]; ok {
			pairs = append(pairs, stat.Pair{Before: before, After: reads[i].Scrape})
		}
	}
	if len(pairs) == 0 {
		return analysis.Result{}, fmt.Errorf("no pod of the %s was read at both ends of the window (its pods were replaced): nothing is known", target(mm.Target))
	}
	return Figure(mm, pairs)
}

// Window is a metric's window (DefaultWindow when unset).
func Window(mm *v1alpha1.MeridianMetric) (time.Duration, error) {
	if mm.Window == "" {
		return DefaultWindow, nil
	}
	d, err := mm.Window.Parse()
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("provider.meridian.window %q: a positive duration such as 30s or 1m", mm.Window)
	}
	return d, nil
}

// Figure computes the metric over the pairs of reads: the inbound traffic
// of the pods (the kubelet's probes left out, as in `viz stat`), or of one
// route. The value is a number; a success rate or a latency over no
// response is NaN (minRequests, default 1, makes that measurement
// Inconclusive before any condition sees it).
func Figure(mm *v1alpha1.MeridianMetric, pairs []stat.Pair) (analysis.Result, error) {
	g := stat.NewGolden("inbound")
	if mm.Route != "" {
		g.Match = func(m *dto.Metric) bool { return labelOf(m, "route") == mm.Route }
	}
	for _, p := range pairs {
		g.Add(p.Before, p.After)
	}
	var v float64
	var ok bool
	switch mm.Metric {
	case v1alpha1.MeridianSuccessRate:
		v, ok = g.SuccessRate()
	case v1alpha1.MeridianRequestRate:
		v, ok = g.RPS(), true
	case v1alpha1.MeridianLatencyP50:
		v, ok = g.Quantile(0.50)
	case v1alpha1.MeridianLatencyP95:
		v, ok = g.Quantile(0.95)
	case v1alpha1.MeridianLatencyP99:
		v, ok = g.Quantile(0.99)
	default:
		return analysis.Result{}, fmt.Errorf("provider.meridian.metric %q: use success-rate, request-rate, latency-p50, latency-p95 or latency-p99", mm.Metric)
	}
	if !ok {
		v = math.NaN()
	}
	n := int64(math.Round(g.Requests))
	return analysis.Result{Value: v, Requests: &n, Metadata: map[string]string{
		PodsKey: strconv.Itoa(len(pairs)), RequestsKey: strconv.FormatInt(n, 10)}}, nil
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func target(t v1alpha1.MeridianTarget) v1alpha1.MeridianTarget {
	if t == "" {
		return v1alpha1.MeridianTargetCanary
	}
	return t
}

type podSource struct {
	pod  *corev1.Pod
	port int32
	read Reader
}

func (s podSource) Name() string { return "pod " + s.pod.Namespace + "/" + s.pod.Name }
func (s podSource) Metrics(ctx context.Context) ([]byte, error) {
	return s.read(ctx, s.pod, s.port)
}

func (p *Provider) sources(pods []corev1.Pod) []golden.Source {
	read := p.Read
	if read == nil {
		read = defaultReader
	}
	srcs := make([]golden.Source, len(pods))
	for i := range pods {
		port, _ := AdminPort(&pods[i])
		srcs[i] = podSource{pod: &pods[i], port: port, read: read}
	}
	return srcs
}

// AdminPort is a meshed pod's proxy admin port (its meridian-proxy or
// meridian-gateway container's meridian-admin port, else 4191); an error
// when the pod has no proxy.
func AdminPort(pod *corev1.Pod) (int32, error) {
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if c.Name != names.ProxyContainerName && c.Name != names.GatewayContainerName {
			continue
		}
		for _, p := range c.Ports {
			if p.Name == names.AdminPortName {
				return p.ContainerPort, nil
			}
		}
		return DefaultAdminPort, nil
	}
	return 0, fmt.Errorf("pod %s/%s has no %s container", pod.Namespace, pod.Name, names.ProxyContainerName)
}

// Owner is the Rollout that owns the run.
func Owner(run *v1alpha1.AnalysisRun) (*metav1.OwnerReference, error) {
	for i, ref := range run.OwnerReferences {
		if ref.Kind == "Rollout" && strings.HasPrefix(ref.APIVersion, v1alpha1.GroupVersion.Group+"/") {
			return &run.OwnerReferences[i], nil
		}
	}
	return nil, fmt.Errorf("analysisrun %s/%s has no owner Rollout: the meridian provider measures a Rollout's canary or stable pods", run.Namespace, run.Name)
}

// Pods are the running, meshed pods of the run's Rollout's canary (the
// run's rollouts-pod-template-hash label) or stable (the Rollout's
// status.stableRS): the Rollout's selector plus that hash.
func (p *Provider) Pods(ctx context.Context, run *v1alpha1.AnalysisRun, t v1alpha1.MeridianTarget) ([]corev1.Pod, error) {
	ref, err := Owner(run)
	if err != nil {
		return nil, err
	}
	ro := &v1alpha1.Rollout{}
	if err := p.Client.Get(ctx, client.ObjectKey{Namespace: run.Namespace, Name: ref.Name}, ro); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("rollout %s/%s (the run's owner) not found", run.Namespace, ref.Name)
		}
		return nil, fmt.Errorf("rollout %s/%s: %w", run.Namespace, ref.Name, err)
	}
	var hash string
	switch target(t) {
	case v1alpha1.MeridianTargetCanary:
		if hash = run.Labels[v1alpha1.DefaultRolloutUniqueLabelKey]; hash == "" {
			return nil, fmt.Errorf("analysisrun %s/%s has no %s label: the canary's pods are unknown (the Rollout sets it on the runs it makes)", run.Namespace, run.Name, v1alpha1.DefaultRolloutUniqueLabelKey)
		}
	case v1alpha1.MeridianTargetStable:
		if hash = ro.Status.StableRS; hash == "" {
			return nil, fmt.Errorf("rollout %s/%s has no status.stableRS: the stable's pods are unknown", ro.Namespace, ro.Name)
		}
	default:
		return nil, fmt.Errorf("provider.meridian.target %q: use canary or stable", t)
	}
	var sel labels.Selector
	switch {
	case ro.Spec.Selector != nil:
		if sel, err = metav1.LabelSelectorAsSelector(ro.Spec.Selector); err != nil {
			return nil, fmt.Errorf("rollout %s/%s spec.selector: %w", ro.Namespace, ro.Name, err)
		}
	case ro.Status.Selector != "":
		if sel, err = labels.Parse(ro.Status.Selector); err != nil {
			return nil, fmt.Errorf("rollout %s/%s status.selector: %w", ro.Namespace, ro.Name, err)
		}
	default:
		return nil, fmt.Errorf("rollout %s/%s has no selector yet", ro.Namespace, ro.Name)
	}
	req, err := labels.NewRequirement(v1alpha1.DefaultRolloutUniqueLabelKey, selection.Equals, []string{hash})
	if err != nil {
		return nil, fmt.Errorf("pod-template hash %q: %w", hash, err)
	}
	sel = sel.Add(*req)
	var list corev1.PodList
	if err := p.Client.List(ctx, &list, client.InNamespace(run.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("listing the pods of rollout %s/%s: %w", ro.Namespace, ro.Name, err)
	}
	var out []corev1.Pod
	var unmeshed []string
	for _, pod := range list.Items {
		if pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" {
			continue
		}
		if _, err := AdminPort(&pod); err != nil {
			unmeshed = append(unmeshed, pod.Name)
			continue
		}
		out = append(out, pod)
	}
	if len(out) == 0 {
		msg := fmt.Sprintf("no running meshed pod of the %s of rollout %s/%s (%s): %d pods", target(t), ro.Namespace, ro.Name, sel, len(list.Items))
		if len(unmeshed) > 0 {
			msg += fmt.Sprintf(", %s without a %s container", strings.Join(unmeshed, ", "), names.ProxyContainerName)
		}
		return nil, errors.New(msg)
	}
	return out, nil
}

// Terminate drops an in-flight measurement's first reads.
func (p *Provider) Terminate(_ context.Context, run *v1alpha1.AnalysisRun, metric v1alpha1.Metric, _ *v1alpha1.Measurement) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.starts, key{run.UID, metric.Name})
	return nil
}

// Forget drops what is kept for a run (it completed, or was deleted).
func (p *Provider) Forget(run types.UID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.starts {
		if k.run == run {
			delete(p.starts, k)
		}
	}
}

// Kept is how many measurements hold first reads (tests, metrics).
func (p *Provider) Kept() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.starts)
}
