// Package gateway is Meridian's gateway proxy, a sibling of proxy/sidecar
// assembled from the same parts: it applies gatewaypb.Snapshots (listeners,
// certificates and route tables compiled from Gateway API objects) whole
// and atomically, terminates or passes through TLS, routes requests by
// listener, host and rule, and forwards them through proxy/outbound and
// proxy/httpproxy as the sidecar's outbound side does.
package gateway

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/admin"
	"github.com/meridian-mesh/meridian/proxy/authz"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/listen"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/middleware/inflight"
	"github.com/meridian-mesh/meridian/proxy/outbound"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
)

// direction is the metrics' direction label of the gateway's requests:
// they leave the gateway for backends, as the sidecar's outbound ones.
const direction = "outbound"

// Config is what a gateway needs. Zero values take the documented defaults.
type Config struct {
	// Bind gives the addresses (comma-separated, see proxy/listen) a
	// snapshot's port is opened on. Default DefaultBind.
	Bind func(port uint32) string
	// AdminAddr serves /metrics, /ready, /live and /gateway. Default
	// "0.0.0.0:4191,[::]:4191".
	AdminAddr string
	Resolver  discover.Resolver // default: a static resolver with nothing
	Balancer  balance.Strategy
	// Identity, when set, is the gateway's workload identity: connections
	// to meshed endpoints are mutual TLS, and the gateway is not ready
	// before it holds a certificate. The caller runs it.
	Identity *tlsid.Identity
	// Namespace is the gateway's namespace (short backend names).
	Namespace      string
	ConnectTimeout time.Duration // default 1s
	// DrainTimeout bounds how long a port that a snapshot removed, and
	// every port when Run ends, waits for its requests and streams.
	// Default 30s.
	DrainTimeout time.Duration
	// HeaderTimeout bounds the time from accept to the end of a request's
	// headers (and to a TLS ClientHello; a TLS terminate handshake gets
	// as long again). Default 30s.
	HeaderTimeout time.Duration
	// IdleTimeout closes a TLS stream (passthrough or terminated) idle
	// that long. Default 1h.
	IdleTimeout time.Duration
	// UDPIdleTimeout ends a UDP session (a client address's datagrams)
	// that has carried none either way for that long. Default 60s, Envoy's
	// UDP proxy's idle_timeout.
	UDPIdleTimeout time.Duration
	// MaxInFlight bounds requests handled at once; beyond it 503. Default
	// 10000; negative: no bound.
	MaxInFlight int
	// MaxConnections bounds the connections each port holds open (HTTP
	// keep-alive and HTTP/2 connections, TLS handshakes, TLS streams); beyond it a new connection is accepted and closed at once,
	// before a byte of it is read, and counted in
	// tcp_connections_refused_total. It also bounds a UDP port's sessions
	// (a client's first datagram beyond it is dropped). Default
	// DefaultMaxConnections; negative: no bound.
	MaxConnections int
	// Authz is who may read the admin port beyond /live and /ready (the
	// default inbound policy, as the sidecar's admin port follows); a meshed
	// client passes the authenticated policies over mTLS with Identity.
	Authz authz.Config
	Log   *slog.Logger
	// EventLoop serves HTTP/1.1 requests on event loops where it can
	// (Linux; README.md, "Event loop"); meridian-proxy turns it on unless
	// told not to.
	EventLoop bool
	// EventLoopH2 serves HTTP/2 connections on the loops too (h2c, and
	// HTTPS whose ALPN settled h2): their frames on a loop, every stream
	// by the handler on a goroutine (proxy/httpproxy/h2loop's Bridge).
	EventLoopH2 bool
	// EventLoops is how many: 0 for one per processor the runtime uses
	// (GOMAXPROCS).
	EventLoops int
	// EventLoopHold is how long a loop keeps a processor of its own
	// after its last event, waiting on its own (evloop's Hold: GOMAXPROCS
	// one higher per loop that holds): 0 never. EventLoopHoldRate is how
	// many times a second a loop must wake for events to take one (and
	// half of it to keep it): 0, from its first event.
	EventLoopHold     time.Duration
	EventLoopHoldRate int
}

// DefaultMaxConnections is Config.MaxConnections' default, the sidecar's
// default bound per listener.
const DefaultMaxConnections = 20000

// DefaultBind listens on every address of both families.
func DefaultBind(port uint32) string {
	p := strconv.FormatUint(uint64(port), 10)
	return "0.0.0.0:" + p + ",[::]:" + p
}

// Gateway is a running gateway proxy.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics.Registry
	admin   *admin.Server
	handler http.Handler // inflight, then route
	fwd     *httpproxy.Forwarder
	id      string // this instance, in Meridian-Hop (loops)

	table atomic.Pointer[table] // nil before the first snapshot

	mu       sync.Mutex                             // serializes Apply and guards what follows
	ports    map[uint32]*portServer                 // TCP ports: HTTP, TLS, TCP
	udp      map[uint32]*udpServer                  // UDP ports
	caches   map[string]*outbound.Cache             // by backendTLS key; "" is the mesh's
	evicting map[*outbound.Cache]context.CancelFunc // ends each cache's EvictIdle
	rejected []rejection                            // the last snapshots refused, newest first
	stopped  bool

	loops    loopGroup    // Config.EventLoop's; nil without
	inFlight atomic.Int64 // requests in flight, both paths (inflight's count)

	bg     context.Context // the servers' lifetime: canceled at the end of Run
	cancel context.CancelFunc
	ready  atomic.Bool
	drains sync.WaitGroup // ports closing in the background
}

// rejection is a snapshot Apply refused.
type rejection struct {
	Version string    `json:"version"`
	At      time.Time `json:"at"`
	Error   string    `json:"error"`
}

// New binds the admin listener; ports come with snapshots (Apply).
func New(cfg Config) (*Gateway, error) {
	if cfg.Bind == nil {
		cfg.Bind = DefaultBind
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = "0.0.0.0:4191,[::]:4191"
	}
	if cfg.Resolver == nil {
		cfg.Resolver, _ = discover.NewStatic(nil)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = time.Second
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.HeaderTimeout == 0 {
		cfg.HeaderTimeout = 30 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = time.Hour
	}
	if cfg.UDPIdleTimeout <= 0 {
		cfg.UDPIdleTimeout = 60 * time.Second
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 10000
	}
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	g := &Gateway{cfg: cfg, log: cfg.Log, metrics: metrics.NewGateway(), ports: map[uint32]*portServer{}, udp: map[uint32]*udpServer{},
		caches: map[string]*outbound.Cache{}, evicting: map[*outbound.Cache]context.CancelFunc{}}
	g.bg, g.cancel = context.WithCancel(context.Background())
	var id [8]byte
	rand.Read(id[:])
	g.id = hex.EncodeToString(id[:])
	g.fwd = httpproxy.New(httpproxy.Options{Direction: direction, LabelTargetTLS: true, AcceptPeerHeaders: true, Metrics: g.metrics, Log: g.log})
	g.handler = inflight.New(inflight.Options{Direction: direction, Max: int64(max(cfg.MaxInFlight, 0)), Metrics: g.metrics, Count: &g.inFlight})(http.HandlerFunc(g.route))
	g.caches[""] = g.cache("", nil)
	ready := func() bool {
		return g.ready.Load() && g.table.Load() != nil && (cfg.Identity == nil || cfg.Identity.HasCert())
	}
	var err error
	if g.admin, err = admin.Listen(cfg.AdminAddr, g.log, g.metrics.Handler(), ready); err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	g.admin.Handle("GET /gateway", http.HandlerFunc(g.diagnostics))
	// As the sidecar's: /live and /ready open to all (the kubelet), the
	// rest (/metrics, /gateway: the routes, backends and certificates'
	// names) to the clients the policy admits.
	var adminTLS *tls.Config
	if cfg.Identity != nil {
		adminTLS = cfg.Identity.ServerConfig()
	}
	g.admin.Protect(cfg.Authz, adminTLS, func(port uint16, clientID string) {
		t := metrics.TLSNotProvidedByRemote
		if cfg.Identity == nil {
			t = metrics.TLSNoLocalIdentity
		} else if clientID != "" {
			t = metrics.TLSTrue
		}
		g.metrics.AuthzDenied("http", cfg.Authz.Name(), port, t, clientID)
	})
	g.metrics.PortListeners("inbound", g.openConns, int64(max(cfg.MaxConnections, 0)))
	g.metrics.UDPSessions(g.openSessions, int64(max(cfg.MaxConnections, 0)))
	if cfg.Identity != nil {
		g.admin.Handle("GET /identity", tlsid.Handler(cfg.Identity))
		obtained := func() int64 {
			if cfg.Identity.Expiry().IsZero() {
				return 0
			}
			return cfg.Identity.Renewals() + 1
		}
		g.metrics.Identity(cfg.Identity.Expiry, obtained, cfg.Identity.Failures)
	}
	if err := g.startLoop(); err != nil {
		g.admin.Close()
		return nil, fmt.Errorf("event loop: %w", err)
	}
	return g, nil
}

// cache builds the outbound cache of backends with the BackendTLS key
// (nil cfg: the mesh's, mTLS to meshed endpoints with the gateway's
// identity, plaintext to others).
func (g *Gateway) cache(key string, cfg *tls.Config) *outbound.Cache {
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: g.cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
		return d.DialContext(ctx, "tcp", addr)
	}
	o := outbound.Options{
		Resolver:  g.cfg.Resolver,
		Balancer:  g.cfg.Balancer,
		Namespace: g.cfg.Namespace,
		OnEject: func(authority, addr, reason string) {
			g.metrics.Ejection(direction, authority, reason)
		},
		Meter: func(c net.Conn, addr, tls, serverID string) net.Conn {
			return g.metrics.Conn(c, metrics.ConnLabels{Direction: direction, Peer: metrics.PeerDst, Target: addr, TLS: tls, PeerID: serverID})
		},
	}
	if cfg == nil {
		o.Identity = g.cfg.Identity
		o.Dial = dial
	} else {
		// The policy's TLS replaces mTLS: these backends are not meshed
		// (the compiler attaches a BackendTLSPolicy only to those).
		o.Dial = tlsDial(dial, cfg)
	}
	c := outbound.New(o)
	ctx, stop := context.WithCancel(g.bg)
	g.evicting[c] = stop
	go c.EvictIdle(ctx)
	g.log.Debug("backend cache", "key", key)
	return c
}

// openConns is, for each open port, the connections it holds open.
func (g *Gateway) openConns() map[uint32]int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[uint32]int64, len(g.ports))
	for n, ps := range g.ports {
		out[n] = ps.open.Load()
	}
	return out
}

// openSessions is, for each open UDP port, the sessions it holds.
func (g *Gateway) openSessions() map[uint32]int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[uint32]int64, len(g.udp))
	for n, us := range g.udp {
		out[n] = us.open()
	}
	return out
}

// Metrics returns the gateway's registry.
func (g *Gateway) Metrics() *metrics.Registry { return g.metrics }

// AdminAddr is the admin listener's first address.
func (g *Gateway) AdminAddr() net.Addr { return g.admin.Addr() }

// Version is the version of the snapshot serving now, "" before the first.
func (g *Gateway) Version() string {
	if t := g.table.Load(); t != nil {
		return t.version
	}
	return ""
}

// Apply compiles s and, when it is valid, serves it in place of the
// current snapshot: ports it adds are opened first (a port that cannot be
// opened fails the snapshot), then the table is swapped in one store (a
// request or handshake sees the old table or the new one, whole), then the
// ports it removes stop accepting and drain in the background. Ports that
// stay keep their sockets and connections. A UDP port is a port of its
// own kind: one whose number changes between TCP and UDP is opened anew
// (both sockets may be bound at once) and the old one drains. A snapshot that fails is
// rejected with an error naming the part and the version; the current one
// keeps serving.
func (g *Gateway) Apply(s *gatewaypb.Snapshot) (err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	defer func() {
		if err != nil {
			g.rejected = append([]rejection{{Version: s.GetVersion(), At: time.Now(), Error: err.Error()}}, g.rejected...)
			g.rejected = g.rejected[:min(len(g.rejected), 10)]
			g.log.Warn("gateway snapshot rejected; the previous one keeps serving", "version", s.GetVersion(), "err", err)
		}
	}()
	if t := g.table.Load(); t != nil && s.GetVersion() != "" && t.version == s.GetVersion() {
		return nil // equal versions are equal snapshots
	}
	if g.stopped {
		return errors.New("the gateway has stopped")
	}
	b := &builder{g: g, caches: map[string]*outbound.Cache{"": g.caches[""]}}
	t, err := compile(s, b)
	if err != nil {
		g.closeCaches(b.caches)
		return fmt.Errorf("snapshot %q: %w", s.GetVersion(), err)
	}
	var opened []*portServer
	var openedUDP []*udpServer
	fail := func(n uint32, err error) error {
		for _, o := range opened {
			o.ln.Close()
		}
		for _, o := range openedUDP {
			o.drain() // nothing started: closes its sockets
		}
		g.closeCaches(b.caches)
		return fmt.Errorf("snapshot %q: ports (%d): %w", s.GetVersion(), n, err)
	}
	for n := range t.ports {
		if g.ports[n] != nil {
			continue
		}
		ps, err := g.openPort(n)
		if err != nil {
			return fail(n, err)
		}
		opened = append(opened, ps)
	}
	for n := range t.udp {
		if g.udp[n] != nil {
			continue
		}
		us, err := g.openUDP(n)
		if err != nil {
			return fail(n, err)
		}
		openedUDP = append(openedUDP, us)
	}
	g.table.Store(t)
	for _, ps := range opened {
		g.ports[ps.number] = ps
		if !ps.loopListen() {
			ps.start()
		}
	}
	for _, us := range openedUDP {
		g.udp[us.number] = us
		us.start()
	}
	for n, ps := range g.ports {
		if t.ports[n] == nil {
			delete(g.ports, n)
			// Closed before Apply returns, so that the next snapshot
			// can open the number again; the connections drain behind.
			ps.stopAccepting()
			g.drains.Add(1)
			go func() { defer g.drains.Done(); ps.drain(g.cfg.DrainTimeout) }()
		}
	}
	for n, us := range g.udp {
		if t.udp[n] == nil {
			delete(g.udp, n)
			g.drains.Add(1)
			go func() { defer g.drains.Done(); us.drain() }()
		}
	}
	old := g.caches
	g.caches = b.caches
	g.closeCaches(old)
	g.log.Info("gateway snapshot applied", "version", t.version, "ports", len(t.ports), "udp_ports", len(t.udp))
	return nil
}

// closeCaches closes those of cs the gateway does not use (g.caches):
// requests in flight finish on their connections. Called with g.mu held.
func (g *Gateway) closeCaches(cs map[string]*outbound.Cache) {
	for k, c := range cs {
		if g.caches[k] != c {
			g.evicting[c]()
			delete(g.evicting, c)
			c.Close()
		}
	}
}

// Ports returns the open TCP ports' bound addresses, by port number.
func (g *Gateway) Ports() map[uint32]net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := map[uint32]net.Addr{}
	for n, ps := range g.ports {
		m[n] = ps.ln.Addr()
	}
	return m
}

// UDPPorts returns the open UDP ports' bound addresses, by port number (a
// number may be open over TCP too).
func (g *Gateway) UDPPorts() map[uint32]*net.UDPAddr {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := map[uint32]*net.UDPAddr{}
	for n, us := range g.udp {
		m[n] = us.addr()
	}
	return m
}

// Run serves the admin port until ctx ends, then drains every port within
// DrainTimeout and returns.
func (g *Gateway) Run(ctx context.Context) error {
	go g.admin.Serve()
	g.ready.Store(true)
	g.log.Info("gateway ready", "admin", g.admin.Addrs())
	<-ctx.Done()
	g.ready.Store(false)
	g.mu.Lock()
	g.stopped = true
	ports, udp := g.ports, g.udp
	g.ports, g.udp = map[uint32]*portServer{}, map[uint32]*udpServer{}
	g.mu.Unlock()
	for _, ps := range ports {
		g.drains.Add(1)
		go func() { defer g.drains.Done(); ps.drain(g.cfg.DrainTimeout) }()
	}
	for _, us := range udp {
		g.drains.Add(1)
		go func() { defer g.drains.Done(); us.drain() }()
	}
	g.drains.Wait()
	g.cancel()
	g.mu.Lock()
	for _, c := range g.caches {
		c.Close()
	}
	g.mu.Unlock()
	g.admin.Close()
	g.closeLoop()
	return nil
}

// sortedPorts are a table's ports, TCP and UDP, by number then protocol,
// for diagnostics.
func sortedPorts(t *table) []*port {
	ps := make([]*port, 0, len(t.ports)+len(t.udp))
	for _, p := range t.ports {
		ps = append(ps, p)
	}
	for _, p := range t.udp {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		return a.number < b.number || a.number == b.number && a.protocol < b.protocol
	})
	return ps
}

// listenAddr opens a port's sockets.
func (g *Gateway) listenAddr(n uint32) (net.Listener, error) {
	return listen.Listen(g.cfg.Bind(n), g.log.With("port", n))
}
