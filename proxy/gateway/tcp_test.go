package gateway

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// tcpExchange sends msg over plain TCP to addr, half-closes and returns
// the answer.
func tcpExchange(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	got, err := io.ReadAll(c)
	if err == nil && len(got) == 0 {
		err = errors.New("closed without an answer")
	}
	return string(got), err
}

func tcpPort(n uint32, route *gatewaypb.TCPRoute) *gatewaypb.Port {
	return &gatewaypb.Port{Port: n, Protocol: gatewaypb.Port_TCP,
		Listeners: []*gatewaypb.Listener{{Name: "tcp", Mode: gatewaypb.Listener_TCP, TcpRoute: route}}}
}

func tcpRouteTo(name string, backends ...*gatewaypb.Backend) *gatewaypb.TCPRoute {
	return &gatewaypb.TCPRoute{Route: &gatewaypb.RouteRef{Kind: "TCPRoute", Namespace: "ns", Name: name}, Backends: backends}
}

// A TCP listener forwards each connection, bytes as they are, to a backend
// of its route by weight (never the weight-0 one), half-close passed on
// both ways; a TCP listener without a route, or whose route's backends
// are all invalid, closes connections at once. A new snapshot changes the
// route for new connections. Snapshots that put more than one listener on
// a TCP port, or a tcp_route on another listener, are refused.
func TestTCPRoute(t *testing.T) {
	one, two, zero := startTCPEcho(t, "one", nil), startTCPEcho(t, "two", nil), startTCPEcho(t, "zero", nil)
	routed, bare, broken := freePort(t), freePort(t), freePort(t)
	s := snap("v1",
		tcpPort(routed, tcpRouteTo("r", to("one.svc:3000", 3), to("two.svc:3000", 1), to("zero.svc:3000", 0))),
		tcpPort(bare, nil),
		tcpPort(broken, tcpRouteTo("broken", to("", 1))))
	g := startGateway(t, dsts(t, map[string][]string{"one.svc:3000": {one.addr}, "two.svc:3000": {two.addr}, "zero.svc:3000": {zero.addr}}), s)

	addr := "127.0.0.1:" + itoa(routed)
	served := map[string]int{}
	const n = 200
	for i := range n {
		got, err := tcpExchange(addr, "ping")
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		name, rest, _ := strings.Cut(got, " ")
		if rest != "ping" {
			t.Fatalf("connection %d: answer %q, want the backend's name and ping", i, got)
		}
		served[name]++
	}
	// 3:1 over 200 connections: one's share is 150 ± 6σ (σ ≈ 6.1).
	if served["zero"] != 0 || served["one"]+served["two"] != n || served["one"] < 113 || served["one"] > 187 {
		t.Errorf("connections by backend %v, want about 3:1 between one and two and none to zero", served)
	}
	for _, p := range []uint32{bare, broken} {
		if got, err := tcpExchange("127.0.0.1:"+itoa(p), "x"); err == nil {
			t.Errorf("port %d: served %q, want the connection closed", p, got)
		}
	}

	if err := g.Apply(snap("v2", tcpPort(routed, tcpRouteTo("r", to("two.svc:3000", 1))))); err != nil {
		t.Fatal(err)
	}
	if got, err := tcpExchange(addr, "after"); err != nil || got != "two after" {
		t.Errorf("after the new snapshot: %q, %v", got, err)
	}

	twoListeners := tcpPort(routed, nil)
	twoListeners.Listeners = append(twoListeners.Listeners, &gatewaypb.Listener{Name: "other", Mode: gatewaypb.Listener_TCP})
	onHTTP := httpPort(bare, httpListener("l", ""))
	onHTTP.Listeners[0].TcpRoute = tcpRouteTo("r", to("one.svc:3000", 1))
	withHost := tcpPort(bare, nil)
	withHost.Listeners[0].Hostname = "a.test"
	for what, bad := range map[string]*gatewaypb.Snapshot{
		"two listeners":       snap("bad1", twoListeners),
		"tcp_route on HTTP":   snap("bad2", onHTTP),
		"hostname":            snap("bad3", withHost),
		"TCP listener on TLS": snap("bad4", &gatewaypb.Port{Port: bare, Protocol: gatewaypb.Port_TLS, Listeners: []*gatewaypb.Listener{{Name: "t", Mode: gatewaypb.Listener_TCP}}}),
	} {
		if err := g.Apply(bad); err == nil {
			t.Errorf("%s: applied, want refused", what)
		}
	}
	if got, err := tcpExchange(addr, "still"); err != nil || got != "two still" {
		t.Errorf("after the refused snapshots: %q, %v", got, err)
	}
}
