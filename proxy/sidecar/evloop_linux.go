package sidecar

// The event loops (Config.EventLoop): a side's HTTP/1.1 connections, once
// detected (and, inbound, their mTLS terminated) on their accepting
// goroutine, move to proxy/httpproxy/h1loop, which serves there the
// requests the goroutine path would serve with no more than routing, and
// hands a connection with anything else (a profile's routes, splits,
// retries or timeouts, a refused or looping request, an address for an
// authority, the peer proxies' HTTP/2 fields) to that path, for good,
// with every byte it has not consumed. README.md, "Event loops".

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/proxy/detect"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h1loop"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h2loop"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/outbound"
)

type (
	loopGroup  = *h1loop.Group
	loopServer = *h1loop.Server
)

// startLoops runs the loops when Config.EventLoop asks for them, with a
// server for each side.
func (p *Proxy) startLoops() error {
	if !p.cfg.EventLoop {
		return nil
	}
	g, err := h1loop.NewGroup(p.cfg.EventLoops, p.cfg.EventLoopHold, p.cfg.EventLoopHoldRate)
	if err != nil {
		return err
	}
	p.loops = g
	if ap, err := netip.ParseAddrPort(p.cfg.InboundForward); err == nil && p.own.listener(ap) != "" {
		p.inboundForwardLoops = true // refused (508) by inboundRouter
	}
	for _, s := range []*side{p.out, p.in} {
		s.loop = &h1loop.Server{
			Group:          g,
			Router:         loopRouter{p: p, s: s},
			Metrics:        p.metrics,
			HeaderTimeout:  p.cfg.HeaderTimeout,
			ConnectTimeout: p.cfg.ConnectTimeout,
			InFlight:       &s.inFlight,
			MaxInFlight:    int64(max(p.cfg.MaxInFlight, 0)),
			Closed:         func() { s.open.Add(-1); s.tcp.Done() },
			Handover:       func(c net.Conn) net.Conn { return &counted{Conn: c, s: s} },
			Fallback:       func(c net.Conn, v any) { p.loopFallback(s, c, v.(*accepted)) },
			Unwrap:         loopUnwrap,
			Dialed:         p.dialed(s),
		}
		if p.cfg.EventLoopH2 {
			s.loop.HTTP2 = p.loopH2(s)
		}
	}
	return nil
}

// loopH2 is a side's HTTP/2 server on the loops: h2server's settings, and
// the side's handler for the streams the loops do not relay (h2loop's
// Bridge), each with the context h2server would give it.
func (p *Proxy) loopH2(s *side) *h2loop.Server {
	logf := s.h2.Config.ErrorLog.Printf
	return &h2loop.Server{
		Config: s.h2.Config,
		Handler: &h2loop.Bridge{
			Handler: s.h2.Handler,
			BaseContext: func(st *h2loop.Stream) context.Context {
				// The loop has the socket: no local address to give
				// (nothing of the sidecar's reads it).
				ctx := context.WithValue(context.Background(), http.ServerContextKey, s.h2)
				if a, ok := h1loop.ConnValue(st).(*accepted); ok {
					return p.connContext(ctx, s.direction, a)
				}
				return ctx
			},
			Logf: logf,
		},
		Logf: logf,
	}
}

// loopDrain closes the side's idle loop connections, and the others after
// their response.
func (s *side) loopDrain() {
	if s.loop != nil {
		s.loop.Drain()
	}
}

// loopCut closes the side's loop connections (the drain's deadline).
func (s *side) loopCut() {
	if s.loop != nil {
		s.loop.Cut()
	}
}

// dialed is the side's Server.Dialed: the inbound side's connects tell
// whether the application is up, as the goroutine path's dialer tells.
func (p *Proxy) dialed(s *side) func(string, error) {
	if s != p.in {
		return nil
	}
	return p.app.observe
}

// closeLoops ends the loops, and their connections, and the goroutines
// their HTTP/2 servers keep warm for the streams they hand to handlers
// (which would otherwise outlive the proxy by their idle time).
func (p *Proxy) closeLoops() {
	if p.loops != nil {
		p.loops.Close()
	}
	for _, s := range []*side{p.out, p.in} {
		if s.loop == nil || s.loop.HTTP2 == nil {
			continue
		}
		if b, ok := s.loop.HTTP2.Handler.(*h2loop.Bridge); ok {
			b.Stop()
		}
	}
}

// serveOnLoop moves a's connection, HTTP/1 detected, to the loops; false
// when they do not take it (the caller serves it).
func (p *Proxy) serveOnLoop(s *side, a *accepted) bool {
	if s.loop == nil {
		return false
	}
	a.loopClient = client(a) // a's address: the loop's connection has none
	a.loopDst = a.origDst.String()
	a.loopHop = []string{p.id}
	if a.peer != "" {
		a.loopPeer = []string{a.peer}
	}
	a.onLoops = true
	s.tcp.Add(1) // until the loop closes it (Closed) or loopFallback ends
	if tc, ok := a.Conn.(*tls.Conn); ok {
		if !s.loop.ServeTLS(tc, tc.ConnectionState(), a, a.lineDeadline) {
			s.tcp.Done()
			return false
		}
		return true
	}
	if !s.loop.ServeConn(a, a, a.lineDeadline) {
		s.tcp.Done()
		return false
	}
	return true
}

// loopFallback serves a connection the loops handed over on this
// goroutine, as the accepting one would have.
func (p *Proxy) loopFallback(s *side, c net.Conn, a *accepted) {
	defer s.tcp.Done()
	a.Conn = c
	s.h1.ServeConn(context.Background(), a)
}

// loopUnwrap takes the sidecar's layers off a connection for the loops:
// the accepted connection, detection's read-ahead, mTLS's ClientHello
// recorder (idle once the handshake is done), the side's count (the
// loops count it from then on).
func loopUnwrap(c net.Conn) (net.Conn, []byte, bool) {
	switch c := c.(type) {
	case *accepted:
		return c.Conn, nil, true
	case *detect.Conn:
		return c.Conn, c.Peeked(), true
	case *helloConn:
		if c.recording {
			return nil, nil, false
		}
		return c.Conn, nil, true
	case *counted:
		return c.Conn, nil, true
	}
	return nil, nil, false
}

// loopRouter routes a side's requests on the loops.
type loopRouter struct {
	p *Proxy
	s *side
}

func (lr loopRouter) Route(r *http.Request, v any) h1loop.Target {
	a := v.(*accepted)
	if lr.s == lr.p.out {
		return lr.p.outboundLoop(r, a)
	}
	return lr.p.inboundLoop(r, a)
}

// outboundLoop routes as outboundRouter and the outbound pipeline do, for
// a request whose authority is a name with a destination already
// resolved and no profile.
func (p *Proxy) outboundLoop(r *http.Request, a *accepted) h1loop.Target {
	var none h1loop.Target
	h := r.Header
	if h[dstOverrideKey] != nil || r.Host == "" || p.sawBefore(h) {
		return none
	}
	if r.Host != a.loopHost {
		auth, err := discover.CanonicalAuthority(r.Host, 80)
		if err != nil {
			return none
		}
		if _, err := netip.ParseAddrPort(auth); err == nil {
			return none // an address: looked up as a service's, or the original destination
		}
		a.loopHost, a.loopAuth = r.Host, auth
	}
	dests, auth := p.out.dests, a.loopAuth
	d, ok := dests.Ready(auth)
	if !ok {
		return h1loop.Target{Labels: metrics.Request{Direction: "outbound", Authority: auth}, Await: func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			dests.Get(ctx, auth)
		}}
	}
	t := d.Target()
	if t.Profile != nil && t.Profile() != nil {
		return none // routes, splits, timeouts, retries: the pipeline's
	}
	// An HTTP/2 request goes on in HTTP/2 (relayed), as the goroutine
	// path keeps the client's protocol; so does an HTTP/1.1 one to an
	// endpoint that takes HTTP/2 (a meshed pod's proxy), marked as
	// HTTP/1.1's, as the Forwarder carries it.
	h2 := r.ProtoMajor == 2
	ep, err := t.Balancer.Pick()
	if err != nil {
		return none
	}
	upgraded := ep.Value().H2Only && !h2
	tls, _ := p.acceptedTLS("outbound", a)
	labels := metrics.Request{Direction: "outbound", Authority: t.Authority, Target: ep.Addr(), TLS: tls}
	if t.TLS != nil {
		labels.TLS, labels.ServerID = t.TLS(ep.Addr())
	}
	if labels.TLS != metrics.TLSLoopback {
		// Marked as forwarded, but not for this pod's own application,
		// which no inbound side stands before (see HopHeader).
		if h[hopKey] == nil {
			h[hopKey] = a.loopHop
		} else {
			h[hopKey] = append(h[hopKey], p.id)
		}
	}
	return h1loop.Target{Endpoint: ep, Labels: labels, MTLS: labels.TLS == metrics.TLSTrue, H2: h2 || upgraded, OrigProto: upgraded}
}

// inboundLoop routes as the inbound pipeline does (policy, then the
// application), for a request the policy allows and that carries none of
// the peer proxies' HTTP/2 fields.
func (p *Proxy) inboundLoop(r *http.Request, a *accepted) h1loop.Target {
	var none h1loop.Target
	h := r.Header
	if h[expectKey] != nil {
		return none
	}
	// An HTTP/2 request stays HTTP/2 (relayed), as outboundLoop's, but for
	// an HTTP/1.1 client's that a peer proxy carried over HTTP/2 (its
	// OrigProtoHeader): the application gets it in HTTP/1.1, as the
	// Forwarder sends it, on the loop's HTTP/1.1 pools (its body, if
	// any, read whole first: h1loop's README).
	h2 := r.ProtoMajor == 2
	if v := h[origProtoKey]; len(v) > 0 && strings.HasPrefix(v[0], "HTTP/1") {
		h2 = false
	}
	port := p.inboundPort(a)
	if !p.cfg.Authz.HTTP(a.loopClient, port, r.URL.Path) {
		return none // refused (403) and counted by the pipeline
	}
	var d *outbound.Dest
	switch {
	case p.cfg.InboundForward != "":
		if p.inboundForwardLoops {
			return none
		}
		d = p.in.dests.Passthrough(p.cfg.InboundForward)
	case a.origDst.IsValid():
		if p.own.listener(a.origDst) != "" {
			return none
		}
		d = p.in.dests.Passthrough(a.loopDst)
	default:
		return none
	}
	t := d.Target()
	ep, err := t.Balancer.Pick()
	if err != nil || (ep.Value().H2Only && !h2) {
		return none
	}
	tls, clientID := p.acceptedTLS("inbound", a)
	labels := metrics.Request{Direction: "inbound", Authority: t.Authority, Target: ep.Addr(), TLS: tls, ClientID: clientID}
	if a.peer == "" && len(p.cfg.Authz.Probes) > 0 && p.cfg.Authz.IsProbe(port, r.URL.Path) {
		labels.Route = metrics.RouteProbe
	}
	// As inboundRouter: the application learns who called, never from a
	// value a client made up.
	delete(h, clientIDKey)
	delete(h, hopKey)
	if a.peer != "" {
		h[clientIDKey] = a.loopPeer
	}
	return h1loop.Target{Endpoint: ep, Labels: labels, ConnTLS: p.loopbackTLS(), H2: h2}
}

var (
	dstOverrideKey = http.CanonicalHeaderKey(httpproxy.DstOverrideHeader)
	origProtoKey   = http.CanonicalHeaderKey(httpproxy.OrigProtoHeader)
	expectKey      = http.CanonicalHeaderKey(httpproxy.ExpectHeader)
	clientIDKey    = http.CanonicalHeaderKey(ClientIDHeader)
	hopKey         = http.CanonicalHeaderKey(HopHeader)
)
