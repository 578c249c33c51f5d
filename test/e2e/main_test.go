//go:build e2e

package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// testImages are built from this repository by `hack/cluster load-images`
// (static binaries, each alone in an image) and imported into the node
// before any test runs. Tests refer to them with imagePullPolicy
// IfNotPresent: nothing is pulled.
var testImages = map[string]string{
	echoImage: "./test/e2e/images/echo",
}

const echoImage = "meridian.test/echo:e2e"

// moduleImages are built like testImages, each from a Go module of its own
// (the directory, relative to the repository's root), so that what it
// requires stays out of the root module: REF → main package, resolved in
// that module.
var moduleImages = map[string]map[string]string{}

var (
	repoRoot   string
	kubectlBin string
	kubeconfig string
)

// TestMain finds the cluster that hack/cluster up started and loads the test
// images into it. Without a cluster every test fails: the e2e tag asks for
// one.
func TestMain(m *testing.M) {
	var err error
	if repoRoot, err = filepath.Abs("../.."); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir := os.Getenv("MERIDIAN_CLUSTER_DIR")
	if dir == "" {
		dir = "/var/lib/meridian-cluster"
	}
	if kubeconfig = os.Getenv("KUBECONFIG"); kubeconfig == "" {
		kubeconfig = filepath.Join(dir, "kubeconfig")
	}
	if kubectlBin = os.Getenv("KUBECTL"); kubectlBin == "" {
		kubectlBin = filepath.Join(dir, "bin", "kubectl")
	}
	for _, f := range []string{kubeconfig, kubectlBin} {
		if _, err := os.Stat(f); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: no cluster (%v): start one with hack/cluster up\n", err)
			os.Exit(1)
		}
	}
	if os.Getenv("MERIDIAN_E2E_SKIP_LOAD") == "" {
		loads := map[string]map[string]string{".": testImages}
		for dir, images := range moduleImages {
			loads[dir] = images
		}
		for dir, images := range loads {
			args := []string{"load-images"}
			for ref, pkg := range images {
				args = append(args, ref+"="+pkg)
			}
			sort.Strings(args[1:])
			cmd := exec.Command(filepath.Join(repoRoot, "hack", "cluster"), args...)
			cmd.Dir = filepath.Join(repoRoot, dir)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintf(os.Stderr, "e2e: (cd %s && hack/cluster %s): %v\n", dir, strings.Join(args, " "), err)
				os.Exit(1)
			}
		}
	}
	os.Exit(m.Run())
}

// ns is a namespace of one test, deleted when the test ends.
type ns struct {
	t    *testing.T
	name string
}

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

// newNamespace creates a namespace for t, waits for its default service
// account, and on failure dumps what is in it before deleting it.
func newNamespace(t *testing.T) *ns {
	t.Helper()
	suffix := make([]byte, 3)
	rand.Read(suffix)
	base := strings.Trim(nonName.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(base) > 40 {
		base = base[:40]
	}
	n := &ns{t: t, name: "e2e-" + base + "-" + hex.EncodeToString(suffix)}
	kubectl(t, "", "create", "namespace", n.name)
	t.Cleanup(func() {
		if t.Failed() {
			n.dump()
		}
		kubectl(t, "", "delete", "namespace", n.name, "--wait=false")
	})
	n.eventually("the default service account", 60*time.Second, func() error {
		_, err := n.run("get", "serviceaccount", "default")
		return err
	})
	return n
}

// run runs kubectl in the namespace.
func (n *ns) run(args ...string) (string, error) {
	return runKubectl("", append([]string{"--namespace", n.name}, args...)...)
}

// must runs kubectl in the namespace and fails the test on error.
func (n *ns) must(args ...string) string {
	n.t.Helper()
	return kubectl(n.t, "", append([]string{"--namespace", n.name}, args...)...)
}

// apply applies a YAML manifest in the namespace.
func (n *ns) apply(manifest string) {
	n.t.Helper()
	kubectl(n.t, manifest, "--namespace", n.name, "apply", "-f", "-")
}

// eventually retries check until it succeeds or timeout passes.
func (n *ns) eventually(what string, timeout time.Duration, check func() error) {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitPodDone waits until a pod has run to completion, and fails the test
// if it did not succeed.
func (n *ns) waitPodDone(pod string, timeout time.Duration) {
	n.t.Helper()
	var phase string
	n.eventually("pod "+pod+" to finish", timeout, func() error {
		out, err := n.run("get", "pod", pod, "-o", "jsonpath={.status.phase}")
		if err != nil {
			return err
		}
		phase = out
		if phase == "Succeeded" || phase == "Failed" {
			return nil
		}
		return fmt.Errorf("phase %q", phase)
	})
	if phase != "Succeeded" {
		logs, _ := n.run("logs", "pod/"+pod)
		n.t.Fatalf("pod %s %s; logs:\n%s", pod, phase, logs)
	}
}

func (n *ns) dump() {
	for _, args := range [][]string{
		{"get", "all,endpointslices", "-o", "wide"},
		{"describe", "pods"},
		{"get", "events", "--sort-by=.lastTimestamp"},
	} {
		out, err := n.run(args...)
		n.t.Logf("kubectl %s (err %v):\n%s", strings.Join(args, " "), err, out)
	}
}

func kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := runKubectl(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func runKubectl(stdin string, args ...string) (string, error) {
	cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}
