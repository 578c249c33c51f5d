//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Flagger's own controller, built from its Go module by TestMain in the
// wrapper module test/e2e/flagger (whose go.mod pins the version), so the
// product's go.mod stays clean.
const (
	flaggerModuleDir = "test/e2e/flagger"
	flaggerModule    = "github.com/fluxcd/flagger"
	flaggerImage     = "meridian.test/flagger:e2e"
	flaggerNamespace = "flagger-system"
)

func init() {
	moduleImages[flaggerModuleDir] = map[string]string{flaggerImage: flaggerModule + "/cmd/flagger"}
}

// TestFlaggerGatewayAPI: the real Flagger controller runs a canary through
// its Gateway API router (`provider: gatewayapi:v1`) with a GAMMA parent
// (the Service itself), and Meridian's mesh follows the HTTPRoute weights it
// writes. Flagger makes echo-primary from the Deployment, the Services echo,
// echo-primary and echo-canary, and the HTTPRoute echo; a meshed client
// loads http://echo:8080 throughout. A new version is shifted in at the
// analysis' stepWeights 25 and 75, where the canary answers that share of
// the requests (2 primary and 2 canary pods: balancing over the pods, or
// splitting evenly between the two backends, would give 50 %), then
// promoted: the primary's pods serve the new version and the canary's go.
// No request fails from the load's start to the end.
func TestFlaggerGatewayAPI(t *testing.T) {
	installControlPlane(t)
	version := installFlagger(t)
	n := meshedNamespace(t)
	t.Cleanup(func() {
		if t.Failed() {
			out, err := n.run("get", "canaries.flagger.app,httproutes.gateway.networking.k8s.io,deployments,services", "-o", "yaml")
			t.Logf("Flagger's Canary, the HTTPRoutes, Deployments and Services (err %v):\n%s", err, out)
		}
	})
	n.apply(echoDeployment("1"))
	// Flagger moves one step per interval: 25 s outlasts checkShare's window
	// (and the waits around it) with 10 s to spare.
	n.apply(`apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: echo}
spec:
  provider: gatewayapi:v1
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: echo}
  progressDeadlineSeconds: 180
  service:
    port: 8080
    targetPort: 8080
    portName: http
    gatewayRefs:
    - {group: "", kind: Service, name: echo, port: 8080}
  analysis:
    interval: 25s
    threshold: 2
    stepWeights: [25, 75]
`)
	waitCanary(n, "initialized", 4*time.Minute, func(c canary) error {
		if c.Status.Phase != "Initialized" {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	startLoad(n, "load", "http://echo:8080/", shareRate)
	start := mustReadLoad(n, "load")
	checkOnlyPrimary(t, n, "load", "once initialized")

	n.apply(echoDeployment("2"))
	isCanary := func(pod string) bool {
		return strings.HasPrefix(pod, "echo-") && !strings.HasPrefix(pod, "echo-primary-")
	}
	isPrimary := func(pod string) bool { return strings.HasPrefix(pod, "echo-primary-") }
	for _, w := range []int{25, 75} {
		waitCanary(n, fmt.Sprintf("at weight %d", w), 4*time.Minute, func(c canary) error {
			if c.Status.Phase != "Progressing" || c.Status.CanaryWeight != w {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		checkHTTPRouteWeights(t, n, version, 100-w, w)
		checkShare(t, n, "load", "stepWeight", w, 0.5, isCanary, isPrimary)
	}
	waitCanary(n, "promoted", 4*time.Minute, func(c canary) error {
		if c.Status.Phase != "Succeeded" {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	checkHTTPRouteWeights(t, n, version, 100, 0)
	n.eventually("the canary's pods to go", 2*time.Minute, func() error {
		out, err := n.run("get", "deployment", "echo", "-o", "jsonpath={.status.replicas}")
		if err != nil || (out != "" && out != "0") {
			return fmt.Errorf("deployment echo has %q replicas (%v)", out, err)
		}
		return nil
	})
	if v := n.must("get", "deployment", "echo-primary", "-o", `jsonpath={.spec.template.spec.containers[0].env[?(@.name=="VERSION")].value}`); v != "2" {
		t.Errorf("echo-primary's VERSION after the promotion: %q, want 2", v)
	}
	checkOnlyPrimary(t, n, "load", "after the promotion")

	time.Sleep(2 * time.Second)
	d := mustReadLoad(n, "load").sub(start)
	t.Logf("load through the whole canary: %s", d)
	checkOnlyOK(t, d, "")
	if sum(d.answers("")) == 0 {
		t.Errorf("no answers: %s", d)
	}
}

// canary is what the test reads of a Flagger Canary.
type canary struct {
	Status struct {
		Phase        string `json:"phase"`
		CanaryWeight int    `json:"canaryWeight"`
		Iterations   int    `json:"iterations"`
		Conditions   []struct {
			Type, Status, Reason, Message string
		} `json:"conditions"`
	} `json:"status"`
}

// waitCanary polls the Canary echo until ok says it is as wanted.
func waitCanary(n *ns, what string, timeout time.Duration, ok func(canary) error) {
	n.t.Helper()
	n.eventually("the Canary "+what, timeout, func() error {
		var c canary
		out, err := n.run("get", "canaries.flagger.app", "echo", "-o", "json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(out), &c); err != nil {
			return err
		}
		if err := ok(c); err != nil {
			return fmt.Errorf("%v (phase %q, weight %d, conditions %+v)", err, c.Status.Phase, c.Status.CanaryWeight, c.Status.Conditions)
		}
		return nil
	})
}

// checkHTTPRouteWeights checks the weights Flagger wrote in the HTTPRoute
// echo: primary, then canary.
func checkHTTPRouteWeights(t *testing.T, n *ns, version string, primary, canary int) {
	t.Helper()
	got := n.must("get", "httproutes.gateway.networking.k8s.io", "echo", "-o", `jsonpath={range .spec.rules[0].backendRefs[*]}{.name}={.weight} {end}`)
	if want := fmt.Sprintf("echo-primary=%d echo-canary=%d", primary, canary); strings.TrimSpace(got) != want {
		t.Errorf("Flagger %s's HTTPRoute echo: backends %q, want %q", version, got, want)
	}
}

// checkOnlyPrimary checks that 5 s of the load were all answered by the
// primary's pods.
func checkOnlyPrimary(t *testing.T, n *ns, load, when string) {
	t.Helper()
	time.Sleep(2 * time.Second)
	before := mustReadLoad(n, load)
	time.Sleep(5 * time.Second)
	d := mustReadLoad(n, load).sub(before)
	if got, all := sum(d.answers("echo-primary-")), sum(d.answers("")); all == 0 || got != all {
		t.Errorf("%s %d of %d answers came from echo-primary's pods, want all: %s", when, got, all, d)
	}
}

// installFlagger installs Flagger's controller as its own manifests do
// (artifacts/flagger: the CRDs, the ServiceAccount, ClusterRole and
// binding, the Deployment), in its own namespace, with the image TestMain
// built and the Gateway API router, and removes it when t ends. The
// manifests are read from the module's files in the Go module cache. It
// returns the version.
func installFlagger(t *testing.T) string {
	t.Helper()
	mod := moduleSource(t, flaggerModuleDir, flaggerModule)
	t.Logf("Flagger %s (%s)", mod.Version, mod.Dir)
	crds := filepath.Join(mod.Dir, "artifacts", "flagger", "crd.yaml")
	account, err := os.ReadFile(filepath.Join(mod.Dir, "artifacts", "flagger", "account.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The manifests name the namespace default.
	rbac := strings.ReplaceAll(string(account), "namespace: default", "namespace: "+flaggerNamespace)

	gone(t, flaggerNamespace, 3*time.Minute)
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := runKubectl("", "--namespace", flaggerNamespace, "logs", "deployment/flagger", "--tail=300")
			t.Logf("Flagger's logs:\n%s", logs)
		}
		runKubectl("", "delete", "namespace", flaggerNamespace, "--ignore-not-found", "--wait=false")
		runKubectl(rbac, "delete", "--ignore-not-found", "--wait=false", "-f", "-")
		if out, err := runKubectl("", "delete", "--ignore-not-found", "--timeout=3m", "-f", crds); err != nil {
			t.Errorf("deleting Flagger's CRDs: %v\n%s", err, out)
		}
		gone(t, flaggerNamespace, 3*time.Minute)
	})
	kubectl(t, "", "apply", "--server-side", "-f", crds)
	kubectl(t, "", "create", "namespace", flaggerNamespace)
	kubectl(t, rbac, "apply", "-f", "-")
	// artifacts/flagger/deployment.yaml with the image loaded here, the
	// Gateway API router, no metrics server (the analysis has no metric),
	// and its healthz probed over HTTP (the image has no wget).
	kubectl(t, `apiVersion: apps/v1
kind: Deployment
metadata:
  name: flagger
  labels: {app: flagger}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector:
    matchLabels: {app: flagger}
  template:
    metadata:
      labels: {app: flagger}
    spec:
      serviceAccountName: flagger
      securityContext: {runAsNonRoot: true, runAsUser: 10001}
      containers:
      - name: flagger
        image: `+flaggerImage+`
        imagePullPolicy: IfNotPresent
        args: [-log-level=info, -mesh-provider=gatewayapi:v1, -metrics-server=http://127.0.0.1:9, -enable-leader-election=false]
        ports:
        - {name: http, containerPort: 8080}
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 2
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
          readOnlyRootFilesystem: true
`, "--namespace", flaggerNamespace, "apply", "-f", "-")
	if out, err := runKubectl("", "--namespace", flaggerNamespace, "rollout", "status", "deployment/flagger", "--timeout=3m"); err != nil {
		t.Fatalf("Flagger's controller not ready: %v\n%s", err, out)
	}
	return mod.Version
}
