package sidecar

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/meridian-mesh/meridian/proxy/detect"
)

// serveSilent serves a connection whose client sent nothing for the detect
// timeout. It is either a server-speaks-first protocol (SMTP, MySQL, FTP)
// waiting for its greeting, or a connection an HTTP client's pool opened
// ahead of need (Go's transport keeps such spares) that will carry requests
// later. Committing the second kind to opaque TCP would send every one of
// its requests to the one endpoint it was spliced to, past per-request
// balancing, traffic splits and route policy. So the destination is dialed,
// for a greeting to come through at once, but not committed to: whoever
// speaks first decides. If the server does, the stream is opaque; if the
// client does, its bytes are detected as on any connection, and an HTTP
// client is served as HTTP (the dialed connection closed unused).
func (p *Proxy) serveSilent(ctx context.Context, s *side, a *accepted, dc *detect.Conn) {
	if !s.track(a) {
		p.forget(s, a, nil)
		return
	}
	allowed := p.allowOpaque(s, a)
	var up net.Conn
	var authority string
	if allowed {
		up, authority = p.dialOpaque(ctx, s, a)
	}
	if up == nil {
		p.awaitClient(s, a, dc, allowed)
		return
	}
	if !s.track(up) {
		p.forget(s, a, up)
		return
	}
	// The client's wait is bounded before the server's reader starts:
	// the reader cancels the wait by moving this deadline.
	var idleAt time.Time
	if idle := p.cfg.OpaqueIdleTimeout; idle > 0 {
		idleAt = time.Now().Add(idle)
	}
	a.Conn.SetReadDeadline(idleAt)
	first := make(chan readResult, 1)
	go func() {
		// A greeting is short; the rest follows through the splice.
		buf := make([]byte, 1024)
		n, err := up.Read(buf)
		if n > 0 || !isTimeout(err) {
			// The server spoke (or hung up) first: stop waiting for
			// the client. (Before the send: the receiver clears the
			// deadline after it.)
			a.Conn.SetReadDeadline(time.Now())
		}
		first <- readResult{buf[:n], err}
	}()
	cerr := dc.Wait()
	var r readResult
	select {
	case r = <-first:
	default:
		// The client spoke (or hung up, or idled) first: stop reading the
		// server, and see whether it spoke too in the meantime.
		up.SetReadDeadline(time.Now())
		r = <-first
	}
	a.Conn.SetReadDeadline(time.Time{})
	up.SetReadDeadline(time.Time{})
	serverSpoke := len(r.b) > 0 || !isTimeout(r.err)
	switch {
	case serverSpoke:
		up = &prefixConn{Conn: up, b: r.b, err: r.err}
	case isTimeout(cerr):
		p.log.Debug("opaque stream idle: closed", "direction", s.direction, "authority", authority, "idle_timeout", p.cfg.OpaqueIdleTimeout)
		p.forget(s, a, up)
		return
	case cerr == nil:
		proto, err := p.resume(a, dc)
		if err != nil {
			p.forget(s, a, up)
			return
		}
		if proto == detect.HTTP1 || proto == detect.HTTP2 {
			p.forget(s, nil, up)
			s.conns.Delete(net.Conn(a))
			p.serveHTTP(s, a, proto)
			return
		}
	}
	// Opaque (the client's close included: a half-close reaches the server).
	p.splice(s, a, up, authority)
}

// awaitClient waits, until its header deadline as an HTTP server would, for
// a silent client with nothing dialed for it (the policy refuses it opaque
// streams, or its destination is unknown or down) to send a request. HTTP
// is served; anything else is refused or closed as serveOpaque would.
func (p *Proxy) awaitClient(s *side, a *accepted, dc *detect.Conn, allowed bool) {
	a.Conn.SetReadDeadline(a.lineDeadline)
	err := dc.Wait()
	a.Conn.SetReadDeadline(time.Time{})
	s.conns.Delete(net.Conn(a))
	proto := detect.Opaque
	if err == nil {
		proto, err = p.resume(a, dc)
	}
	switch {
	case err == nil && (proto == detect.HTTP1 || proto == detect.HTTP2):
		p.serveHTTP(s, a, proto)
	case !allowed:
		p.denyOpaque(s, a)
	default:
		a.Close()
	}
}

// resume detects what a silent client sent once it spoke. Its request
// line, if it is one, is given the header timeout from its first byte.
func (p *Proxy) resume(a *accepted, dc *detect.Conn) (detect.Protocol, error) {
	a.lineDeadline = time.Now().Add(p.cfg.HeaderTimeout)
	return dc.Resume(p.cfg.DetectTimeout, a.lineDeadline)
}

// serveHTTP serves a detected HTTP connection on this goroutine.
func (p *Proxy) serveHTTP(s *side, a *accepted, proto detect.Protocol) {
	if proto == detect.HTTP2 {
		if p.cfg.EventLoopH2 && p.serveOnLoop(s, a) {
			return
		}
		s.h2.ServeConn(p.connContext(context.Background(), s.direction, a), a)
		return
	}
	if p.serveOnLoop(s, a) {
		return
	}
	a.headerDeadline.Store(a.lineDeadline.UnixNano())
	s.h1.ServeConn(context.Background(), a)
}

// forget closes and untracks a and up (either may be nil).
func (p *Proxy) forget(s *side, a *accepted, up net.Conn) {
	if a != nil {
		s.conns.Delete(net.Conn(a))
		a.Close()
	}
	if up != nil {
		s.conns.Delete(up)
		up.Close()
	}
}

type readResult struct {
	b   []byte
	err error
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// prefixConn returns what a first read got (bytes, then its error if it
// had one) before reading the connection again.
type prefixConn struct {
	net.Conn
	b   []byte
	err error
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.b) > 0 {
		n := copy(p, c.b)
		c.b = c.b[n:]
		return n, nil
	}
	if c.err != nil {
		err := c.err
		c.err = nil
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
