package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// runInjectCLI runs `meridian ARGS...` with stdin and returns stdout and
// stderr.
func runInjectCLI(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err = root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

const injectDeployment = `# the web tier
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {team: books, config.meridian.io/opaque-ports: "3306"}
    spec:
      serviceAccountName: web
      containers:
      - name: web
        image: web:1
        ports: [{name: http, containerPort: 8080}]
        x-vendor-extension: {keep: me}
  x-rollout-hint: 1000000
`

const injectService = `apiVersion: v1
kind: Service
metadata:
  name: web   # stays exactly as written
  namespace: shop
spec:
  ports: [{port: 80, targetPort: 8080}]
`

const injectCronJob = `apiVersion: batch/v1
kind: CronJob
metadata: {name: report, namespace: shop}
spec:
  schedule: "0 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - {name: report, image: report:1}
`

const injectList = `apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: StatefulSet
  metadata: {name: db}
  spec:
    selector: {matchLabels: {app: db}}
    template:
      metadata: {labels: {app: db}}
      spec:
        containers: [{name: db, image: db:1}]
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: settings}
  data: {a: "1"}
- apiVersion: v1
  kind: Pod
  metadata: {name: node-agent}
  spec:
    hostNetwork: true
    containers: [{name: agent, image: agent:1}]
- apiVersion: v1
  kind: Namespace
  metadata: {name: shop}
`

// docs splits output into its YAML documents, parsed.
func docs(t *testing.T, out string) []map[string]any {
	t.Helper()
	var res []map[string]any
	for _, d := range strings.Split(out, "\n---\n") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d), &m); err != nil {
			t.Fatalf("output document %q: %v", d, err)
		}
		res = append(res, m)
	}
	return res
}

func dig(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

func lines(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }

func writeAnchors(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(p, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A Deployment and a Service in one file: the Deployment's pod template is
// annotated, everything else kept (unknown fields, big integers); the
// Service passes through as written, comments and all.
func TestInjectFileDeploymentAndService(t *testing.T) {
	f := filepath.Join(t.TempDir(), "app.yaml")
	if err := os.WriteFile(f, []byte(injectDeployment+"---\n"+injectService), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runInjectCLI(t, "", "inject", f)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{`deployment "web" injected`, `service "web" skipped: not a workload`}; !slices.Equal(lines(stderr), want) {
		t.Fatalf("stderr %q, want %q", stderr, want)
	}
	ds := docs(t, out)
	if len(ds) != 2 {
		t.Fatalf("%d documents:\n%s", len(ds), out)
	}
	if got := dig(ds[0], "spec", "template", "metadata", "annotations", "meridian.io/inject"); got != "enabled" {
		t.Fatalf("annotation %v:\n%s", got, out)
	}
	if got := dig(ds[0], "spec", "template", "metadata", "annotations", "team"); got != "books" {
		t.Fatalf("other annotations lost:\n%s", out)
	}
	if !strings.Contains(out, "x-vendor-extension:\n          keep: me") || !strings.Contains(out, "x-rollout-hint: 1000000\n") {
		t.Fatalf("unknown fields or numbers changed:\n%s", out)
	}
	if dig(ds[0], "spec", "template", "spec", "initContainers") != nil {
		t.Fatal("the default mode added containers")
	}
	if !strings.HasSuffix(out, "---\n"+injectService) {
		t.Fatalf("the Service did not pass through as written:\n%s", out)
	}

	// Injecting again changes nothing; uninject gives the input back.
	again, _, err := runInjectCLI(t, out, "inject", "-")
	if err != nil || again != out {
		t.Fatalf("inject twice: %v\n%s", err, again)
	}
	back, stderr, err := runInjectCLI(t, out, "uninject", "-")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{`deployment "web" uninjected`, `service "web" skipped: not a workload`}; !slices.Equal(lines(stderr), want) {
		t.Fatalf("stderr %q", stderr)
	}
	var orig map[string]any
	_ = yaml.Unmarshal([]byte(injectDeployment), &orig)
	if got := docs(t, back)[0]; !reflect.DeepEqual(got, orig) {
		t.Fatalf("uninject(inject(x)) != x:\n%s", back)
	}
}

// A v1 List on stdin: each item is handled and reported; a hostNetwork pod
// is skipped, the namespace annotated.
func TestInjectListFromStdin(t *testing.T) {
	out, stderr, err := runInjectCLI(t, injectList, "inject", "-")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`statefulset "db" injected`,
		`configmap "settings" skipped: not a workload`,
		`pod "node-agent" skipped: hostNetwork`,
		`namespace "shop" annotated`,
	}
	if !slices.Equal(lines(stderr), want) {
		t.Fatalf("stderr\n%s\nwant\n%s", stderr, strings.Join(want, "\n"))
	}
	ds := docs(t, out)
	items, _ := ds[0]["items"].([]any)
	if len(ds) != 1 || len(items) != 4 {
		t.Fatalf("output:\n%s", out)
	}
	get := func(i int, keys ...string) any { return dig(items[i].(map[string]any), keys...) }
	if get(0, "spec", "template", "metadata", "annotations", "meridian.io/inject") != "enabled" {
		t.Fatalf("statefulset not annotated:\n%s", out)
	}
	if get(2, "metadata", "annotations") != nil {
		t.Fatalf("hostNetwork pod annotated:\n%s", out)
	}
	if get(3, "metadata", "annotations", "meridian.io/inject") != "enabled" {
		t.Fatalf("namespace not annotated:\n%s", out)
	}
	_, stderr, err = runInjectCLI(t, out, "uninject", "-")
	if err != nil {
		t.Fatal(err)
	}
	want = []string{
		`statefulset "db" uninjected`,
		`configmap "settings" skipped: not a workload`,
		`pod "node-agent" skipped: not injected`,
		`namespace "shop" uninjected`,
	}
	if !slices.Equal(lines(stderr), want) {
		t.Fatalf("uninject stderr\n%s", stderr)
	}
}

// --manual on a CronJob: the proxy goes into jobTemplate.spec.template;
// uninject takes it out again, and a second inject is a no-op.
func TestInjectManualCronJob(t *testing.T) {
	anchors := writeAnchors(t)
	f := filepath.Join(t.TempDir(), "cron.yaml")
	if err := os.WriteFile(f, []byte(injectCronJob), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runInjectCLI(t, "", "inject", "--manual", "--identity-trust-anchors-file", anchors,
		"--proxy-version", "v9.9.9", "--controller-namespace", "mesh", f)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(stderr) != `cronjob "report" injected` {
		t.Fatalf("stderr %q", stderr)
	}
	d := docs(t, out)[0]
	tmpl := dig(d, "spec", "jobTemplate", "spec", "template").(map[string]any)
	inits, _ := dig(tmpl, "spec", "initContainers").([]any)
	if len(inits) != 2 {
		t.Fatalf("init containers:\n%s", out)
	}
	init, proxy := inits[0].(map[string]any), inits[1].(map[string]any)
	if init["name"] != "meridian-init" || init["image"] != "ghcr.io/meridian-mesh/proxy-init:v9.9.9" ||
		proxy["name"] != "meridian-proxy" || proxy["image"] != "ghcr.io/meridian-mesh/proxy:v9.9.9" || proxy["restartPolicy"] != "Always" {
		t.Fatalf("init containers:\n%s", out)
	}
	if !slices.Contains(proxy["args"].([]any), "--destination-addr=meridian-controller.mesh.svc.cluster.local:8086") {
		t.Fatalf("proxy args %v", proxy["args"])
	}
	if dig(tmpl, "metadata", "annotations", "meridian.io/proxy-version") != "v9.9.9" {
		t.Fatalf("annotations:\n%s", out)
	}
	if vols, _ := dig(tmpl, "spec", "volumes").([]any); len(vols) != 1 {
		t.Fatalf("volumes:\n%s", out)
	}

	again, stderr, err := runInjectCLI(t, out, "inject", "--manual", "--identity-trust-anchors-file", anchors, "-")
	if err != nil || again != out || strings.TrimSpace(stderr) != `cronjob "report" skipped: already injected` {
		t.Fatalf("second inject: %v %q\n%s", err, stderr, again)
	}
	back, _, err := runInjectCLI(t, out, "uninject", "-")
	if err != nil {
		t.Fatal(err)
	}
	var orig map[string]any
	_ = yaml.Unmarshal([]byte(injectCronJob), &orig)
	if got := docs(t, back)[0]; !reflect.DeepEqual(got, orig) {
		t.Fatalf("uninject(inject --manual(x)) != x:\n%s", back)
	}
}

func TestInjectManualErrors(t *testing.T) {
	f := filepath.Join(t.TempDir(), "app.yaml")
	if err := os.WriteFile(f, []byte(injectDeployment), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := runInjectCLI(t, "", "inject", "--manual", f)
	if err == nil || !strings.Contains(err.Error(), "--identity-trust-anchors-file") || out != "" {
		t.Fatalf("without anchors: %v, output %q", err, out)
	}
	// A bad annotation value fails the command, naming the object and the
	// annotation; nothing is written to stdout.
	bad := strings.Replace(injectDeployment, `team: books`, `config.meridian.io/proxy-log-level: chatty`, 1)
	out, _, err = runInjectCLI(t, bad+"---\n"+injectService, "inject", "--manual", "--identity-trust-anchors-file", writeAnchors(t), "-")
	if err == nil || out != "" {
		t.Fatalf("bad annotation: %v, output %q", err, out)
	}
	for _, s := range []string{`deployment "web"`, "config.meridian.io/proxy-log-level", `"chatty"`, "debug, info, warn or error"} {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not say %q", err, s)
		}
	}
}

// A directory (recursively, YAML and JSON files only, in lexical order)
// and a URL, in the order given.
func TestInjectDirectoryAndURL(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a-web.yaml", injectDeployment)
	write("notes.txt", "not a manifest")
	write("sub/b-cron.yml", injectCronJob)
	write("sub/c-job.json", `{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"once"},"spec":{"template":{"spec":{"restartPolicy":"Never","containers":[{"name":"x","image":"x:1"}]}}}}`)
	write("sub/d-svc.json", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"json-svc"}}`)

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/daemon.yaml" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`apiVersion: apps/v1
kind: DaemonSet
metadata: {name: logs}
spec:
  selector: {matchLabels: {app: logs}}
  template:
    metadata: {labels: {app: logs}}
    spec: {containers: [{name: logs, image: logs:1}]}
`))
	}))
	defer srv.Close()

	out, stderr, err := runInjectCLI(t, "", "inject", dir, srv.URL+"/daemon.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`deployment "web" injected`,
		`cronjob "report" injected`,
		`job "once" injected`,
		`service "json-svc" skipped: not a workload`,
		`daemonset "logs" injected`,
	}
	if !slices.Equal(lines(stderr), want) {
		t.Fatalf("stderr\n%s\nwant\n%s", stderr, strings.Join(want, "\n"))
	}
	ds := docs(t, out)
	if len(ds) != 5 {
		t.Fatalf("%d documents", len(ds))
	}
	if dig(ds[1], "spec", "jobTemplate", "spec", "template", "metadata", "annotations", "meridian.io/inject") != "enabled" ||
		dig(ds[2], "spec", "template", "metadata", "annotations", "meridian.io/inject") != "enabled" ||
		dig(ds[3], "metadata", "name") != "json-svc" ||
		dig(ds[4], "spec", "template", "metadata", "annotations", "meridian.io/inject") != "enabled" {
		t.Fatalf("output:\n%s", out)
	}
	if strings.Contains(out, `{"apiVersion"`) {
		t.Fatalf("JSON passed through as JSON (kubectl would read the whole stream as JSON):\n%s", out)
	}

	if _, _, err := runInjectCLI(t, "", "inject", srv.URL+"/missing.yaml"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("missing URL: %v", err)
	}
	if _, _, err := runInjectCLI(t, "", "inject", filepath.Join(dir, "nope.yaml")); err == nil {
		t.Fatal("missing file: no error")
	}
}
