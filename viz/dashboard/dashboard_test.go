package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/sidecar"
)

// A workload behind a real proxy, read by the dashboard: nothing to show
// after the first read, the traffic sent between two reads after the
// second; a proxy that cannot be read is an error of the snapshot, not of
// the others; the page and the JSON are served.
func TestDashboard(t *testing.T) {
	in, admin := proxiedApp(t)
	get := func(url string) ([]byte, error) {
		resp, err := http.Get(url)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
	d := New(Options{List: func(context.Context) ([]Workload, error) {
		return []Workload{
			{Namespace: "shop", Kind: "deployment", Name: "web", Total: 2, Proxies: []Proxy{{Key: "shop/web-1",
				Read: func(context.Context) ([]byte, error) { return get("http://" + admin.String() + "/metrics") }}}},
			{Namespace: "shop", Kind: "deployment", Name: "gone", Total: 1, Proxies: []Proxy{{Key: "shop/gone-1",
				Read: func(context.Context) ([]byte, error) { return get("http://127.0.0.1:1/metrics") }}}},
		}, nil
	}})
	srv := httptest.NewServer(d)
	defer srv.Close()
	snapshot := func() Snapshot {
		t.Helper()
		b, err := get(srv.URL + "/api/snapshot")
		if err != nil {
			t.Fatal(err)
		}
		var s Snapshot
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
		return s
	}

	d.Refresh(context.Background())
	if b, _ := get(srv.URL + "/api/snapshot"); !strings.Contains(string(b), `"rollouts":[]`) {
		t.Fatalf("without Options.Rollouts, want \"rollouts\": [] (always an array): %s", b)
	}
	s := snapshot()
	if len(s.Workloads) != 2 || s.Workloads[1].Name != "web" || s.Workloads[1].Requests != nil || s.Window != 0 {
		t.Fatalf("after one read: %+v", s)
	}
	if len(s.Errors) != 1 || !strings.Contains(s.Errors[0], "shop/gone-1") {
		t.Fatalf("errors %q, want the unreadable proxy's", s.Errors)
	}

	c := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < 10; i++ {
		path := "/"
		if i < 2 {
			path = "/fail"
		}
		resp, err := c.Get("http://" + in.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	d.Refresh(context.Background())
	s = snapshot()
	web := s.Workloads[1]
	if web.MeshedPods != 1 || web.TotalPods != 2 || web.Requests == nil || *web.Requests != 10 || *web.SuccessRate != 0.8 || s.Window <= 0 {
		t.Fatalf("after the traffic: %+v (window %v)", web, s.Window)
	}
	if len(s.Edges) != 1 || s.Edges[0].Dst != "web" || s.Edges[0].Src != "-" || s.Edges[0].Secured || s.Edges[0].TLS != "no_local_identity" {
		t.Fatalf("edges %+v: want one plaintext client of web", s.Edges)
	}

	page, err := get(srv.URL + "/")
	if err != nil || !strings.Contains(string(page), "api/snapshot") || !strings.Contains(string(page), "const refreshMs = 5000;") {
		t.Fatalf("page: %v\n%s", err, page)
	}
}

// The figures cover the window (30s by default), not only the last refresh
// interval: a failure stays in the success rate for the window (the demo's
// deliberate failures were hidden by a 2s refresh most of the time), and
// reads older than the window are dropped.
func TestDashboardWindow(t *testing.T) {
	ctx := context.Background()
	in, admin := proxiedApp(t)
	c := &http.Client{Timeout: 5 * time.Second}
	send := func(path string, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			resp, err := c.Get("http://" + in.String() + path)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	list := func(context.Context) ([]Workload, error) {
		return []Workload{{Namespace: "shop", Kind: "deployment", Name: "web", Total: 1, Proxies: []Proxy{{Key: "shop/web-1",
			Read: func(context.Context) ([]byte, error) {
				resp, err := c.Get("http://" + admin.String() + "/metrics")
				if err != nil {
					return nil, err
				}
				defer resp.Body.Close()
				return io.ReadAll(resp.Body)
			}}}}}, nil
	}
	// Refreshes 2s apart as in the demo; the default window.
	d := New(Options{List: list, Refresh: 2 * time.Second})
	d.Refresh(ctx)
	send("/fail", 1)
	send("/", 4)
	d.Refresh(ctx)
	send("/", 5)
	d.Refresh(ctx)
	s := d.snap
	web := s.Workloads[0]
	if web.Requests == nil || *web.Requests != 10 || web.SuccessRate == nil || *web.SuccessRate != 0.9 {
		j, _ := json.Marshal(web)
		t.Fatalf("over the window: %s, want the 10 requests of both intervals, 1 failed", j)
	}
	if s.WindowMax != DefaultWindow.Seconds() || s.Window <= 0 {
		t.Fatalf("window %v of %v", s.Window, s.WindowMax)
	}

	// A window shorter than the time between reads: only the last interval.
	d = New(Options{List: list, Refresh: time.Nanosecond, Window: time.Nanosecond})
	d.Refresh(ctx)
	send("/fail", 1)
	d.Refresh(ctx)
	send("/", 3)
	d.Refresh(ctx)
	if web := d.snap.Workloads[0]; web.Requests == nil || *web.Requests != 3 || *web.SuccessRate != 1 {
		j, _ := json.Marshal(web)
		t.Fatalf("window shorter than a refresh: %s, want the last interval's 3 requests", j)
	}
	if n := d.win.Kept("shop/web-1"); n != 2 {
		t.Fatalf("%d reads kept, want 2 (the window's start and the latest)", n)
	}
}

// proxiedApp runs an application behind a real sidecar proxy (it answers
// 500 on /fail, else "ok") and returns the proxy's inbound and admin
// addresses; both stop when the test ends.
func proxiedApp(t *testing.T) (in, admin net.Addr) {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(app.Close)
	p, err := sidecar.New(sidecar.Config{OutboundAddr: "127.0.0.1:0", InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		InboundForward: strings.TrimPrefix(app.URL, "http://"), DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	_, in, admin = p.Addrs()
	return in, admin
}
