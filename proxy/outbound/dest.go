package outbound

import (
	"context"
	"errors"
	"github.com/meridian-mesh/meridian/proxy/internal/rawconn"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/outbound/connect"
	"github.com/meridian-mesh/meridian/proxy/profile"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
)

// Dest is one authority's live endpoint set, fed by a discovery watch, or
// a passthrough address.
type Dest struct {
	c        *Cache // the cache it belongs to (its dialer, meter and identity)
	target   httpproxy.Target
	watch    discover.Watch
	ready    chan struct{} // closed once the first set is applied
	readyOne sync.Once
	lastUsed atomic.Int64
	err      error // set before ready closes when resolving failed
	// notFoundUntil is when a kept "not found" answer (err) expires, in
	// Unix ns; 0 while there is none, or while the resolver watches it
	// (stopNotFound).
	notFoundUntil atomic.Int64

	// profileDone is closed once the first profile answer (or its absence)
	// is known; nil when the resolver has no profiles.
	profileDone chan struct{}

	mu      sync.Mutex
	hints   map[string]string // addr → protocol hint, read by newUpstream
	ids     map[string]string // addr → the endpoint proxy's SPIFFE ID ("" unmeshed); nil for passthrough
	profile *profile.Watch
	closed  bool
	// stopNotFound ends the resolver's watch of a kept "not found".
	stopNotFound func()
	// opaque is true when every endpoint asks for opaque transport.
	opaque atomic.Bool
}

// Target is where HTTP requests to the destination go (httpproxy): its
// authority, balancer, profile and TLS labels. It lives as long as d.
func (d *Dest) Target() *httpproxy.Target { return &d.target }

// Authority is the destination's authority (host:port), or its address
// for a passthrough.
func (d *Dest) Authority() string { return d.target.Authority }

// Opaque says whether every endpoint asks for opaque transport.
func (d *Dest) Opaque() bool { return d.opaque.Load() }

// TLS is the tls label and the server's SPIFFE ID of a connection to the
// endpoint at addr: "loopback" for this pod, "true" and the identity the
// handshake requires for a meshed endpoint, else why there is no mTLS.
func (d *Dest) TLS(addr string) (tls, serverID string) { return d.target.TLS(addr) }

// Dial opens an opaque stream to one of the destination's endpoints
// (mTLS with ALPN meridian.io/opaque to a meshed one), trying another
// endpoint when connecting fails, up to connect.MaxAttempts in all. A
// failed connect puts its endpoint in backoff; a stream that connected
// counts as a success for failure accrual, whatever it carries later.
// When no endpoint could be picked the error is a
// *connect.UnavailableError, whose Reason the caller counts.
func (d *Dest) Dial(ctx context.Context) (net.Conn, error) {
	return connect.Loop(d.target.Balancer, func(ep *balance.Endpoint[*httpproxy.Upstream]) (net.Conn, error) {
		done := ep.StartRequest()
		c, err := d.connect(ctx, ep.Addr(), tlsid.ALPNOpaque)
		done(err != nil)
		if err != nil {
			ep.Fail() // backoff, and a "connect" failure for accrual
			return nil, &connect.DialError{Addr: ep.Addr(), Err: err}
		}
		ep.Succeed()
		ep.Result("") // an opaque stream's outcome is its connection's
		return c, nil
	})
}

// start begins resolving authority in the background; callers wait on ready.
func (c *Cache) start(authority string) *Dest {
	d := &Dest{c: c, ready: make(chan struct{}), hints: map[string]string{}, ids: map[string]string{}}
	d.target.Authority = authority
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		return d.connect(ctx, addr, httpproxy.DialProtocol(ctx))
	}
	d.target.TLS = func(addr string) (string, string) {
		if c.IsLocal(addr) {
			return metrics.TLSLoopback, ""
		}
		if c.o.Identity == nil {
			return metrics.TLSNoLocalIdentity, ""
		}
		if id := d.identity(addr); id != "" {
			return metrics.TLSTrue, id
		}
		return metrics.TLSNotProvidedByServiceDiscovery, ""
	}
	d.target.Balancer = balance.New(balance.Options[*httpproxy.Upstream]{
		Strategy: c.o.Balancer,
		OnEject: func(addr, reason string) {
			if c.o.OnEject != nil {
				c.o.OnEject(authority, addr, reason)
			}
		},
		New: func(s balance.Spec) *httpproxy.Upstream {
			d.mu.Lock()
			hint, meshed := d.hints[s.Addr], d.ids[s.Addr] != ""
			d.mu.Unlock()
			// An endpoint with an identity is a meshed proxy: it speaks
			// both protocols, and HTTP/1 requests go to it as HTTP/1 over a
			// pool of (mTLS) connections, resumed when new ones are needed.
			// Carrying them over HTTP/2 instead doubled a meshed HTTP/1
			// request's CPU (Go's HTTP/2 runs each stream on goroutines of
			// its own; docs/design-notes.md). The h2 hint, which the
			// control plane gives meshed pods, is for everyone else's.
			u := httpproxy.NewUpstream(s.Addr, hint == discover.HintH2 && !meshed, dial)
			u.SetH2Windows(c.o.H2StreamWindow, c.o.H2ConnectionWindow)
			return u
		},
		Close: (*httpproxy.Upstream).Close,
	})
	if c.profiles != nil {
		d.profileDone = make(chan struct{})
		d.target.Profile = d.currentProfile
		go func() {
			defer close(d.profileDone)
			pw, err := c.profiles.Profile(context.Background(), authority)
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
		w, err := c.o.Resolver.Resolve(context.Background(), authority)
		if err != nil {
			d.err = err
			if errors.Is(err, discover.ErrNotFound) && d.keepNotFound(authority, err) {
				d.markReady()
				return
			}
			// Forgotten before its waiters wake: a Get after theirs
			// resolves again instead of finding this failure cached.
			c.forget(authority, d)
			d.markReady()
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

// keepNotFound keeps d, whose authority the resolver does not know, in the
// cache: until the resolver says it may know it now (a NotFoundError's
// Appeared), or for NotFoundTTL. Every request by that name would
// otherwise ask the resolver again (a round trip to the control plane).
// It reports false when d was evicted meanwhile.
func (d *Dest) keepNotFound(authority string, err error) bool {
	var nf *discover.NotFoundError
	if !errors.As(err, &nf) || nf.Appeared == nil {
		d.notFoundUntil.Store(time.Now().Add(d.c.o.NotFoundTTL).UnixNano())
		return true
	}
	d.mu.Lock()
	closed := d.closed
	if !closed {
		d.stopNotFound = nf.Stop
	}
	d.mu.Unlock()
	if closed {
		nf.Stop()
		return false
	}
	go func() {
		<-nf.Appeared
		if d.c.forget(authority, d) {
			d.close()
		}
	}()
	return true
}

// expired says whether d holds a "not found" kept past its time.
func (d *Dest) expired() bool {
	until := d.notFoundUntil.Load()
	return until != 0 && time.Now().UnixNano() > until
}

// passthrough builds the destination of a single address (Cache.Passthrough).
func (c *Cache) passthrough(addr string) *Dest {
	d := &Dest{c: c, ready: make(chan struct{}), hints: map[string]string{}}
	d.target.Authority = addr
	d.target.TLS = func(string) (string, string) {
		if c.o.Identity == nil {
			return metrics.TLSNoLocalIdentity, ""
		}
		return metrics.TLSNotProvidedByServiceDiscovery, ""
	}
	d.target.Balancer = balance.New(balance.Options[*httpproxy.Upstream]{
		Strategy: c.o.Balancer,
		New: func(s balance.Spec) *httpproxy.Upstream {
			u := httpproxy.NewUpstream(s.Addr, false, func(ctx context.Context, addr string) (net.Conn, error) {
				return d.connect(ctx, addr, "")
			})
			u.SetH2Windows(c.o.H2StreamWindow, c.o.H2ConnectionWindow)
			return u
		},
		Close: (*httpproxy.Upstream).Close,
	})
	d.target.Balancer.Update([]balance.Spec{{Addr: addr}})
	d.markReady()
	return d
}

// currentProfile is the destination's profile now, or nil.
func (d *Dest) currentProfile() *profile.Profile {
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
func (d *Dest) connect(ctx context.Context, addr, alpn string) (net.Conn, error) {
	c, err := d.c.o.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	c = rawconn.Wrap(c)
	tls, serverID := d.target.TLS(addr)
	if d.c.o.Meter != nil {
		c = d.c.o.Meter(c, addr, tls, serverID)
	}
	if serverID == "" || d.c.o.Identity == nil {
		return c, nil
	}
	return d.c.secure(ctx, c, addr, serverID, alpn)
}

// identity is the SPIFFE ID the endpoint at addr presents, "" if unmeshed.
func (d *Dest) identity(addr string) string {
	if d.ids == nil {
		return ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ids[addr]
}

func (d *Dest) markReady() { d.readyOne.Do(func() { close(d.ready) }) }

func (d *Dest) apply(eps []discover.Endpoint) {
	specs := make([]balance.Spec, 0, len(eps))
	opaque := len(eps) > 0
	d.mu.Lock()
	for _, ep := range eps {
		d.hints[ep.Addr] = ep.Protocol
		d.ids[ep.Addr] = ep.Identity
		if d.c.IsLocal(ep.Addr) {
			d.ids[ep.Addr] = "" // straight to the application: no mTLS, no orig-proto
			if ep.Protocol == discover.HintH2 {
				// The hint says the pod's proxy speaks HTTP/2; the
				// application behind it may not.
				d.hints[ep.Addr] = discover.HintNone
			}
		}
		specs = append(specs, balance.Spec{Addr: ep.Addr, Weight: ep.Weight})
		opaque = opaque && ep.Protocol == discover.HintOpaque
	}
	d.mu.Unlock()
	d.opaque.Store(opaque)
	d.target.Balancer.Update(specs)
}

func (d *Dest) close() {
	d.mu.Lock()
	w, pw, stop := d.watch, d.profile, d.stopNotFound
	d.closed = true
	d.mu.Unlock()
	if stop != nil {
		stop()
	}
	if w != nil {
		w.Close()
	}
	if pw != nil {
		pw.Close()
	}
	d.target.Balancer.Close()
}
