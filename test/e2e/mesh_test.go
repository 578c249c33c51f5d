//go:build e2e

package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The product's own images, built from this repository by TestMain at the
// tag the CLI under test reports, so `meridian install` refers to them.
const meshVersion = "e2e"

func init() {
	for ref, pkg := range map[string]string{
		"ghcr.io/meridian-mesh/controller:" + meshVersion: "./cmd/meridian-controller",
		"ghcr.io/meridian-mesh/proxy:" + meshVersion:      "./cmd/meridian-proxy",
		"ghcr.io/meridian-mesh/proxy-init:" + meshVersion: "./cmd/meridian-init",
		"ghcr.io/meridian-mesh/emojivoto:dev":             "./demo/emojivoto",
	} {
		testImages[ref] = pkg
	}
}

var meridianBin string

// meridianCLI builds the CLI once, stamped with meshVersion.
func meridianCLI(t *testing.T) string {
	t.Helper()
	if meridianBin != "" {
		return meridianBin
	}
	out := filepath.Join(os.TempDir(), "meridian-e2e-cli")
	cmd := exec.Command("go", "build", "-o", out, "-ldflags", "-X main.version="+meshVersion, "./cmd/meridian")
	cmd.Dir = repoRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the CLI: %v\n%s", err, b)
	}
	meridianBin = out
	return out
}

// meridian runs the CLI with the cluster's kubeconfig and returns stdout,
// stderr and the error.
func meridian(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(meridianCLI(t), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func mustMeridian(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := meridian(t, stdin, args...)
	if err != nil {
		t.Fatalf("meridian %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// TestMeshOnKubernetes is the product's first-run flow on the real node:
// install, check, inject the demo, see mTLS in the proxies' metrics,
// uninject; then `check --pre` as a user who may not install.
func TestMeshOnKubernetes(t *testing.T) {
	// Install: CRDs, then the control plane, as the README tells users.
	crds := mustMeridian(t, "", "install", "--crds")
	kubectl(t, crds, "apply", "--server-side", "-f", "-")
	cp := mustMeridian(t, "", "install")
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := runKubectl("", "--namespace", "meridian", "describe", "pods")
			t.Logf("control plane pods:\n%s", out)
			logs, _ := runKubectl("", "--namespace", "meridian", "logs", "deploy/meridian-controller", "--tail=200")
			t.Logf("controller logs:\n%s", logs)
		}
		un := mustMeridian(t, "", "uninstall")
		runKubectl(un, "delete", "--ignore-not-found", "--wait=false", "-f", "-")
	})
	kubectl(t, cp, "apply", "-f", "-")

	// check --wait blocks until the control plane is healthy.
	out, errOut, err := meridian(t, "", "check", "--wait", "4m")
	if err != nil {
		t.Fatalf("meridian check --wait 4m: %v\n%s\n%s", err, out, errOut)
	}
	t.Logf("meridian check:\n%s", out)
	if strings.Contains(out, "×") {
		t.Errorf("check passed but printed a failure:\n%s", out)
	}
	// The API server reaches the injector through the Service: without
	// this, the pods below could be created unmeshed (failurePolicy Ignore).
	if !strings.Contains(out, "√ proxy injector injects a pod (server-side dry run)") {
		t.Errorf("check did not see the injector inject a dry-run pod:\n%s", out)
	}

	// The demo application, injected on its way to the cluster.
	n := newNamespace(t)
	manifest, err := os.ReadFile(filepath.Join(repoRoot, "demo", "emojivoto", "kubernetes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	app := strings.ReplaceAll(string(manifest), "emojivoto", n.name)
	app = strings.ReplaceAll(app, "image: ghcr.io/meridian-mesh/"+n.name+":dev", "image: ghcr.io/meridian-mesh/emojivoto:dev")
	app = regexp.MustCompile(`(?s)apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [a-z0-9-]+\n---\n`).ReplaceAllString(app, "")
	injected, report, err := meridian(t, app, "inject", "-")
	if err != nil {
		t.Fatalf("meridian inject: %v\n%s", err, report)
	}
	t.Logf("inject report:\n%s", report)
	for _, d := range []string{"emoji", "voting", "web", "vote-bot"} {
		if !strings.Contains(report, fmt.Sprintf("deployment %q injected", d)) {
			t.Errorf("inject report does not say deployment %q was injected:\n%s", d, report)
		}
	}
	n.apply(injected)
	deploys := []string{"emoji", "voting", "web", "vote-bot"}
	for _, d := range deploys {
		n.must("rollout", "status", "deployment/"+d, "--timeout=180s")
	}
	// Every pod runs the proxy as a native sidecar and is 2/2 ready.
	n.eventually("every demo pod 2/2 ready", 2*time.Minute, func() error {
		return allPodsReady(n, 2)
	})

	// Traffic flows through the proxies with mTLS: web's proxy sends to
	// emoji and voting with their identities verified, and their proxies
	// see web's identity as the client's.
	id := func(sa string) string { return "spiffe://cluster.local/ns/" + n.name + "/sa/" + sa }
	n.eventually("mTLS traffic web → emoji and web → voting in the proxies' metrics", 2*time.Minute, func() error {
		for _, c := range []struct{ pod, direction, label, id string }{
			{"web", "outbound", "server_id", id("emoji")},
			{"web", "outbound", "server_id", id("voting")},
			{"emoji", "inbound", "client_id", id("web")},
			{"voting", "inbound", "client_id", id("web")},
			{"web", "inbound", "client_id", id("vote-bot")},
		} {
			metrics, err := proxyMetrics(n, c.pod)
			if err != nil {
				return err
			}
			v := sumSeries(metrics, "response_total", map[string]string{"direction": c.direction, "tls": "true", c.label: c.id})
			if v < 1 {
				return fmt.Errorf("%s's proxy: no %s response_total with tls=\"true\" and %s=%q", c.pod, c.direction, c.label, c.id)
			}
		}
		return nil
	})

	// The CLI shows a pod's identity and checks the data plane.
	idOut := mustMeridian(t, "", "identity", "-n", n.name, "deploy/web")
	if !strings.Contains(idOut, id("web")) {
		t.Errorf("meridian identity deploy/web does not show %s:\n%s", id("web"), idOut)
	}
	if out, errOut, err := meridian(t, "", "check", "--proxy", "--namespace", n.name, "--wait", "1m"); err != nil {
		t.Errorf("meridian check --proxy: %v\n%s\n%s", err, out, errOut)
	}

	// viz stat reads the golden metrics from the proxies through the API
	// server: every workload meshed, and the ones vote-bot's traffic
	// reaches (web, and through it emoji and voting) serving requests.
	statOut := mustMeridian(t, "", "viz", "stat", "deploy", "-n", n.name, "--window", "5s", "-o", "json")
	var stats []struct {
		Name        string   `json:"name"`
		MeshedPods  int      `json:"meshedPods"`
		TotalPods   int      `json:"totalPods"`
		Requests    *float64 `json:"requests"`
		SuccessRate *float64 `json:"successRate"`
		LatencyP99  *float64 `json:"latencyMsP99"`
	}
	if err := json.Unmarshal([]byte(statOut), &stats); err != nil {
		t.Fatalf("viz stat -o json: %v\n%s", err, statOut)
	}
	served := map[string]bool{}
	for _, s := range stats {
		if s.MeshedPods != 1 || s.TotalPods != 1 {
			t.Errorf("viz stat: %s is %d/%d meshed, want 1/1", s.Name, s.MeshedPods, s.TotalPods)
		}
		if s.Requests != nil && *s.Requests > 0 && s.SuccessRate != nil && s.LatencyP99 != nil {
			served[s.Name] = true
		}
	}
	for _, d := range []string{"web", "emoji", "voting"} {
		if !served[d] {
			t.Errorf("viz stat: no requests, success rate and latency for %s in 5s:\n%s", d, statOut)
		}
	}
	t.Logf("meridian viz stat deploy:\n%s", mustMeridian(t, "", "viz", "stat", "deploy", "-n", n.name, "--window", "2s"))

	// viz edges: who calls whom, over mutual TLS.
	edgesOut := mustMeridian(t, "", "viz", "edges", "deploy", "-n", n.name, "--window", "5s", "-o", "json")
	var edges []struct {
		Src     string `json:"src"`
		Dst     string `json:"dst"`
		Secured bool   `json:"secured"`
	}
	if err := json.Unmarshal([]byte(edgesOut), &edges); err != nil {
		t.Fatalf("viz edges -o json: %v\n%s", err, edgesOut)
	}
	secured := map[string]bool{}
	for _, e := range edges {
		secured[e.Src+" → "+e.Dst] = e.Secured
	}
	for _, e := range []string{"vote-bot → web", "web → emoji", "web → voting"} {
		if !secured[e] {
			t.Errorf("viz edges: no mTLS edge %s in 5s:\n%s", e, edgesOut)
		}
	}

	// The default inbound policy: web takes only meshed clients. Its pod
	// still turns ready (the kubelet's HTTP probe, plaintext from the node,
	// is allowed), vote-bot still reaches it over mTLS, and a plaintext
	// client, the API server's pod proxy from the node, is refused.
	n.must("patch", "deployment/web", "--type=merge", "-p",
		`{"spec":{"template":{"metadata":{"annotations":{"config.meridian.io/default-inbound-policy":"all-authenticated"}}}}}`)
	n.must("rollout", "status", "deployment/web", "--timeout=180s")
	n.eventually("every demo pod 2/2 ready, web all-authenticated", 2*time.Minute, func() error { return allPodsReady(n, 2) })
	webPod := n.must("get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}")
	appURL := "/api/v1/namespaces/" + n.name + "/pods/" + webPod + ":8080/proxy/"
	if out, err := runKubectl("", "get", "--raw", appURL+"api/list"); err == nil {
		t.Errorf("a plaintext client got web's /api/list under all-authenticated:\n%s", out)
	}
	if _, err := runKubectl("", "get", "--raw", appURL); err != nil {
		t.Errorf("web's probe path / under all-authenticated: %v", err)
	}
	// web's admin port follows its policy too: the API server's plaintext
	// pod proxy no longer reads its /metrics (/ready kept it ready above).
	if out, err := runKubectl("", "get", "--raw", "/api/v1/namespaces/"+n.name+"/pods/"+webPod+":4191/proxy/metrics"); err == nil {
		t.Errorf("a plaintext client read web's /metrics under all-authenticated:\n%.300s", out)
	}
	// vote-bot (all-unauthenticated, readable) keeps reaching web over mTLS.
	mtlsToWeb := func() (float64, error) {
		metrics, err := proxyMetrics(n, "vote-bot")
		if err != nil {
			return 0, err
		}
		return sumSeries(metrics, "response_total", map[string]string{"direction": "outbound", "tls": "true", "server_id": id("web")}), nil
	}
	before, err := mtlsToWeb()
	if err != nil {
		t.Fatal(err)
	}
	n.eventually("vote-bot's requests to web's new pod over mTLS", time.Minute, func() error {
		if v, err := mtlsToWeb(); err != nil || v <= before {
			return fmt.Errorf("vote-bot's mTLS responses from web: %v (before: %v), %v", v, before, err)
		}
		return nil
	})

	// Uninject restores plain pods.
	current := n.must("get", "deployments", "-o", "yaml")
	plain, report, err := meridian(t, current, "uninject", "-")
	if err != nil {
		t.Fatalf("meridian uninject: %v\n%s", err, report)
	}
	n.apply(plain)
	for _, d := range deploys {
		n.must("rollout", "status", "deployment/"+d, "--timeout=180s")
	}
	n.eventually("every demo pod back to 1/1 without a proxy", 2*time.Minute, func() error {
		return allPodsReady(n, 1)
	})

	// check --pre as a user who may only read in one namespace fails and
	// names the permission it lacks.
	restricted := restrictedKubeconfig(t, n)
	cmd := exec.Command(meridianCLI(t), "check", "--pre", "--kubeconfig", restricted)
	cmd.Env = append(os.Environ(), "KUBECONFIG=")
	b, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("check --pre as a restricted user passed:\n%s", b)
	}
	if !regexp.MustCompile(`cannot create [a-z.]+`).Match(b) {
		t.Errorf("check --pre as a restricted user does not name the missing permission:\n%s", b)
	}
	t.Logf("check --pre (restricted):\n%s", b)
}

// allPodsReady says whether the namespace's pods all have want ready
// containers, counting native sidecars, and are not terminating.
func allPodsReady(n *ns, want int) error {
	out, err := n.run("get", "pods", "-o", "json")
	if err != nil {
		return err
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name              string  `json:"name"`
				DeletionTimestamp *string `json:"deletionTimestamp"`
			} `json:"metadata"`
			Spec struct {
				InitContainers []struct {
					Name          string `json:"name"`
					RestartPolicy string `json:"restartPolicy"`
				} `json:"initContainers"`
				Containers []struct{} `json:"containers"`
			} `json:"spec"`
			Status struct {
				ContainerStatuses     []struct{ Ready bool } `json:"containerStatuses"`
				InitContainerStatuses []struct {
					Name  string
					Ready bool
				} `json:"initContainerStatuses"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return err
	}
	if len(list.Items) == 0 {
		return fmt.Errorf("no pods")
	}
	for _, p := range list.Items {
		if p.Metadata.DeletionTimestamp != nil {
			return fmt.Errorf("pod %s is terminating", p.Metadata.Name)
		}
		total, ready := len(p.Spec.Containers), 0
		for _, c := range p.Spec.InitContainers {
			if c.RestartPolicy == "Always" {
				total++
			}
		}
		for _, s := range p.Status.ContainerStatuses {
			if s.Ready {
				ready++
			}
		}
		for _, s := range p.Status.InitContainerStatuses {
			if s.Ready {
				for _, c := range p.Spec.InitContainers {
					if c.Name == s.Name && c.RestartPolicy == "Always" {
						ready++
					}
				}
			}
		}
		if total != want || ready != want {
			return fmt.Errorf("pod %s is %d/%d, want %d/%d", p.Metadata.Name, ready, total, want, want)
		}
	}
	return nil
}

// proxyMetrics reads the /metrics of the proxy in the pod of deployment d,
// through the API server's pod proxy.
func proxyMetrics(n *ns, d string) (string, error) {
	pod, err := n.run("get", "pods", "-l", "app="+d, "-o", "jsonpath={.items[0].metadata.name}")
	if err != nil {
		return "", err
	}
	return runKubectl("", "get", "--raw", "/api/v1/namespaces/"+n.name+"/pods/"+pod+":4191/proxy/metrics")
}

// sumSeries adds up the samples of metric whose labels include want.
func sumSeries(text, metric string, want map[string]string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, metric+"{") {
			continue
		}
		end := strings.LastIndex(line, "}")
		labels, value := line[len(metric)+1:end], strings.TrimSpace(line[end+1:])
		ok := true
		for k, v := range want {
			if !strings.Contains(labels, k+`="`+v+`"`) {
				ok = false
				break
			}
		}
		if ok {
			if f, err := strconv.ParseFloat(strings.Fields(value)[0], 64); err == nil {
				sum += f
			}
		}
	}
	return sum
}

// restrictedKubeconfig writes a kubeconfig for a service account that may
// only read pods in n: the API server is reachable, installing is not
// allowed.
func restrictedKubeconfig(t *testing.T, n *ns) string {
	t.Helper()
	n.must("create", "serviceaccount", "restricted")
	n.must("create", "role", "read-pods", "--verb=get,list,watch", "--resource=pods")
	n.must("create", "rolebinding", "restricted-read-pods", "--role=read-pods", "--serviceaccount="+n.name+":restricted")
	token := n.must("create", "token", "restricted", "--duration=1h")
	server := kubectl(t, "", "config", "view", "--minify", "--raw", "-o", "jsonpath={.clusters[0].cluster.server}")
	ca := kubectl(t, "", "config", "view", "--minify", "--raw", "-o", "jsonpath={.clusters[0].cluster.certificate-authority-data}")
	if _, err := base64.StdEncoding.DecodeString(ca); err != nil {
		t.Fatalf("the admin kubeconfig has no inline CA: %v", err)
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: %q, certificate-authority-data: %s}
users:
- name: restricted
  user: {token: %q}
contexts:
- name: restricted
  context: {cluster: c, user: restricted, namespace: %s}
current-context: restricted
`, server, ca, token, n.name)
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
