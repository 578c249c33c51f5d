package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// `meridian-proxy gateway` serves the snapshot of --gateway-config with
// static destinations, shows it on /gateway, and follows the file.
func TestGatewayMode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the proxy binary")
	}
	bin := buildProxy(t)
	backend := func(name string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", name, r.Header.Get("X-Forwarded-Proto"))
		}))
		t.Cleanup(s.Close)
		return s.Listener.Addr().String()
	}
	a, b := backend("a"), backend("b")
	_, port, _ := net.SplitHostPort(freeAddr(t))
	admin := freeAddr(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "gateway.json")
	snapshot := func(version, dst string) string {
		return `{"version": "` + version + `", "gateway": "ns/gw", "ports": [{"port": ` + port + `, "protocol": "HTTP", "listeners": [
			{"name": "web", "mode": "HTTP", "hosts": [{"hostname": "", "rules": [
				{"route": {"kind": "HTTPRoute", "namespace": "ns", "name": "web", "rule": "0"},
				 "match": {"path": {"type": "PREFIX", "value": "/"}},
				 "backends": [{"authority": "` + dst + `.svc:80", "weight": 1, "name": "ns/` + dst + `:80"}]}]}]}]}]}`
	}
	write(t, config, snapshot("v1", "a"))
	cmd := exec.Command(bin, "gateway", "--gateway-config", config, "--bind-host", "127.0.0.1", "--admin-addr", admin,
		"--dst", "a.svc:80="+a, "--dst", "b.svc:80="+b, "--drain-timeout", "1s")
	cmd.Stdout = &logWriter{t: t, prefix: "gateway"}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	waitReady(t, admin)
	body := func() string {
		t.Helper()
		resp, err := http.Get("http://127.0.0.1:" + port + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := body(); got != "a http" {
		t.Errorf("v1: %q, want %q", got, "a http")
	}
	resp, err := http.Get("http://" + admin + "/gateway")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), `snapshot version "v1"`) || !strings.Contains(string(page), "HTTPRoute/ns/web/0") {
		t.Errorf("/gateway:\n%s", page)
	}
	tmp := config + ".tmp"
	write(t, tmp, snapshot("v2", "b"))
	if err := os.Rename(tmp, config); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); body() != "b http"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the changed file was not applied: %q", body())
		}
	}
}
