package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The controller binary carries only the control plane: none of the CLI's
// Helm, demo or dashboard (the controller image was 58 MB with them).
func TestControllerDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 20 {
		t.Fatalf("go list returned too few packages to be believable: %v", pkgs)
	}
	for _, pkg := range pkgs {
		for _, banned := range []string{
			"helm.sh/",
			"github.com/meridian-mesh/meridian/demo",
			// The dashboard; viz/golden and viz/stat (a proxy's metrics
			// read and summed, no dependency of their own) are the
			// meridian analysis provider's.
			"github.com/meridian-mesh/meridian/viz/dashboard",
			"github.com/meridian-mesh/meridian/cli/", // check, install, kubeclient
		} {
			if strings.HasPrefix(pkg, banned) {
				t.Errorf("meridian-controller imports %s", pkg)
			}
		}
	}
}
