package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/meridian-mesh/meridian/cli/kubeclient"
	"github.com/meridian-mesh/meridian/demo/launch"
	"github.com/meridian-mesh/meridian/proxy/authz"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
	"github.com/meridian-mesh/meridian/test/apiserver"
	"github.com/meridian-mesh/meridian/viz/dashboard"
	"github.com/meridian-mesh/meridian/viz/stat"
)

// `meridian viz stat` against a real kube-apiserver, whose pod proxy
// requests reach real proxies on loopback (envtest runs no kubelet): the
// workloads' pods resolve through the API server, each meshed pod's proxy
// is read at both ends of the window, and the traffic sent in between shows
// up as it was: per workload, requests, success rate, connections.
func TestVizStatKube(t *testing.T) {
	cfg := apiserver.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(cfg)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{})
	must(err)
	for _, app := range []string{"web", "voting", "idle"} {
		sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
		_, err := cs.AppsV1().Deployments("shop").Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: app},
			Spec: appsv1.DeploymentSpec{Selector: sel, Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel.MatchLabels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}}}, metav1.CreateOptions{})
		must(err)
	}

	// The application behind every proxy fails /fail.
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer app.Close()
	// Meshed with real identities: web's proxies call voting-1's over
	// mutual TLS.
	ids := tlsidtest.Start(t, time.Hour)
	proxies := map[string]*sidecar.Proxy{} // "ns/pod:4191" → its proxy
	var votingIn string
	for _, p := range []struct {
		name, app string
		meshed    bool
	}{{"voting-1", "voting", true}, {"voting-2", "voting", false}, {"web-1", "web", true}, {"web-2", "web", true}} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: "shop", Labels: map[string]string{"app": p.app}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		if p.meshed {
			pod.Spec.InitContainers = []corev1.Container{{Name: "meridian-proxy", Image: "proxy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
				Ports: []corev1.ContainerPort{{Name: "meridian-admin", ContainerPort: 4191}}}}
			pcfg := sidecar.Config{OutboundAddr: "127.0.0.1:0", InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
				InboundForward: strings.TrimPrefix(app.URL, "http://"), DrainTimeout: time.Second,
				Identity: ids.Identity(t, "shop", p.app)}
			if p.app == "web" {
				r, err := discover.NewStatic([]discover.Destination{{Authority: "voting.shop.svc.cluster.local:80",
					Endpoints: []discover.Endpoint{{Addr: votingIn, Identity: tlsidtest.ID("shop", "voting").String()}}}})
				must(err)
				pcfg.Resolver = r
			}
			px, err := sidecar.New(pcfg)
			must(err)
			if p.name == "voting-1" {
				_, in, _ := px.Addrs()
				votingIn = in.String()
			}
			pctx, stop := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); px.Run(pctx) }()
			defer func() { stop(); <-done }()
			proxies["shop/"+p.name+":4191"] = px
		}
		created, err := cs.CoreV1().Pods("shop").Create(ctx, pod, metav1.CreateOptions{})
		must(err)
		created.Status.Phase = corev1.PodRunning
		_, err = cs.CoreV1().Pods("shop").UpdateStatus(ctx, created, metav1.UpdateOptions{})
		must(err)
	}

	// The API server, with pod proxy requests for the proxies' admin ports
	// answered by the real proxies. After the first round of reads (one
	// per meshed pod), the traffic: 12 plaintext requests to each web
	// proxy (3 of them failing), and 4 from web-1's proxy to voting's.
	admins := map[string]string{}
	for k, px := range proxies {
		_, _, admin := px.Addrs()
		admins[k] = admin.String()
	}
	front := newPodProxyFront(t, cfg, admins)
	traffic := func() {
		c := &http.Client{Timeout: 5 * time.Second}
		send := func(addr, host string, n, failing int) {
			for i := 0; i < n; i++ {
				path := "/"
				if i < failing {
					path = "/fail"
				}
				req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
				req.Host = host
				resp, err := c.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
		inbound := func(pod string) string { _, in, _ := proxies["shop/"+pod+":4191"].Addrs(); return in.String() }
		send(inbound("web-1"), "web.shop.svc.cluster.local:80", 12, 3)
		send(inbound("web-2"), "web.shop.svc.cluster.local:80", 12, 3)
		out, _, _ := proxies["shop/web-1:4191"].Addrs()
		send(out.String(), "voting.shop.svc.cluster.local:80", 4, 0)
	}
	kc := writeKubeconfig(t, front.URL)

	front.afterReads(3, traffic)
	out, err := runViz(ctx, "stat", "deploy", "--kubeconfig", kc, "--window", "1s", "-o", "json")
	must(err)
	var rows []stat.Row
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	byName := map[string]stat.Row{}
	for _, r := range rows {
		byName[r.Name] = r
	}
	num := func(p *float64) float64 {
		if p == nil {
			return -1
		}
		return *p
	}
	web, voting, idle := byName["web"], byName["voting"], byName["idle"]
	if web.MeshedPods != 2 || web.TotalPods != 2 || num(web.Requests) != 24 || num(web.SuccessRate) != 0.75 || num(web.TCPConns) < 1 {
		t.Errorf("web: %+v", web)
	}
	if r := num(web.RPS); r <= 24.0/3 || r > 24 {
		t.Errorf("web: %v rps for 24 requests in a 1s window", r)
	}
	if web.LatencyP50 == nil || web.LatencyP99 == nil || *web.LatencyP99 < *web.LatencyP50 {
		t.Errorf("web latency: p50 %v p99 %v", web.LatencyP50, web.LatencyP99)
	}
	if voting.MeshedPods != 1 || voting.TotalPods != 2 || num(voting.Requests) != 4 || num(voting.SuccessRate) != 1 {
		t.Errorf("voting: %+v", voting)
	}
	if idle.MeshedPods != 0 || idle.TotalPods != 0 || idle.Requests != nil || idle.SuccessRate != nil {
		t.Errorf("idle (no pods): %+v", idle)
	}
	if len(rows) != 3 {
		t.Errorf("%d rows, want web, voting and idle:\n%s", len(rows), out)
	}

	// The table, for one workload, with no traffic in its window.
	front.afterReads(0, nil)
	out, err = runViz(ctx, "stat", "deploy/voting", "--kubeconfig", kc, "--window", "1s")
	must(err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME MESHED SUCCESS RPS LATENCY_P50 LATENCY_P95 LATENCY_P99 TCP_CONN" {
		t.Fatalf("table:\n%s", out)
	}
	// No request in the window: no success rate and no latency; the
	// connections column counts whatever is still open.
	if f := strings.Fields(lines[1]); len(f) != 8 || strings.Join(f[:7], " ") != "voting 1/2 - 0.0rps - - -" {
		t.Errorf("table:\n%s", out)
	}

	// Edges into every deployment: plaintext clients into web, web into
	// voting over mTLS.
	front.afterReads(3, traffic)
	out, err = runViz(ctx, "edges", "deploy", "--kubeconfig", kc, "--window", "1s")
	must(err)
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		f := strings.Fields(l)
		got = append(got, strings.Join(f[:len(f)-1], " ")) // not RPS
	}
	if want := []string{"web shop voting shop √", "- - web shop × (not_provided_by_remote)"}; !slices.Equal(got, want) {
		t.Errorf("edges:\n%s\nwant rows %q", out, want)
	}

	// Routes of web's requests out: no profile, so [DEFAULT], per service.
	front.afterReads(2, traffic)
	out, err = runViz(ctx, "routes", "deploy/web", "--direction", "outbound", "--kubeconfig", kc, "--window", "1s", "-o", "json")
	must(err)
	var routes []routeJSON
	must(json.Unmarshal([]byte(out), &routes))
	if len(routes) != 1 || routes[0].Route != "[DEFAULT]" || routes[0].Authority != "voting.shop.svc.cluster.local:80" ||
		routes[0].Requests != 4 || num(routes[0].SuccessRate) != 1 {
		t.Errorf("routes:\n%s", out)
	}

	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"routes", "deploy"}, `"deploy": name one workload, e.g. deploy/web`},
		{[]string{"stat", "deploy/nope"}, "deployment shop/nope not found"},
		{[]string{"stat", "deploy", "-n", "doesnotexist"}, "namespace doesnotexist does not exist"},
		{[]string{"stat", "ns/doesnotexist"}, "namespace doesnotexist does not exist"},
		{[]string{"stat", "svc/web"}, `"svc/web": want deploy, sts, ds, pod or ns`},
		{[]string{"stat", "deploy", "--window", "10ms"}, "--window 10ms: use 1s or more"},
		{[]string{"stat", "deploy", "-o", "yaml"}, `--output "yaml": use table or json`},
	} {
		if _, err := runViz(ctx, append(tc.args, "--kubeconfig", kc)...); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.err)
		}
	}
}

func runViz(ctx context.Context, args ...string) (string, error) {
	cmd := newVizCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// podProxyFront is the API server, except that pod proxy requests to the
// named pods' admin ports ("ns/pod:port") go to real proxies' admin
// servers (at their addresses).
type podProxyFront struct {
	*httptest.Server
	mu    sync.Mutex
	reads int
	after int
	then  func()
}

// afterReads runs then (synchronously, before the read is answered) once n
// pod proxy reads have been served from now on.
func (f *podProxyFront) afterReads(n int, then func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads, f.after, f.then = 0, n, then
}

func newPodProxyFront(t *testing.T, cfg *rest.Config, admins map[string]string) *podProxyFront {
	t.Helper()
	api := realAPIServer(t, cfg)
	f := &podProxyFront{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := podProxyPath.FindStringSubmatch(r.URL.Path)
		var admin string
		if m != nil {
			admin = admins[m[1]+"/"+m[2]+":"+m[3]]
		}
		if admin == "" {
			api.ServeHTTP(w, r)
			return
		}
		resp, err := http.Get((&url.URL{Scheme: "http", Host: admin, Path: "/" + m[4]}).String())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
		f.mu.Lock()
		f.reads++
		var then func()
		if f.reads == f.after && f.then != nil {
			then, f.then = f.then, nil
		}
		f.mu.Unlock()
		if then != nil {
			then()
		}
	}))
	t.Cleanup(f.Close)
	return f
}

// Local mode: `meridian demo`'s proxies named by their admin addresses, as
// its summary prints them. The demo's bot votes all the time, so every
// service serves in the window, and web calls emoji and voting over mTLS.
func TestVizLocalDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := launch.Start(ctx, launch.Options{WebAddr: "127.0.0.1:0", GatewayAddr: "127.0.0.1:0", GatewayHTTPAddr: "127.0.0.1:0", VoteRate: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	var summary bytes.Buffer
	d.PrintSummary(&summary)
	var proxies []string
	for _, l := range strings.Split(summary.String(), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "Golden metrics:  meridian viz stat "); ok {
			proxies = strings.Fields(rest)
		}
	}
	if len(proxies) < 3 {
		t.Fatalf("the summary names no proxies for viz stat:\n%s", summary.String())
	}

	// The demo's traffic may still be starting on a loaded machine: a
	// window in which a service served nothing is measured again, up to
	// five times, before that counts as a failure.
	var out string
	for try := 1; ; try++ {
		out, err = runViz(ctx, append([]string{"stat", "--window", "2s", "-o", "json"}, proxies...)...)
		if err != nil {
			t.Fatal(err)
		}
		var rows []stat.Row
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		served := map[string]bool{}
		for _, r := range rows {
			// Each row's namespace is its proxy's identity's (/identity), the gateway's too.
			if r.MeshedPods != 1 || r.TotalPods != 1 || r.Kind != "proxy" || r.Namespace != "emojivoto" {
				t.Errorf("%s: %+v", r.Name, r)
			}
			if r.Requests != nil && *r.Requests > 0 && r.SuccessRate != nil && r.LatencyP99 != nil {
				served[r.Name] = true
			}
		}
		var idle []string
		// The gateway like any workload: what it served to the bot.
		for _, s := range []string{"web", "emoji", "voting", launch.GatewayWorkload} {
			if !served[s] {
				idle = append(idle, s)
			}
		}
		if len(idle) == 0 {
			break
		}
		if try == 5 {
			t.Fatalf("viz stat: %v served nothing in five 2s windows:\n%s", idle, out)
		}
	}

	out, err = runViz(ctx, append([]string{"edges", "--window", "2s", "-o", "json"}, proxies...)...)
	if err != nil {
		t.Fatal(err)
	}
	var edges []stat.Edge
	if err := json.Unmarshal([]byte(out), &edges); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	secured := map[string]bool{}
	for _, e := range edges {
		secured[e.Src+" → "+e.Dst] = e.Secured
		// The destination's namespace comes from its proxy's identity.
		if e.Secured && e.DstNS != "emojivoto" {
			t.Errorf("viz edges: %s → %s in namespace %q, want emojivoto", e.Src, e.Dst, e.DstNS)
		}
	}
	// The gateway's calls are web's edge from it, by its own identity.
	for _, e := range []string{"web → emoji", "web → voting", launch.GatewayWorkload + " → web"} {
		if !secured[e] {
			t.Errorf("viz edges: no mTLS edge %s:\n%s", e, out)
		}
	}

	// The demo's dashboard, and `viz dashboard` with the same addresses:
	// after two refreshes the services' figures are there.
	url, err := serveDemoDashboard(ctx, d, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	list, err := dashboardList(kubeclient.Flags{}, proxies)
	if err != nil {
		t.Fatal(err)
	}
	ws, _ := list(ctx)
	if len(ws) != len(proxies) || ws[0].Kind != "proxy" || len(ws[0].Proxies) != 1 {
		t.Fatalf("viz dashboard's workloads for %v: %+v", proxies, ws)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url + "/api/snapshot")
		if err != nil {
			t.Fatal(err)
		}
		var snap dashboard.Snapshot
		err = json.NewDecoder(resp.Body).Decode(&snap)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		ok, gateway, gatewayEdge := 0, false, false
		for _, w := range snap.Workloads {
			if w.Requests != nil && *w.Requests > 0 && w.Namespace == "emojivoto" {
				ok++
				gateway = gateway || w.Name == launch.GatewayWorkload
			}
		}
		for _, e := range snap.Edges {
			gatewayEdge = gatewayEdge || e.Src == launch.GatewayWorkload && e.Dst == "web" && e.Secured
		}
		if ok >= 4 && gateway && gatewayEdge && len(snap.Edges) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo's dashboard shows no traffic after 20s: %+v", snap)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Mixing the two forms, or a name without an address, is refused.
	for _, args := range [][]string{{"stat", proxies[0], "deploy"}, {"stat", "web=nowhere"}} {
		if _, err := runViz(ctx, args...); err == nil || !strings.Contains(err.Error(), "a proxy's admin address") {
			t.Errorf("%v: %v", args, err)
		}
	}
}

// A viz command without its argument says how to call it (the root command
// silences cobra's usage on errors).
func TestVizUsage(t *testing.T) {
	for _, sub := range []string{"routes", "stat", "edges"} {
		_, err := runViz(context.Background(), sub)
		if err == nil || !strings.Contains(err.Error(), "Usage:\n  viz "+sub+" (") || !strings.Contains(err.Error(), "Examples:") {
			t.Errorf("viz %s: %v, want the usage and examples", sub, err)
		}
	}
}

// The kubelet's probes through a meshed pod's inbound proxy are shown as
// probes in `viz edges` (SRC kubelet, not a red × not_provided_by_remote
// from "-") and are left out of the workload's figures in `viz stat`.
func TestVizProbes(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer app.Close()
	appAddr := strings.TrimPrefix(app.URL, "http://")
	_, appPort, _ := strings.Cut(appAddr, ":")
	probes, err := authz.ParseProbes(appPort + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	ids := tlsidtest.Start(t, time.Hour)
	px, err := sidecar.New(sidecar.Config{OutboundAddr: "127.0.0.1:0", InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		InboundForward: appAddr, DrainTimeout: time.Second, Identity: ids.Identity(t, "shop", "web"), Authz: authz.Config{Probes: probes}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); px.Run(ctx) }()
	defer func() { stop(); <-done }()
	_, in, admin := px.Addrs()

	read := func() stat.Scrape {
		b, err := adminGet(ctx, admin.String(), "metrics")
		if err != nil {
			t.Fatal(err)
		}
		s, err := stat.Parse(bytes.NewReader(b), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := read()
	c := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < 5; i++ { // the kubelet: plaintext GETs of the probe path
		resp, err := c.Get("http://" + in.String() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	pairs := []stat.Pair{{Before: before, After: read()}}

	row := stat.Summarize("shop", "deployment", "web", 1, 1, "inbound", pairs)
	if row.Requests == nil || *row.Requests != 0 || row.RPS == nil || *row.RPS != 0 {
		j, _ := json.Marshal(row)
		t.Errorf("probes counted in the workload's figures: %s", j)
	}
	var out bytes.Buffer
	if err := writeEdges(&out, []*statRow{{Namespace: "shop", Name: "web", pairs: pairs}}, "table"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("edges:\n%s", out.String())
	}
	f := strings.Fields(lines[1])
	if got := strings.Join(f[:len(f)-1], " "); got != "kubelet - web shop - (probe)" {
		t.Errorf("edges: %q, want the kubelet's probes\n%s", got, out.String())
	}
}

// The demo's dashboard shows its Rollout: the local driver's voting Rollout
// with its stable's and canary's figures side by side, as `meridian demo`
// serves it.
func TestDemoDashboardShowsTheRollout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d, err := launch.Start(ctx, launch.Options{WebAddr: "127.0.0.1:0", GatewayAddr: "127.0.0.1:0", GatewayHTTPAddr: "127.0.0.1:0", VoteRate: 50,
		Rollout: launch.RolloutOptions{Version: launch.RolloutGood, Delay: 500 * time.Millisecond, Pause: 20 * time.Second, Window: 5 * time.Second,
			Settle: 1500 * time.Millisecond, Interval: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	url, err := serveDemoDashboard(ctx, d, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// At the first step's pause (20% to v2, 20 s), after the dashboard's
	// reads: both sides have served votes.
	var last []dashboard.RolloutRow
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		resp, err := http.Get(url + "/api/snapshot")
		if err != nil {
			t.Fatal(err)
		}
		var snap dashboard.Snapshot
		err = json.NewDecoder(resp.Body).Decode(&snap)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		last = snap.Rollouts
		if len(last) != 1 {
			continue
		}
		r := last[0]
		if r.Name == "voting" && r.Weights != nil && r.Weights.Canary == 20 && r.StableHash != r.CanaryHash &&
			r.Stable.Requests != nil && *r.Stable.Requests > 0 && r.Canary.Requests != nil && *r.Canary.Requests > 0 {
			return
		}
	}
	t.Fatalf("the demo's dashboard never showed the voting Rollout at 20%% with both sides' traffic: %+v", last)
}
