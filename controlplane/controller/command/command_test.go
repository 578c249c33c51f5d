package command

import (
	"strings"
	"testing"
)

func TestProxyResourcesFlags(t *testing.T) {
	s := func(v string) *string { return &v }
	rr, err := proxyResources(map[string]*string{
		"proxy-cpu-request": s("10m"), "proxy-memory-request": s("20Mi"),
		"proxy-memory-limit": s("128Mi"), "proxy-cpu-limit": s(""),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := rr.Requests.Cpu().String(); got != "10m" {
		t.Errorf("cpu request %s, want 10m", got)
	}
	if got := rr.Requests.Memory().String(); got != "20Mi" {
		t.Errorf("memory request %s, want 20Mi", got)
	}
	if got := rr.Limits.Memory().String(); got != "128Mi" {
		t.Errorf("memory limit %s, want 128Mi", got)
	}
	if _, ok := rr.Limits["cpu"]; ok {
		t.Error("an empty flag set a CPU limit")
	}
	for flags, want := range map[[2]string]string{
		{"proxy-cpu-request", "lots"}: `--proxy-cpu-request "lots": not a Kubernetes quantity`,
		{"proxy-memory-limit", "1Mi"}: "--proxy-memory-request 20Mi is above --proxy-memory-limit 1Mi",
	} {
		_, err := proxyResources(map[string]*string{"proxy-memory-request": s("20Mi"), flags[0]: s(flags[1])})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--%s=%s: err %v, want %q", flags[0], flags[1], err, want)
		}
	}
}
