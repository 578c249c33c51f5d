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

// Every package linked in costs idle RSS: its init runs at start, and the
// kernel maps the binary 64 KiB around each page touched. Built as the
// Makefile and the images build it (-tags grpcnotrace), the proxy links
// no template engine: grpc-go's request tracing (golang.org/x/net/trace,
// html/template, text/template) added 2.5 MB of binary and 1.5 MB of idle
// RSS, for pages the proxy never serves.
func TestNoTemplateDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-tags", "grpcnotrace", "github.com/meridian-mesh/meridian/cmd/meridian-proxy").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 20 {
		t.Fatalf("go list returned too few packages to be believable: %v", pkgs)
	}
	for _, p := range pkgs {
		if p == "golang.org/x/net/trace" || p == "html/template" || p == "text/template" {
			t.Errorf("meridian-proxy built with -tags grpcnotrace depends on %s", p)
		}
	}
}
