package outbound

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/outbound/connect"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// resolver is a discover.Static that counts Resolve calls and the watches
// still open.
type resolver struct {
	*discover.Static
	resolves atomic.Int64
	open     atomic.Int64
}

func newResolver(t *testing.T, dests ...discover.Destination) *resolver {
	t.Helper()
	s, err := discover.NewStatic(dests)
	if err != nil {
		t.Fatal(err)
	}
	return &resolver{Static: s}
}

func (r *resolver) Resolve(ctx context.Context, authority string) (discover.Watch, error) {
	r.resolves.Add(1)
	w, err := r.Static.Resolve(ctx, authority)
	if err != nil {
		return nil, err
	}
	r.open.Add(1)
	return &countedWatch{Watch: w, open: &r.open}, nil
}

type countedWatch struct {
	discover.Watch
	open *atomic.Int64
	once sync.Once
}

func (w *countedWatch) Close() {
	w.once.Do(func() { w.open.Add(-1) })
	w.Watch.Close()
}

// echoServer accepts on loopback and echoes; it reports how many
// connections it accepted.
func echoServer(t *testing.T) (addr string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int64)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String(), accepted
}

// refusedAddr is a loopback address nothing listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// echo writes msg on c and reads it back.
func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: %q, %v; want %q", buf, err, msg)
	}
}

func dest(authority string, eps ...discover.Endpoint) discover.Destination {
	return discover.Destination{Authority: authority, Endpoints: eps}
}

func TestGetCachesAnAuthority(t *testing.T) {
	addr, _ := echoServer(t)
	r := newResolver(t, dest("web.ns.svc.cluster.local:80", discover.Endpoint{Addr: addr}))
	c := New(Options{Resolver: r})
	defer c.Close()
	ctx := context.Background()

	d1, err := c.Get(ctx, "web.ns.svc.cluster.local:80")
	if err != nil {
		t.Fatal(err)
	}
	d2, err := c.Get(ctx, "web.ns.svc.cluster.local:80")
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Error("a second Get returned another Dest: the cache missed")
	}
	if n := r.resolves.Load(); n != 1 {
		t.Errorf("%d Resolve calls for one authority, want 1", n)
	}
	if d1.Authority() != "web.ns.svc.cluster.local:80" || d1.Target().Authority != d1.Authority() {
		t.Errorf("Authority() = %q, Target().Authority = %q", d1.Authority(), d1.Target().Authority)
	}
	if d1.Target().Balancer.Len() != 1 {
		t.Errorf("%d endpoints, want 1", d1.Target().Balancer.Len())
	}

	// An unknown authority is not found, and that answer is kept for
	// NotFoundTTL (TestNotFoundKept): asked again at once, it is not
	// resolved again.
	for i := 0; i < 2; i++ {
		if _, err := c.Get(ctx, "nope.ns.svc.cluster.local:80"); !errors.Is(err, discover.ErrNotFound) {
			t.Fatalf("Get(unknown) = %v, want ErrNotFound", err)
		}
	}
	if n := r.resolves.Load(); n != 2 {
		t.Errorf("%d Resolve calls, want 2 (the unknown authority once)", n)
	}
}

// silentResolver knows every authority and never sends an endpoint set.
type silentResolver struct{}

func (silentResolver) Resolve(context.Context, string) (discover.Watch, error) {
	return silentWatch(make(chan []discover.Endpoint)), nil
}
func (silentResolver) LookupAddr(netip.AddrPort) (string, bool) { return "", false }

type silentWatch chan []discover.Endpoint

func (w silentWatch) Updates() <-chan []discover.Endpoint { return w }
func (w silentWatch) Close()                              { close(w) }

// TestGetGivesUp: a caller waiting for a destination's first endpoint set
// gets its context's error when that ends first.
func TestGetGivesUp(t *testing.T) {
	c := New(Options{Resolver: silentResolver{}})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if d, err := c.Get(ctx, "quiet:80"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get = %v, %v; want the context's deadline", d, err)
	}
}

// TestGetConcurrent resolves an authority once however many ask at once.
func TestGetConcurrent(t *testing.T) {
	addr, _ := echoServer(t)
	r := newResolver(t, dest("web:80", discover.Endpoint{Addr: addr}))
	c := New(Options{Resolver: r})
	defer c.Close()
	const n = 32
	got := make([]*Dest, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := c.Get(context.Background(), "web:80")
			if err != nil {
				t.Error(err)
			}
			got[i] = d
		}()
	}
	wg.Wait()
	for _, d := range got {
		if d != got[0] {
			t.Fatal("concurrent Gets returned different Dests")
		}
	}
	if n := r.resolves.Load(); n != 1 {
		t.Errorf("%d Resolve calls, want 1", n)
	}
}

func TestEvictIdle(t *testing.T) {
	addr, _ := echoServer(t)
	r := newResolver(t, dest("web:80", discover.Endpoint{Addr: addr}))
	c := New(Options{Resolver: r, IdleTTL: time.Hour})
	defer c.Close()
	ctx := context.Background()
	d1, err := c.Get(ctx, "web:80")
	if err != nil {
		t.Fatal(err)
	}
	p1 := c.Passthrough(addr)

	c.evict(time.Now().Add(-time.Minute)) // both used since: kept
	if d, _ := c.Get(ctx, "web:80"); d != d1 || c.Passthrough(addr) != p1 {
		t.Fatal("a destination in use was evicted")
	}
	if n := r.open.Load(); n != 1 {
		t.Fatalf("%d watches open, want 1", n)
	}

	c.evict(time.Now().Add(time.Second)) // unused since a second from now: dropped
	if n := r.open.Load(); n != 0 {
		t.Errorf("%d watches open after eviction, want 0", n)
	}
	d2, err := c.Get(ctx, "web:80")
	if err != nil {
		t.Fatal(err)
	}
	if d2 == d1 || c.Passthrough(addr) == p1 {
		t.Error("an evicted destination was still cached")
	}
	if n := r.resolves.Load(); n != 2 {
		t.Errorf("%d Resolve calls, want 2 (again after eviction)", n)
	}
}

// TestEvictIdleRuns runs the eviction loop itself with a short TTL.
func TestEvictIdleRuns(t *testing.T) {
	addr, _ := echoServer(t)
	r := newResolver(t, dest("web:80", discover.Endpoint{Addr: addr}))
	c := New(Options{Resolver: r, IdleTTL: 20 * time.Millisecond})
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.EvictIdle(ctx) }()
	defer func() { cancel(); <-done }()
	if _, err := c.Get(ctx, "web:80"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.open.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("an idle destination was not evicted within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPassthroughAndResolveAddr(t *testing.T) {
	addr, accepted := echoServer(t)
	vip := netip.MustParseAddrPort("10.96.0.10:80")
	r := newResolver(t, discover.Destination{Authority: "web:80", Addresses: []string{vip.String()},
		Endpoints: []discover.Endpoint{{Addr: addr}}})
	c := New(Options{Resolver: r})
	defer c.Close()
	ctx := context.Background()

	d, err := c.ResolveAddr(ctx, vip)
	if err != nil || d.Authority() != "web:80" {
		t.Fatalf("ResolveAddr(service address) = %v, %v; want web:80", d, err)
	}
	outside := netip.MustParseAddrPort(addr)
	p, err := c.ResolveAddr(ctx, outside)
	if err != nil || p.Authority() != addr {
		t.Fatalf("ResolveAddr(an address no service owns) = %v, %v; want the passthrough %s", p, err, addr)
	}
	if p != c.Passthrough(addr) {
		t.Error("Passthrough(addr) is not the cached passthrough of ResolveAddr")
	}
	conn, err := p.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echo(t, conn, "hello")
	if accepted.Load() != 1 {
		t.Errorf("%d connections accepted, want 1", accepted.Load())
	}
	if tls, id := p.TLS(addr); tls != metrics.TLSNoLocalIdentity || id != "" {
		t.Errorf("passthrough TLS = %q, %q; want no_local_identity", tls, id)
	}
}

func TestOpaqueAddr(t *testing.T) {
	addr, _ := echoServer(t)
	opaqueVIP := netip.MustParseAddrPort("10.96.0.11:3306")
	mixedVIP := netip.MustParseAddrPort("10.96.0.12:80")
	r := newResolver(t,
		discover.Destination{Authority: "db:3306", Addresses: []string{opaqueVIP.String()},
			Endpoints: []discover.Endpoint{{Addr: addr, Protocol: discover.HintOpaque}}},
		discover.Destination{Authority: "web:80", Addresses: []string{mixedVIP.String()},
			Endpoints: []discover.Endpoint{{Addr: addr, Protocol: discover.HintOpaque}, {Addr: refusedAddr(t)}}},
	)
	c := New(Options{Resolver: r})
	defer c.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		orig netip.AddrPort
		want bool
	}{
		{opaqueVIP, true},
		{mixedVIP, false}, // not every endpoint is opaque
		{netip.MustParseAddrPort(addr), false},
		{netip.AddrPort{}, false},
	} {
		if got := c.OpaqueAddr(ctx, tc.orig); got != tc.want {
			t.Errorf("OpaqueAddr(%v) = %v, want %v", tc.orig, got, tc.want)
		}
	}
}

// TestDialMovesOn: a refused connect puts its endpoint in backoff and
// the stream goes to another endpoint.
func TestDialMovesOn(t *testing.T) {
	live, accepted := echoServer(t)
	dead := refusedAddr(t)
	r := newResolver(t, dest("svc:80", discover.Endpoint{Addr: dead}, discover.Endpoint{Addr: live}))
	c := New(Options{Resolver: r, Balancer: balance.RoundRobin})
	defer c.Close()
	d, err := c.Get(context.Background(), "svc:80")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		conn, err := d.Dial(context.Background())
		if err != nil {
			t.Fatalf("Dial #%d: %v", i, err)
		}
		echo(t, conn, "x")
		conn.Close()
	}
	if n := accepted.Load(); n != 4 {
		t.Errorf("the live endpoint accepted %d streams, want 4", n)
	}
	for _, ep := range d.Target().Balancer.Endpoints() {
		if inBackoff := ep.RetryAt().After(time.Now()); inBackoff != (ep.Addr() == dead) {
			t.Errorf("endpoint %s in backoff: %v", ep.Addr(), inBackoff)
		}
	}
}

// TestDialExhausted: the reasons a stream gets no endpoint.
func TestDialExhausted(t *testing.T) {
	for _, tc := range []struct {
		name       string
		endpoints  int    // all refusing
		wantReason string // "": the connect failure itself
	}{
		{"no endpoints", 0, "no_endpoints"},
		{"the only endpoint refuses, then is in backoff", 1, "unavailable"},
		{"every try refuses", connect.MaxAttempts + 1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var eps []discover.Endpoint
			for range tc.endpoints {
				eps = append(eps, discover.Endpoint{Addr: refusedAddr(t)})
			}
			c := New(Options{Resolver: newResolver(t, dest("svc:80", eps...))})
			defer c.Close()
			d, err := c.Get(context.Background(), "svc:80")
			if err != nil {
				t.Fatal(err)
			}
			conn, err := d.Dial(context.Background())
			if err == nil {
				conn.Close()
				t.Fatal("Dial succeeded")
			}
			var ue *connect.UnavailableError
			if tc.wantReason != "" {
				if !errors.As(err, &ue) || ue.Reason != tc.wantReason {
					t.Fatalf("Dial = %v, want an UnavailableError %q", err, tc.wantReason)
				}
				return
			}
			var de *connect.DialError
			if errors.As(err, &ue) || !errors.As(err, &de) {
				t.Fatalf("Dial = %v (%T), want the last DialError", err, err)
			}
			inBackoff := 0
			for _, ep := range d.Target().Balancer.Endpoints() {
				if ep.RetryAt().After(time.Now()) {
					inBackoff++
				}
			}
			if inBackoff != connect.MaxAttempts {
				t.Errorf("%d endpoints in backoff, want %d (one per try)", inBackoff, connect.MaxAttempts)
			}
		})
	}
}

// meshedServer serves mTLS with id on loopback: it echoes, and reports the
// client's SPIFFE ID and the ALPN of each handshake that succeeded.
type meshedServer struct {
	addr  string
	mu    sync.Mutex
	peers []string
	alpns []string
}

func startMeshed(t *testing.T, id *tlsid.Identity) *meshedServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &meshedServer{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := tls.Server(c, id.ServerConfig())
				tc.SetDeadline(time.Now().Add(5 * time.Second))
				if tc.Handshake() != nil {
					return
				}
				tc.SetDeadline(time.Time{})
				cs := tc.ConnectionState()
				peer, _ := tlsid.PeerID(cs)
				s.mu.Lock()
				s.peers = append(s.peers, peer.String())
				s.alpns = append(s.alpns, cs.NegotiatedProtocol)
				s.mu.Unlock()
				io.Copy(tc, tc)
			}()
		}
	}()
	return s
}

// failMarker records the connections the cache marks failed.
type failMarker struct {
	net.Conn
	failed *atomic.Int64
}

func (c failMarker) MarkFailed() { c.failed.Add(1) }

func TestMTLSDial(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	client := svc.Identity(t, "ns", "client")
	server := svc.Identity(t, "ns", "server")
	srv := startMeshed(t, server)
	serverID := tlsidtest.ID("ns", "server").String()
	wrongID := tlsidtest.ID("ns", "someone-else").String()
	r := newResolver(t,
		dest("right:80", discover.Endpoint{Addr: srv.addr, Identity: serverID}),
		dest("wrong:80", discover.Endpoint{Addr: srv.addr, Identity: wrongID}),
	)
	var failed atomic.Int64
	type metered struct{ addr, tls, serverID string }
	var mu sync.Mutex
	var seen []metered
	c := New(Options{Resolver: r, Identity: client, Meter: func(conn net.Conn, addr, tls, serverID string) net.Conn {
		mu.Lock()
		seen = append(seen, metered{addr, tls, serverID})
		mu.Unlock()
		return failMarker{Conn: conn, failed: &failed}
	}})
	defer c.Close()
	ctx := context.Background()

	d, err := c.Get(ctx, "right:80")
	if err != nil {
		t.Fatal(err)
	}
	if tls, id := d.TLS(srv.addr); tls != metrics.TLSTrue || id != serverID {
		t.Errorf("TLS = %q, %q; want true, %s", tls, id, serverID)
	}
	conn, err := d.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	echo(t, conn, "secret")
	conn.Close()
	if _, ok := conn.(*tls.Conn); !ok {
		t.Errorf("Dial to a meshed endpoint returned %T, want *tls.Conn", conn)
	}
	if n := c.Handshakes(); n != 1 {
		t.Errorf("Handshakes() = %d, want 1", n)
	}
	srv.mu.Lock()
	if len(srv.peers) != 1 || srv.peers[0] != tlsidtest.ID("ns", "client").String() || srv.alpns[0] != tlsid.ALPNOpaque {
		t.Errorf("server saw peers %q with ALPN %q, want the client's ID once, over %s", srv.peers, srv.alpns, tlsid.ALPNOpaque)
	}
	srv.mu.Unlock()
	mu.Lock()
	if len(seen) != 1 || seen[0] != (metered{srv.addr, metrics.TLSTrue, serverID}) {
		t.Errorf("metered %+v, want one connection labelled true, %s", seen, serverID)
	}
	mu.Unlock()

	// The same server announced with another identity: its certificate
	// does not prove it, so the handshake fails and the stream goes nowhere.
	w, err := c.Get(ctx, "wrong:80")
	if err != nil {
		t.Fatal(err)
	}
	if conn, err := w.Dial(ctx); err == nil {
		conn.Close()
		t.Fatal("Dial to an endpoint that cannot prove its announced identity succeeded")
	} else if de := (*connect.DialError)(nil); !errors.As(err, &de) {
		t.Errorf("Dial = %v, want a connect failure", err)
	}
	if n := c.Handshakes(); n != 1 {
		t.Errorf("Handshakes() = %d after a refused identity, want still 1", n)
	}
	if n := failed.Load(); n != 1 {
		t.Errorf("%d connections marked failed, want 1 (the refused handshake)", n)
	}
	srv.mu.Lock()
	if len(srv.peers) != 1 {
		t.Errorf("the server completed %d handshakes, want 1", len(srv.peers))
	}
	srv.mu.Unlock()
}

// TestLocalEndpointPlaintext: an endpoint that is this pod is dialled in
// plaintext, labelled loopback, even when it is announced with an identity.
func TestLocalEndpointPlaintext(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	client := svc.Identity(t, "ns", "client")
	addr, accepted := echoServer(t)
	r := newResolver(t, dest("self:80", discover.Endpoint{Addr: addr, Identity: tlsidtest.ID("ns", "client").String()}))
	c := New(Options{Resolver: r, Identity: client, Local: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
	defer c.Close()
	d, err := c.Get(context.Background(), "self:80")
	if err != nil {
		t.Fatal(err)
	}
	if !c.IsLocal(addr) {
		t.Errorf("IsLocal(%s) = false", addr)
	}
	if tls, id := d.TLS(addr); tls != metrics.TLSLoopback || id != "" {
		t.Errorf("TLS = %q, %q; want loopback", tls, id)
	}
	conn, err := d.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	echo(t, conn, "plain")
	if accepted.Load() != 1 || c.Handshakes() != 0 {
		t.Errorf("accepted %d, handshakes %d; want 1 plaintext connection", accepted.Load(), c.Handshakes())
	}
}

// TestTLSLabels: the tls label of each kind of endpoint, with and without
// an identity of our own.
func TestTLSLabels(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	id := svc.Identity(t, "ns", "client")
	meshed, plain := "127.0.0.2:80", "127.0.0.3:80"
	serverID := tlsidtest.ID("ns", "server").String()
	for _, tc := range []struct {
		identity        *tlsid.Identity
		addr            string
		wantTLS, wantID string
	}{
		{nil, meshed, metrics.TLSNoLocalIdentity, ""},
		{nil, plain, metrics.TLSNoLocalIdentity, ""},
		{id, meshed, metrics.TLSTrue, serverID},
		{id, plain, metrics.TLSNotProvidedByServiceDiscovery, ""},
	} {
		r := newResolver(t, dest("svc:80", discover.Endpoint{Addr: meshed, Identity: serverID}, discover.Endpoint{Addr: plain}))
		c := New(Options{Resolver: r, Identity: tc.identity})
		d, err := c.Get(context.Background(), "svc:80")
		if err != nil {
			t.Fatal(err)
		}
		if tls, sid := d.TLS(tc.addr); tls != tc.wantTLS || sid != tc.wantID {
			t.Errorf("identity %v, %s: TLS = %q, %q; want %q, %q", tc.identity != nil, tc.addr, tls, sid, tc.wantTLS, tc.wantID)
		}
		c.Close()
	}
}
