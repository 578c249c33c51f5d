package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meridian-mesh/meridian/test/apiserver"
)

// runCheckCLI runs `meridian check ARGS` and returns its standard output.
func runCheckCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, _, err := runCheckCLI2(t, args...)
	return out, err
}

// runCheckCLI2 is runCheckCLI that returns standard error too.
func runCheckCLI2(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"check"}, args...))
	err := root.Execute()
	t.Logf("meridian check %s → %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	return out.String(), errOut.String(), err
}

// checkKubeconfig starts a kube-apiserver and writes a kubeconfig for its
// admin (the current context is "envtest").
func checkKubeconfig(t *testing.T) string {
	t.Helper()
	env, _ := apiserver.StartEnv(t)
	admin, err := env.AddUser(envtest.User{Name: "check-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type checkJSON struct {
	Success    bool `json:"success"`
	Categories []struct {
		CategoryName string `json:"categoryName"`
		Checks       []struct {
			Description string `json:"description"`
			Hint        string `json:"hint"`
			Error       string `json:"error"`
			Result      string `json:"result"`
		} `json:"checks"`
	} `json:"categories"`
}

func parseCheckJSON(t *testing.T, out string) checkJSON {
	t.Helper()
	var doc checkJSON
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("-o json output does not parse: %v\n%s", err, out)
	}
	return doc
}

func TestCheckCLI(t *testing.T) {
	kc := checkKubeconfig(t)

	// --pre as an admin: passes, JSON in linkerd's shape.
	out, err := runCheckCLI(t, "--pre", "--kubeconfig", kc, "--context", "envtest", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	doc := parseCheckJSON(t, out)
	var cats []string
	for _, c := range doc.Categories {
		cats = append(cats, c.CategoryName)
		for _, ch := range c.Checks {
			if ch.Result != "success" || ch.Description == "" {
				t.Fatalf("%s: %+v", c.CategoryName, ch)
			}
		}
	}
	if !doc.Success || strings.Join(cats, ",") != "kubernetes-api,kubernetes-version,pre-kubernetes-setup" {
		t.Fatalf("success %v categories %v", doc.Success, cats)
	}

	// $KUBECONFIG is read too; an empty cluster fails the post-install
	// checks, with hints, and a non-zero exit (an error from RunE).
	t.Setenv("KUBECONFIG", kc)
	out, err = runCheckCLI(t, "--wait", "0")
	if !errors.Is(err, errChecksFailed) {
		t.Fatalf("err %v", err)
	}
	for _, want := range []string{
		"kubernetes-api\n--------------\n√ can initialize the client\n√ can query the Kubernetes API\n",
		"× control plane CustomResourceDefinitions exist\n    missing CustomResourceDefinitions: analysisruns.meridian.io, analysistemplates.meridian.io, clusteranalysistemplates.meridian.io, rollouts.meridian.io, serviceprofiles.meridian.io, trafficsplits.split.smi-spec.io\n    see: meridian install --crds | kubectl apply --server-side -f -\n",
		"× control plane namespace exists\n    namespace meridian does not exist",
		"Status check results are ×\n",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q", want)
		}
	}
	if strings.Contains(out, "waiting") {
		t.Fatal("--wait 0 waited")
	}

	// The same as JSON.
	out, err = runCheckCLI(t, "--wait=0", "-o", "json", "--controller-namespace", "elsewhere")
	if !errors.Is(err, errChecksFailed) {
		t.Fatalf("err %v", err)
	}
	doc = parseCheckJSON(t, out)
	if doc.Success || len(doc.Categories) != 4 || doc.Categories[2].CategoryName != "meridian-crds" {
		t.Fatalf("%+v", doc)
	}
	crd := doc.Categories[2].Checks[0]
	if crd.Result != "error" || crd.Hint != "meridian install --crds | kubectl apply --server-side -f -" || !strings.Contains(crd.Error, "serviceprofiles.meridian.io") {
		t.Fatalf("%+v", crd)
	}
	if ns := doc.Categories[3].Checks[0]; !strings.Contains(ns.Error, "namespace elsewhere does not exist") {
		t.Fatalf("%+v", ns)
	}

	// --wait retries the failing checks, with one line saying so, then
	// gives up.
	start := time.Now()
	out, err = runCheckCLI(t, "--wait", "2s")
	if !errors.Is(err, errChecksFailed) {
		t.Fatalf("err %v", err)
	}
	if el := time.Since(start); el < 2*time.Second {
		t.Fatalf("gave up after %v", el)
	}
	if n := strings.Count(out, "… waiting up to"); n != 1 {
		t.Fatalf("%d waiting lines, want 1", n)
	}

	// Under -o json, the waiting line goes to stderr; stdout stays JSON.
	out, stderr, err := runCheckCLI2(t, "--wait", "500ms", "-o", "json")
	if !errors.Is(err, errChecksFailed) {
		t.Fatalf("err %v", err)
	}
	parseCheckJSON(t, out)
	if !strings.HasPrefix(stderr, "… waiting up to") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("stderr %q", stderr)
	}

	// --proxy on a cluster without meshed pods: a warning, not a failure.
	out, err = runCheckCLI(t, "--proxy", "-n", "default", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	doc = parseCheckJSON(t, out)
	if last := doc.Categories[len(doc.Categories)-1]; last.CategoryName != "meridian-data-plane" || last.Checks[1].Result != "warning" {
		t.Fatalf("%+v", doc)
	}

	// A context that does not exist: the first check fails, nothing after.
	out, err = runCheckCLI(t, "--context", "nope", "-o", "json")
	if !errors.Is(err, errChecksFailed) {
		t.Fatalf("err %v", err)
	}
	doc = parseCheckJSON(t, out)
	if len(doc.Categories) != 1 || len(doc.Categories[0].Checks) != 1 || !strings.Contains(doc.Categories[0].Checks[0].Error, "nope") {
		t.Fatalf("%+v", doc)
	}
}

func TestCheckCLIFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--pre", "--proxy"},
		{"-o", "yaml"},
		{"extra-arg"},
	} {
		if _, err := runCheckCLI(t, args...); err == nil || errors.Is(err, errChecksFailed) {
			t.Fatalf("%v: %v", args, err)
		}
	}
}
