package analysisrun

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis/job"
	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

func crds() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "api", "crds")
}

type env struct {
	t *testing.T
	c client.Client
}

// start runs a real kube-apiserver with Meridian's CRDs and the runner
// against it, reading proxies with read.
func start(t *testing.T, o Options) *env {
	t.Helper()
	cfg := apiserver.Start(t, crds())
	ctrl, err := New(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctrl.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runner: %v", err)
		}
	})
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, c: c}
}

func (e *env) create(obj client.Object, text string) {
	e.t.Helper()
	if text != "" {
		if err := yaml.UnmarshalStrict([]byte(text), obj); err != nil {
			e.t.Fatal(err)
		}
	}
	if obj.GetNamespace() == "" {
		obj.SetNamespace("default")
	}
	if err := e.c.Create(context.Background(), obj); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) run(name string) *v1alpha1.AnalysisRun {
	e.t.Helper()
	run := &v1alpha1.AnalysisRun{}
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, run); err != nil {
		e.t.Fatal(err)
	}
	return run
}

// wait polls the run until cond holds.
func (e *env) wait(name string, d time.Duration, what string, cond func(*v1alpha1.AnalysisRun) bool) *v1alpha1.AnalysisRun {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		run := e.run(name)
		if cond(run) {
			return run
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(run.Status, "", "  ")
			e.t.Fatalf("run %s: %s not reached within %v; status:\n%s", name, what, d, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func completed(run *v1alpha1.AnalysisRun) bool { return run.Status.Phase.Completed() }

// metricsServer answers /value with the current value and /status with
// {"ok": true}, and checks a token when one is asked for.
func metricsServer(t *testing.T, value *atomic.Value) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/value":
			fmt.Fprintf(w, `{"value": %v}`, value.Load())
		case strings.HasPrefix(r.URL.Path, "/rollout/"):
			fmt.Fprintf(w, `{"name": %q, "token": %q}`, strings.TrimPrefix(r.URL.Path, "/rollout/"), r.Header.Get("Authorization"))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRunnerWebMetrics(t *testing.T) {
	e := start(t, Options{})
	var value atomic.Value
	value.Store(0.99)
	srv := metricsServer(t, &value)

	// count 3, interval 1s: three measurements a second apart, Successful.
	e.create(&v1alpha1.AnalysisRun{}, fmt.Sprintf(`
metadata: {name: ok}
spec:
  metrics:
  - name: sr
    count: 3
    interval: 1s
    successCondition: result >= 0.95
    provider: {web: {url: %q, jsonPath: "{$.value}"}}
`, srv.URL+"/value"))
	run := e.wait("ok", 20*time.Second, "completed", completed)
	res := run.Status.MetricResults[0]
	if run.Status.Phase != v1alpha1.AnalysisPhaseSuccessful || res.Count != 3 || res.Successful != 3 || len(res.Measurements) != 3 ||
		run.Status.RunSummary != (v1alpha1.RunSummary{Count: 1, Successful: 1}) || run.Status.StartedAt == nil {
		t.Fatalf("%+v", run.Status)
	}
	for i := 1; i < 3; i++ {
		gap := res.Measurements[i].StartedAt.Sub(res.Measurements[i-1].FinishedAt.Time)
		if gap < 900*time.Millisecond || res.Measurements[i].Value != "0.99" {
			t.Fatalf("measurement %d: %v after the last one, value %q", i, gap, res.Measurements[i].Value)
		}
	}

	// A failing condition: Failed once failed > failureLimit.
	value.Store(0.5)
	e.create(&v1alpha1.AnalysisRun{}, fmt.Sprintf(`
metadata: {name: bad}
spec:
  metrics:
  - name: sr
    count: 5
    interval: 1s
    failureLimit: 1
    successCondition: result >= 0.95
    provider: {web: {url: %q, jsonPath: "{$.value}"}}
`, srv.URL+"/value"))
	run = e.wait("bad", 20*time.Second, "completed", completed)
	res = run.Status.MetricResults[0]
	if run.Status.Phase != v1alpha1.AnalysisPhaseFailed || res.Failed != 2 || res.Count != 2 ||
		run.Status.Message != `Metric "sr" assessed Failed due to failed (2) > failureLimit (1)` {
		t.Fatalf("%s %q %+v", run.Status.Phase, run.Status.Message, res)
	}

	// terminate stops an unbounded metric: Successful, "Run Terminated".
	value.Store(0.99)
	e.create(&v1alpha1.AnalysisRun{}, fmt.Sprintf(`
metadata: {name: forever}
spec:
  metrics:
  - name: sr
    interval: 1s
    successCondition: result >= 0.95
    provider: {web: {url: %q, jsonPath: "{$.value}"}}
`, srv.URL+"/value"))
	e.wait("forever", 20*time.Second, "two measurements", func(r *v1alpha1.AnalysisRun) bool {
		return len(r.Status.MetricResults) == 1 && r.Status.MetricResults[0].Count >= 2
	})
	run = e.run("forever")
	run.Spec.Terminate = true
	if err := e.c.Update(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	run = e.wait("forever", 10*time.Second, "completed", completed)
	if run.Status.Phase != v1alpha1.AnalysisPhaseSuccessful || run.Status.Message != "Run Terminated" {
		t.Fatalf("%s %q", run.Status.Phase, run.Status.Message)
	}
	n := run.Status.MetricResults[0].Count
	time.Sleep(1500 * time.Millisecond)
	if got := e.run("forever").Status.MetricResults[0].Count; got != n {
		t.Fatalf("measured after the run was terminated: %d, then %d", n, got)
	}
}

func TestRunnerArgs(t *testing.T) {
	e := start(t, Options{})
	var value atomic.Value
	value.Store(1)
	srv := metricsServer(t, &value)
	e.create(&v1alpha1.Rollout{}, `
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web:v2}]}
  strategy: {canary: {steps: [{setWeight: 20}]}}
`)
	ro := &v1alpha1.Rollout{}
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "web"}, ro); err != nil {
		t.Fatal(err)
	}
	e.create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds"}, StringData: map[string]string{"token": "s3cret-token"}}, "")
	owner := fmt.Sprintf(`ownerReferences: [{apiVersion: meridian.io/v1alpha1, kind: Rollout, name: web, uid: %s, controller: true}]`, ro.UID)

	// valueFrom: a Secret's key (masked in the status) and a field of the
	// owner Rollout.
	e.create(&v1alpha1.AnalysisRun{}, fmt.Sprintf(`
metadata: {name: args, %s}
spec:
  args:
  - {name: token, valueFrom: {secretKeyRef: {name: creds, key: token}}}
  - {name: app, valueFrom: {fieldRef: {fieldPath: "metadata.name"}}}
  - {name: selector, valueFrom: {fieldRef: {fieldPath: "spec.selector.matchLabels['app']"}}}
  metrics:
  - name: echo
    successCondition: result.name == "web" && result.token == "Bearer s3cret-token"
    provider: {web: {url: "%s/rollout/{{args.app}}", headers: [{key: Authorization, value: "Bearer {{args.token}}"}]}}
  - name: leak
    provider: {web: {url: "http://127.0.0.1:1/{{args.selector}}?token={{args.token}}"}}
    consecutiveErrorLimit: 0
`, owner, srv.URL))
	run := e.wait("args", 20*time.Second, "completed", completed)
	echo, leak := run.Status.MetricResults[0], run.Status.MetricResults[1]
	if echo.Name != "echo" || echo.Phase != v1alpha1.AnalysisPhaseSuccessful {
		t.Fatalf("echo: %+v", echo)
	}
	msg := leak.Measurements[0].Message
	if leak.Phase != v1alpha1.AnalysisPhaseError || !strings.Contains(msg, "127.0.0.1:1/web?token=*****") || strings.Contains(msg, "s3cret") ||
		strings.Contains(echo.Measurements[0].Value, "s3cret") || !strings.Contains(echo.Measurements[0].Value, "Bearer *****") {
		t.Fatalf("secret not masked: leak %q, echo value %q", msg, echo.Measurements[0].Value)
	}

	// A bad argument: the run is Error, naming it.
	for name, arg := range map[string]string{
		"nosecret": `{name: token, valueFrom: {secretKeyRef: {name: nope, key: token}}}`,
		"nokey":    `{name: token, valueFrom: {secretKeyRef: {name: creds, key: nope}}}`,
		"nofield":  `{name: token, valueFrom: {fieldRef: {fieldPath: "metadata.labels['nope']"}}}`,
		"novalue":  `{name: token}`,
	} {
		e.create(&v1alpha1.AnalysisRun{}, fmt.Sprintf(`
metadata: {name: %s, %s}
spec:
  args: [%s]
  metrics:
  - name: m
    provider: {web: {url: "%s/value?{{args.token}}"}}
`, name, owner, arg, srv.URL))
	}
	for name, want := range map[string]string{
		"nosecret": "spec.args: arg token: valueFrom.secretKeyRef: secret default/nope not found",
		"nokey":    `spec.args: arg token: valueFrom.secretKeyRef: secret default/creds has no key "nope"`,
		"nofield":  `spec.args: arg token: valueFrom.fieldRef metadata.labels['nope'] of rollout default/web: no field "labels"`,
		"novalue":  "spec.args: args.token was not resolved: it has no value",
	} {
		run := e.wait(name, 10*time.Second, "completed", completed)
		if run.Status.Phase != v1alpha1.AnalysisPhaseError || run.Status.Message != want || len(run.Status.MetricResults) != 0 {
			t.Errorf("%s: %s %q, want Error %q", name, run.Status.Phase, run.Status.Message, want)
		}
	}
}

func TestRunnerJobMetric(t *testing.T) {
	// The Job poll is long: the Job watch is what wakes the run.
	e := start(t, Options{JobPoll: time.Hour})
	spec := `
  metrics:
  - name: smoke
    provider:
      job:
        metadata: {labels: {team: a}}
        spec:
          backoffLimit: 0
          template: {spec: {restartPolicy: Never, containers: [{name: t, image: busybox, command: ["true"]}]}}
`
	for _, name := range []string{"job-ok", "job-fail", "job-stop"} {
		e.create(&v1alpha1.AnalysisRun{}, "metadata: {name: "+name+"}\nspec:"+spec)
	}
	jobOf := func(name string) *batchv1.Job {
		t.Helper()
		run := e.wait(name, 10*time.Second, "a job in flight", func(r *v1alpha1.AnalysisRun) bool {
			return len(r.Status.MetricResults) == 1 && len(r.Status.MetricResults[0].Measurements) == 1 &&
				r.Status.MetricResults[0].Measurements[0].Metadata[job.NameKey] != ""
		})
		m := run.Status.MetricResults[0].Measurements[0]
		if m.Phase != v1alpha1.AnalysisPhaseRunning || run.Status.Phase != v1alpha1.AnalysisPhaseRunning || m.ResumeAt == nil {
			t.Fatalf("%s: %s %+v", name, run.Status.Phase, m)
		}
		j := &batchv1.Job{}
		if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: m.Metadata[job.NameKey]}, j); err != nil {
			t.Fatal(err)
		}
		if want := string(run.UID) + ".smoke.1"; j.Name != want || metav1.GetControllerOf(j).UID != run.UID || j.Labels["team"] != "a" {
			t.Fatalf("job %s, want %s owned by the run", j.Name, want)
		}
		return j
	}
	finish(t, e.c, jobOf("job-ok"), true)
	finish(t, e.c, jobOf("job-fail"), false)
	stop := jobOf("job-stop")

	run := e.wait("job-ok", 10*time.Second, "completed", completed)
	if run.Status.Phase != v1alpha1.AnalysisPhaseSuccessful || run.Status.MetricResults[0].Successful != 1 {
		t.Fatalf("job-ok: %+v", run.Status)
	}
	run = e.wait("job-fail", 10*time.Second, "completed", completed)
	if run.Status.Phase != v1alpha1.AnalysisPhaseFailed || !strings.Contains(run.Status.Message, `Metric "smoke" assessed Failed due to failed (1) > failureLimit (0)`) ||
		!strings.Contains(run.Status.Message, "BackoffLimitExceeded") {
		t.Fatalf("job-fail: %s %q", run.Status.Phase, run.Status.Message)
	}

	// terminate with the Job running: the Job is deleted, the measurement
	// ends "Metric Terminated", the run Successful.
	run = e.run("job-stop")
	run.Spec.Terminate = true
	if err := e.c.Update(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	run = e.wait("job-stop", 10*time.Second, "completed", completed)
	if m := run.Status.MetricResults[0].Measurements[0]; run.Status.Phase != v1alpha1.AnalysisPhaseSuccessful || m.Message != "Metric Terminated" {
		t.Fatalf("job-stop: %s %+v", run.Status.Phase, m)
	}
	j := &batchv1.Job{}
	err := e.c.Get(context.Background(), client.ObjectKeyFromObject(stop), j)
	if err == nil && j.DeletionTimestamp == nil {
		t.Fatal("the terminated run's job was not deleted")
	} else if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

// finish plays the Job controller.
func finish(t *testing.T, c client.Client, j *batchv1.Job, ok bool) {
	t.Helper()
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

// meshedPod plays the kubelet: a running pod with a proxy, at 127.0.0.1.
func (e *env) meshedPod(name, hash string) {
	e.t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": "web", v1alpha1.DefaultRolloutUniqueLabelKey: hash}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"},
			{Name: names.ProxyContainerName, Image: "proxy", Ports: []corev1.ContainerPort{{Name: names.AdminPortName, ContainerPort: 4191}}}}}}
	e.create(pod, "")
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}}}
	if err := e.c.Status().Update(context.Background(), pod); err != nil {
		e.t.Fatal(err)
	}
}

// realProxy runs a sidecar proxy on loopback in front of an application.
func realProxy(t *testing.T) (inbound, admin string) {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
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
	_, in, ad := p.Addrs()
	return in.String(), ad.String()
}

func TestRunnerMeridianMetric(t *testing.T) {
	admins := map[string]string{}
	read := func(ctx context.Context, pod *corev1.Pod, _ int32) ([]byte, error) {
		addr, ok := admins[pod.Name]
		if !ok {
			return nil, fmt.Errorf("no proxy for pod %s", pod.Name)
		}
		host, port, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(port)
		return meridianHTTP(ctx, host, int32(n))
	}
	canaryIn, canaryAdmin := realProxy(t)
	_, stableAdmin := realProxy(t)
	admins["web-c1"], admins["web-s1"] = canaryAdmin, stableAdmin
	e := start(t, Options{MeridianRead: read})
	e.create(&v1alpha1.Rollout{}, `
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web:v2}]}
  strategy: {canary: {steps: [{setWeight: 20}]}}
`)
	ro := &v1alpha1.Rollout{}
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "web"}, ro); err != nil {
		t.Fatal(err)
	}
	ro.Status.StableRS = "stable1"
	if err := e.c.Status().Update(context.Background(), ro); err != nil {
		t.Fatal(err)
	}
	e.meshedPod("web-c1", "canary1")
	e.meshedPod("web-s1", "stable1")
	run := func(name, target string) {
		e.create(&v1alpha1.AnalysisRun{}, fmt.Sprintf(`
metadata:
  name: %s
  labels: {rollouts-pod-template-hash: canary1}
  ownerReferences: [{apiVersion: meridian.io/v1alpha1, kind: Rollout, name: web, uid: %s, controller: true}]
spec:
  metrics:
  - name: sr
    count: 2
    interval: 1s
    successCondition: result >= 0.99
    provider: {meridian: {metric: success-rate, target: %s, window: 1s}}
`, name, ro.UID, target))
	}

	// The canary serves traffic all along: two windows of it, Successful.
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		c := &http.Client{Timeout: 5 * time.Second}
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if resp, err := c.Get("http://" + canaryIn + "/"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	run("canary", "canary")
	// The stable serves nothing: no traffic, Inconclusive.
	run("stable", "stable")
	got := e.wait("canary", 20*time.Second, "completed", completed)
	close(stop)
	<-sent
	res := got.Status.MetricResults[0]
	if got.Status.Phase != v1alpha1.AnalysisPhaseSuccessful || res.Successful != 2 || res.Measurements[1].Value != "1" {
		t.Fatalf("canary: %s %q %+v", got.Status.Phase, got.Status.Message, res)
	}
	for _, m := range res.Measurements {
		if d := m.FinishedAt.Sub(m.StartedAt.Time); d < time.Second {
			t.Fatalf("a measurement over %v, not its 1s window", d)
		}
	}
	got = e.wait("stable", 20*time.Second, "completed", completed)
	if got.Status.Phase != v1alpha1.AnalysisPhaseInconclusive || !strings.Contains(got.Status.Message, "no traffic: 0 requests in the window, fewer than minRequests (1)") ||
		got.Status.RunSummary.Inconclusive != 1 {
		t.Fatalf("stable: %s %q", got.Status.Phase, got.Status.Message)
	}
}

func meridianHTTP(ctx context.Context, host string, port int32) ([]byte, error) {
	return httpGet(ctx, "http://"+net.JoinHostPort(host, strconv.Itoa(int(port)))+"/metrics")
}

func httpGet(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// Without the AnalysisRun CRD the runner waits for it (the controller's
// other writers keep running), and runs what comes once it is installed.
func TestRunnerWaitsForTheCRD(t *testing.T) {
	cfg := apiserver.Start(t)
	ctrl, err := New(cfg, Options{CRDRetry: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctrl.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runner: %v", err)
		}
	}()
	select {
	case err := <-done:
		t.Fatalf("runner stopped without the CRD: %v", err)
	case <-time.After(time.Second):
	}
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{crds()}}); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, c: c}
	var value atomic.Value
	value.Store(1)
	srv := metricsServer(t, &value)
	e.create(&v1alpha1.AnalysisRun{}, fmt.Sprintf(`
metadata: {name: late}
spec:
  metrics:
  - name: v
    successCondition: result == 1
    provider: {web: {url: %q, jsonPath: "{$.value}"}}
`, srv.URL+"/value"))
	if run := e.wait("late", 20*time.Second, "completed", completed); run.Status.Phase != v1alpha1.AnalysisPhaseSuccessful {
		t.Fatalf("%s %q", run.Status.Phase, run.Status.Message)
	}
}
