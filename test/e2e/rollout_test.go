//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The Rollout e2e tests (issue 15): the Rollout controller, the
// `meridian: {}` traffic router, the AnalysisRun runner with the meridian
// provider and `meridian rollout`, on the real node with the chart's
// control plane and meshed pods. TestRollouts installs the control plane
// once for all of them (an install and its removal take about a minute).
func TestRollouts(t *testing.T) {
	installControlPlane(t)
	// The two that count every request run alone; the light ones then
	// run together (about a minute saved).
	t.Run("Canary", testRolloutCanary)
	t.Run("BlueGreen", testRolloutBlueGreen)
	for name, f := range map[string]func(*testing.T){
		"NoTraffic":  testRolloutNoTraffic,
		"HPA":        testRolloutHPA,
		"Prometheus": testRolloutPrometheus,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t)
		})
	}
}

// installControlPlane installs Meridian as the README does and removes it
// when t ends, dumping the controllers' logs if t failed.
func installControlPlane(t *testing.T) {
	t.Helper()
	gone(t, "meridian", 3*time.Minute)
	crds := mustMeridian(t, "", "install", "--crds")
	kubectl(t, crds, "apply", "--server-side", "-f", "-")
	cp := mustMeridian(t, "", "install")
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := runKubectl("", "--namespace", "meridian", "logs", "-l", "app.kubernetes.io/name=meridian-controller", "--tail=300", "--prefix")
			t.Logf("controller logs:\n%s", logs)
		}
		un := mustMeridian(t, "", "uninstall")
		runKubectl(un, "delete", "--ignore-not-found", "--wait=false", "-f", "-")
		gone(t, "meridian", 3*time.Minute)
	})
	kubectl(t, cp, "apply", "-f", "-")
	if out, errOut, err := meridian(t, "", "check", "--wait", "4m"); err != nil {
		t.Fatalf("meridian check --wait 4m: %v\n%s\n%s", err, out, errOut)
	}
}

// meshedNamespace is a namespace whose pods get the proxy.
func meshedNamespace(t *testing.T) *ns {
	n := newNamespace(t)
	kubectl(t, "", "annotate", "namespace", n.name, "meridian.io/inject=enabled")
	t.Cleanup(func() {
		if t.Failed() {
			for _, args := range [][]string{
				{"get", "rollouts,analysisruns,replicasets,hpa", "-o", "yaml"},
			} {
				out, err := n.run(args...)
				t.Logf("kubectl %s (err %v):\n%s", strings.Join(args, " "), err, out)
			}
		}
	})
	return n
}

// echoDeployment is the Deployment echo of 2 replicas at one version.
func echoDeployment(version string, args ...string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 2
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      %s
`, echoPodSpec(version, args...))
}

// echoPodSpec is the echo server's pod spec at one version: the env var
// VERSION is what changes the template, args what makes it bad. It drains
// for 2 s on SIGTERM, as a server behind a load balancer should.
func echoPodSpec(version string, args ...string) string {
	quoted := []string{"serve", "-drain", "2s"}
	quoted = append(quoted, args...)
	for i, a := range quoted {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	return fmt.Sprintf(`terminationGracePeriodSeconds: 15
      containers:
      - name: echo
        image: %s
        imagePullPolicy: IfNotPresent
        args: [%s]
        env: [{name: VERSION, value: %q}]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1`, echoImage, strings.Join(quoted, ", "), version)
}

const echoServices = `apiVersion: v1
kind: Service
metadata: {name: %[1]s}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 8080, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: %[2]s}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 8080, targetPort: http}]
`

// successRateTemplate judges the canary (the run's pod-template hash: a
// canary's pods, or blue-green's preview) on its proxies' success rate over
// 10 s, with at least 20 requests.
const successRateTemplate = `apiVersion: meridian.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: success-rate}
spec:
  metrics:
  - name: success-rate
    successCondition: result >= 0.95
    provider:
      meridian: {metric: success-rate, window: 10s, minRequests: 20}
`

// loadPod sends rate requests a second to url, meshed, and serves its
// counts on :9090/stats (read through the API server's pod proxy); flags
// are more of `echo load`'s.
func loadPod(name, url string, rate int, flags ...string) string {
	args := fmt.Sprintf("load, -url, %q, -rate, \"%d\"", url, rate)
	for _, f := range flags {
		args += fmt.Sprintf(", %q", f)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, labels: {app: load}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: load
    image: %s
    imagePullPolicy: IfNotPresent
    args: [%s]
    ports: [{name: stats, containerPort: 9090}]
`, name, echoImage, args)
}

// loadStats is what `echo load` serves.
type loadStats struct {
	Sent       int64                       `json:"sent"`
	Answered   int64                       `json:"answered"`
	Pods       map[string]map[string]int64 `json:"pods"`
	Unanswered map[string]int64            `json:"unanswered"`
}

func readLoad(n *ns, pod string) (loadStats, error) {
	var s loadStats
	out, err := runKubectl("", "get", "--raw", "/api/v1/namespaces/"+n.name+"/pods/"+pod+":9090/proxy/stats")
	if err != nil {
		return s, err
	}
	err = json.Unmarshal([]byte(out), &s)
	return s, err
}

func mustReadLoad(n *ns, pod string) loadStats {
	n.t.Helper()
	var s loadStats
	n.eventually("the stats of "+pod, 30*time.Second, func() (err error) {
		s, err = readLoad(n, pod)
		return err
	})
	return s
}

// answers counts the answers of the pods whose name starts with prefix
// ("" for all), by status code.
func (s loadStats) answers(prefix string) map[string]int64 {
	m := map[string]int64{}
	for pod, codes := range s.Pods {
		if strings.HasPrefix(pod, prefix) {
			for code, c := range codes {
				m[code] += c
			}
		}
	}
	return m
}

func (s loadStats) sub(before loadStats) loadStats {
	d := loadStats{Sent: s.Sent - before.Sent, Answered: s.Answered - before.Answered, Pods: map[string]map[string]int64{}, Unanswered: map[string]int64{}}
	for pod, codes := range s.Pods {
		d.Pods[pod] = map[string]int64{}
		for code, c := range codes {
			d.Pods[pod][code] = c - before.Pods[pod][code]
		}
	}
	for e, c := range s.Unanswered {
		d.Unanswered[e] = c - before.Unanswered[e]
	}
	return d
}

func (s loadStats) String() string {
	b, _ := json.Marshal(s)
	return string(b)
}

// startLoad starts a load pod and waits until it has answers from the
// Service (so a test's figures never include the client's own start).
func startLoad(n *ns, name, url string, rate int, flags ...string) {
	n.t.Helper()
	n.apply(loadPod(name, url, rate, flags...))
	n.eventually("load "+name+" answered", 2*time.Minute, func() error {
		s, err := readLoad(n, name)
		if err != nil {
			return err
		}
		if len(s.answers("")) == 0 {
			return fmt.Errorf("no answers yet: %s", s)
		}
		return nil
	})
}

// rollout is the part of a Rollout the tests read.
type rollout struct {
	Spec struct {
		Replicas *int32 `json:"replicas"`
	} `json:"spec"`
	Status struct {
		Phase            string `json:"phase"`
		Message          string `json:"message"`
		CurrentStepIndex *int32 `json:"currentStepIndex"`
		CurrentPodHash   string `json:"currentPodHash"`
		StableRS         string `json:"stableRS"`
		Abort            bool   `json:"abort"`
		PauseConditions  []struct {
			Reason string `json:"reason"`
		} `json:"pauseConditions"`
		Canary struct {
			Weights *struct {
				Canary   struct{ Weight int32 } `json:"canary"`
				Stable   struct{ Weight int32 } `json:"stable"`
				Verified *bool                  `json:"verified"`
			} `json:"weights"`
		} `json:"canary"`
		BlueGreen struct {
			ActiveSelector  string `json:"activeSelector"`
			PreviewSelector string `json:"previewSelector"`
		} `json:"blueGreen"`
		Replicas      int32  `json:"replicas"`
		ReadyReplicas int32  `json:"readyReplicas"`
		HPAReplicas   int32  `json:"HPAReplicas"`
		Selector      string `json:"selector"`
	} `json:"status"`
}

func getRollout(n *ns, name string) (rollout, error) {
	var r rollout
	out, err := n.run("get", "rollouts.meridian.io", name, "-o", "json")
	if err != nil {
		return r, err
	}
	err = json.Unmarshal([]byte(out), &r)
	return r, err
}

// waitRollout polls the Rollout until ok says it is as wanted.
func waitRollout(n *ns, name, what string, timeout time.Duration, ok func(rollout) error) rollout {
	n.t.Helper()
	var r rollout
	n.eventually(what, timeout, func() (err error) {
		if r, err = getRollout(n, name); err != nil {
			return err
		}
		if err := ok(r); err != nil {
			return fmt.Errorf("%v (phase %s %q, step %v, weights %s)", err, r.Status.Phase, r.Status.Message, ptrString(r.Status.CurrentStepIndex), weightsString(r))
		}
		return nil
	})
	return r
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

func weightsString(r rollout) string {
	w := r.Status.Canary.Weights
	if w == nil {
		return "none"
	}
	return fmt.Sprintf("stable %d canary %d verified %s", w.Stable.Weight, w.Canary.Weight, ptrString(w.Verified))
}

// rolloutStatus runs `meridian rollout status` as a pipeline would.
func rolloutStatus(t *testing.T, n *ns, name, timeout string) (string, error) {
	t.Helper()
	out, errOut, err := meridian(t, "", "rollout", "status", name, "-n", n.name, "--timeout", timeout)
	return out + errOut, err
}

// noPodsOfHash waits until the ReplicaSet of hash has no pod left at all.
func noPodsOfHash(n *ns, hash string, timeout time.Duration) {
	n.t.Helper()
	n.eventually("no pod of hash "+hash, timeout, func() error {
		out, err := n.run("get", "pods", "-l", "rollouts-pod-template-hash="+hash, "-o", "name")
		if err != nil {
			return err
		}
		if out != "" {
			return fmt.Errorf("pods left: %s", strings.ReplaceAll(out, "\n", " "))
		}
		return nil
	})
}

// testRolloutCanary: a meshed echo Deployment taken over by a Rollout
// (workloadRef, scaleDown onsuccess) with `meridian: {}` traffic routing,
// under steady load from a meshed client through the stable Service:
//
//  1. a good version goes 20 % → pause 20 s → analysis (the canary's
//     success rate from its proxies) → 50 % → pause 10 s → 100 %, with no
//     request failed from the load's start until the old pods are gone,
//     and the canary answering about 20 % of the requests at the 20 % step;
//  2. a bad version (answering 500 to half its requests) fails its
//     analysis and the Rollout aborts by itself: Degraded, all traffic back
//     to the stable, whose pods fail no request.
func testRolloutCanary(t *testing.T) {
	n := meshedNamespace(t)
	n.apply(echoDeployment("1"))
	n.apply(fmt.Sprintf(echoServices, "echo-stable", "echo-canary"))
	n.apply(successRateTemplate)
	n.apply(`apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: echo}
spec:
  replicas: 2
  workloadRef: {apiVersion: apps/v1, kind: Deployment, name: echo, scaleDown: onsuccess}
  strategy:
    canary:
      stableService: echo-stable
      canaryService: echo-canary
      scaleDownDelaySeconds: 10
      abortScaleDownDelaySeconds: 10
      trafficRouting:
        meridian: {}
      steps:
      - setWeight: 20
      - pause: {duration: 20s}
      - analysis:
          templates: [{templateName: success-rate}]
      - setWeight: 50
      - pause: {duration: 10s}
`)
	// The first revision is stable at once; the Deployment's own pods go.
	if out, err := rolloutStatus(t, n, "echo", "3m"); err != nil {
		t.Fatalf("meridian rollout status (first revision): %v\n%s", err, out)
	}
	r1 := waitRollout(n, "echo", "the first revision stable", time.Minute, func(r rollout) error {
		if r.Status.Phase != "Healthy" || r.Status.StableRS == "" || r.Status.StableRS != r.Status.CurrentPodHash {
			return fmt.Errorf("stableRS %q, current %q", r.Status.StableRS, r.Status.CurrentPodHash)
		}
		return nil
	})
	v1 := r1.Status.StableRS
	n.eventually("Deployment echo scaled to 0 (scaleDown: onsuccess)", time.Minute, func() error {
		out, err := n.run("get", "pods", "-l", "app=echo,pod-template-hash", "-o", "name")
		if err != nil {
			return err
		}
		if replicas := n.must("get", "deployment", "echo", "-o", "jsonpath={.spec.replicas}"); replicas != "0" || out != "" {
			return fmt.Errorf("deployment replicas %s, its pods %q", replicas, out)
		}
		return nil
	})

	// Steady load through the stable Service, which the meridian router
	// splits between the stable's and the canary's pods.
	const rate = 25
	startLoad(n, "load", "http://echo-stable:8080/", rate)
	start := mustReadLoad(n, "load")

	// 1. A good version: the template's env changes.
	n.must("set", "env", "deployment/echo", "VERSION=2")
	r := waitRollout(n, "echo", "the canary at 20 %, verified", 2*time.Minute, func(r rollout) error {
		w := r.Status.Canary.Weights
		if r.Status.CurrentPodHash == v1 || w == nil || w.Canary.Weight != 20 || w.Verified == nil || !*w.Verified {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	v2 := r.Status.CurrentPodHash
	at20 := mustReadLoad(n, "load")
	waitRollout(n, "echo", "the 20 % step's pause to end", time.Minute, func(r rollout) error {
		if r.Status.CurrentStepIndex == nil || *r.Status.CurrentStepIndex < 2 {
			return fmt.Errorf("still pausing")
		}
		return nil
	})
	d := mustReadLoad(n, "load").sub(at20)
	canary, all := sum(d.answers("echo-"+v2+"-")), sum(d.answers(""))
	share := float64(canary) / float64(all)
	t.Logf("at the 20 %% step: the canary answered %d of %d requests (%.1f %%)", canary, all, 100*share)
	if all < 200 || share < 0.12 || share > 0.28 {
		t.Errorf("at the 20 %% step the canary answered %d of %d requests (%.1f %%), want about 20 %%: %s", canary, all, 100*share, d)
	}
	if out, err := rolloutStatus(t, n, "echo", "3m"); err != nil {
		t.Fatalf("meridian rollout status (v2): %v\n%s", err, out)
	}
	r = waitRollout(n, "echo", "v2 stable", time.Minute, func(r rollout) error {
		if r.Status.Phase != "Healthy" || r.Status.StableRS != v2 {
			return fmt.Errorf("stableRS %q, want %q", r.Status.StableRS, v2)
		}
		return nil
	})
	// The analysis run succeeded, measured on the canary's proxies.
	runs := n.must("get", "analysisruns", "-o", `jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.metadata.labels.rollouts-pod-template-hash} {.metadata.annotations.rollout\.argoproj\.io/revision}{"\n"}{end}`)
	rev := n.must("get", "replicaset", "echo-"+v2, "-o", `jsonpath={.metadata.annotations.rollout\.argoproj\.io/revision}`)
	if !strings.Contains(runs, " Successful "+v2+" "+rev+"\n") && !strings.HasSuffix(runs, " Successful "+v2+" "+rev) {
		t.Errorf("no Successful AnalysisRun of %s at its ReplicaSet's revision %s:\n%s", v2, rev, runs)
	}
	// The old stable's pods go after scaleDownDelaySeconds: the load keeps
	// running until they are gone, so a request lost to their shutdown
	// would show.
	noPodsOfHash(n, v1, 2*time.Minute)
	time.Sleep(2 * time.Second)
	d = mustReadLoad(n, "load").sub(start)
	t.Logf("load through the good rollout: %s", d)
	checkOnlyOK(t, d, "")
	if got := sum(d.answers("echo-" + v2 + "-")); got == 0 {
		t.Errorf("v2 answered nothing: %s", d)
	}
	get := mustMeridian(t, "", "rollout", "get", "echo", "-n", n.name)
	t.Logf("meridian rollout get echo:\n%s", get)
	if !strings.Contains(get, "Healthy") || !strings.Contains(get, "echo-"+v2) {
		t.Errorf("meridian rollout get does not show a Healthy rollout with ReplicaSet echo-%s:\n%s", v2, get)
	}

	// 2. A bad version: half its answers are 500s. The stable's pods keep
	// answering everything. Counted honestly: every answer carries the pod
	// that gave it (X-Echo-Host), so the bad canary's 500s are told apart
	// from the stable's answers, and any request no pod answered (a reset,
	// a timeout, the proxy's own error) is a failure of its own.
	before := mustReadLoad(n, "load")
	n.must("patch", "deployment/echo", "--type=json", "-p", `[
		{"op":"replace","path":"/spec/template/spec/containers/0/env/0/value","value":"3"},
		{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"-fail-rate"},
		{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"0.5"}]`)
	out, err := rolloutStatus(t, n, "echo", "3m")
	if err == nil || !strings.Contains(out, "Degraded") {
		t.Fatalf("meridian rollout status (bad v3): %v, want exit status 1 and Degraded:\n%s", err, out)
	}
	t.Logf("meridian rollout status (bad v3): %v\n%s", err, out)
	r = waitRollout(n, "echo", "v3 aborted, all traffic to v2", time.Minute, func(r rollout) error {
		w := r.Status.Canary.Weights
		if r.Status.Phase != "Degraded" || !r.Status.Abort || r.Status.StableRS != v2 || w == nil || w.Stable.Weight != 100 || w.Canary.Weight != 0 {
			return fmt.Errorf("not aborted")
		}
		return nil
	})
	v3 := r.Status.CurrentPodHash
	if !strings.Contains(r.Status.Message, "success-rate") {
		t.Errorf("the aborted Rollout's message does not name the failed metric: %q", r.Status.Message)
	}
	runs = n.must("get", "analysisruns", "-o", `jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.metadata.labels.rollouts-pod-template-hash} {.status.message}{"\n"}{end}`)
	if !strings.Contains(runs, " Failed "+v3) {
		t.Errorf("no Failed AnalysisRun of %s:\n%s", v3, runs)
	}
	// The aborted canary's pods go after abortScaleDownDelaySeconds; the
	// load runs on until then.
	noPodsOfHash(n, v3, 2*time.Minute)
	time.Sleep(2 * time.Second)
	d = mustReadLoad(n, "load").sub(before)
	t.Logf("load through the bad rollout: %s", d)
	checkOnlyOK(t, d, "echo-"+v2+"-")
	if bad := d.answers("echo-" + v3 + "-"); bad["500"] == 0 {
		t.Errorf("the bad version answered no 500 (it got no traffic?): %s", d)
	}
	for pod := range d.Pods {
		if !strings.HasPrefix(pod, "echo-"+v2+"-") && !strings.HasPrefix(pod, "echo-"+v3+"-") {
			if sum(d.Pods[pod]) > 0 {
				t.Errorf("pod %s, neither v2's nor v3's, answered: %s", pod, d)
			}
		}
	}
}

// checkOnlyOK fails t if a request no pod answered is in d, or if a pod
// whose name starts with prefix answered anything but 200.
func checkOnlyOK(t *testing.T, d loadStats, prefix string) {
	t.Helper()
	for e, c := range d.Unanswered {
		if c > 0 {
			t.Errorf("%d requests answered by no pod: %s", c, e)
		}
	}
	for code, c := range d.answers(prefix) {
		if code != "200" && c > 0 {
			t.Errorf("%d answers %s from pods %s*", c, code, prefix)
		}
	}
	if d.Sent-d.Answered > 2*int64(len(d.Pods)+1)*25 {
		t.Errorf("%d of %d requests unanswered at the end", d.Sent-d.Answered, d.Sent)
	}
}

func sum(m map[string]int64) int64 {
	var s int64
	for _, c := range m {
		s += c
	}
	return s
}

// testRolloutBlueGreen: a blue-green Rollout whose new version is judged
// on the preview Service (a client loads it; the pre-promotion analysis
// reads the preview pods' proxies), then promoted by itself: the active
// Service switches to it while another client loads the active Service,
// which fails no request during the switch and until the old pods are
// gone.
func testRolloutBlueGreen(t *testing.T) {
	n := meshedNamespace(t)
	n.apply(fmt.Sprintf(echoServices, "echo-active", "echo-preview"))
	n.apply(successRateTemplate)
	ro := func(version string) string {
		return fmt.Sprintf(`apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: echo}
spec:
  replicas: 2
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      %s
  strategy:
    blueGreen:
      activeService: echo-active
      previewService: echo-preview
      scaleDownDelaySeconds: 10
      prePromotionAnalysis:
        templates: [{templateName: success-rate}]
`, echoPodSpec(version))
	}
	n.apply(ro("1"))
	if out, err := rolloutStatus(t, n, "echo", "3m"); err != nil {
		t.Fatalf("meridian rollout status (first revision): %v\n%s", err, out)
	}
	r := waitRollout(n, "echo", "the first revision active", time.Minute, func(r rollout) error {
		if r.Status.Phase != "Healthy" || r.Status.BlueGreen.ActiveSelector == "" {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	v1 := r.Status.BlueGreen.ActiveSelector

	startLoad(n, "load-active", "http://echo-active:8080/", 25)
	startLoad(n, "load-preview", "http://echo-preview:8080/", 10)
	start := mustReadLoad(n, "load-active")

	n.apply(ro("2"))
	r = waitRollout(n, "echo", "the new revision in preview", 2*time.Minute, func(r rollout) error {
		if r.Status.CurrentPodHash == v1 || r.Status.BlueGreen.PreviewSelector != r.Status.CurrentPodHash {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	v2 := r.Status.CurrentPodHash
	if out, err := rolloutStatus(t, n, "echo", "3m"); err != nil {
		t.Fatalf("meridian rollout status (v2): %v\n%s", err, out)
	}
	r = waitRollout(n, "echo", "v2 active", time.Minute, func(r rollout) error {
		if r.Status.Phase != "Healthy" || r.Status.BlueGreen.ActiveSelector != v2 || r.Status.StableRS != v2 {
			return fmt.Errorf("active %q, stable %q, want %q", r.Status.BlueGreen.ActiveSelector, r.Status.StableRS, v2)
		}
		return nil
	})
	runs := n.must("get", "analysisruns", "-l", "rollout-type=PrePromotion", "-o", `jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.metadata.labels.rollouts-pod-template-hash}{"\n"}{end}`)
	if !strings.Contains(runs, " Successful "+v2) {
		t.Errorf("no Successful pre-promotion AnalysisRun of %s:\n%s", v2, runs)
	}
	if sel := n.must("get", "service", "echo-active", "-o", "jsonpath={.spec.selector.rollouts-pod-template-hash}"); sel != v2 {
		t.Errorf("Service echo-active selects hash %q, want %q", sel, v2)
	}
	noPodsOfHash(n, v1, 2*time.Minute)
	// The active Service's clients now reach v2 only.
	time.Sleep(2 * time.Second)
	mid := mustReadLoad(n, "load-active")
	time.Sleep(3 * time.Second)
	tail := mustReadLoad(n, "load-active").sub(mid)
	if v2s, all := sum(tail.answers("echo-"+v2+"-")), sum(tail.answers("")); v2s == 0 || v2s != all {
		t.Errorf("after the switch the active Service's answers came from v2 %d times of %d: %s", v2s, all, tail)
	}
	d := mustReadLoad(n, "load-active").sub(start)
	t.Logf("load through the active Service: %s", d)
	checkOnlyOK(t, d, "")
	if sum(d.answers("echo-"+v1+"-")) == 0 || sum(d.answers("echo-"+v2+"-")) == 0 {
		t.Errorf("the active Service's load was not answered by both v1 and v2: %s", d)
	}
	// The preview Service moved to v2 once v2 was all available: its
	// clients lost no request either.
	p := mustReadLoad(n, "load-preview")
	t.Logf("load through the preview Service: %s", p)
	checkOnlyOK(t, p, "")
	if sum(p.answers("echo-"+v2+"-")) == 0 {
		t.Errorf("the preview Service never answered from v2: %s", p)
	}
}

// testRolloutNoTraffic: an analysis with the meridian provider on a canary
// that no request reaches is Inconclusive ("no traffic"), and the Rollout
// pauses saying so (InconclusiveAnalysisRun, Argo's reason) instead of aborting.
func testRolloutNoTraffic(t *testing.T) {
	n := meshedNamespace(t)
	n.apply(fmt.Sprintf(echoServices, "echo-stable", "echo-canary"))
	n.apply(`apiVersion: meridian.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: success-rate}
spec:
  metrics:
  - name: success-rate
    successCondition: result >= 0.95
    provider:
      meridian: {metric: success-rate, window: 5s}
`)
	ro := func(version string) string {
		return fmt.Sprintf(`apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: echo}
spec:
  replicas: 1
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      %s
  strategy:
    canary:
      stableService: echo-stable
      canaryService: echo-canary
      trafficRouting:
        meridian: {}
      steps:
      - setWeight: 50
      - analysis:
          templates: [{templateName: success-rate}]
`, echoPodSpec(version))
	}
	n.apply(ro("1"))
	if out, err := rolloutStatus(t, n, "echo", "3m"); err != nil {
		t.Fatalf("meridian rollout status (first revision): %v\n%s", err, out)
	}
	n.apply(ro("2"))
	r := waitRollout(n, "echo", "the Rollout paused on an inconclusive analysis", 2*time.Minute, func(r rollout) error {
		if r.Status.Phase != "Paused" || len(r.Status.PauseConditions) == 0 || r.Status.PauseConditions[0].Reason != "InconclusiveAnalysisRun" {
			return fmt.Errorf("pause conditions %v", r.Status.PauseConditions)
		}
		return nil
	})
	t.Logf("paused: %q", r.Status.Message)
	if !strings.Contains(r.Status.Message, "InconclusiveAnalysisRun") {
		t.Errorf("the paused Rollout's message %q does not name InconclusiveAnalysisRun", r.Status.Message)
	}
	runs := n.must("get", "analysisruns", "-o", `jsonpath={range .items[*]}{.status.phase}: {.status.metricResults[0].measurements[0].message}{"\n"}{end}`)
	if !strings.Contains(runs, "Inconclusive: no traffic") {
		t.Errorf("the AnalysisRun is not Inconclusive with no traffic:\n%s", runs)
	}
	// It stays paused (not Degraded) and the stable keeps its traffic.
	time.Sleep(3 * time.Second)
	r, err := getRollout(n, "echo")
	if err != nil {
		t.Fatal(err)
	}
	if r.Status.Phase != "Paused" || r.Status.Abort {
		t.Errorf("after a while the Rollout is %s (abort %v): %q, want still Paused", r.Status.Phase, r.Status.Abort, r.Status.Message)
	}
	out, err := rolloutStatus(t, n, "echo", "2s")
	if err == nil || !strings.Contains(out, "Paused") {
		t.Errorf("meridian rollout status --timeout 2s on the paused Rollout: %v, want exit status 1 after Paused:\n%s", err, out)
	}
}

// testRolloutHPA: an autoscaling/v2 HPA targets a Rollout (kind Rollout,
// apiVersion meridian.io/v1alpha1) with minReplicas above its replicas:
// the HPA controller raises spec.replicas through the scale subresource
// (the minimum needs no metrics) and the Rollout's ReplicaSet follows; the
// scale subresource reports replicas and the selector the HPA reads.
func testRolloutHPA(t *testing.T) {
	n := newNamespace(t)
	n.apply(fmt.Sprintf(`apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: echo}
spec:
  replicas: 1
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      %s
  strategy:
    canary: {}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: echo}
spec:
  scaleTargetRef: {apiVersion: meridian.io/v1alpha1, kind: Rollout, name: echo}
  minReplicas: 3
  maxReplicas: 4
  metrics:
  - type: Resource
    resource:
      name: cpu
      target: {type: Utilization, averageUtilization: 80}
`, echoPodSpec("1")))
	r := waitRollout(n, "echo", "the HPA to scale the Rollout to 3", 2*time.Minute, func(r rollout) error {
		if r.Spec.Replicas == nil || *r.Spec.Replicas != 3 || r.Status.ReadyReplicas != 3 || r.Status.HPAReplicas != 3 {
			return fmt.Errorf("spec.replicas %s, ready %d, HPAReplicas %d", ptrString(r.Spec.Replicas), r.Status.ReadyReplicas, r.Status.HPAReplicas)
		}
		return nil
	})
	if r.Status.Selector == "" || !strings.Contains(r.Status.Selector, "app=echo") {
		t.Errorf("status.selector %q, want the Rollout's selector", r.Status.Selector)
	}
	rs := n.must("get", "replicasets", "-l", "rollouts-pod-template-hash="+r.Status.StableRS, "-o", "jsonpath={.items[0].spec.replicas}")
	if rs != "3" {
		t.Errorf("the Rollout's ReplicaSet has %s replicas, want 3", rs)
	}
	scale := n.must("get", "--raw", "/apis/meridian.io/v1alpha1/namespaces/"+n.name+"/rollouts/echo/scale")
	var s struct {
		Spec   struct{ Replicas int32 }
		Status struct {
			Replicas int32
			Selector string
		}
	}
	if err := json.Unmarshal([]byte(scale), &s); err != nil {
		t.Fatal(err)
	}
	if s.Spec.Replicas != 3 || s.Status.Replicas != 3 || s.Status.Selector == "" {
		t.Errorf("scale subresource %s, want 3 replicas and a selector", scale)
	}
	n.eventually("the HPA to see 3 replicas", time.Minute, func() error {
		out, err := n.run("get", "hpa", "echo", "-o", "jsonpath={.status.currentReplicas} {.status.desiredReplicas}")
		if err != nil {
			return err
		}
		if out != "3 3" {
			return fmt.Errorf("HPA current and desired replicas %q", out)
		}
		return nil
	})
}

// testRolloutPrometheus: the prometheus provider against a real Prometheus
// (Debian's package, installed by hack/e2e-deps.sh, which make e2e runs),
// run on the node by the test and scraping the proxies of the namespace's
// pods, each labelled with its pod-template hash. A canary at 50 % under
// load is judged by a PromQL success rate of its pods' inbound responses,
// the kubelet's probes left out, and promoted.
func testRolloutPrometheus(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("no prometheus binary (%v): hack/e2e-deps.sh installs it (make e2e runs it)", err)
	}
	n := meshedNamespace(t)
	// The node's address on the pod network: the controller's pod reaches
	// Prometheus there (inside the cluster's range, so the guard lets it).
	nodeIP := kubectl(t, "", "get", "nodes", "-o", `jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}`)
	l, err := net.Listen("tcp", net.JoinHostPort(nodeIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	// Debian builds Prometheus without Kubernetes service discovery, so
	// the test discovers: every 2 s it writes the namespace's pods (IP,
	// the proxy's admin port 4191, the hash) to a file_sd file.
	targets := filepath.Join(dir, "targets.json")
	writeTargets := func() {
		out, err := n.run("get", "pods", "-l", "rollouts-pod-template-hash", "-o",
			`jsonpath={range .items[?(@.status.podIP)]}{.metadata.name} {.status.podIP} {.metadata.labels.rollouts-pod-template-hash}{"\n"}{end}`)
		if err != nil {
			return
		}
		type group struct {
			Targets []string          `json:"targets"`
			Labels  map[string]string `json:"labels"`
		}
		groups := []group{}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 3 {
				groups = append(groups, group{[]string{net.JoinHostPort(f[1], "4191")}, map[string]string{"pod": f[0], "rollouts_pod_template_hash": f[2]}})
			}
		}
		b, _ := json.Marshal(groups)
		if os.WriteFile(targets+".new", b, 0o644) == nil {
			os.Rename(targets+".new", targets)
		}
	}
	writeTargets()
	stop := make(chan struct{})
	discovered := make(chan struct{})
	go func() {
		defer close(discovered)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Second):
				writeTargets()
			}
		}
	}()
	cfg := fmt.Sprintf(`global: {scrape_interval: 2s, evaluation_interval: 2s}
scrape_configs:
- job_name: meridian-proxies
  file_sd_configs:
  - files: [%q]
    refresh_interval: 2s
`, targets)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	prom := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	prom.Stdout, prom.Stderr = &logs, &logs
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { prom.Wait(); close(exited) }()
	t.Cleanup(func() {
		close(stop)
		<-discovered
		prom.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
	n.eventually("prometheus ready at "+addr, time.Minute, func() error {
		select {
		case <-exited:
			t.Fatalf("prometheus exited: %v\n%s", prom.ProcessState, logs.String())
		default:
		}
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})

	n.apply(fmt.Sprintf(echoServices, "echo-stable", "echo-canary"))
	n.apply(fmt.Sprintf(`apiVersion: meridian.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: prometheus-success-rate}
spec:
  args: [{name: hash}]
  metrics:
  - name: success-rate
    successCondition: len(result) == 1 && result[0] >= 0.95
    provider:
      prometheus:
        address: http://%s
        query: |
          sum(rate(response_total{direction="inbound", route!="probe", classification="success", rollouts_pod_template_hash="{{args.hash}}"}[20s]))
          /
          sum(rate(response_total{direction="inbound", route!="probe", rollouts_pod_template_hash="{{args.hash}}"}[20s]))
`, addr))
	ro := func(version string) string {
		return fmt.Sprintf(`apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: echo}
spec:
  replicas: 2
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      %s
  strategy:
    canary:
      stableService: echo-stable
      canaryService: echo-canary
      scaleDownDelaySeconds: 5
      trafficRouting:
        meridian: {}
      steps:
      - setWeight: 50
      - pause: {duration: 15s}
      - analysis:
          templates: [{templateName: prometheus-success-rate}]
          args:
          - name: hash
            valueFrom: {podTemplateHashValue: Latest}
`, echoPodSpec(version))
	}
	n.apply(ro("1"))
	if out, err := rolloutStatus(t, n, "echo", "3m"); err != nil {
		t.Fatalf("meridian rollout status (first revision): %v\n%s", err, out)
	}
	startLoad(n, "load", "http://echo-stable:8080/", 20)
	n.apply(ro("2"))
	if out, err := rolloutStatus(t, n, "echo", "3m"); err != nil {
		t.Fatalf("meridian rollout status (v2): %v\n%s", err, out)
	}
	r, err := getRollout(n, "echo")
	if err != nil {
		t.Fatal(err)
	}
	runs := n.must("get", "analysisruns", "-o", `jsonpath={range .items[*]}{.status.phase} {.metadata.labels.rollouts-pod-template-hash} {.status.metricResults[0].measurements[0].value} {.status.metricResults[0].measurements[0].metadata.ResolvedPrometheusQuery}{"\n"}{end}`)
	t.Logf("analysis runs:\n%s", runs)
	if !strings.HasPrefix(runs, "Successful "+r.Status.CurrentPodHash+" [") || !strings.Contains(runs, `rollouts_pod_template_hash="`+r.Status.CurrentPodHash+`"`) {
		t.Errorf("no Successful AnalysisRun of %s measured by Prometheus on its pods:\n%s", r.Status.CurrentPodHash, runs)
	}
	if r.Status.Phase != "Healthy" || r.Status.StableRS != r.Status.CurrentPodHash {
		t.Errorf("the Rollout is %s with stable %s, want Healthy on %s", r.Status.Phase, r.Status.StableRS, r.Status.CurrentPodHash)
	}
}
