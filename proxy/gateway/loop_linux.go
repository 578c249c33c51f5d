package gateway

// The event loops (Config.EventLoop): a plaintext port's HTTP/1.1
// requests, and HTTPS ones whose ALPN settled HTTP/1.1, served by
// proxy/httpproxy/h1loop instead of a goroutine per connection. This file
// is the gateway's part: which requests the loops serve (loopRouter: those
// the goroutine path would serve as they do, README.md, "Event loop") and
// the ports' accounting of the loops' connections.

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h1loop"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h2loop"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

type (
	loopGroup  = *h1loop.Group
	loopServer = *h1loop.Server
)

// startLoop runs the gateway's loops when Config.EventLoop asks for them:
// Config.EventLoops, or one per processor the runtime uses.
func (g *Gateway) startLoop() error {
	if !g.cfg.EventLoop {
		return nil
	}
	loops, err := h1loop.NewGroup(g.cfg.EventLoops, g.cfg.EventLoopHold, g.cfg.EventLoopHoldRate)
	if err != nil {
		return err
	}
	g.loops = loops
	return nil
}

// closeLoop ends the loops, with the gateway.
func (g *Gateway) closeLoop() {
	if g.loops != nil {
		g.loops.Close()
	}
}

// loopServed counts the final responses the loops passed on (tests).
func (g *Gateway) loopServed() int64 {
	if g.loops == nil {
		return 0
	}
	return g.loops.Served()
}

// loopListen gives the port its loop server and, when the port is
// plaintext HTTP on a TCP socket without PROXY headers, has the loops
// accept its connections (true); the port's HTTPS connections may go to
// the loops after their handshake either way (loopTLS).
func (ps *portServer) loopListen() bool {
	g := ps.g
	if g.loops == nil {
		return false
	}
	ps.loop = &h1loop.Server{
		Group:          g.loops,
		Router:         loopRouter{ps},
		Metrics:        g.metrics,
		ConnLabels:     accepted,
		HeaderTimeout:  g.cfg.HeaderTimeout,
		ConnectTimeout: g.cfg.ConnectTimeout,
		InFlight:       &g.inFlight,
		MaxInFlight:    int64(max(g.cfg.MaxInFlight, 0)),
		Admit:          ps.loopAdmit,
		Closed:         ps.loopClosed,
		Handover:       func(c net.Conn) net.Conn { return &counted{Conn: c, ps: ps} },
		Fallback:       ps.loopFallback,
		Unwrap:         loopUnwrap,
	}
	if g.cfg.EventLoopH2 {
		// HTTP/2 on the loops too: every stream served as h2server serves
		// it, by the port's handler on a goroutine of its own (Bridge), the
		// connection's frames on the loop.
		bctx := context.WithValue(ps.ctx, http.ServerContextKey, ps.h2)
		bctx = context.WithValue(bctx, http.LocalAddrContextKey, ps.ln.Addr())
		logf := ps.h2.Config.ErrorLog.Printf
		ps.loop.HTTP2 = &h2loop.Server{
			Config: ps.h2.Config,
			Handler: &h2loop.Bridge{
				Handler:     ps.h2c,
				BaseContext: func(*h2loop.Stream) context.Context { return bctx },
				Logf:        logf,
			},
			Logf: logf,
		}
	}
	t := g.table.Load()
	p := t.ports[ps.number]
	if p == nil || p.protocol != gatewaypb.Port_HTTP || p.proxyProtocol {
		return false
	}
	if err := ps.loop.Listen(ps.ln); err != nil {
		if !errors.Is(err, h1loop.ErrNotTCP) {
			g.log.Warn("event loop: listen", "port", ps.number, "err", err)
		}
		return false
	}
	return true
}

// loopAdmit counts a connection the loops accepted, or refuses it at
// Config.MaxConnections.
func (ps *portServer) loopAdmit() bool {
	if ps.maxConns > 0 && ps.open.Load() >= ps.maxConns {
		ps.g.metrics.ConnRefused("inbound", "max_connections")
		return false
	}
	ps.open.Add(1)
	ps.streams.Add(1)
	return true
}

// loopClosed is a loop connection's end (one handed over is counted
// until it closes, and by loopFallback).
func (ps *portServer) loopClosed() {
	ps.open.Add(-1)
	ps.streams.Done()
}

// loopFallback serves a connection the loops handed over with h1server,
// unless the port is no longer what it was.
func (ps *portServer) loopFallback(c net.Conn, _ any) {
	defer ps.streams.Done()
	protocol := gatewaypb.Port_HTTP
	if _, ok := c.(interface{ ConnectionState() tls.ConnectionState }); ok {
		protocol = gatewaypb.Port_TLS
	}
	if t := ps.g.table.Load(); t == nil || t.ports[ps.number] == nil || t.ports[ps.number].protocol != protocol {
		c.Close()
		return
	}
	ps.h1.ServeConn(context.Background(), c)
}

// loopTLS moves an HTTPS connection, its handshake done and HTTP/1.1
// settled by ALPN, to the loops; false (the caller serves it) for one
// they do not take: a client certificate (the requests carry it), a
// PROXY header, bytes read past the ClientHello's replay.
func (ps *portServer) loopTLS(tc *tls.Conn, st tls.ConnectionState) bool {
	if ps.loop == nil || len(st.PeerCertificates) > 0 {
		return false
	}
	ps.streams.Add(1) // the loop's, until loopClosed or loopFallback
	if !ps.loop.ServeTLS(tc, st, nil, time.Time{}) {
		ps.streams.Done()
		return false
	}
	return true
}

// loopUnwrap takes the gateway's layers off a connection under a TLS Conn
// for the loops: a replay of the ClientHello with nothing left to replay,
// and the port's count (the loops count it from then on).
func loopUnwrap(c net.Conn) (net.Conn, []byte, bool) {
	switch c := c.(type) {
	case *replayConn:
		if c.r != nil && c.r.Buffered() > 0 {
			return nil, nil, false
		}
		return c.Conn, nil, true
	case *counted:
		return c.Conn, nil, true
	}
	return nil, nil, false
}

// loopDrain stops the loops' accepting on the port and closes its idle
// connections; the others close after their response.
func (ps *portServer) loopDrain() {
	if ps.loop != nil {
		ps.loop.Drain()
	}
}

// loopCut closes the port's loop connections at the drain deadline.
func (ps *portServer) loopCut() {
	if ps.loop != nil {
		ps.loop.Cut()
	}
}

// loopStopWorkers ends the goroutines the port's HTTP/2 on the loops keeps
// warm for the streams it hands to the port's handler (Bridge), once the
// port has drained: they would otherwise outlive it by their idle time.
func (ps *portServer) loopStopWorkers() {
	if ps.loop == nil || ps.loop.HTTP2 == nil {
		return
	}
	if b, ok := ps.loop.HTTP2.Handler.(*h2loop.Bridge); ok {
		b.Stop()
	}
}

// loopRouter routes a port's requests on the loops as route does, and
// declines what the goroutine path must serve.
type loopRouter struct{ ps *portServer }

func (lr loopRouter) Route(r *http.Request, _ any) h1loop.Target {
	var none h1loop.Target
	ps := lr.ps
	g := ps.g
	t := g.table.Load()
	if t == nil {
		return none
	}
	protocol := gatewaypb.Port_HTTP
	if r.TLS != nil {
		protocol = gatewaypb.Port_TLS
	}
	p := t.ports[ps.number]
	if p == nil || p.protocol != protocol || p.proxyProtocol || headerBytes(r) > t.maxHeader {
		return none
	}
	name := requestHost(r.Host)
	var l *listener
	if r.TLS != nil {
		l = p.listenerFor(name, gatewaypb.Listener_HTTPS)
		if sni := requestHost(r.TLS.ServerName); sni != "" && l != p.listenerFor(sni, gatewaypb.Listener_HTTPS) {
			return none // misdirected (421): the goroutine path answers
		}
	} else {
		l = p.listenerFor(name, gatewaypb.Listener_HTTP)
	}
	if l == nil {
		return none
	}
	h := l.hostFor(name)
	if h == nil {
		return none
	}
	rl := h.rule(r)
	if rl == nil || !rl.loopOK || g.sawBefore(r.Header) {
		return none
	}
	be := pickWeighted(rl.backends, rl.total)
	if be == nil || be.authority == "" || !be.loopOK {
		return none
	}
	d, ok := be.cache.Ready(be.authority)
	if !ok {
		// Resolved on a goroutine (Get waits for the destination API's
		// first answer); the request is routed again once it is in, and
		// handed over if it still is not.
		cache, authority := be.cache, be.authority
		return h1loop.Target{Labels: metrics.Request{Direction: direction, Authority: authority}, Await: func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cache.Get(ctx, authority)
		}}
	}
	tgt := d.Target()
	if tgt.Profile != nil && tgt.Profile() != nil {
		return none // a service profile's routes and retries: the goroutine path's
	}
	ep, err := tgt.Balancer.Pick()
	if err != nil || (ep.Value().H2Only && !be.h2) {
		return none // h2 with prior knowledge to an HTTP/1.1 backend's endpoint: the goroutine path's
	}
	labels := metrics.Request{Direction: direction, Authority: tgt.Authority, Route: be.key, Target: ep.Addr()}
	if tgt.TLS != nil {
		labels.TLS, labels.ServerID = tgt.TLS(ep.Addr())
	}
	forwarded(r, t.trustedHops, l.scheme, g.id)
	return h1loop.Target{Endpoint: ep, Labels: labels, MTLS: labels.TLS == metrics.TLSTrue, H2: be.h2}
}
