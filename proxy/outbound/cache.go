// Package outbound is the proxy's way out to a destination, shared by the
// sidecar's outbound side and (next) the gateway: a cache of authority →
// Dest fed by the destination API (discover.Resolver and profile.Source),
// passthrough destinations for addresses no service owns, mutual TLS to
// meshed endpoints with the identity the destination announced, idle
// eviction, and the connect-and-retry loop (proxy/outbound/connect) for
// opaque streams. HTTP requests reach the same endpoints through a Dest's
// httpproxy.Target.
package outbound

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/profile"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
)

// DefaultIdleTTL is Options.IdleTTL's default.
const DefaultIdleTTL = 10 * time.Minute

// DefaultNotFoundTTL is Options.NotFoundTTL's default.
const DefaultNotFoundTTL = 5 * time.Second

// firstUpdateWait bounds how long a request waits for a new destination's
// first endpoint set before it is answered with what is known (maybe nothing).
const firstUpdateWait = 3 * time.Second

// Options configure a Cache. Zero values take the documented defaults.
type Options struct {
	// Resolver finds an authority's endpoints; when it is also a
	// profile.Source, a destination waits for its profile too. Required.
	Resolver discover.Resolver
	// Balancer is the strategy of every destination's balancer.
	Balancer balance.Strategy
	// Dial opens a bare TCP connection to an endpoint. Default: a
	// net.Dialer with a 1s timeout and 30s keep-alives.
	Dial httpproxy.DialFunc
	// Identity, when set, originates mutual TLS to every endpoint the
	// destination announces with an identity, and requires the server to
	// prove exactly that identity. nil: every connection is plaintext.
	Identity *tlsid.Identity
	// Meter, when set, wraps every connection to an endpoint (before any
	// TLS), given the tls label and server ID the connection gets
	// (Dest.TLS's answer): the sidecar counts it in its metrics.
	Meter func(c net.Conn, addr, tls, serverID string) net.Conn
	// Local are this pod's own addresses: an endpoint there is reached
	// over lo straight to the application, in plaintext, labelled
	// tls="loopback". nil: none (a gateway has no application).
	Local []netip.Addr
	// IdleTTL drops a destination unused for that long, so that a proxy
	// that once talked to many services does not watch them forever.
	// Default DefaultIdleTTL.
	IdleTTL time.Duration
	// H2StreamWindow and H2ConnectionWindow are the upstreams' HTTP/2
	// receive windows (httpproxy.Upstream.SetH2Windows); 0: its defaults.
	H2StreamWindow, H2ConnectionWindow int
	// OnEject, when set, is told of each endpoint of authority that
	// failure accrual ejects.
	OnEject func(authority, addr, reason string)
	// Namespace is the proxy's own namespace when it is known (Kubernetes):
	// a short name (a single DNS label, "web:80") is then looked up as
	// <name>.<namespace>.svc, as the pod's resolver search path would
	// resolve it. Empty: authorities are looked up as they are.
	Namespace string
	// NotFoundTTL is how long the answer "not found" of a resolver that
	// cannot say when it changes (static destinations) is kept before the
	// authority is resolved again; a discover.NotFoundError is kept until
	// its Appeared fires. Default DefaultNotFoundTTL.
	NotFoundTTL time.Duration
}

// Cache holds a Dest per authority (and per passthrough address). It is
// safe for concurrent use; run EvictIdle beside it and Close it at the end.
type Cache struct {
	o        Options
	profiles profile.Source // nil when the resolver has none
	local    map[netip.Addr]bool
	mtls     atomic.Int64 // mTLS handshakes completed
	resumed  atomic.Int64 // of which resumed an earlier session

	mu sync.Mutex
	m  map[string]*Dest
}

// New returns an empty cache.
func New(o Options) *Cache {
	if o.Dial == nil {
		d := &net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}
		o.Dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	if o.IdleTTL <= 0 {
		o.IdleTTL = DefaultIdleTTL
	}
	if o.NotFoundTTL <= 0 {
		o.NotFoundTTL = DefaultNotFoundTTL
	}
	c := &Cache{o: o, local: map[netip.Addr]bool{}, m: map[string]*Dest{}}
	c.profiles, _ = o.Resolver.(profile.Source)
	for _, ip := range o.Local {
		c.local[ip.Unmap()] = true
	}
	return c
}

// IsLocal says whether the endpoint at addr (host:port) is this pod (Options.Local).
func (c *Cache) IsLocal(addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	return err == nil && c.local[ap.Addr().Unmap()]
}

// Handshakes is how many mTLS sessions the cache's connections have
// completed with meshed endpoints.
func (c *Cache) Handshakes() int64 { return c.mtls.Load() }

// Resumed is how many of those handshakes resumed an earlier session.
func (c *Cache) Resumed() int64 { return c.resumed.Load() }

// Get returns the destination of authority (host:port), resolving it on
// first use: it waits for the first endpoint set (at most 3s, then it
// answers with what it knows, maybe nothing) and, when the resolver has
// profiles, for the first profile answer. discover.ErrNotFound means the
// resolver does not know authority (kept, so that asking again costs
// nothing: see Options.NotFoundTTL); ctx's error, that it ended first.
// With Options.Namespace a short name is looked up in that namespace.
func (c *Cache) Get(ctx context.Context, authority string) (*Dest, error) {
	authority = c.qualify(authority)
	var stale *Dest
	c.mu.Lock()
	d, ok := c.m[authority]
	if ok && d.expired() {
		delete(c.m, authority)
		stale, ok = d, false
	}
	if !ok {
		d = c.start(authority)
		c.m[authority] = d
	}
	c.mu.Unlock()
	if stale != nil {
		stale.close()
	}
	d.lastUsed.Store(time.Now().UnixNano())
	select {
	case <-d.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if d.err != nil {
		return nil, d.err
	}
	if d.profileDone != nil {
		// Wait for the profile too, so that a new destination's first
		// requests already follow its routes and split.
		select {
		case <-d.profileDone:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return d, nil
}

// Ready returns authority's destination when Get would return it without
// waiting (resolved, its profile known, not expired), else false: for a
// caller that must not block (an event loop), which then hands the request
// to one that can.
func (c *Cache) Ready(authority string) (*Dest, bool) {
	authority = c.qualify(authority)
	c.mu.Lock()
	d, ok := c.m[authority]
	c.mu.Unlock()
	if !ok || d.expired() {
		return nil, false
	}
	select {
	case <-d.ready:
	default:
		return nil, false
	}
	if d.err != nil {
		return nil, false
	}
	if d.profileDone != nil {
		select {
		case <-d.profileDone:
		default:
			return nil, false
		}
	}
	d.lastUsed.Store(time.Now().UnixNano())
	return d, true
}

// qualify is authority with a short name's namespace added
// (Options.Namespace): "web:80" → "web.<namespace>.svc:80". Names with a
// dot, IP addresses and localhost stay as they are.
func (c *Cache) qualify(authority string) string {
	if c.o.Namespace == "" {
		return authority
	}
	host, port, err := net.SplitHostPort(authority)
	if err != nil || host == "" || host == "localhost" || strings.ContainsAny(host, ".:") {
		return authority
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return authority
	}
	return net.JoinHostPort(host+"."+c.o.Namespace+".svc", port)
}

// Passthrough returns a single-endpoint destination for an address the
// resolver does not know (an original destination outside the mesh, an IP
// authority, or the inbound side's application). It has no identity, so
// its connections are plaintext.
func (c *Cache) Passthrough(addr string) *Dest {
	// The key is made on the stack for the lookup (an event loop's
	// inbound side looks one up per request), as a string only when new.
	var buf [64]byte
	key := append(append(buf[:0], passthroughPrefix...), addr...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := c.m[string(key)]; ok {
		d.lastUsed.Store(time.Now().UnixNano())
		return d
	}
	d := c.passthrough(addr)
	d.lastUsed.Store(time.Now().UnixNano())
	c.m[string(key)] = d
	return d
}

const passthroughPrefix = "passthrough:"

// ResolveAddr finds the destination of a connection redirected to orig:
// the service that owns that virtual address (Resolver.LookupAddr), or
// the address itself.
func (c *Cache) ResolveAddr(ctx context.Context, orig netip.AddrPort) (*Dest, error) {
	if auth, ok := c.o.Resolver.LookupAddr(orig); ok {
		d, err := c.Get(ctx, auth)
		if err == nil {
			return d, nil
		}
		if !errors.Is(err, discover.ErrNotFound) {
			return nil, err
		}
	}
	return c.Passthrough(orig.String()), nil
}

// OpaqueAddr says whether orig is a service address whose endpoints all
// ask for opaque transport (the destination hint protocol: opaque, "never
// detect"). It waits for the service's first endpoint set, as a request to
// it would; an address no service owns is not opaque.
func (c *Cache) OpaqueAddr(ctx context.Context, orig netip.AddrPort) bool {
	if !orig.IsValid() {
		return false
	}
	auth, ok := c.o.Resolver.LookupAddr(orig)
	if !ok {
		return false
	}
	d, err := c.Get(ctx, auth)
	return err == nil && d.opaque.Load()
}

// EvictIdle drops destinations unused for IdleTTL, closing their watches
// and idle connections. It runs until ctx ends.
func (c *Cache) EvictIdle(ctx context.Context) {
	t := time.NewTicker(min(time.Minute, max(c.o.IdleTTL/2, time.Millisecond)))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.evict(now.Add(-c.o.IdleTTL))
		}
	}
}

// evict drops the destinations last used before cutoff.
func (c *Cache) evict(cutoff time.Time) {
	c.mu.Lock()
	var drop []*Dest
	for k, d := range c.m {
		if d.lastUsed.Load() < cutoff.UnixNano() {
			delete(c.m, k)
			drop = append(drop, d)
		}
	}
	c.mu.Unlock()
	for _, d := range drop {
		d.close()
	}
}

// Ejected counts the endpoints ejected now, by authority (authorities with
// none are left out).
func (c *Cache) Ejected() map[string]int {
	n := map[string]int{}
	for _, d := range c.all() {
		if k := d.target.Balancer.Ejected(); k > 0 {
			n[d.target.Authority] += k
		}
	}
	return n
}

// EndBackoff ends the connect backoff of every endpoint: the sidecar's
// inbound side calls it when its application is back, which would
// otherwise be refused for up to the backoff's 10s more.
func (c *Cache) EndBackoff() {
	for _, d := range c.all() {
		for _, e := range d.target.Balancer.Endpoints() {
			e.Succeed()
		}
	}
}

// Close drops every destination: watches end, idle connections close
// (requests in flight finish on theirs). The cache stays usable.
func (c *Cache) Close() {
	c.mu.Lock()
	all := c.m
	c.m = map[string]*Dest{}
	c.mu.Unlock()
	for _, d := range all {
		d.close()
	}
}

func (c *Cache) all() []*Dest {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := make([]*Dest, 0, len(c.m))
	for _, d := range c.m {
		all = append(all, d)
	}
	return all
}

func (c *Cache) forget(authority string, d *Dest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[authority] == d {
		delete(c.m, authority)
		return true
	}
	return false
}
