package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/authz"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// gauge is the value of the series of metric name with the labels (and
// any others), summed; ok false when there is none.
func gauge(t *testing.T, g *Gateway, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	fams, err := g.Metrics().Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	found := false
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			found = true
			sum += value(m)
		}
	}
	return sum, found
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return 0
}

// keepAlive is a client's HTTP/1.1 connection, kept open between requests.
type keepAlive struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKeepAlive(t *testing.T, port uint32) *keepAlive {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+itoa(port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{c: c, br: bufio.NewReader(c)}
}

// get sends one request on the connection and reads its response.
func (k *keepAlive) get(path string) (*http.Response, error) {
	k.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(k.c, "GET "+path+" HTTP/1.1\r\nHost: a.test\r\n\r\n"); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, err
}

// Each port holds at most MaxConnections open: one more is accepted and
// closed before its request is read (no response byte, never part of
// one), counted in tcp_connections_refused_total; the connections held
// keep being served, another port is not affected, and a closed
// connection makes room again.
func TestMaxConnectionsPerPort(t *testing.T) {
	be := startEcho(t, "web", nil)
	const limit = 4
	p1, p2 := freePort(t), freePort(t)
	g, err := New(Config{
		Bind:      func(p uint32) string { return "127.0.0.1:" + strconv.Itoa(int(p)) },
		AdminAddr: "127.0.0.1:0", Resolver: dsts(t, map[string][]string{"web.svc:80": {be.addr}}), Balancer: balance.RoundRobin,
		DrainTimeout: time.Second, MaxConnections: limit, Log: discardLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	route := func(n uint32) *gatewaypb.Port {
		return httpPort(n, httpListener("l", "", hostOf("", ruleTo("web", nil, to("web.svc:80", 1)))))
	}
	if err := g.Apply(snap("v1", route(p1), route(p2))); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	var held []*keepAlive
	for i := range limit {
		k := dialKeepAlive(t, p1)
		if resp, err := k.get("/"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("connection %d: %v %v", i, resp, err)
		}
		held = append(held, k)
	}
	over := dialKeepAlive(t, p1)
	if resp, err := over.get("/"); err == nil {
		t.Fatalf("a connection beyond the limit was served: %s", resp.Status)
	} else if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection beyond the limit was left hanging: %v", err)
	}
	if over.br.Buffered() != 0 {
		t.Fatal("the refused connection got part of a response")
	}
	if resp, err := held[1].get("/again"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a held connection after the refusal: %v %v", resp, err)
	}
	if resp, err := dialKeepAlive(t, p2).get("/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the other port: %v %v", resp, err)
	}
	if v, _ := gauge(t, g, "tcp_connections_refused_total", map[string]string{"direction": "inbound", "reason": "max_connections"}); v != 1 {
		t.Errorf("tcp_connections_refused_total = %v, want 1", v)
	}
	if v, _ := gauge(t, g, "tcp_listener_open_connections", map[string]string{"port": itoa(p1)}); v != limit {
		t.Errorf("tcp_listener_open_connections{port=%d} = %v, want %d", p1, v, limit)
	}
	if v, _ := gauge(t, g, "tcp_listener_max_connections", map[string]string{"port": itoa(p1)}); v != limit {
		t.Errorf("tcp_listener_max_connections{port=%d} = %v, want %d", p1, v, limit)
	}

	held[0].c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v, _ := gauge(t, g, "tcp_listener_open_connections", map[string]string{"port": itoa(p1)}); v == limit-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection did not free its place")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp, err := dialKeepAlive(t, p1).get("/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a connection after one closed: %v %v", resp, err)
	}
}

// The admin port follows the default inbound policy as the sidecar's
// does: /live and /ready answer everyone; /gateway and /metrics only the
// clients the policy admits (here meshed ones, over mTLS), others get 403
// with Meridian-Proxy-Error: unauthorized, counted in
// inbound_authz_deny_total.
func TestAdminFollowsInboundPolicy(t *testing.T) {
	ids := tlsidtest.Start(t, time.Hour)
	g, err := New(Config{
		Bind:      func(p uint32) string { return "127.0.0.1:" + strconv.Itoa(int(p)) },
		AdminAddr: "127.0.0.1:0", Resolver: dsts(t, nil), Balancer: balance.RoundRobin, DrainTimeout: time.Second,
		Identity: ids.Identity(t, "gw-ns", "gateway"), Authz: authz.Config{Default: authz.AllAuthenticated}, Log: discardLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Apply(snap("v1", httpPort(freePort(t), httpListener("l", "")))); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	admin := g.AdminAddr().String()
	plain := &http.Client{Timeout: 10 * time.Second}
	status := func(c *http.Client, scheme, path string) (int, string) {
		t.Helper()
		resp, err := c.Get(scheme + "://" + admin + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Meridian-Proxy-Error")
	}
	if code, _ := status(plain, "http", "/live"); code != 200 {
		t.Errorf("/live in plaintext: %d", code)
	}
	for _, p := range []string{"/gateway", "/metrics"} {
		if code, why := status(plain, "http", p); code != 403 || why != "unauthorized" {
			t.Errorf("%s in plaintext under all-authenticated: %d %q, want 403 unauthorized", p, code, why)
		}
	}
	if v, _ := gauge(t, g, "inbound_authz_deny_total", map[string]string{"protocol": "http", "policy": "all-authenticated", "tls": "not_provided_by_remote"}); v != 2 {
		t.Errorf("inbound_authz_deny_total = %v, want 2", v)
	}
	scraper := ids.Identity(t, "monitoring", "prometheus")
	cfg := scraper.ClientConfig(tlsidtest.ID("gw-ns", "gateway"), "http/1.1")
	meshed := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: false, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	for _, p := range []string{"/gateway", "/metrics"} {
		if code, _ := status(meshed, "https", p); code != 200 {
			t.Errorf("%s over mTLS: %d", p, code)
		}
	}
}
