//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Argo Rollouts' own controller, built from its Go module by TestMain in the
// wrapper module test/e2e/argorollouts (whose go.mod pins the version), so
// the product's go.mod stays clean.
const (
	argoModuleDir = "test/e2e/argorollouts"
	argoModule    = "github.com/argoproj/argo-rollouts"
	argoImage     = "meridian.test/argo-rollouts:e2e"
	argoNamespace = "argo-rollouts"
)

func init() {
	moduleImages[argoModuleDir] = map[string]string{argoImage: argoModule + "/cmd/rollouts-controller"}
}

// TestArgoRolloutsSMI: the real Argo Rollouts controller drives a canary
// through its SMI traffic router (`trafficRouting.smi`), which writes a
// split.smi-spec.io/v1alpha1 TrafficSplit with string weights (its default
// --traffic-split-api-version), and Meridian's data plane follows it. A
// meshed client loads the root Service throughout:
//
//  1. at setWeight 25 and 75 the canary answers that share of the requests,
//     with 2 stable and 2 canary pods (setCanaryScale), so that balancing
//     over the root Service's pods, or splitting evenly between the two
//     backends, would give 50 % at both steps;
//  2. promoted as `kubectl argo rollouts promote` does, through to full
//     promotion: the new version answers everything;
//  3. a third version aborted at 25 % (`kubectl argo rollouts abort`): all
//     traffic goes back to the stable;
//
// and no request fails from the load's start until the aborted pods are
// gone.
func TestArgoRolloutsSMI(t *testing.T) {
	installControlPlane(t)
	version := installArgoRollouts(t)
	n := meshedNamespace(t)
	t.Cleanup(func() {
		if t.Failed() {
			out, err := n.run("get", "rollouts.argoproj.io,trafficsplits.v1alpha1.split.smi-spec.io", "-o", "yaml")
			t.Logf("Argo's Rollouts and the TrafficSplits (err %v):\n%s", err, out)
		}
	})

	n.apply(`apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 8080, targetPort: http}]
`)
	n.apply(fmt.Sprintf(echoServices, "echo-stable", "echo-canary"))
	ro := func(version string) string {
		return fmt.Sprintf(`apiVersion: argoproj.io/v1alpha1
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
      scaleDownDelaySeconds: 10
      abortScaleDownDelaySeconds: 10
      trafficRouting:
        smi: {rootService: echo, trafficSplitName: echo-split}
      steps:
      - setCanaryScale: {replicas: 2}
      - setWeight: 25
      - pause: {}
      - setWeight: 75
      - pause: {}
`, echoPodSpec(version))
	}

	n.apply(ro("1"))
	r := waitArgoRollout(n, "the first revision Healthy", 3*time.Minute, func(r rollout) error {
		if r.Status.Phase != "Healthy" || r.Status.StableRS == "" || r.Status.StableRS != r.Status.CurrentPodHash || r.Status.ReadyReplicas != 2 {
			return fmt.Errorf("stableRS %q, current %q, ready %d", r.Status.StableRS, r.Status.CurrentPodHash, r.Status.ReadyReplicas)
		}
		return nil
	})
	v1 := r.Status.StableRS
	waitArgoSplit(n, "echo-canary=0 echo-stable=100")

	// Kept-alive connections, as a pooled client has: Go's transport
	// keeps spare connections it dialed for a request another one served,
	// silent past the proxy's detect timeout before their first request.
	// Each request on them must still be split (a run once had one stable
	// pod answer all 757 requests at setWeight 75, when such connections
	// were spliced as opaque bytes; docs/rollouts.md).
	startLoad(n, "load", "http://echo:8080/", shareRate)
	start := mustReadLoad(n, "load")

	// 1. v2 at 25 %, then 75 %.
	n.apply(ro("2"))
	r = waitArgoPaused(n, 2, v1)
	v2 := r.Status.CurrentPodHash
	checkArgoSplit(t, n, version, "echo-canary=25 echo-stable=75")
	checkCanaryShare(t, n, "load", v1, v2, 25)

	argoPromote(n, "echo")
	waitArgoPaused(n, 4, v1)
	checkArgoSplit(t, n, version, "echo-canary=75 echo-stable=25")
	checkCanaryShare(t, n, "load", v1, v2, 75)

	// 2. Full promotion: echo-stable moves to v2, the canary's weight goes
	// to 0, v1's pods go after scaleDownDelaySeconds.
	argoPromote(n, "echo")
	waitArgoRollout(n, "v2 Healthy and stable", 2*time.Minute, func(r rollout) error {
		if r.Status.Phase != "Healthy" || r.Status.StableRS != v2 {
			return fmt.Errorf("stableRS %q, want %q", r.Status.StableRS, v2)
		}
		return nil
	})
	waitArgoSplit(n, "echo-canary=0 echo-stable=100")
	noPodsOfHash(n, v1, 2*time.Minute)
	checkOnlyFrom(t, n, "load", v2, "after the full promotion")

	// 3. v3 at 25 %, then aborted: its weight goes to 0 at once and its
	// pods go after abortScaleDownDelaySeconds.
	n.apply(ro("3"))
	r = waitArgoPaused(n, 2, v2)
	v3 := r.Status.CurrentPodHash
	checkArgoSplit(t, n, version, "echo-canary=25 echo-stable=75")
	atV3 := mustReadLoad(n, "load")
	n.eventually("v3 to answer", 30*time.Second, func() error {
		if got := sum(mustReadLoad(n, "load").sub(atV3).answers("echo-" + v3 + "-")); got < 20 {
			return fmt.Errorf("%d answers from v3", got)
		}
		return nil
	})
	// kubectl argo rollouts abort: this patch of the status subresource.
	n.must("patch", "rollouts.argoproj.io", "echo", "--subresource=status", "--type=merge", "-p", `{"status":{"abort":true}}`)
	waitArgoRollout(n, "v3 aborted", time.Minute, func(r rollout) error {
		if r.Status.Phase != "Degraded" || !r.Status.Abort || r.Status.StableRS != v2 {
			return fmt.Errorf("abort %v, stableRS %q, want %q", r.Status.Abort, r.Status.StableRS, v2)
		}
		return nil
	})
	waitArgoSplit(n, "echo-canary=0 echo-stable=100")
	checkOnlyFrom(t, n, "load", v2, "after the abort")
	noPodsOfHash(n, v3, 2*time.Minute)

	time.Sleep(2 * time.Second)
	d := mustReadLoad(n, "load").sub(start)
	t.Logf("load through the whole rollout: %s", d)
	checkOnlyOK(t, d, "")
	for _, h := range []string{v1, v2, v3} {
		if sum(d.answers("echo-"+h+"-")) == 0 {
			t.Errorf("hash %s answered nothing: %s", h, d)
		}
	}
	for pod, codes := range d.Pods {
		if !strings.HasPrefix(pod, "echo-"+v1+"-") && !strings.HasPrefix(pod, "echo-"+v2+"-") && !strings.HasPrefix(pod, "echo-"+v3+"-") && sum(codes) > 0 {
			t.Errorf("pod %s, of none of the Rollout's revisions, answered: %s", pod, d)
		}
	}
}

// installArgoRollouts installs Argo Rollouts' controller as its own
// manifests do (cluster-install: CRDs, ServiceAccount, ClusterRole and
// binding, Deployment), with the image TestMain built, and removes it all
// when t ends. The manifests are read from the module's files in the Go
// module cache, so they are those of the controller's version. It returns
// that version.
func installArgoRollouts(t *testing.T) string {
	t.Helper()
	mod := moduleSource(t, argoModuleDir, argoModule)
	t.Logf("Argo Rollouts %s (%s)", mod.Version, mod.Dir)
	manifests := filepath.Join(mod.Dir, "manifests")
	var crds []string
	for _, f := range []string{"rollout", "analysis-run", "analysis-template", "cluster-analysis-template", "experiment"} {
		crds = append(crds, "-f", filepath.Join(manifests, "crds", f+"-crd.yaml"))
	}
	rbac := []string{
		"-f", filepath.Join(manifests, "base", "argo-rollouts-sa.yaml"),
		"-f", filepath.Join(manifests, "role", "argo-rollouts-clusterrole.yaml"),
		"-f", filepath.Join(manifests, "cluster-install", "argo-rollouts-clusterrolebinding.yaml"),
	}

	gone(t, argoNamespace, 3*time.Minute)
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := runKubectl("", "--namespace", argoNamespace, "logs", "deployment/argo-rollouts", "--tail=300")
			t.Logf("Argo Rollouts controller logs:\n%s", logs)
		}
		runKubectl("", "delete", "namespace", argoNamespace, "--ignore-not-found", "--wait=false")
		runKubectl("", append([]string{"delete", "--ignore-not-found", "--wait=false", "--namespace", argoNamespace}, rbac...)...)
		// The CRDs go once their objects are gone (the test's namespace
		// is being deleted too): waited for, so the next test starts clean.
		if out, err := runKubectl("", append([]string{"delete", "--ignore-not-found", "--timeout=3m"}, crds...)...); err != nil {
			t.Errorf("deleting Argo Rollouts' CRDs: %v\n%s", err, out)
		}
		gone(t, argoNamespace, 3*time.Minute)
	})
	// Server-side: the CRDs are ~600 KB each, beyond what client-side
	// apply can record in an annotation.
	kubectl(t, "", append([]string{"apply", "--server-side"}, crds...)...)
	kubectl(t, "", "create", "namespace", argoNamespace)
	kubectl(t, "", append([]string{"apply", "--namespace", argoNamespace}, rbac...)...)
	// manifests/base/argo-rollouts-deployment.yaml with the image loaded
	// here (nothing can be pulled), a user (the image has none; Argo's
	// Dockerfile runs as 999), and its healthz as a readiness probe, so
	// that `rollout status` waits until the controller serves (no plugin
	// volume: no plugin is configured).
	kubectl(t, `apiVersion: apps/v1
kind: Deployment
metadata:
  name: argo-rollouts
  labels: {app.kubernetes.io/name: argo-rollouts}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: argo-rollouts}
  template:
    metadata:
      labels: {app.kubernetes.io/name: argo-rollouts}
    spec:
      serviceAccountName: argo-rollouts
      securityContext: {runAsNonRoot: true, runAsUser: 999}
      containers:
      - name: argo-rollouts
        image: `+argoImage+`
        imagePullPolicy: IfNotPresent
        ports:
        - {name: metrics, containerPort: 8090}
        - {name: healthz, containerPort: 8080}
        readinessProbe:
          httpGet: {path: /healthz, port: healthz}
          periodSeconds: 2
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
          readOnlyRootFilesystem: true
        volumeMounts:
        - {name: tmp, mountPath: /tmp}
      volumes:
      - {name: tmp, emptyDir: {}}
`, "--namespace", argoNamespace, "apply", "-f", "-")
	if out, err := runKubectl("", "--namespace", argoNamespace, "rollout", "status", "deployment/argo-rollouts", "--timeout=3m"); err != nil {
		t.Fatalf("Argo Rollouts' controller not ready: %v\n%s", err, out)
	}
	return mod.Version
}

// moduleSource is where module's files are in the module cache, at the
// version the wrapper module in dir pins (manifests are read from there).
func moduleSource(t *testing.T, dir, module string) (mod struct{ Dir, Version string }) {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", module)
	cmd.Dir = filepath.Join(repoRoot, dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("(cd %s && go mod download -json %s): %v\n%s", dir, module, err, out)
	}
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download -json %s: no Dir (%v):\n%s", module, err, out)
	}
	return mod
}

func getArgoRollout(n *ns, name string) (rollout, error) {
	var r rollout
	out, err := n.run("get", "rollouts.argoproj.io", name, "-o", "json")
	if err != nil {
		return r, err
	}
	err = json.Unmarshal([]byte(out), &r)
	return r, err
}

// waitArgoRollout polls Argo's Rollout echo until ok says it is as wanted.
func waitArgoRollout(n *ns, what string, timeout time.Duration, ok func(rollout) error) rollout {
	n.t.Helper()
	var r rollout
	n.eventually(what, timeout, func() (err error) {
		if r, err = getArgoRollout(n, "echo"); err != nil {
			return err
		}
		if err := ok(r); err != nil {
			return fmt.Errorf("%v (phase %s %q, step %s)", err, r.Status.Phase, r.Status.Message, ptrString(r.Status.CurrentStepIndex))
		}
		return nil
	})
	return r
}

// waitArgoPaused waits until a revision other than old is paused at the
// `pause: {}` step of index step.
func waitArgoPaused(n *ns, step int32, old string) rollout {
	n.t.Helper()
	return waitArgoRollout(n, fmt.Sprintf("the new revision paused at step %d", step), 3*time.Minute, func(r rollout) error {
		if r.Status.CurrentPodHash == old || r.Status.CurrentStepIndex == nil || *r.Status.CurrentStepIndex != step ||
			r.Status.Phase != "Paused" || len(r.Status.PauseConditions) == 0 || r.Status.PauseConditions[0].Reason != "CanaryPauseStep" {
			return fmt.Errorf("current %q, pause conditions %v", r.Status.CurrentPodHash, r.Status.PauseConditions)
		}
		return nil
	})
}

// argoPromote makes the patches `kubectl argo rollouts promote` makes on a
// paused Rollout (pkg/kubectl-argo-rollouts/cmd/promote): the status
// subresource's pauseConditions cleared, and spec.paused unset if set.
func argoPromote(n *ns, name string) {
	n.t.Helper()
	var r struct {
		Spec struct {
			Paused bool `json:"paused"`
		} `json:"spec"`
		Status struct {
			PauseConditions []any `json:"pauseConditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(n.must("get", "rollouts.argoproj.io", name, "-o", "json")), &r); err != nil {
		n.t.Fatalf("rollouts.argoproj.io %s: %v", name, err)
	}
	if len(r.Status.PauseConditions) > 0 {
		n.must("patch", "rollouts.argoproj.io", name, "--subresource=status", "--type=merge", "-p", `{"status":{"pauseConditions":null}}`)
	}
	if r.Spec.Paused {
		n.must("patch", "rollouts.argoproj.io", name, "--type=merge", "-p", `{"spec":{"paused":false}}`)
	}
}

// argoSplit is the TrafficSplit echo-split read as v1alpha1, the version
// Argo writes.
type argoSplit struct {
	Metadata struct {
		OwnerReferences []struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
			Controller bool   `json:"controller"`
		} `json:"ownerReferences"`
		ManagedFields []struct {
			Manager    string `json:"manager"`
			APIVersion string `json:"apiVersion"`
		} `json:"managedFields"`
	} `json:"metadata"`
	Spec struct {
		Service  string `json:"service"`
		Backends []struct {
			Service string `json:"service"`
			Weight  any    `json:"weight"`
		} `json:"backends"`
	} `json:"spec"`
}

func getArgoSplit(n *ns) (argoSplit, error) {
	var s argoSplit
	out, err := n.run("get", "trafficsplits.v1alpha1.split.smi-spec.io", "echo-split", "-o", "json", "--show-managed-fields")
	if err != nil {
		return s, err
	}
	err = json.Unmarshal([]byte(out), &s)
	return s, err
}

// weights is "SERVICE=WEIGHT ..." in the split's order, with a weight that
// is not a JSON string shown as its type: v1alpha1's weights are quantities,
// which are strings.
func (s argoSplit) weights() string {
	var w []string
	for _, b := range s.Spec.Backends {
		if str, ok := b.Weight.(string); ok {
			w = append(w, b.Service+"="+str)
		} else {
			w = append(w, fmt.Sprintf("%s=%T(%v)", b.Service, b.Weight, b.Weight))
		}
	}
	return strings.Join(w, " ")
}

func waitArgoSplit(n *ns, want string) argoSplit {
	n.t.Helper()
	var s argoSplit
	n.eventually("TrafficSplit echo-split to be "+want, time.Minute, func() (err error) {
		if s, err = getArgoSplit(n); err != nil {
			return err
		}
		if got := s.weights(); got != want {
			return fmt.Errorf("TrafficSplit echo-split spec.backends %s", got)
		}
		return nil
	})
	return s
}

// checkArgoSplit checks that the TrafficSplit is Argo's (controlled by its
// Rollout, written by its controller as v1alpha1) for the rootService, with
// the weights wanted, as strings.
func checkArgoSplit(t *testing.T, n *ns, version, want string) {
	t.Helper()
	s := waitArgoSplit(n, want)
	if s.Spec.Service != "echo" {
		t.Errorf("TrafficSplit echo-split spec.service %q, want the rootService echo", s.Spec.Service)
	}
	if o := s.Metadata.OwnerReferences; len(o) != 1 || o[0].APIVersion != "argoproj.io/v1alpha1" || o[0].Kind != "Rollout" || o[0].Name != "echo" || !o[0].Controller {
		t.Errorf("TrafficSplit echo-split metadata.ownerReferences %+v, want Argo's Rollout echo as controller", o)
	}
	written := false
	for _, m := range s.Metadata.ManagedFields {
		written = written || (m.Manager == "rollouts-controller" && m.APIVersion == "split.smi-spec.io/v1alpha1")
	}
	if !written {
		t.Errorf("TrafficSplit echo-split metadata.managedFields %+v: not written as v1alpha1 by rollouts-controller (Argo Rollouts %s)", s.Metadata.ManagedFields, version)
	}
}

// checkCanaryShare checks, with Argo's pods, the canary's share of the
// load at setWeight weight (checkShare).
func checkCanaryShare(t *testing.T, n *ns, load, stable, canary string, weight int) {
	t.Helper()
	pods := func(hash string) int {
		out := n.must("get", "pods", "-l", "rollouts-pod-template-hash="+hash, "-o", "name")
		return len(strings.Fields(out))
	}
	podShare := float64(pods(canary)) / float64(pods(canary)+pods(stable))
	checkShare(t, n, load, "setWeight", weight, podShare,
		func(pod string) bool { return strings.HasPrefix(pod, "echo-"+canary+"-") },
		func(pod string) bool { return strings.HasPrefix(pod, "echo-"+stable+"-") })
}

// The load checkShare measures: 800 answers in its window, for a tolerance
// of about 6 points at weights 25 and 75. A short window keeps the steps of
// the controllers' canaries short (Flagger's interval must outlast it).
const (
	shareRate   = 80 // requests a second
	shareWindow = 10 * time.Second
)

// checkShare measures, over shareWindow of the load, the share of its
// answers that came from pods isCanary says are the canary's, against
// weight (at least 500 answers, every one from the canary's or isStable's
// pods), and fails if the measure could not tell a split from none: the
// canary's share of the pods (podShare) or of the two backends (50 %)
// within the tolerance.
func checkShare(t *testing.T, n *ns, load, step string, weight int, podShare float64, isCanary, isStable func(pod string) bool) {
	t.Helper()
	// The controllers do not wait for the data plane (no router verifies
	// a weight): give the proxies a moment to get the split.
	time.Sleep(2 * time.Second)
	before := mustReadLoad(n, load)
	time.Sleep(shareWindow)
	d := mustReadLoad(n, load).sub(before)
	var c, s int64
	for pod, codes := range d.Pods {
		switch {
		case isCanary(pod):
			c += sum(codes)
		case isStable(pod):
			s += sum(codes)
		}
	}
	all := sum(d.answers(""))
	p := float64(weight) / 100
	share := float64(c) / float64(all)
	tol := 4 * math.Sqrt(p*(1-p)/float64(all))
	t.Logf("at %s %d: the canary answered %d of %d requests (%.1f %%, want %d ± %.1f; its share of the pods %.0f %%)", step, weight, c, all, 100*share, weight, 100*tol, 100*podShare)
	if all < 500 || c+s != all {
		t.Fatalf("at %s %d: %d answers (want at least 500), %d from neither the stable's pods nor the canary's: %s", step, weight, all, all-c-s, d)
	}
	if math.Abs(podShare-p) <= tol || math.Abs(0.5-p) <= tol {
		t.Fatalf("at %s %d the canary's share of the pods (%.0f %%) or of the backends (50 %%) is within %.1f points: the measure cannot tell a split from none", step, weight, 100*podShare, 100*tol)
	}
	if math.Abs(share-p) > tol {
		t.Errorf("at %s %d the canary answered %.1f %% of the requests (%d of %d), want %d ± %.1f: %s", step, weight, 100*share, c, all, weight, 100*tol, d)
		dumpLoadProxy(t, n, load)
	}
}

// dumpLoadProxy logs what the client's proxy says (its log, its outbound
// series), while the wrong share is being served.
func dumpLoadProxy(t *testing.T, n *ns, load string) {
	logs, err := n.run("logs", load, "-c", "meridian-proxy", "--tail=100")
	t.Logf("the proxy of %s (err %v):\n%s", load, err, logs)
	metrics, err := runKubectl("", "get", "--raw", "/api/v1/namespaces/"+n.name+"/pods/"+load+":4191/proxy/metrics")
	var outbound []string
	for _, l := range strings.Split(metrics, "\n") {
		if strings.Contains(l, `direction="outbound"`) || strings.Contains(l, "outbound") {
			outbound = append(outbound, l)
		}
	}
	t.Logf("the outbound metrics of %s's proxy (err %v):\n%s", load, err, strings.Join(outbound, "\n"))
}

// checkOnlyFrom waits for the proxies to get the split, then fails t unless
// every answer over 5 s came from the pods of hash.
func checkOnlyFrom(t *testing.T, n *ns, load, hash, when string) {
	t.Helper()
	time.Sleep(2 * time.Second)
	before := mustReadLoad(n, load)
	time.Sleep(5 * time.Second)
	d := mustReadLoad(n, load).sub(before)
	if got, all := sum(d.answers("echo-"+hash+"-")), sum(d.answers("")); all == 0 || got != all {
		t.Errorf("%s %d of %d answers came from %s, want all: %s", when, got, all, hash, d)
	}
}
