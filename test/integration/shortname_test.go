package integration

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/dstclient"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
)

// lockedBuffer is a log destination several goroutines write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, sub) {
			n++
		}
	}
	return n
}

// A thousand requests by a name the control plane does not know (a short
// name of no service) cost one destination lookup and one log line in the
// controller, not one per request: the proxy keeps the answer while the
// controller's stream says it still holds.
func TestUnknownNameLookedUpOnce(t *testing.T) {
	logs := &lockedBuffer{}
	cc, admin := controlPlaneLogged(t, service("web"), slog.New(slog.NewTextHandler(logs, nil)))
	p := proxy(t, cc)
	c := &http.Client{Timeout: 10 * time.Second}
	for i := range 1000 {
		code, _, err := get(c, p, "root-svc", "/")
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusServiceUnavailable {
			t.Fatalf("request %d by an unknown name: %d, want 503", i, code)
		}
	}
	if n := controllerMetric(t, admin, "meridian_destination_not_found_total"); n != "1" {
		t.Errorf("meridian_destination_not_found_total %s after 1000 requests by one unknown name, want 1", n)
	}
	if n := logs.lines(`root-svc`); n != 1 {
		t.Errorf("%d controller log lines about root-svc after 1000 requests, want 1:\n%s", n, logs.b.String())
	}
}

// With its namespace known (Kubernetes), the proxy looks a short name up
// in it, as the pod's resolver would: "web" is web.default.svc, found at
// once.
func TestShortNameInOwnNamespace(t *testing.T) {
	cc, admin := controlPlaneLogged(t, service("web"), quiet)
	meshed(t, cc, "web", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "web") }))
	p, err := sidecar.New(sidecar.Config{
		OutboundAddr: "127.0.0.1:0", InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Namespace: "default",
		Resolver:  dstclient.New(cc, dstclient.Options{Log: quiet}),
		Balancer:  balance.PeakEWMA, DrainTimeout: time.Second, Log: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	c := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body, err := get(c, p, "web", "/")
		if err == nil && code == 200 && body == "web" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET http://web/ through a proxy in namespace default: %d %q %v", code, body, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	out := scrape(t, p)
	if !strings.Contains(out, `authority="web.default.svc:80"`) {
		t.Errorf("the request's metrics do not name web.default.svc:80:\n%s", grep(out, "request_total"))
	}
	if n := controllerMetric(t, admin, "meridian_destination_not_found_total"); n != "0" {
		t.Errorf("meridian_destination_not_found_total %s, want 0: the short name was looked up as it is", n)
	}
}

// controllerMetric is the value of an unlabelled metric on the
// controller's admin server.
func controllerMetric(t *testing.T, admin, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	return "(absent)"
}
