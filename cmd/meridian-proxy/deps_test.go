package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The sidecar runs next to every pod: it must stay small, so neither it nor
// anything under proxy/ may pull in Kubernetes client libraries; nor may
// internal/, the vocabulary the proxy shares with the control plane.
func TestNoKubernetesDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-test", "github.com/meridian-mesh/meridian/cmd/meridian-proxy", "github.com/meridian-mesh/meridian/proxy/...", "github.com/meridian-mesh/meridian/internal/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 20 {
		t.Fatalf("go list returned too few packages to be believable: %v", pkgs)
	}
	for _, p := range pkgs {
		if strings.HasPrefix(p, "k8s.io/") || strings.HasPrefix(p, "sigs.k8s.io/controller-runtime") {
			t.Errorf("meridian-proxy depends on %s", p)
		}
	}
}
