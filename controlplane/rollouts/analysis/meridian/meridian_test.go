package meridian

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis"
	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
	"github.com/meridian-mesh/meridian/test/apiserver"
	"github.com/meridian-mesh/meridian/viz/stat"
)

// proxy is a real sidecar proxy on loopback in front of an application
// that fails the requests to /fail.
type proxy struct{ inbound, admin string }

func startProxy(t *testing.T) proxy {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(app.Close)
	p, err := sidecar.New(sidecar.Config{OutboundAddr: "127.0.0.1:0", InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		InboundForward: strings.TrimPrefix(app.URL, "http://"), DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	_, in, admin := p.Addrs()
	return proxy{inbound: in.String(), admin: admin.String()}
}

func (p proxy) send(t *testing.T, n, failEvery int) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < n; i++ {
		path := "/"
		if failEvery > 0 && i%failEvery == 0 {
			path = "/fail"
		}
		resp, err := c.Get("http://" + p.inbound + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func crds() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "api", "crds")
}

func kube(t *testing.T) client.Client {
	t.Helper()
	cfg := apiserver.Start(t, crds())
	s := kruntime.NewScheme()
	clientgoscheme.AddToScheme(s)
	v1alpha1.AddToScheme(s)
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const rolloutYAML = `
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web:v2}]}
  strategy: {canary: {steps: [{setWeight: 20}]}}
`

// makePod plays the kubelet: the pod runs at 127.0.0.1.
func makePod(t *testing.T, c client.Client, name, hash string, meshed bool) {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": "web", v1alpha1.DefaultRolloutUniqueLabelKey: hash}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"}}}}
	if meshed {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: names.ProxyContainerName, Image: "proxy",
			Ports: []corev1.ContainerPort{{Name: names.AdminPortName, ContainerPort: 4191}}})
	}
	ctx := context.Background()
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}}}
	if err := c.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

func TestMeridianProvider(t *testing.T) {
	c := kube(t)
	ctx := context.Background()
	ro := &v1alpha1.Rollout{}
	if err := yaml.UnmarshalStrict([]byte(rolloutYAML), ro); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, ro); err != nil {
		t.Fatal(err)
	}
	ro.Status.StableRS = "stable1"
	if err := c.Status().Update(ctx, ro); err != nil {
		t.Fatal(err)
	}
	// Two canary pods, one stable one, each with its real proxy; a canary
	// pod without a proxy and another Rollout's pod are not read.
	proxies := map[string]proxy{"web-c1": startProxy(t), "web-c2": startProxy(t), "web-s1": startProxy(t)}
	makePod(t, c, "web-c1", "canary1", true)
	makePod(t, c, "web-c2", "canary1", true)
	makePod(t, c, "web-c3", "canary1", false)
	makePod(t, c, "web-s1", "stable1", true)
	var readErr error
	read := func(_ context.Context, pod *corev1.Pod, port int32) ([]byte, error) {
		if port != 4191 {
			return nil, fmt.Errorf("port %d", port)
		}
		if readErr != nil {
			return nil, readErr
		}
		px, ok := proxies[pod.Name]
		if !ok {
			return nil, fmt.Errorf("pod %s has no proxy", pod.Name)
		}
		// The pod's proxy is on loopback at its own port: read it as the
		// controller reads a pod, by IP and admin port.
		host, adminPort, _ := net.SplitHostPort(px.admin)
		n, _ := strconv.Atoi(adminPort)
		return HTTPReader(http.DefaultClient)(ctx, &corev1.Pod{Status: corev1.PodStatus{PodIP: host}}, int32(n))
	}
	p := &Provider{Client: c, Read: read}
	run := &v1alpha1.AnalysisRun{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "default", UID: "run-1",
		Labels:          map[string]string{v1alpha1.DefaultRolloutUniqueLabelKey: "canary1"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "meridian.io/v1alpha1", Kind: "Rollout", Name: "web", UID: ro.UID}}}}

	measure := func(mm v1alpha1.MeridianMetric, traffic func()) (analysis.Result, v1alpha1.AnalysisPhase, string) {
		t.Helper()
		m := v1alpha1.Metric{Name: string(mm.Metric) + string(mm.Target) + mm.Route, SuccessCondition: "result >= 0", Provider: v1alpha1.MetricProvider{Meridian: &mm}}
		r, err := p.Measure(ctx, run, m, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.ResumeAfter != 2*time.Second {
			t.Fatalf("first read: %+v", r)
		}
		traffic()
		r, err = p.Measure(ctx, run, m, &v1alpha1.Measurement{Phase: v1alpha1.AnalysisPhaseRunning})
		if err != nil {
			t.Fatal(err)
		}
		phase, msg := analysis.JudgeResult(&m, r)
		return r, phase, msg
	}
	canaryTraffic := func() {
		proxies["web-c1"].send(t, 20, 4) // 5 failures
		proxies["web-c2"].send(t, 20, 4) // 5 failures
		proxies["web-s1"].send(t, 10, 0)
	}
	r, phase, _ := measure(v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianSuccessRate, Window: "2s"}, canaryTraffic)
	if r.Value != 0.75 || *r.Requests != 40 || r.Metadata[PodsKey] != "2" || phase != v1alpha1.AnalysisPhaseSuccessful {
		t.Fatalf("canary success rate: %+v %d %s", r, *r.Requests, phase)
	}
	r, _, _ = measure(v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianSuccessRate, Target: v1alpha1.MeridianTargetStable, Window: "2s"}, canaryTraffic)
	if r.Value != 1.0 || *r.Requests != 10 || r.Metadata[PodsKey] != "1" {
		t.Fatalf("stable success rate: %+v", r)
	}
	r, _, _ = measure(v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianRequestRate, Window: "2s"}, canaryTraffic)
	if v := r.Value.(float64); v <= 0 || *r.Requests != 40 {
		t.Fatalf("request rate: %+v", r)
	}
	r, _, _ = measure(v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianLatencyP99, Window: "2s"}, canaryTraffic)
	if v := r.Value.(float64); v <= 0 || math.IsNaN(v) {
		t.Fatalf("latency: %+v", r)
	}

	// No traffic: Inconclusive, never a success or a failure; with
	// minRequests 0 the success rate is NaN (unknown) and judged.
	r, phase, msg := measure(v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianSuccessRate, Window: "2s"}, func() {})
	if phase != v1alpha1.AnalysisPhaseInconclusive || !strings.Contains(msg, "no traffic: 0 requests in the window, fewer than minRequests (1)") {
		t.Fatalf("no traffic: %+v %s %s", r, phase, msg)
	}
	zero := int64(0)
	r, phase, _ = measure(v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianSuccessRate, Window: "2s", MinRequests: &zero}, func() {})
	if v := r.Value.(float64); !math.IsNaN(v) || phase != v1alpha1.AnalysisPhaseFailed {
		t.Fatalf("minRequests 0: %+v %s", r, phase)
	}
	// minRequests above the traffic.
	many := int64(100)
	_, phase, msg = measure(v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianSuccessRate, Window: "2s", MinRequests: &many}, canaryTraffic)
	if phase != v1alpha1.AnalysisPhaseInconclusive || !strings.Contains(msg, "40 requests in the window, fewer than minRequests (100)") {
		t.Fatalf("minRequests 100: %s %s", phase, msg)
	}
	// A route no request took.
	r, phase, _ = measure(v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianSuccessRate, Window: "2s", Route: "nope"}, canaryTraffic)
	if *r.Requests != 0 || phase != v1alpha1.AnalysisPhaseInconclusive {
		t.Fatalf("route nope: %+v %s", r, phase)
	}
	if p.Kept() != 0 {
		t.Fatalf("%d first reads kept after the measurements ended", p.Kept())
	}

	// A measurement resumed by a process without its first reads starts
	// its window again.
	mm := v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianSuccessRate}
	m := v1alpha1.Metric{Name: "sr", Provider: v1alpha1.MetricProvider{Meridian: &mm}}
	r, err := (&Provider{Client: c, Read: read}).Measure(ctx, run, m, &v1alpha1.Measurement{Phase: v1alpha1.AnalysisPhaseRunning})
	if err != nil || r.ResumeAfter != DefaultWindow {
		t.Fatalf("resumed elsewhere: %+v %v", r, err)
	}
	// Terminate and Forget drop first reads.
	p.Measure(ctx, run, m, nil)
	p.Terminate(ctx, run, m, nil)
	p.Measure(ctx, run, m, nil)
	p.Forget("other")
	if p.Kept() != 1 {
		t.Fatal("Forget of another run dropped this one's reads")
	}
	p.Forget(run.UID)
	if p.Kept() != 0 {
		t.Fatal("Forget kept reads")
	}

	// A failed read is an error naming the pod, never zero traffic.
	readErr = errors.New("connection refused")
	if _, err := p.Measure(ctx, run, m, nil); err == nil || !strings.Contains(err.Error(), "pod default/web-c") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("read error: %v", err)
	}
	readErr = nil

	// Errors that name what is missing.
	for _, tc := range []struct {
		name string
		edit func(*v1alpha1.AnalysisRun, *v1alpha1.MeridianMetric)
		want string
	}{
		{"no owner", func(r *v1alpha1.AnalysisRun, _ *v1alpha1.MeridianMetric) { r.OwnerReferences = nil }, "has no owner Rollout"},
		{"owner gone", func(r *v1alpha1.AnalysisRun, _ *v1alpha1.MeridianMetric) { r.OwnerReferences[0].Name = "gone" }, "rollout default/gone (the run's owner) not found"},
		{"no hash", func(r *v1alpha1.AnalysisRun, _ *v1alpha1.MeridianMetric) { r.Labels = nil }, "has no rollouts-pod-template-hash label"},
		{"no pods", func(r *v1alpha1.AnalysisRun, _ *v1alpha1.MeridianMetric) {
			r.Labels = map[string]string{v1alpha1.DefaultRolloutUniqueLabelKey: "other"}
		}, "no running meshed pod of the canary of rollout default/web"},
		{"bad window", func(_ *v1alpha1.AnalysisRun, mm *v1alpha1.MeridianMetric) { mm.Window = "soon" }, `provider.meridian.window "soon"`},
		{"bad metric", func(_ *v1alpha1.AnalysisRun, mm *v1alpha1.MeridianMetric) { mm.Metric = "errors" }, `provider.meridian.metric "errors"`},
	} {
		run2 := run.DeepCopy()
		run2.UID = "run-err"
		mm := v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianSuccessRate}
		tc.edit(run2, &mm)
		m := v1alpha1.Metric{Name: "sr", Provider: v1alpha1.MetricProvider{Meridian: &mm}}
		_, err := p.Measure(ctx, run2, m, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// The canary's unmeshed pod is named when it is the only one.
	makePod(t, c, "web-d1", "canary2", false)
	run2 := run.DeepCopy()
	run2.Labels[v1alpha1.DefaultRolloutUniqueLabelKey] = "canary2"
	if _, err := p.Measure(ctx, run2, m, nil); err == nil || !strings.Contains(err.Error(), "web-d1 without a meridian-proxy container") {
		t.Errorf("unmeshed: %v", err)
	}
}

// Figure over fixed reads: one route, the probes left out.
func TestFigureByRoute(t *testing.T) {
	at := time.Unix(1000, 0)
	parse := func(text string, at time.Time) stat.Scrape {
		s, err := stat.Parse(strings.NewReader(text), at)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := parse(`
# TYPE response_total counter
response_total{direction="inbound",route="GET /api",classification="success"} 10
response_total{direction="inbound",route="GET /api",classification="failure"} 0
response_total{direction="inbound",route="GET /",classification="success"} 10
response_total{direction="inbound",route="probe",classification="success"} 10
`, at)
	after := parse(`
# TYPE response_total counter
response_total{direction="inbound",route="GET /api",classification="success"} 19
response_total{direction="inbound",route="GET /api",classification="failure"} 1
response_total{direction="inbound",route="GET /",classification="success"} 40
response_total{direction="inbound",route="probe",classification="success"} 1000
`, at.Add(10*time.Second))
	pairs := []stat.Pair{{Before: before, After: after}}
	r, err := Figure(&v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianSuccessRate, Route: "GET /api"}, pairs)
	if err != nil || r.Value != 0.9 || *r.Requests != 10 {
		t.Fatalf("route: %+v %v", r, err)
	}
	r, err = Figure(&v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianRequestRate}, pairs)
	if err != nil || r.Value != 4.0 || *r.Requests != 40 {
		t.Fatalf("all routes, probes left out: %+v %v", r, err)
	}
	r, err = Figure(&v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianLatencyP50}, pairs)
	if err != nil || !math.IsNaN(r.Value.(float64)) {
		t.Fatalf("latency without a histogram: %+v %v", r, err)
	}
}
