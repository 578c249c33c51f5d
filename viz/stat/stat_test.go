package stat

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
)

func parse(t *testing.T, text string, at time.Time) Scrape {
	t.Helper()
	s, err := Parse(strings.NewReader(text), at)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const before = `
# TYPE response_total counter
response_total{direction="inbound",classification="success",status_code="200"} 100
response_total{direction="inbound",classification="failure",status_code="500"} 10
response_total{direction="outbound",classification="success",status_code="200"} 7
# TYPE response_latency_ms histogram
response_latency_ms_bucket{direction="inbound",le="10"} 50
response_latency_ms_bucket{direction="inbound",le="100"} 100
response_latency_ms_bucket{direction="inbound",le="+Inf"} 110
response_latency_ms_sum{direction="inbound"} 3000
response_latency_ms_count{direction="inbound"} 110
# TYPE tcp_open_connections gauge
tcp_open_connections{direction="inbound",peer="src"} 3
tcp_open_connections{direction="inbound",peer="dst"} 1
`

const after = `
# TYPE response_total counter
response_total{direction="inbound",classification="success",status_code="200"} 190
response_total{direction="inbound",classification="failure",status_code="500"} 20
response_total{direction="inbound",classification="failure",status_code="503"} 0
response_total{direction="outbound",classification="success",status_code="200"} 1007
# TYPE response_latency_ms histogram
response_latency_ms_bucket{direction="inbound",le="10"} 130
response_latency_ms_bucket{direction="inbound",le="100"} 190
response_latency_ms_bucket{direction="inbound",le="+Inf"} 210
response_latency_ms_sum{direction="inbound"} 6000
response_latency_ms_count{direction="inbound"} 210
# TYPE tcp_open_connections gauge
tcp_open_connections{direction="inbound",peer="src"} 4
tcp_open_connections{direction="inbound",peer="dst"} 1
`

// The window's deltas, as rate() and histogram_quantile() would see them:
// 100 responses in 10s, 90 successes; latencies 80 in (0,10], 10 in
// (10,100], 10 above.
func TestGoldenFromTwoScrapes(t *testing.T) {
	t0 := time.Unix(1000, 0)
	g := NewGolden("inbound")
	g.Add(parse(t, before, t0), parse(t, after, t0.Add(10*time.Second)))
	if g.Requests != 100 || g.Successes != 90 {
		t.Fatalf("requests %v successes %v, want 100 and 90", g.Requests, g.Successes)
	}
	if sr, ok := g.SuccessRate(); !ok || sr != 0.9 {
		t.Fatalf("success rate %v %v", sr, ok)
	}
	if g.RPS() != 10 {
		t.Fatalf("rps %v, want 10", g.RPS())
	}
	for _, c := range []struct{ q, want float64 }{
		{0.5, 6.25}, // rank 50 of 80 in (0,10]
		{0.85, 55},  // rank 85: 5 of 10 in (10,100]
		{0.95, 100}, // rank 95: in +Inf: the highest bound
		{0.8, 10},   // rank 80: the top of the first bucket
	} {
		if got, ok := g.Quantile(c.q); !ok || math.Abs(got-c.want) > 1e-9 {
			t.Errorf("p%v = %v (%v), want %v", c.q*100, got, ok, c.want)
		}
	}
	if g.TCPConns != 4 {
		t.Fatalf("tcp conns %v, want 4 (inbound, accepted)", g.TCPConns)
	}

	// Outbound sees only its own series.
	o := NewGolden("outbound")
	o.Add(parse(t, before, t0), parse(t, after, t0.Add(10*time.Second)))
	if o.Requests != 1000 || o.RPS() != 100 {
		t.Fatalf("outbound: %v requests, %v rps", o.Requests, o.RPS())
	}
	if _, ok := o.Quantile(0.5); ok {
		t.Fatal("outbound has no latency samples here")
	}
}

// A proxy that restarted between the scrapes: its counters start again,
// and what it counted since is the delta (rate()'s reset handling).
func TestGoldenCounterReset(t *testing.T) {
	t0 := time.Unix(1000, 0)
	restarted := `
# TYPE response_total counter
response_total{direction="inbound",classification="success",status_code="200"} 5
# TYPE response_latency_ms histogram
response_latency_ms_bucket{direction="inbound",le="10"} 5
response_latency_ms_bucket{direction="inbound",le="100"} 5
response_latency_ms_bucket{direction="inbound",le="+Inf"} 5
response_latency_ms_sum{direction="inbound"} 10
response_latency_ms_count{direction="inbound"} 5
`
	g := NewGolden("inbound")
	g.Add(parse(t, before, t0), parse(t, restarted, t0.Add(5*time.Second)))
	if g.Requests != 5 || g.Successes != 5 || g.RPS() != 1 {
		t.Fatalf("after a reset: %v requests, %v successes, %v rps", g.Requests, g.Successes, g.RPS())
	}
	if p, ok := g.Quantile(0.99); !ok || p > 10 {
		t.Fatalf("p99 %v after a reset, want within the first bucket", p)
	}
	if _, ok := NewGolden("inbound").SuccessRate(); ok {
		t.Fatal("a success rate without requests")
	}
}

// The real thing: a proxy in front of an application that fails one
// request in four, scraped over HTTP before and after the traffic.
func TestGoldenFromARealProxy(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer app.Close()
	p, err := sidecar.New(sidecar.Config{OutboundAddr: "127.0.0.1:0", InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		InboundForward: strings.TrimPrefix(app.URL, "http://"), DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	_, in, admin := p.Addrs()
	scrape := func() Scrape {
		t.Helper()
		resp, err := http.Get("http://" + admin.String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		s, err := Parse(resp.Body, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s0 := scrape()
	c := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < 40; i++ {
		path := "/"
		if i%4 == 0 {
			path = "/fail"
		}
		resp, err := c.Get("http://" + in.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	s1 := scrape()
	g := NewGolden("inbound")
	g.Add(s0, s1)
	if g.Requests != 40 || g.Successes != 30 {
		t.Fatalf("%v requests, %v successes; want 40 and 30", g.Requests, g.Successes)
	}
	window := s1.Time.Sub(s0.Time).Seconds()
	if math.Abs(g.RPS()-40/window) > 1e-6 {
		t.Fatalf("rps %v, want %v", g.RPS(), 40/window)
	}
	p50, ok50 := g.Quantile(0.5)
	p99, ok99 := g.Quantile(0.99)
	if !ok50 || !ok99 || p50 <= 0 || p99 < p50 {
		t.Fatalf("p50 %v p99 %v", p50, p99)
	}
	if g.TCPConns < 1 {
		t.Fatalf("%v inbound connections open, want the client's keep-alive one", g.TCPConns)
	}
}

func TestFormat(t *testing.T) {
	for got, want := range map[string]string{
		Percent(0.975, true): "97.50%", Percent(0, false): "-",
		Millis(12.4, true): "12ms", Millis(0.46, true): "0.5ms", Millis(0.96, true): "1ms", Millis(0, false): "-",
	} {
		if got != want {
			t.Errorf("%q, want %q", got, want)
		}
	}
}

// Group splits by label values and keeps only the combinations with
// responses in the window; each group's figures are its own series'.
func TestGroup(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := parse(t, `
# TYPE response_total counter
response_total{direction="inbound",route="GET /a",classification="success"} 10
response_total{direction="inbound",route="GET /b",classification="success"} 5
response_total{direction="inbound",route="",classification="failure"} 1
`, t0)
	a := parse(t, `
# TYPE response_total counter
response_total{direction="inbound",route="GET /a",classification="success"} 30
response_total{direction="inbound",route="GET /a",classification="failure"} 5
response_total{direction="inbound",route="GET /b",classification="success"} 5
response_total{direction="inbound",route="",classification="failure"} 2
response_total{direction="outbound",route="GET /c",classification="success"} 9
`, t0.Add(5*time.Second))
	groups := Group([]Pair{{b, a}, {b, a}}, "inbound", "route")
	if len(groups) != 2 || groups["GET /b"] != nil || groups["GET /c"] != nil {
		t.Fatalf("groups %v: want GET /a and the default route only", groups)
	}
	ga, gd := groups["GET /a"], groups[""]
	if ga.Requests != 50 || ga.Successes != 40 || ga.RPS() != 10 {
		t.Fatalf("GET /a over two proxies: %v requests, %v successes, %v rps", ga.Requests, ga.Successes, ga.RPS())
	}
	if gd.Requests != 2 || gd.Successes != 0 {
		t.Fatalf("default route: %v requests, %v successes", gd.Requests, gd.Successes)
	}
}

// A gateway proxy's registry (proxy/metrics.NewGateway) labels its requests
// outbound, with its Gateway: they are what it served to clients from
// outside, so its row counts them; its edges are its backends', so the
// gateway makes none into itself (web's proxy shows the gateway as a
// client, by its identity).
func TestGatewayServes(t *testing.T) {
	reg := metrics.NewGateway()
	scrape := func(at time.Time) Scrape {
		rec := httptest.NewRecorder()
		reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return parse(t, rec.Body.String(), at)
	}
	t0 := time.Unix(1000, 0)
	s0 := scrape(t0)
	q := metrics.Request{Direction: "outbound", Authority: "web-svc.emojivoto.svc.cluster.local:80", Target: "127.0.0.1:4143",
		Route: metrics.GatewayRoute("emojivoto/edge", "https", "HTTPRoute/emojivoto/web/0", "emojivoto/web-svc:80"),
		TLS:   "true", ServerID: "spiffe://cluster.local/ns/emojivoto/sa/web"}
	for i := range 20 {
		reg.RequestStarted(q)
		status := 200
		if i%4 == 0 {
			status = 500
		}
		reg.ResponseDone(q, metrics.Response{Status: status, Latency: 3 * time.Millisecond})
	}
	s1 := scrape(t0.Add(10 * time.Second))

	row := Summarize("emojivoto", "deployment", "edge-meridian", 1, 1, "inbound", []Pair{{s0, s1}})
	if row.Requests == nil || *row.Requests != 20 || *row.SuccessRate != 0.75 || *row.RPS != 2 || row.LatencyP50 == nil {
		t.Fatalf("the gateway's row: %+v", row)
	}
	if out := Summarize("emojivoto", "deployment", "edge-meridian", 1, 1, "outbound", []Pair{{s0, s1}}); *out.Requests != 20 {
		t.Fatalf("the gateway's outbound row: %v requests, want 20", *out.Requests)
	}
	if es := Edges("emojivoto", "edge-meridian", []Pair{{s0, s1}}); len(es) != 0 {
		t.Fatalf("edges into the gateway from its own series: %+v", es)
	}
}
