//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readmeBlock returns the first command block (indented four spaces) under
// the README's heading, as the lines a reader pastes.
func readmeBlock(t *testing.T, heading string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	in, seen := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case l == heading:
			in = true
		case in && strings.HasPrefix(l, "## "):
			in = false
		case in && strings.HasPrefix(l, "    "):
			lines = append(lines, strings.TrimPrefix(l, "    "))
			seen = true
		case in && seen && l == "":
			// the block ended
			return lines
		}
	}
	if len(lines) == 0 {
		t.Fatalf("README.md has no command block under %q", heading)
	}
	return lines
}

// gone waits until kubectl no longer finds the namespace.
func gone(t *testing.T, namespace string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		_, err := runKubectl("", "get", "namespace", namespace)
		if err != nil && strings.Contains(err.Error(), "NotFound") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s still there after %v (err %v)", namespace, within, err)
		}
		time.Sleep(time.Second)
	}
}

// The README's "On Kubernetes" block, run exactly as written, in order, as
// a newcomer pastes it (bash, from the repository's root, stopping at the
// first command that fails). The node is already up here, and `hack/cluster
// up` says so and changes nothing.
func TestREADMEOnKubernetes(t *testing.T) {
	block := readmeBlock(t, "## On Kubernetes")
	if !strings.HasPrefix(block[0], "hack/cluster up") {
		t.Fatalf("the README's block no longer starts with hack/cluster up:\n%s", strings.Join(block, "\n"))
	}
	// An earlier test's control plane may still be going away.
	gone(t, "meridian", 3*time.Minute)
	gone(t, "emojivoto", 3*time.Minute)
	t.Cleanup(func() {
		// What the README installed, removed as the README says, and gone
		// before the next test installs its own.
		un, err := exec.Command(filepath.Join(repoRoot, "bin", "meridian"), "uninstall").Output()
		if err == nil {
			runKubectl(string(un), "delete", "--ignore-not-found", "--wait=false", "-f", "-")
		}
		runKubectl("", "delete", "namespace", "emojivoto", "--ignore-not-found", "--wait=false")
		gone(t, "emojivoto", 3*time.Minute)
		gone(t, "meridian", 3*time.Minute)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	script := "set -euxo pipefail\n" + strings.Join(block, "\n") + "\n"
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = repoRoot
	// A newcomer's shell: no KUBECONFIG yet (the block sets it).
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBECONFIG=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's block failed: %v\n%s", err, out)
	}
	t.Logf("the README's block:\n%s", out)
	for _, want := range []string{"spiffe://", "SUCCESS", "SRC"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the block's output lacks %q (identity, viz stat, viz edges)", want)
		}
	}
}
