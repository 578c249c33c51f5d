// Package sidecar assembles a sidecar proxy: the outbound and inbound
// listeners, protocol detection, HTTP and opaque forwarding, and the admin
// server. It is used by cmd/meridian-proxy and, in-process, by `meridian demo`.
package sidecar

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/proxy/admin"
	"github.com/meridian-mesh/meridian/proxy/authz"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/detect"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h1server"
	"github.com/meridian-mesh/meridian/proxy/listen"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/origdst"
	"github.com/meridian-mesh/meridian/proxy/outbound"
	"github.com/meridian-mesh/meridian/proxy/outbound/connect"
	"github.com/meridian-mesh/meridian/proxy/tcpproxy"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
)

// Config is what a sidecar needs. Zero values take the documented defaults.
type Config struct {
	// The listeners: comma-separated addresses, one socket each (see
	// proxy/listen: IPv6 ones are skipped in a pod without IPv6).
	OutboundAddr string // default 127.0.0.1:4140,[::1]:4140
	InboundAddr  string // default 0.0.0.0:4143,[::]:4143
	AdminAddr    string // default 0.0.0.0:4191,[::]:4191
	// InboundForward is the application's address. Empty: each inbound
	// connection goes to its original destination (iptables redirect).
	InboundForward string
	// Authz is who may reach the application: the default inbound policy,
	// the cluster's networks, the probes always allowed. Zero: everyone.
	Authz authz.Config
	// MaxInFlight bounds the HTTP requests and gRPC streams each direction
	// handles at once; beyond it requests are refused at once (503, gRPC
	// UNAVAILABLE) rather than queued without bound. Default
	// DefaultMaxInFlight; negative: no bound.
	MaxInFlight int
	// H2StreamWindow and H2ConnectionWindow bound what an HTTP/2 peer
	// (client or endpoint) may send the proxy before it is read: per
	// stream and per connection, both directions. Memory held for slow
	// readers is bounded by them, throughput of one stream by
	// H2StreamWindow/RTT. Defaults httpproxy.DefaultH2StreamWindow (256
	// KiB) and DefaultH2ConnectionWindow (4 MiB).
	H2StreamWindow, H2ConnectionWindow int
	// OpaquePorts are destination ports whose traffic is never detected,
	// only copied (server-speaks-first protocols such as MySQL or SMTP).
	OpaquePorts []uint16
	// Namespace is the pod's namespace when known (Kubernetes): outbound
	// short names ("web:80") are looked up as web.<namespace>.svc, as the
	// pod's resolver would (outbound.Options.Namespace).
	Namespace      string
	Resolver       discover.Resolver
	Balancer       balance.Strategy
	DetectTimeout  time.Duration // default 1s
	DrainTimeout   time.Duration // default 30s
	ConnectTimeout time.Duration // default 1s
	Log            *slog.Logger
	// OrigDst recovers a redirected connection's destination; tests replace it.
	OrigDst func(net.Conn) (netip.AddrPort, error)
	// Identity, when set, is the proxy's workload identity: connections to
	// meshed endpoints are mutual TLS, the inbound listener terminates mTLS
	// from meshed peers (and still takes plaintext from others), and the
	// proxy is not ready before it holds a certificate. The caller runs it.
	Identity *tlsid.Identity
	// LocalIPs are this pod's own addresses; nil: the host's non-loopback
	// interface addresses at start. An endpoint at one of them is this pod:
	// the proxy's connection to it goes over lo straight to the application
	// (meridian-init never redirects lo), with no inbound proxy to meet
	// mTLS, so it is plaintext and labelled tls="loopback".
	LocalIPs []netip.Addr
	// HeaderTimeout bounds the time from accept to the end of an HTTP/1
	// request's headers, protocol detection included, on both sides: a
	// client that trickles its request line or headers is closed then,
	// as by net/http's ReadHeaderTimeout. Default 30s.
	HeaderTimeout time.Duration
	// OpaqueIdleTimeout closes an opaque stream over which no byte has
	// gone either way for this long. Default DefaultOpaqueIdleTimeout;
	// negative: never.
	OpaqueIdleTimeout time.Duration
	// MaxConnections bounds the connections each listener holds open
	// (outbound and inbound each); beyond it a new connection is accepted
	// and closed at once, and counted in tcp_connections_refused_total.
	// Default DefaultMaxConnections(); negative: no bound.
	MaxConnections int
	// AppProbeInterval is how often an application that refused an inbound
	// connection is probed (TCP connect) while the proxy reports not ready.
	// Default DefaultAppProbeInterval.
	AppProbeInterval time.Duration
	// EventLoop serves HTTP/1.1 requests on event loops where it can
	// (Linux; README.md, "Event loops"): EventLoops of them (0: one per
	// processor the runtime uses), each holding a processor of its own
	// for EventLoopHold after its last event (0: never) once it wakes for
	// events EventLoopHoldRate times a second (and while it wakes half as
	// often; 0: from its first event).
	EventLoop         bool
	EventLoops        int
	EventLoopHold     time.Duration
	EventLoopHoldRate int
	// EventLoopH2 serves HTTP/2 connections (h2c, and mTLS whose ALPN
	// settled h2) on the loops too: a stream routed with no more than
	// the loops' routing relayed there to an HTTP/2 endpoint connection
	// of the loop's, any other served by the side's handler on a
	// goroutine of its own (README.md, "Event loops").
	EventLoopH2 bool
}

// Proxy is a running sidecar.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics.Registry
	out     *side
	in      *side
	admin   *admin.Server
	ready   atomic.Bool
	id      string     // this instance, in HopHeader
	own     *ownAddrs  // the listeners' addresses: a target there is a loop
	app     *appHealth // the application behind the inbound side (apphealth.go)

	// mTLS handshakes accepted from meshed peers (the outbound ones are
	// counted by the outbound side's cache).
	mtlsIn atomic.Int64

	loops               loopGroup // Config.EventLoop's; nil without
	inboundForwardLoops bool      // InboundForward is one of the proxy's listeners
}

// MTLSHandshakes returns how many mTLS sessions with meshed peers the proxy
// has accepted (inbound) and originated (outbound).
func (p *Proxy) MTLSHandshakes() (inbound, outbound int64) {
	return p.mtlsIn.Load(), p.out.dests.Handshakes()
}

// side is one direction: a listener, its HTTP servers and its open TCP
// streams. HTTP connections are served on the goroutine that accepted
// them: HTTP/1 by h1, HTTP/2 by h2.
type side struct {
	direction string
	ln        net.Listener
	h1        *h1server.Server
	h2        *h2server.Server
	dests     *outbound.Cache
	accepting sync.WaitGroup // the accept loop
	tcp       sync.WaitGroup // accepted connections in detection or forwarded as opaque streams
	conns     sync.Map       // net.Conn → struct{}: opaque streams, closed at the drain deadline
	cut       atomic.Bool    // the drain deadline has passed: no opaque stream may start
	open      atomic.Int64   // accepted connections not yet closed
	maxConns  int64          // Config.MaxConnections; 0: no bound
	loop      loopServer     // its HTTP/1.1 on the event loops, nil without
	inFlight  atomic.Int64   // requests in flight, both paths (inflight's count)
}

// counted is an accepted connection counted in its side's open connections
// until it is closed.
type counted struct {
	net.Conn
	s    *side
	once sync.Once
}

func (c *counted) Close() error {
	c.once.Do(func() { c.s.open.Add(-1) })
	return c.Conn.Close()
}

func (c *counted) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// track registers an opaque stream's connection to be closed at the drain
// deadline. It reports false when that has passed already.
func (s *side) track(c net.Conn) bool {
	s.conns.Store(c, struct{}{})
	return !s.cut.Load()
}

// The default listeners: both families, as meridian-init redirects both.
const (
	DefaultOutboundAddr = "127.0.0.1:4140,[::1]:4140"
	DefaultInboundAddr  = "0.0.0.0:4143,[::]:4143"
	DefaultAdminAddr    = "0.0.0.0:4191,[::]:4191"
)

// DefaultMaxInFlight is Config.MaxInFlight's default: far above what one
// pod serves in normal times, low enough that a saturated proxy sheds load
// before its memory runs away.
const DefaultMaxInFlight = 10000

// DefaultOpaqueIdleTimeout is Config.OpaqueIdleTimeout's default: Envoy's
// tcp_proxy idle timeout, long enough for quiet database connections.
const DefaultOpaqueIdleTimeout = time.Hour

// DefaultMaxConnections is Config.MaxConnections' default: 20000 per
// listener, or a quarter of the process's file descriptor limit when that
// is lower (each connection costs two descriptors, the client's and the
// one to its destination, and the two listeners share the limit), so that
// the proxy refuses connections before accept fails for want of
// descriptors.
func DefaultMaxConnections() int {
	n := 20000
	if lim, ok := fdLimit(); ok && lim/4 < uint64(n) {
		n = max(int(lim/4), 1)
	}
	return n
}

// New binds every listener, so that ports are known and errors surface
// before Run.
func New(cfg Config) (*Proxy, error) {
	if cfg.OutboundAddr == "" {
		cfg.OutboundAddr = DefaultOutboundAddr
	}
	if cfg.InboundAddr == "" {
		cfg.InboundAddr = DefaultInboundAddr
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = DefaultAdminAddr
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.H2StreamWindow == 0 {
		cfg.H2StreamWindow = httpproxy.DefaultH2StreamWindow
	}
	if cfg.H2ConnectionWindow == 0 {
		cfg.H2ConnectionWindow = httpproxy.DefaultH2ConnectionWindow
	}
	if cfg.DetectTimeout == 0 {
		cfg.DetectTimeout = time.Second
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.HeaderTimeout == 0 {
		cfg.HeaderTimeout = 30 * time.Second
	}
	if cfg.OpaqueIdleTimeout == 0 {
		cfg.OpaqueIdleTimeout = DefaultOpaqueIdleTimeout
	}
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = DefaultMaxConnections()
	}
	if cfg.OrigDst == nil {
		cfg.OrigDst = origdst.Lookup
	}
	if cfg.Resolver == nil {
		cfg.Resolver, _ = discover.NewStatic(nil)
	}
	if cfg.AppProbeInterval <= 0 {
		cfg.AppProbeInterval = DefaultAppProbeInterval
	}
	p := &Proxy{cfg: cfg, log: cfg.Log, metrics: metrics.New(), id: newInstanceID()}
	p.app = newAppHealth(cfg.AppProbeInterval, func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: cfg.ConnectTimeout}
		return d.DialContext(ctx, "tcp", addr)
	}, p.log.Warn)
	p.app.onUp = func() { p.in.dests.EndBackoff() }
	var err error
	if p.out, err = p.newSide("outbound", cfg.OutboundAddr); err != nil {
		return nil, err
	}
	if p.in, err = p.newSide("inbound", cfg.InboundAddr); err != nil {
		p.out.ln.Close()
		return nil, err
	}
	p.out.h1.Handler = p.outboundHandler()
	p.in.h1.Handler = p.inboundHandler()
	p.out.h2.Handler, p.in.h2.Handler = p.out.h1.Handler, p.in.h1.Handler
	ready := func() bool { up, _ := p.app.state(); return p.ready.Load() && up }
	if cfg.Identity != nil {
		ready = func() bool { up, _ := p.app.state(); return p.ready.Load() && up && cfg.Identity.HasCert() }
	}
	p.admin, err = admin.Listen(cfg.AdminAddr, p.log, p.metrics.Handler(), ready)
	if err != nil {
		p.out.ln.Close()
		p.in.ln.Close()
		return nil, err
	}
	if cfg.Identity != nil {
		p.admin.Handle("GET /identity", tlsid.Handler(cfg.Identity))
		// identity_cert_refresh_count counts every certificate obtained, as
		// Linkerd's does; Renewals leaves out the first.
		obtained := func() int64 {
			if cfg.Identity.Expiry().IsZero() {
				return 0
			}
			return cfg.Identity.Renewals() + 1
		}
		p.metrics.Identity(cfg.Identity.Expiry, obtained, cfg.Identity.Failures)
	}
	// The admin port follows the inbound policy (probes stay open); meshed
	// scrapers may use mTLS to pass an authenticated one.
	var adminTLS *tls.Config
	if cfg.Identity != nil {
		adminTLS = cfg.Identity.ServerConfig()
	}
	p.admin.Protect(cfg.Authz, adminTLS, func(port uint16, clientID string) {
		t := metrics.TLSNotProvidedByRemote
		if cfg.Identity == nil {
			t = metrics.TLSNoLocalIdentity
		} else if clientID != "" {
			t = metrics.TLSTrue
		}
		p.metrics.AuthzDenied("http", cfg.Authz.Name(), port, t, clientID)
	})
	p.collectOwnAddrs()
	if err := p.startLoops(); err != nil {
		p.out.ln.Close()
		p.in.ln.Close()
		p.admin.Close()
		return nil, fmt.Errorf("event loop: %w", err)
	}
	return p, nil
}

func (p *Proxy) newSide(direction, addr string) (*side, error) {
	ln, err := listen.Listen(addr, p.log.With("listener", direction))
	if err != nil {
		return nil, fmt.Errorf("%s listener: %w", direction, err)
	}
	s := &side{direction: direction, ln: ln, maxConns: int64(max(p.cfg.MaxConnections, 0))}
	p.metrics.Listener(direction, s.open.Load, s.maxConns)
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: p.cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if direction == "inbound" {
			p.app.observe(addr, err) // a refusal: the application is down
		}
		return c, err
	}
	o := outbound.Options{
		Resolver:           p.cfg.Resolver,
		Balancer:           p.cfg.Balancer,
		Dial:               dial,
		Local:              localIPs(p.cfg.LocalIPs),
		H2StreamWindow:     p.cfg.H2StreamWindow,
		H2ConnectionWindow: p.cfg.H2ConnectionWindow,
		Namespace:          p.cfg.Namespace,
		OnEject: func(authority, addr, reason string) {
			p.metrics.Ejection(direction, authority, reason)
			p.log.Info("endpoint ejected after consecutive failures", "direction", direction, "authority", authority, "addr", addr, "reason", reason)
		},
		Meter: func(c net.Conn, addr, tls, serverID string) net.Conn {
			if direction == "inbound" {
				// To the application: the loopback hop, whoever the client was.
				tls, serverID = p.loopbackTLS(), ""
			}
			return p.metrics.Conn(c, metrics.ConnLabels{Direction: direction, Peer: metrics.PeerDst, Target: addr, TLS: tls, PeerID: serverID})
		},
	}
	if direction == "outbound" {
		o.Identity = p.cfg.Identity // inbound, the application is reached in plaintext
	}
	s.dests = outbound.New(o)
	p.metrics.EjectedEndpoints(direction, s.dests.Ejected)
	connContext := func(ctx context.Context, c net.Conn) context.Context { return p.connContext(ctx, direction, c) }
	errorLog := slog.NewLogLogger(p.log.Handler(), slog.LevelDebug)
	s.h1 = &h1server.Server{
		ReadHeaderTimeout: p.cfg.HeaderTimeout,
		IdleTimeout:       5 * time.Minute,
		ConnContext:       connContext,
		ErrorLog:          errorLog,
	}
	s.h2 = &h2server.Server{Config: h2server.Config{
		MaxConcurrentStreams: 1000, // gRPC clients multiplex everything on one connection
		// The protocol's default frame size, as grpc-go's. Go's default
		// (1MB) makes every Go client, the next proxy's transport
		// included, hold a scratch buffer of up to 512KB per stream
		// whose request body is open: 256 gRPC calls in flight cost
		// 128MB there.
		MaxReadFrameSize: 16 << 10,
		// What a client may send ahead of the application's reading
		// (request bodies), bounded per stream and per connection:
		// see httpproxy.DefaultH2StreamWindow.
		MaxReceiveBufferPerStream:     p.cfg.H2StreamWindow,
		MaxReceiveBufferPerConnection: p.cfg.H2ConnectionWindow,
		IdleTimeout:                   5 * time.Minute,
		ErrorLog:                      errorLog,
	}}
	return s, nil
}

// connContext is what the HTTP servers give a connection's requests: the
// peer and the accepted connection.
func (p *Proxy) connContext(ctx context.Context, direction string, c net.Conn) context.Context {
	if a, ok := c.(*accepted); ok {
		tls, clientID := p.acceptedTLS(direction, a)
		peer := httpproxy.Peer{TLS: tls, ClientID: clientID}
		if direction == "inbound" && a.peer == "" && len(p.cfg.Authz.Probes) > 0 {
			// The kubelet probes in plaintext: labelled as probes,
			// they do not read as an unmeshed client of the workload.
			peer.Probe = func(r *http.Request) bool {
				return p.cfg.Authz.IsProbe(p.inboundPort(a), r.URL.Path) // HTTP GETs, and gRPC probes' POSTs
			}
		}
		return httpproxy.WithPeer(context.WithValue(ctx, acceptedKey{}, a), peer)
	}
	return ctx
}

// Addrs returns the bound outbound, inbound and admin addresses.
func (p *Proxy) Addrs() (outbound, inbound, admin net.Addr) {
	return p.out.ln.Addr(), p.in.ln.Addr(), p.admin.Addr()
}

// AppReady reports whether the application behind the inbound side takes
// connections, as far as the proxy knows (it is assumed to until one is
// refused), and a channel closed at the next change. Local mode withdraws
// the workload's registration while it does not.
func (p *Proxy) AppReady() (ready bool, changed <-chan struct{}) { return p.app.state() }

// Metrics returns the proxy's registry (the demo and tests read it in-process).
func (p *Proxy) Metrics() *metrics.Registry { return p.metrics }

// Run serves until ctx ends, then drains: it stops accepting, lets requests
// in flight finish within DrainTimeout, and closes what is left.
func (p *Proxy) Run(ctx context.Context) error {
	bg, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, s := range []*side{p.out, p.in} {
		s.accepting.Add(1)
		go func() { defer s.accepting.Done(); p.accept(bg, s) }()
		go s.dests.EvictIdle(bg)
	}
	go p.admin.Serve()
	p.app.start(bg)
	p.ready.Store(true)
	p.log.Info("proxy ready", "outbound", listen.Addrs(p.out.ln), "inbound", listen.Addrs(p.in.ln), "admin", p.admin.Addrs())

	<-ctx.Done()
	p.ready.Store(false)
	p.log.Info("draining", "timeout", p.cfg.DrainTimeout)
	drainCtx, stop := context.WithTimeout(context.Background(), p.cfg.DrainTimeout)
	defer stop()
	for _, s := range []*side{p.out, p.in} {
		s.ln.Close()
	}
	// Every connection accepted from now on has been counted in s.tcp:
	// those still in protocol detection are drained too.
	for _, s := range []*side{p.out, p.in} {
		s.accepting.Wait()
		s.loopDrain()
	}
	var drained sync.WaitGroup
	for _, s := range []*side{p.out, p.in} {
		drained.Add(3)
		go func() { defer drained.Done(); s.h1.Shutdown(drainCtx) }()
		go func() { defer drained.Done(); s.h2.Shutdown(drainCtx) }()
		go func() {
			defer drained.Done()
			// HTTP connections are served on their accepting
			// goroutines, so s.tcp counts them too.
			done := make(chan struct{})
			go func() { s.tcp.Wait(); close(done) }()
			select {
			case <-done:
			case <-drainCtx.Done():
				s.cut.Store(true)
				s.conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
				s.loopCut()
				s.h1.Close()
				s.h2.Close()
				<-done // those in detection were closed too; mTLS handshakes are bounded
			}
		}()
	}
	drained.Wait()
	for _, s := range []*side{p.out, p.in} {
		s.h1.Close() // whatever outlived the deadline
		s.h2.Close()
		s.dests.Close()
	}
	p.closeLoops()
	cancel()
	p.admin.Close()
	p.log.Info("stopped")
	return nil
}

// accepted is a client connection with what the proxy learned at accept time.
type accepted struct {
	net.Conn
	origDst netip.AddrPort // invalid when not redirected
	// peer is the client proxy's SPIFFE ID when the connection is mTLS from
	// a meshed peer; empty otherwise.
	peer string
	// On the event loops (evloop_linux.go): the client for the policy and
	// origDst as a string, worked out once; the last Host routed and its
	// canonical authority.
	loopClient         authz.Client
	onLoops            bool // the loops have its socket: its address is loopClient's
	loopDst            string
	loopHost, loopAuth string
	// The header values the loops add to each request, made once (nobody
	// writes a header value in place): this proxy's id (HopHeader,
	// outbound) and peer (ClientIDHeader, inbound).
	loopHop, loopPeer []string
	// lineDeadline is when a request line must be complete: accept plus
	// HeaderTimeout (detection inside mTLS uses it too).
	lineDeadline time.Time
	// headerDeadline (Unix ns, 0: none) caps the first read deadline the
	// HTTP/1 server sets, its request header deadline, so that the header
	// timeout counts from accept and not from the end of detection.
	headerDeadline atomic.Int64
}

func (a *accepted) SetReadDeadline(t time.Time) error {
	if hd := a.headerDeadline.Swap(0); hd != 0 && !t.IsZero() {
		if d := time.Unix(0, hd); d.Before(t) {
			t = d
		}
	}
	return a.Conn.SetReadDeadline(t)
}

// CloseWrite half-closes the client connection. Embedding the net.Conn
// interface hides the method of the connection underneath, and without it
// an opaque stream would answer a server's half-close by closing the client
// connection outright, losing whatever the client still had to send.
func (a *accepted) CloseWrite() error {
	if cw, ok := a.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return a.Conn.Close()
}

type acceptedKey struct{}

func (p *Proxy) accept(ctx context.Context, s *side) {
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			p.log.Warn("accept", "direction", s.direction, "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if s.maxConns > 0 && s.open.Load() >= s.maxConns {
			// Closed at once rather than left in the backlog: the client
			// learns now, and the proxy keeps descriptors for the
			// connections it serves.
			p.metrics.ConnRefused(s.direction, "max_connections") // before the client can see the close
			c.Close()
			continue
		}
		s.open.Add(1)
		at := time.Now()
		s.tcp.Add(1)
		go func() { defer s.tcp.Done(); p.handle(ctx, s, c, at) }()
	}
}

// acceptedTLS is the tls label of an accepted connection and the client's
// SPIFFE ID: mTLS from a meshed peer, else the reason there is none.
func (p *Proxy) acceptedTLS(direction string, a *accepted) (tls, clientID string) {
	switch {
	case p.cfg.Identity == nil:
		return metrics.TLSNoLocalIdentity, ""
	case a.peer != "":
		return metrics.TLSTrue, a.peer
	case direction == "outbound":
		return metrics.TLSLoopback, "" // the application's own connection
	}
	return metrics.TLSNotProvidedByRemote, ""
}

// loopbackTLS is the tls label of the hop between the application and its
// proxy.
func (p *Proxy) loopbackTLS() string {
	if p.cfg.Identity == nil {
		return metrics.TLSNoLocalIdentity
	}
	return metrics.TLSLoopback
}

func (p *Proxy) handle(ctx context.Context, s *side, raw net.Conn, acceptedAt time.Time) {
	orig, _ := p.cfg.OrigDst(raw)
	c := &counted{Conn: raw, s: s}
	a := &accepted{origDst: orig}
	meshedIn := s.direction == "inbound" && p.cfg.Identity != nil
	tls, _ := p.acceptedTLS(s.direction, a)
	l := metrics.ConnLabels{Direction: s.direction, Peer: metrics.PeerSrc, TLS: tls}
	var mc *metrics.Conn
	if meshedIn {
		// Whether the client is a meshed peer, and who, is known after
		// detection and the mTLS handshake: the connection is counted then
		// (as not_provided_by_remote if it ends before).
		mc = p.metrics.PendingConn(c, l)
	} else {
		mc = p.metrics.Conn(c, l)
	}
	a.Conn = mc
	// With an identity, inbound connections to opaque ports are still
	// peeked at: meshed peers send them as mTLS.
	if p.opaquePort(s, orig) && !meshedIn {
		p.serveOpaque(ctx, s, a)
		return
	}
	// A destination announced as opaque is never detected: a
	// server-speaks-first protocol gets its greeting through at once.
	if s.direction == "outbound" && s.dests.OpaqueAddr(ctx, orig) {
		p.serveOpaque(ctx, s, a)
		return
	}
	headerDeadline := acceptedAt.Add(p.cfg.HeaderTimeout)
	a.lineDeadline = headerDeadline
	// A client in detection at the drain deadline is closed as opaque
	// streams are: a trickling one could hold Run until its header deadline.
	if !s.track(mc) {
		mc.Close()
		return
	}
	proto, dc, err := detect.DetectUntil(mc, p.cfg.DetectTimeout, headerDeadline)
	s.conns.Delete(net.Conn(mc))
	if err != nil {
		// ErrIncomplete included: a request line trickled past the
		// header timeout is closed, as net/http would.
		mc.Close()
		return
	}
	a.Conn = dc
	if meshedIn && proto == detect.TLS {
		proto, err = p.terminateMTLS(ctx, a)
	}
	if meshedIn {
		mc.Identify(p.acceptedTLS(s.direction, a))
	}
	if err != nil {
		p.log.Debug("inbound mTLS failed", "err", err, "client", c.RemoteAddr())
		if a.peer == "" {
			mc.MarkFailed() // the handshake itself failed
		}
		a.Close()
		return
	}
	if meshedIn && p.opaquePort(s, orig) && a.peer == "" {
		p.serveOpaque(ctx, s, a)
		return
	}
	switch proto {
	case detect.HTTP1, detect.HTTP2:
		// Served here, on the accepting goroutine (counted in s.tcp).
		p.serveHTTP(s, a, proto)
	default:
		if dc, ok := a.Conn.(*detect.Conn); ok && dc.Silent() {
			p.serveSilent(ctx, s, a, dc)
			return
		}
		p.serveOpaque(ctx, s, a)
	}
}

func (p *Proxy) opaquePort(s *side, orig netip.AddrPort) bool {
	port := orig.Port()
	if fp, ok := p.forwardPort(); ok && s.direction == "inbound" {
		port = fp
	}
	for _, op := range p.cfg.OpaquePorts {
		if op == port && port != 0 {
			return true
		}
	}
	return false
}

// forwardPort is InboundForward's port, when it is set.
func (p *Proxy) forwardPort() (uint16, bool) {
	if p.cfg.InboundForward == "" {
		return 0, false
	}
	_, ps, err := net.SplitHostPort(p.cfg.InboundForward)
	n, _ := strconv.Atoi(ps)
	return uint16(n), err == nil
}

// inboundPort is the application port an inbound connection is for.
func (p *Proxy) inboundPort(a *accepted) uint16 {
	if port, ok := p.forwardPort(); ok {
		return port
	}
	return a.origDst.Port()
}

// client is who opened an inbound connection, for the policy.
func client(a *accepted) authz.Client {
	if a.onLoops {
		return a.loopClient // worked out before the loops took the socket
	}
	c := authz.Client{ID: a.peer}
	if ap, err := netip.ParseAddrPort(a.RemoteAddr().String()); err == nil {
		c.Addr = ap.Addr()
	}
	return c
}

// serveOpaque forwards a connection as bytes to its destination.
func (p *Proxy) serveOpaque(ctx context.Context, s *side, a *accepted) {
	if !p.allowOpaque(s, a) {
		p.denyOpaque(s, a)
		return
	}
	if !s.track(a) {
		p.forget(s, a, nil)
		return
	}
	up, authority := p.dialOpaque(ctx, s, a)
	if up == nil || !s.track(up) {
		p.forget(s, a, up)
		return
	}
	p.splice(s, a, up, authority)
}

// allowOpaque reports whether the inbound policy lets a's client open an
// opaque stream (outbound streams are not subject to it).
func (p *Proxy) allowOpaque(s *side, a *accepted) bool {
	return s.direction != "inbound" || p.cfg.Authz.Conn(client(a))
}

// denyOpaque closes a connection the policy refused, and counts it.
func (p *Proxy) denyOpaque(s *side, a *accepted) {
	tls, clientID := p.acceptedTLS(s.direction, a)
	p.metrics.AuthzDenied("tcp", p.cfg.Authz.Name(), p.inboundPort(a), tls, clientID)
	p.log.Debug("inbound connection refused by policy", "policy", p.cfg.Authz.Name(), "client", a.RemoteAddr(), "client_id", a.peer)
	a.Close()
}

// dialOpaque connects an opaque stream's destination; nil (logged and
// counted) when it has none or none answers.
func (p *Proxy) dialOpaque(ctx context.Context, s *side, a *accepted) (up net.Conn, authority string) {
	d, err := p.opaqueDest(ctx, s, a)
	if err != nil {
		p.log.Debug("opaque connection has no destination", "direction", s.direction, "err", err)
		return nil, ""
	}
	up, err = d.Dial(ctx)
	if err != nil {
		var ue *connect.UnavailableError
		if errors.As(err, &ue) {
			p.metrics.Unavailable(s.direction, d.Authority(), ue.Reason)
		} else {
			p.log.Debug("opaque connect failed", "direction", s.direction, "authority", d.Authority(), "err", err)
		}
		return nil, ""
	}
	return up, d.Authority()
}

// splice copies an opaque stream both ways until it ends or idles, then
// forgets both connections.
func (p *Proxy) splice(s *side, a *accepted, up net.Conn, authority string) {
	defer s.conns.Delete(net.Conn(a))
	defer s.conns.Delete(up)
	idle := max(p.cfg.OpaqueIdleTimeout, 0)
	if err := tcpproxy.SpliceIdle(a, up, idle); errors.Is(err, tcpproxy.ErrIdle) {
		p.log.Debug("opaque stream idle: closed", "direction", s.direction, "authority", authority, "idle_timeout", idle)
	}
}

func (p *Proxy) opaqueDest(ctx context.Context, s *side, a *accepted) (*outbound.Dest, error) {
	if err := p.opaqueLoop(s, a); err != nil {
		return nil, err
	}
	if s.direction == "inbound" {
		if p.cfg.InboundForward != "" {
			return s.dests.Passthrough(p.cfg.InboundForward), nil
		}
		if a.origDst.IsValid() {
			return s.dests.Passthrough(a.origDst.String()), nil
		}
		return nil, errors.New("no inbound forward address and no original destination")
	}
	if !a.origDst.IsValid() {
		return nil, errors.New("no original destination (was the connection redirected?)")
	}
	return s.dests.ResolveAddr(ctx, a.origDst)
}

// localIPs are ips, or, when nil, the host's non-loopback interface
// addresses: this pod's own (see Config.LocalIPs).
func localIPs(ips []netip.Addr) []netip.Addr {
	if ips != nil {
		return ips
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && !ip.Unmap().IsLoopback() {
				ips = append(ips, ip)
			}
		}
	}
	return ips
}

// selfSet is localIPs(ips) as a set, unmapped.
func selfSet(ips []netip.Addr) map[netip.Addr]bool {
	set := map[netip.Addr]bool{}
	for _, ip := range localIPs(ips) {
		set[ip.Unmap()] = true
	}
	return set
}
