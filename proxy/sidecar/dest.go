package sidecar

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/profile"
)

// firstUpdateWait bounds how long a request waits for a new destination's
// first endpoint set before it is answered with what is known (maybe nothing).
const firstUpdateWait = 3 * time.Second

// dest is one authority's live endpoint set, fed by a discovery watch.
type dest struct {
	ds       *dests // the cache it belongs to (its dialer, meter and mTLS)
	target   httpproxy.Target
	watch    discover.Watch
	ready    chan struct{} // closed once the first set is applied
	readyOne sync.Once
	lastUsed atomic.Int64
	err      error // set before ready closes when resolving failed

	// profileDone is closed once the first profile answer (or its absence)
	// is known; nil when the resolver has no profiles.
	profileDone chan struct{}

	mu      sync.Mutex
	hints   map[string]string // addr → protocol hint, read by newUpstream
	ids     map[string]string // addr → the endpoint proxy's SPIFFE ID ("" unmeshed)
	profile *profile.Watch
	closed  bool
	// opaque is true when every endpoint asks for opaque transport.
	opaque atomic.Bool
}

// dests caches a dest per authority; entries unused for idleTTL are dropped
// so that a proxy that once talked to many services does not watch them forever.
type dests struct {
	resolver discover.Resolver
	profiles profile.Source // nil when the resolver has none
	strategy balance.Strategy
	dial     httpproxy.DialFunc // a bare TCP connection
	// meter wraps a connection to the endpoint at addr in metrics, labelled
	// with the TLS it gets (tls, serverID: dest.target.TLS's answer).
	meter func(c net.Conn, addr, tls, serverID string) net.Conn
	// secure wraps a connection to a meshed endpoint in mTLS (nil: this
	// proxy has no identity, connections stay as they are).
	secure  func(ctx context.Context, c net.Conn, serverID, alpn string) (net.Conn, error)
	idleTTL time.Duration
	// self are this pod's own addresses (see Config.LocalIPs).
	self map[netip.Addr]bool
	// h2Stream, h2Conn: the upstreams' HTTP/2 receive windows (Config.H2StreamWindow).
	h2Stream, h2Conn int
	// onEject counts an endpoint of authority ejected by failure accrual.
	onEject func(authority, addr, reason string)

	mu sync.Mutex
	m  map[string]*dest
}

// selfSet is ips, or the host's non-loopback interface addresses.
func selfSet(ips []netip.Addr) map[netip.Addr]bool {
	set := map[netip.Addr]bool{}
	if ips == nil {
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && !ip.Unmap().IsLoopback() {
					ips = append(ips, ip)
				}
			}
		}
	}
	for _, ip := range ips {
		set[ip.Unmap()] = true
	}
	return set
}

// isSelf says whether the endpoint at addr is this pod.
func (ds *dests) isSelf(addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	return err == nil && ds.self[ap.Addr().Unmap()]
}

func newDests(r discover.Resolver, s balance.Strategy, dial httpproxy.DialFunc) *dests {
	ds := &dests{resolver: r, strategy: s, dial: dial, idleTTL: 10 * time.Minute, m: map[string]*dest{}}
	ds.profiles, _ = r.(profile.Source)
	return ds
}

// get returns the dest for authority, resolving it on first use.
// discover.ErrNotFound means the resolver does not know it.
func (ds *dests) get(ctx context.Context, authority string) (*dest, error) {
	ds.mu.Lock()
	d, ok := ds.m[authority]
	if !ok {
		d = ds.start(authority)
		ds.m[authority] = d
	}
	ds.mu.Unlock()
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

// start begins resolving in the background; callers wait on ready.
func (ds *dests) start(authority string) *dest {
	d := &dest{ds: ds, ready: make(chan struct{}), hints: map[string]string{}, ids: map[string]string{}}
	d.target.Authority = authority
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		return d.connect(ctx, addr, httpproxy.DialProtocol(ctx))
	}
	d.target.TLS = func(addr string) (string, string) {
		if ds.isSelf(addr) {
			return metrics.TLSLoopback, ""
		}
		if ds.secure == nil {
			return metrics.TLSNoLocalIdentity, ""
		}
		if id := d.identity(addr); id != "" {
			return metrics.TLSTrue, id
		}
		return metrics.TLSNotProvidedByServiceDiscovery, ""
	}
	d.target.Balancer = balance.New(balance.Options[*httpproxy.Upstream]{
		Strategy: ds.strategy,
		OnEject: func(addr, reason string) {
			if ds.onEject != nil {
				ds.onEject(authority, addr, reason)
			}
		},
		New: func(s balance.Spec) *httpproxy.Upstream {
			d.mu.Lock()
			hint, meshed := d.hints[s.Addr], d.ids[s.Addr] != ""
			d.mu.Unlock()
			// A meshed peer over mTLS is a proxy: HTTP/1 requests to it are
			// carried over one multiplexed HTTP/2 connection (and restored to
			// HTTP/1 on its side), sparing a handshake per pooled connection.
			u := httpproxy.NewUpstream(s.Addr, hint == discover.HintH2 || (meshed && ds.secure != nil), dial)
			u.SetH2Windows(ds.h2Stream, ds.h2Conn)
			return u
		},
		Close: (*httpproxy.Upstream).Close,
	})
	if ds.profiles != nil {
		d.profileDone = make(chan struct{})
		d.target.Profile = d.currentProfile
		go func() {
			defer close(d.profileDone)
			pw, err := ds.profiles.Profile(context.Background(), authority)
			if err != nil {
				return // no profile: requests are forwarded as they are
			}
			d.mu.Lock()
			closed := d.closed
			if !closed {
				d.profile = pw
			}
			d.mu.Unlock()
			if closed {
				pw.Close()
			}
		}()
	}
	go func() {
		w, err := ds.resolver.Resolve(context.Background(), authority)
		if err != nil {
			d.err = err
			d.markReady()
			ds.forget(authority, d)
			return
		}
		d.mu.Lock()
		d.watch = w
		closed := d.closed
		d.mu.Unlock()
		if closed { // evicted while resolving
			w.Close()
		}
		timer := time.AfterFunc(firstUpdateWait, func() { d.markReady() })
		for eps := range w.Updates() {
			d.apply(eps)
			timer.Stop()
			d.markReady()
		}
	}()
	return d
}

// currentProfile is the dest's profile now, or nil.
func (d *dest) currentProfile() *profile.Profile {
	d.mu.Lock()
	pw := d.profile
	d.mu.Unlock()
	if pw == nil {
		return nil
	}
	return pw.Current()
}

// connect opens a connection to the endpoint at addr: metered under the
// TLS labels the HTTP metrics give it too, and mutual TLS offering alpn
// when the endpoint is meshed. The server_id label is the identity the
// handshake then requires the server to prove, exactly; a connection whose
// handshake fails closes as a failure, having carried nothing.
func (d *dest) connect(ctx context.Context, addr, alpn string) (net.Conn, error) {
	c, err := d.ds.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	tls, serverID := d.target.TLS(addr)
	if d.ds.meter != nil {
		c = d.ds.meter(c, addr, tls, serverID)
	}
	if serverID == "" || d.ds.secure == nil {
		return c, nil
	}
	return d.ds.secure(ctx, c, serverID, alpn)
}

// identity is the SPIFFE ID the endpoint at addr presents, "" if unmeshed.
func (d *dest) identity(addr string) string {
	if d.ids == nil {
		return ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ids[addr]
}

func (d *dest) markReady() { d.readyOne.Do(func() { close(d.ready) }) }

func (d *dest) apply(eps []discover.Endpoint) {
	specs := make([]balance.Spec, 0, len(eps))
	opaque := len(eps) > 0
	d.mu.Lock()
	for _, ep := range eps {
		d.hints[ep.Addr] = ep.Protocol
		d.ids[ep.Addr] = ep.Identity
		if d.ds.isSelf(ep.Addr) {
			d.ids[ep.Addr] = "" // straight to the application: no mTLS, no orig-proto
		}
		specs = append(specs, balance.Spec{Addr: ep.Addr, Weight: ep.Weight})
		opaque = opaque && ep.Protocol == discover.HintOpaque
	}
	d.mu.Unlock()
	d.opaque.Store(opaque)
	d.target.Balancer.Update(specs)
}

func (ds *dests) forget(authority string, d *dest) {
	ds.mu.Lock()
	if ds.m[authority] == d {
		delete(ds.m, authority)
	}
	ds.mu.Unlock()
}

// passthrough returns a single-endpoint dest for an address the resolver does
// not know (an original destination outside the mesh, or an IP authority).
func (ds *dests) passthrough(addr string) *dest {
	key := "passthrough:" + addr
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if d, ok := ds.m[key]; ok {
		d.lastUsed.Store(time.Now().UnixNano())
		return d
	}
	d := &dest{ds: ds, ready: make(chan struct{}), hints: map[string]string{}}
	d.target.Authority = addr
	d.target.TLS = func(string) (string, string) {
		if ds.secure == nil {
			return metrics.TLSNoLocalIdentity, ""
		}
		return metrics.TLSNotProvidedByServiceDiscovery, ""
	}
	d.target.Balancer = balance.New(balance.Options[*httpproxy.Upstream]{
		Strategy: ds.strategy,
		New: func(s balance.Spec) *httpproxy.Upstream {
			u := httpproxy.NewUpstream(s.Addr, false, func(ctx context.Context, addr string) (net.Conn, error) {
				return d.connect(ctx, addr, "")
			})
			u.SetH2Windows(ds.h2Stream, ds.h2Conn)
			return u
		},
		Close: (*httpproxy.Upstream).Close,
	})
	d.target.Balancer.Update([]balance.Spec{{Addr: addr}})
	d.markReady()
	d.lastUsed.Store(time.Now().UnixNano())
	ds.m[key] = d
	return d
}

// resolveAddr finds the dest for a connection redirected to orig: the service
// that owns that virtual address, or the address itself.
func (ds *dests) resolveAddr(ctx context.Context, orig netip.AddrPort) (*dest, error) {
	if auth, ok := ds.resolver.LookupAddr(orig); ok {
		d, err := ds.get(ctx, auth)
		if err == nil {
			return d, nil
		}
		if !errors.Is(err, discover.ErrNotFound) {
			return nil, err
		}
	}
	return ds.passthrough(orig.String()), nil
}

// evictIdle drops dests not used for idleTTL. It runs until ctx ends.
func (ds *dests) evictIdle(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cutoff := time.Now().Add(-ds.idleTTL).UnixNano()
		ds.mu.Lock()
		var drop []*dest
		for k, d := range ds.m {
			if d.lastUsed.Load() < cutoff {
				delete(ds.m, k)
				drop = append(drop, d)
			}
		}
		ds.mu.Unlock()
		for _, d := range drop {
			d.close()
		}
	}
}

func (d *dest) close() {
	d.mu.Lock()
	w, pw := d.watch, d.profile
	d.closed = true
	d.mu.Unlock()
	if w != nil {
		w.Close()
	}
	if pw != nil {
		pw.Close()
	}
	d.target.Balancer.Close()
}

// ejected counts the endpoints ejected now, by authority (authorities with
// none are left out).
func (ds *dests) ejected() map[string]int {
	ds.mu.Lock()
	all := make([]*dest, 0, len(ds.m))
	for _, d := range ds.m {
		all = append(all, d)
	}
	ds.mu.Unlock()
	n := map[string]int{}
	for _, d := range all {
		if k := d.target.Balancer.Ejected(); k > 0 {
			n[d.target.Authority] += k
		}
	}
	return n
}

// endBackoff ends the connect backoff of every endpoint: the inbound side
// calls it when its application is back, which would otherwise be refused
// for up to the backoff's 10s more.
func (ds *dests) endBackoff() {
	ds.mu.Lock()
	all := make([]*dest, 0, len(ds.m))
	for _, d := range ds.m {
		all = append(all, d)
	}
	ds.mu.Unlock()
	for _, d := range all {
		for _, e := range d.target.Balancer.Endpoints() {
			e.Succeed()
		}
	}
}

func (ds *dests) closeAll() {
	ds.mu.Lock()
	all := ds.m
	ds.m = map[string]*dest{}
	ds.mu.Unlock()
	for _, d := range all {
		d.close()
	}
}

// opaqueAddr says whether orig is a service address whose endpoints all
// ask for opaque transport (the destination hint protocol: opaque, "never
// detect"). It waits for the service's first endpoint set, as a request to
// it would; an address no service owns is not opaque.
func (ds *dests) opaqueAddr(ctx context.Context, orig netip.AddrPort) bool {
	if !orig.IsValid() {
		return false
	}
	auth, ok := ds.resolver.LookupAddr(orig)
	if !ok {
		return false
	}
	d, err := ds.get(ctx, auth)
	return err == nil && d.opaque.Load()
}
