package gateway

import (
	"fmt"
	mrand "math/rand/v2"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/discover"
)

// udpEcho answers each datagram with "<name> <datagram>" and records the
// source addresses it saw (one per gateway session).
type udpEcho struct {
	name  string
	addr  string
	mu    sync.Mutex
	peers map[string]int
}

func startUDPEcho(t testing.TB, name string) *udpEcho {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	e := &udpEcho{name: name, addr: c.LocalAddr().String(), peers: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return // closed
			}
			e.mu.Lock()
			e.peers[from.String()]++
			e.mu.Unlock()
			c.WriteToUDPAddrPort(append([]byte(name+" "), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return e
}

func (e *udpEcho) sources() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := make(map[string]int, len(e.peers))
	for k, v := range e.peers {
		m[k] = v
	}
	return m
}

// udpClient is a client socket (one source address: one session).
func udpClient(t testing.TB, port uint32) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// udpExchange sends msg and returns the answer, "" when none comes within wait.
func udpExchange(t testing.TB, c *net.UDPConn, msg string, wait time.Duration) string {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

// freeUDPPort is freePort for a port that must be free for both TCP and
// UDP (a test switches it between the two).
func freeUDPPort(t testing.TB) uint32 {
	t.Helper()
	for range 100 {
		p := 20000 + mrand.IntN(12000)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
		ln.Close()
		if err != nil {
			continue
		}
		uc.Close()
		return uint32(p)
	}
	t.Fatal("no free port in 20000-31999")
	return 0
}

func udpPort(n uint32, route *gatewaypb.UDPRoute) *gatewaypb.Port {
	return &gatewaypb.Port{Port: n, Protocol: gatewaypb.Port_UDP,
		Listeners: []*gatewaypb.Listener{{Name: "udp", Mode: gatewaypb.Listener_UDP, UdpRoute: route}}}
}

func udpRouteTo(name string, backends ...*gatewaypb.Backend) *gatewaypb.UDPRoute {
	return &gatewaypb.UDPRoute{Route: &gatewaypb.RouteRef{Kind: "UDPRoute", Namespace: "ns", Name: name}, Backends: backends}
}

// startUDPGateway is startGateway with the UDP settings a test needs.
func startUDPGateway(t *testing.T, res discover.Resolver, idle time.Duration, maxConns int, s *gatewaypb.Snapshot) *Gateway {
	t.Helper()
	return startGatewayWith(t, res, s, func(c *Config) { c.UDPIdleTimeout, c.MaxConnections = idle, maxConns })
}

// A UDP listener forwards each client address's datagrams (a session) to
// one backend of its route picked by weight (never the weight-0 one), the
// replies coming back from the port; a session keeps its backend and its
// upstream socket. A UDP port without a route, or whose route's backends
// are all invalid, drops datagrams. A new snapshot changes the route for
// new sessions. Snapshots that put two listeners on a UDP port, a
// udp_route on another listener, or a hostname on a UDP listener are
// refused.
func TestUDPRoute(t *testing.T) {
	one, two, zero := startUDPEcho(t, "one"), startUDPEcho(t, "two"), startUDPEcho(t, "zero")
	routed, bare, broken := freeUDPPort(t), freeUDPPort(t), freeUDPPort(t)
	s := snap("v1",
		udpPort(routed, udpRouteTo("r", to("one.svc:53", 3), to("two.svc:53", 1), to("zero.svc:53", 0))),
		udpPort(bare, nil),
		udpPort(broken, udpRouteTo("broken", to("", 1))))
	res := dsts(t, map[string][]string{"one.svc:53": {one.addr}, "two.svc:53": {two.addr}, "zero.svc:53": {zero.addr}})
	g := startUDPGateway(t, res, time.Minute, 0, s)
	if a := g.UDPPorts()[routed]; a == nil || a.Port != int(routed) {
		t.Fatalf("UDPPorts()[%d] = %v, want its UDP address", routed, a)
	}
	if _, ok := g.Ports()[routed]; ok {
		t.Errorf("Ports() has UDP port %d, want TCP ports only", routed)
	}

	served := map[string]int{}
	const n = 200
	var first *net.UDPConn
	for i := range n {
		c := udpClient(t, routed)
		got := udpExchange(t, c, "ping", 5*time.Second)
		name, rest, _ := strings.Cut(got, " ")
		if rest != "ping" {
			t.Fatalf("client %d: answer %q, want the backend's name and ping", i, got)
		}
		served[name]++
		if i == 0 {
			first = c
		}
	}
	// 3:1 over 200 sessions: one's share is 150 ± 6σ (σ ≈ 6.1).
	if served["zero"] != 0 || served["one"]+served["two"] != n || served["one"] < 113 || served["one"] > 187 {
		t.Errorf("sessions by backend %v, want about 3:1 between one and two and none to zero", served)
	}
	// One session per client: each backend saw as many source addresses
	// as it got clients, and a client's next datagrams stay in its session.
	if got := len(one.sources()) + len(two.sources()); got != n {
		t.Errorf("backends saw %d source addresses, want one per client (%d)", got, n)
	}
	firstAnswer := udpExchange(t, first, "again", 5*time.Second)
	firstBackend, _, _ := strings.Cut(firstAnswer, " ")
	for i := range 5 {
		if got := udpExchange(t, first, "more"+strconv.Itoa(i), 5*time.Second); got != firstBackend+" more"+strconv.Itoa(i) {
			t.Fatalf("the first client's datagram %d: %q, want its session's backend %s", i, got, firstBackend)
		}
	}
	if got := len(one.sources()) + len(two.sources()); got != n {
		t.Errorf("after more datagrams from one client: %d source addresses, want still %d", got, n)
	}
	for _, p := range []uint32{bare, broken} {
		if got := udpExchange(t, udpClient(t, p), "x", 300*time.Millisecond); got != "" {
			t.Errorf("port %d: answered %q, want the datagram dropped", p, got)
		}
		if v, _ := gauge(t, g, "udp_datagrams_dropped_total", map[string]string{"port": itoa(p), "reason": "no_route"}); v != 1 {
			t.Errorf("port %d: udp_datagrams_dropped_total{no_route} = %v, want 1", p, v)
		}
	}

	if err := g.Apply(snap("v2", udpPort(routed, udpRouteTo("r", to("zero.svc:53", 1))))); err != nil {
		t.Fatal(err)
	}
	if got := udpExchange(t, udpClient(t, routed), "after", 5*time.Second); got != "zero after" {
		t.Errorf("a new session after the new snapshot: %q, want zero's", got)
	}
	if got := udpExchange(t, first, "kept", 5*time.Second); got != firstBackend+" kept" {
		t.Errorf("an existing session after the new snapshot: %q, want its backend %s still", got, firstBackend)
	}
	if _, ok := g.UDPPorts()[bare]; ok {
		t.Errorf("port %d still open after the snapshot removed it", bare)
	}

	twoListeners := udpPort(routed, nil)
	twoListeners.Listeners = append(twoListeners.Listeners, &gatewaypb.Listener{Name: "other", Mode: gatewaypb.Listener_UDP})
	onTCP := tcpPort(bare, nil)
	onTCP.Listeners[0].UdpRoute = udpRouteTo("r", to("one.svc:53", 1))
	withHost := udpPort(bare, nil)
	withHost.Listeners[0].Hostname = "a.test"
	tcpOnUDP := udpPort(bare, nil)
	tcpOnUDP.Listeners[0].Mode = gatewaypb.Listener_TCP
	withTLS := udpPort(bare, udpRouteTo("r", to("one.svc:53", 1)))
	withTLS.Listeners[0].UdpRoute.Backends[0].Tls = &gatewaypb.BackendTLS{}
	for what, bad := range map[string]*gatewaypb.Snapshot{
		"two listeners":         snap("bad1", twoListeners),
		"udp_route on TCP":      snap("bad2", onTCP),
		"hostname":              snap("bad3", withHost),
		"TCP listener on UDP":   snap("bad4", tcpOnUDP),
		"UDP listener on HTTP":  snap("bad5", &gatewaypb.Port{Port: bare, Protocol: gatewaypb.Port_HTTP, Listeners: []*gatewaypb.Listener{{Name: "u", Mode: gatewaypb.Listener_UDP}}}),
		"TLS to a UDP backend":  snap("bad6", withTLS),
		"PROXY header over UDP": snap("bad7", &gatewaypb.Port{Port: bare, Protocol: gatewaypb.Port_UDP, ProxyProtocol: true, Listeners: []*gatewaypb.Listener{{Name: "u", Mode: gatewaypb.Listener_UDP}}}),
	} {
		if err := g.Apply(bad); err == nil {
			t.Errorf("%s: applied, want refused", what)
		}
	}
	if got := udpExchange(t, udpClient(t, routed), "still", 5*time.Second); got != "zero still" {
		t.Errorf("after the refused snapshots: %q", got)
	}
}

// A session idle for UDPIdleTimeout ends: the client's next datagram
// starts a new one (a new upstream socket), and the port holds no session
// meanwhile. Beyond MaxConnections sessions a new client's datagrams are
// dropped until one ends. udp_sessions_open and udp_max_sessions show
// where a port stands.
func TestUDPSessions(t *testing.T) {
	e := startUDPEcho(t, "e")
	p := freeUDPPort(t)
	const idle = 500 * time.Millisecond
	g := startUDPGateway(t, dsts(t, map[string][]string{"e.svc:53": {e.addr}}), idle, 2, snap("v1", udpPort(p, udpRouteTo("r", to("e.svc:53", 1)))))

	a, b, c := udpClient(t, p), udpClient(t, p), udpClient(t, p)
	for i, cl := range []*net.UDPConn{a, b} {
		if got := udpExchange(t, cl, "hi", 5*time.Second); got != "e hi" {
			t.Fatalf("client %d: %q", i, got)
		}
	}
	upA := udpUpstream(g, p, a)
	if upA == nil {
		t.Fatal("client a has no session socket after its exchange")
	}
	port := map[string]string{"port": itoa(p)}
	if v, _ := gauge(t, g, "udp_sessions_open", port); v != 2 {
		t.Errorf("udp_sessions_open = %v, want 2", v)
	}
	if v, _ := gauge(t, g, "udp_max_sessions", port); v != 2 {
		t.Errorf("udp_max_sessions = %v, want 2", v)
	}
	if got := udpExchange(t, c, "third", 150*time.Millisecond); got != "" {
		t.Errorf("a third session beyond MaxConnections 2: answered %q, want dropped", got)
	}
	if v, _ := gauge(t, g, "udp_datagrams_dropped_total", map[string]string{"port": itoa(p), "reason": "max_sessions"}); v != 1 {
		t.Errorf("udp_datagrams_dropped_total{max_sessions} = %v, want 1", v)
	}
	// Bounded: idle is 500ms; a session ends within a read deadline of it.
	deadline := time.Now().Add(5 * time.Second)
	for g.udpSessions(p) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("sessions still open after 5s idle: %d", g.udpSessions(p))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := len(e.sources()); got != 2 {
		t.Fatalf("backend saw %d sources, want 2", got)
	}
	if got := udpExchange(t, a, "back", 5*time.Second); got != "e back" {
		t.Fatalf("after expiry: %q", got)
	}
	if got := udpExchange(t, c, "third", 5*time.Second); got != "e third" {
		t.Errorf("the third client once sessions ended: %q", got)
	}
	// The expired client's new session has a socket of its own: another
	// socket object (its address may be the old one's, which the kernel
	// may give out again once closed, so the backend's count of sources
	// cannot tell).
	if up := udpUpstream(g, p, a); up == nil || up == upA {
		t.Errorf("after expiry, client a's session socket is %p, the expired one was %p: want a new one", up, upA)
	}
}

// udpUpstream is the endpoint socket of port n's session for client cl,
// nil without one.
func udpUpstream(g *Gateway, n uint32, cl *net.UDPConn) *net.UDPConn {
	from := cl.LocalAddr().(*net.UDPAddr).AddrPort()
	g.mu.Lock()
	us := g.udp[n]
	g.mu.Unlock()
	us.mu.Lock()
	defer us.mu.Unlock()
	for k, ss := range us.sessions {
		if k.client.Addr().Unmap() == from.Addr().Unmap() && k.client.Port() == from.Port() {
			ss.mu.Lock()
			defer ss.mu.Unlock()
			return ss.up
		}
	}
	return nil
}

// A port number that changes between TCP and UDP is closed and opened
// anew as the other; removed, a UDP port's socket closes (a new socket
// can bind it).
func TestUDPPortLifecycle(t *testing.T) {
	ue, te := startUDPEcho(t, "udp"), startTCPEcho(t, "tcp", nil)
	p := freeUDPPort(t)
	res := dsts(t, map[string][]string{"u.svc:53": {ue.addr}, "t.svc:3000": {te.addr}})
	g := startUDPGateway(t, res, time.Minute, 0, snap("v1", tcpPort(p, tcpRouteTo("t", to("t.svc:3000", 1)))))
	addr := "127.0.0.1:" + itoa(p)
	if got, err := tcpExchange(addr, "x"); err != nil || got != "tcp x" {
		t.Fatalf("TCP: %q, %v", got, err)
	}

	if err := g.Apply(snap("v2", udpPort(p, udpRouteTo("u", to("u.svc:53", 1))))); err != nil {
		t.Fatal(err)
	}
	if got := udpExchange(t, udpClient(t, p), "y", 5*time.Second); got != "udp y" {
		t.Errorf("UDP after the switch: %q", got)
	}
	waitTCPClosed(t, addr, "after the switch to UDP")

	if err := g.Apply(snap("v3", tcpPort(p, tcpRouteTo("t", to("t.svc:3000", 1))))); err != nil {
		t.Fatal(err)
	}
	if got, err := tcpExchange(addr, "z"); err != nil || got != "tcp z" {
		t.Errorf("TCP after switching back: %q, %v", got, err)
	}
	if _, ok := g.Ports()[p].(*net.TCPAddr); !ok {
		t.Errorf("Ports()[%d] = %v, want the TCP address", p, g.Ports()[p])
	}
	if got := udpExchange(t, udpClient(t, p), "gone", 300*time.Millisecond); got != "" {
		t.Errorf("UDP after switching back to TCP: answered %q", got)
	}

	if err := g.Apply(snap("v4", udpPort(p, udpRouteTo("u", to("u.svc:53", 1))))); err != nil {
		t.Fatal(err)
	}
	if err := g.Apply(snap("v5")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(p)})
		if err == nil {
			uc.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the removed UDP port's socket is still bound: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A port number may be open over TCP and UDP at once (DNS: 53 over both),
// each served by its own route, and either removed without the other; a
// snapshot with two UDP ports (or two TCP ports) of one number is
// refused.
func TestTCPAndUDPShareAPortNumber(t *testing.T) {
	ue, te := startUDPEcho(t, "udp"), startTCPEcho(t, "tcp", nil)
	p := freeUDPPort(t)
	res := dsts(t, map[string][]string{"u.svc:53": {ue.addr}, "t.svc:3000": {te.addr}})
	tcp := func() *gatewaypb.Port { return tcpPort(p, tcpRouteTo("t", to("t.svc:3000", 1))) }
	udp := func() *gatewaypb.Port { return udpPort(p, udpRouteTo("u", to("u.svc:53", 1))) }
	g := startUDPGateway(t, res, time.Minute, 0, snap("v1", udp(), tcp()))
	addr := "127.0.0.1:" + itoa(p)
	if got, err := tcpExchange(addr, "x"); err != nil || got != "tcp x" {
		t.Fatalf("TCP: %q, %v", got, err)
	}
	if got := udpExchange(t, udpClient(t, p), "y", 5*time.Second); got != "udp y" {
		t.Fatalf("UDP: %q", got)
	}
	if g.Ports()[p] == nil || g.UDPPorts()[p] == nil {
		t.Fatalf("Ports() %v, UDPPorts() %v: want %d in both", g.Ports(), g.UDPPorts(), p)
	}
	d := g.Diagnostics()
	var got []string
	for _, pi := range d.Ports {
		got = append(got, fmt.Sprintf("%d/%s", pi.Port, pi.Protocol))
	}
	if want := []string{itoa(p) + "/TCP", itoa(p) + "/UDP"}; !slices.Equal(got, want) {
		t.Errorf("diagnostics ports %v, want %v", got, want)
	}

	for name, bad := range map[string]*gatewaypb.Snapshot{"two UDP": snap("bad1", udp(), udp()), "two TCP": snap("bad2", tcp(), tcp())} {
		if err := g.Apply(bad); err == nil || !strings.Contains(err.Error(), "a second port of that number and transport") {
			t.Errorf("%s ports of one number: %v, want refused", name, err)
		}
	}

	if err := g.Apply(snap("v2", tcp())); err != nil {
		t.Fatal(err)
	}
	if got, err := tcpExchange(addr, "z"); err != nil || got != "tcp z" {
		t.Errorf("TCP after UDP's removal: %q, %v", got, err)
	}
	if got := udpExchange(t, udpClient(t, p), "gone", 300*time.Millisecond); got != "" {
		t.Errorf("UDP after its removal: answered %q", got)
	}
	if err := g.Apply(snap("v3", udp())); err != nil {
		t.Fatal(err)
	}
	if got := udpExchange(t, udpClient(t, p), "back", 5*time.Second); got != "udp back" {
		t.Errorf("UDP after TCP's removal: %q", got)
	}
	waitTCPClosed(t, addr, "after its removal")
}

// waitTCPClosed waits (5 s at most) until a TCP port a snapshot removed
// stops serving: it drains in the background.
func waitTCPClosed(t *testing.T, addr, when string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := tcpExchange(addr, "x")
		if err != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("TCP still served %q %s", got, when)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Idle sessions hold no datagram buffer: 400 sessions waiting for their
// endpoint's next reply grow the heap by far less than the 25 MiB that
// a 64 KiB buffer each would take (a flood of new client addresses costs
// goroutines up to the session bound, not buffers).
func TestUDPIdleSessionsHoldNoBuffer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the poller-callback relay is unix's; other systems keep a buffer per session")
	}
	e := startUDPEcho(t, "e")
	p := freeUDPPort(t)
	g := startUDPGateway(t, dsts(t, map[string][]string{"e.svc:53": {e.addr}}), time.Minute, 0, snap("v1", udpPort(p, udpRouteTo("r", to("e.svc:53", 1)))))
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	const n = 400
	clients := make([]*net.UDPConn, n)
	for i := range clients {
		clients[i] = udpClient(t, p)
	}
	before := heap()
	for i, c := range clients {
		if got := udpExchange(t, c, "x", 5*time.Second); got != "e x" {
			t.Fatalf("client %d: %q", i, got)
		}
	}
	if s := g.udpSessions(p); s != n {
		t.Fatalf("open sessions %d, want %d", s, n)
	}
	if grew := int64(heap()) - int64(before); grew > 8<<20 {
		t.Errorf("%d idle sessions grew the heap by %d KiB, want under 8 MiB", n, grew>>10)
	}
}
