package h1loop

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h1server"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h2loop"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/internal/h1head"
	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
	"github.com/meridian-mesh/meridian/proxy/internal/rawconn"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// Router routes the requests of a Server's connections.
type Router interface {
	// Route is called on the loop, for a request whose head (and body,
	// if any) is in, and must not block. r carries the client's address
	// (RemoteAddr) and, over TLS, the connection's state (TLS); Route
	// may rewrite its header for the endpoint (hop-by-hop fields are
	// removed after it). value is the connection's (ServeConn, ServeTLS;
	// nil for Listen's). The zero Target declines: the connection goes to
	// the goroutine path.
	Route(r *http.Request, value any) Target
}

// Target is where a request goes.
type Target struct {
	// Endpoint is picked for the request (which the loop begins and ends
	// on it, as the Forwarder does); Labels count it (request_total,
	// response_total, latency).
	Endpoint *balance.Endpoint[*httpproxy.Upstream]
	Labels   metrics.Request
	// MTLS sends the request over mTLS to Labels.ServerID, on a
	// connection dialed with the endpoint's DialHTTP1; otherwise in
	// plaintext, on one the loop dials, whose tcp_* series have the tls
	// label ConnTLS (Labels.TLS if empty).
	MTLS    bool
	ConnTLS string
	// H2 says the endpoint is spoken to in HTTP/2 (an h2c or gRPC
	// backend, a peer proxy that takes HTTP/2): a request goes to it as
	// a stream of the loop's HTTP/2 connections to it, an HTTP/2 one
	// body and all (relay_linux.go), an HTTP/1.1 one with the body it
	// came with, its response passed back in HTTP/1.1
	// (h1relay_linux.go), when the Server has HTTP2 (a gRPC one, or
	// any without HTTP2, goes to the goroutine path).
	H2 bool
	// OrigProto, with H2, marks an HTTP/1.1 request as HTTP/1.1's
	// (httpproxy.OrigProtoHeader), as the Forwarder marks one it carries
	// over HTTP/2 to a meshed endpoint: the peer proxy there sends it on
	// to its application in HTTP/1.1.
	OrigProto bool
	// Await, without an Endpoint, says the request's destination is not
	// known yet: Await runs on a goroutine of its own, blocking until it
	// is (or giving up), and the request is routed again, once. A client
	// that goes away meanwhile is counted as a cancellation under Labels'
	// direction and authority.
	Await func()
}

// Server serves a listener's HTTP/1.1 connections (Listen), and
// connections a goroutine accepted (ServeConn) or shook TLS hands on
// (ServeTLS), on a Group's loops. The fields are
// set before its first use and not changed after.
type Server struct {
	Group  *Group
	Router Router

	Metrics *metrics.Registry
	// ConnLabels label the clients' connections' tcp_* series.
	ConnLabels metrics.ConnLabels

	// HeaderTimeout bounds the wait for a request's head, and then for
	// its body, as h1server's ReadHeaderTimeout (a slow body goes to the
	// goroutine path, whose rules apply): DefaultHeaderTimeout if 0.
	HeaderTimeout time.Duration
	// IdleTimeout closes a connection idle between requests:
	// DefaultIdleTimeout if 0.
	IdleTimeout time.Duration
	// ConnectTimeout bounds a plaintext connect to an endpoint (an mTLS
	// one is its dialer's): DefaultConnectTimeout if 0. Dialed, if set, is
	// told of each such connect's end: nil once connected, else why not.
	ConnectTimeout time.Duration
	Dialed         func(addr string, err error)

	// InFlight counts the requests in flight (nil: the Server's own), as
	// the goroutine path counts its own in the same counter; at
	// MaxInFlight (0: no bound) a request goes to the goroutine path,
	// which sheds it.
	InFlight    *atomic.Int64
	MaxInFlight int64

	// Admit is asked for each connection Listen accepts: false refuses
	// it (closed; Admit counts why). Closed is told when a connection the
	// loops served ends (Listen's, and ServeConn's and ServeTLS's once
	// taken), unless it was handed to Fallback.
	Admit  func() bool
	Closed func()
	// Handover wraps the socket of a connection handed to the goroutine
	// path (under its metrics.Conn): nil, as it is.
	Handover func(net.Conn) net.Conn
	// Fallback serves, on a goroutine of its own, a connection the loops
	// handed over, with the bytes they did not consume read first, and
	// its value; it owns the connection. A TLS one has a ConnectionState
	// method.
	Fallback func(c net.Conn, value any)
	// Unwrap takes a layer the loops do not know off a connection given
	// to ServeConn, or the one under ServeTLS's TLS Conn: the connection
	// under it and the bytes it read from that and did not consume (false:
	// not one the loops take). The loops take one metrics.Conn over a
	// *net.TCPConn or *rawconn.Conn, with any such layers in between.
	Unwrap func(net.Conn) (under net.Conn, buffered []byte, ok bool)

	// HTTP2, if set, serves the HTTP/2 connections on the loops: h2c
	// with prior knowledge (a connection whose first bytes are HTTP/2's
	// preface) and TLS ones whose ALPN settled h2 (ServeTLS). Without it
	// an h2c connection goes to the goroutine path, and ServeTLS takes
	// HTTP/1.1 only.
	HTTP2 *h2loop.Server

	h2once   sync.Once
	h2       *h2loop.Server   // HTTP2's, its streams routed first (loopH2)
	lis      *evloop.Listener // the first loop's accepting, nil without
	draining atomic.Bool      // connections close once idle
	flight   atomic.Int64     // InFlight's, when nil
}

const (
	// DefaultHeaderTimeout is Server.HeaderTimeout's default.
	DefaultHeaderTimeout = 30 * time.Second
	// DefaultIdleTimeout is Server.IdleTimeout's default: h1server's.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultConnectTimeout is Server.ConnectTimeout's default: the
	// proxies' own.
	DefaultConnectTimeout = time.Second
)

func (s *Server) connectTimeout() time.Duration {
	if s.ConnectTimeout > 0 {
		return s.ConnectTimeout
	}
	return DefaultConnectTimeout
}

func (s *Server) inFlight() *atomic.Int64 {
	if s.InFlight != nil {
		return s.InFlight
	}
	return &s.flight
}

func (s *Server) headerTimeout() time.Duration {
	if s.HeaderTimeout > 0 {
		return s.HeaderTimeout
	}
	return DefaultHeaderTimeout
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return DefaultIdleTimeout
}

// ErrNotTCP is Listen's error for a listener whose socket the loops
// cannot take: not a TCP listener (or a rawconn.Listener over one).
var ErrNotTCP = errors.New("h1loop: not a TCP listener")

// Listen accepts ln's connections on the Group's first loop, which deals
// them to the loops in turn. ln stays the caller's: Drain stops the
// loops' accepting (on a duplicate of its socket).
func (s *Server) Listen(ln net.Listener) error {
	if rl, ok := ln.(rawconn.Listener); ok {
		ln = rl.Listener
	}
	if _, ok := ln.(*net.TCPListener); !ok {
		return ErrNotTCP
	}
	errc := make(chan error, 1)
	l := s.Group.loops[0].l
	l.Post(func() {
		lis, err := l.Listen(ln, s.accept)
		s.lis = lis
		errc <- err
	})
	return <-errc
}

// accept is the first loop's: the connection goes to the next loop.
func (s *Server) accept(fd int, sa unix.Sockaddr) {
	if s.Admit != nil && !s.Admit() {
		unix.Close(fd)
		return
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	c := &client{s: s, remote: sockaddr(sa)}
	c.mc = s.Metrics.Conn(noConn{}, s.ConnLabels)
	if lp := s.Group.pick(); lp == s.Group.loops[0] {
		lp.serve(c, fd, nil)
	} else {
		lp.l.Post(func() { lp.serve(c, fd, nil) })
	}
}

// ServeConn moves nc, a plaintext connection a goroutine accepted (and
// perhaps read from: see Unwrap), to the next loop, which serves its
// requests with value, the first one's head due by headDeadline (zero:
// the header timeout from now); false (the caller still has nc, and
// Closed is not told) for one the loops do not take.
func (s *Server) ServeConn(nc net.Conn, value any, headDeadline time.Time) bool {
	fd, mc, tcp, pre, ok := take(nc, s.Unwrap)
	if !ok {
		return false
	}
	mc.Conn = noConn{}
	c := &client{s: s, remote: tcp.RemoteAddr().String(), value: value, headDeadline: headDeadline}
	c.mc = mc
	to := s.Group.pick()
	to.l.Post(func() { to.serve(c, fd, pre) })
	return true
}

// serve serves c, on fd, on lp's loop (called there), pre first: the
// bytes read from fd before.
func (lp *Loop) serve(c *client, fd int, pre []byte) {
	s := c.s
	c.lp = lp
	wait := s.headerTimeout()
	if !c.headDeadline.IsZero() {
		wait = max(time.Until(c.headDeadline), 0)
	}
	c.timer = lp.l.After(wait, c.timeout)
	c.headWait = true // the first head's time runs from here
	ec, err := lp.l.NewConn(fd, c)
	if err != nil {
		unix.Close(fd)
		c.closed = true
		c.mc.Close()
		c.done()
		return
	}
	c.c = ec
	if c.tls != nil {
		c.tls.side.c = ec
	}
	ec.Unread(pre) // within the buffer: take checked
	c.sc = lp.conns(s)
	c.sc.conns[c] = struct{}{}
	if s.draining.Load() {
		c.close()
		return
	}
	// What was read before (the handshake's last read may have taken the
	// first request's records with it): no readiness would tell of it.
	if t := c.tls; t != nil && t.state.NegotiatedProtocol == "h2" {
		c.serveH2() // its bytes read at once
	} else if t != nil {
		if t.decrypt(); t.r < t.w || t.eof || t.err != nil {
			c.next()
		}
	} else if len(pre) > 0 {
		c.next()
	}
}

// Drain stops the loops' accepting and closes the idle connections; the
// others close after their response.
func (s *Server) Drain() {
	s.draining.Store(true)
	s.Group.each(func(lp *Loop) {
		if s.lis != nil && lp == s.Group.loops[0] {
			s.lis.Close()
		}
		if sc := lp.servers[s]; sc != nil {
			for c := range sc.conns {
				switch {
				case c.h2 != nil:
					c.h2.Shutdown() // GOAWAY: its open streams finish
				case c.x == nil && c.h1.x == nil && !c.handoffWritten:
					c.closeWritten()
				}
			}
		}
	})
}

// Cut closes every connection at once (a drain's deadline).
func (s *Server) Cut() {
	s.Group.each(func(lp *Loop) {
		if sc := lp.servers[s]; sc != nil {
			for c := range sc.conns {
				c.abort()
			}
		}
	})
}

func sockaddr(sa unix.Sockaddr) string {
	var ap netip.AddrPort
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		ap = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		ap = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	default:
		return ""
	}
	return ap.String()
}

// noConn stands for a loop connection under its metrics.Conn.
type noConn struct{ net.Conn }

func (noConn) Close() error { return nil }

// client is a client connection served on a loop.
type client struct {
	stream         // the client's bytes
	s              *Server
	lp             *Loop
	remote         string       // ip:port
	value          any          // the Router's and Fallback's
	headDeadline   time.Time    // the first head's, when the caller set it
	sc             *serverConns // the Server's on this loop, nil until served
	tls            *tlsClient   // a TLS connection's; nil: plaintext
	req            http.Request
	reqInto        h1server.Reuse // req.Header's and req.URL's storage, reused
	respHeader     h1head.Reuse   // xs.resp.Header's
	x              *exchange      // the request out, nil between requests
	h1             h1down         // or relayed to an HTTP/2 endpoint (h1relay_linux.go): h1.x, reused
	xs             exchange       // x's storage, reused
	eof            bool           // the client half-closed: close after the response
	closed         bool
	handoffWritten bool            // hand over once what is written is out
	handoffHead    []byte          // a failed request, handed over in front of the rest
	waiting        bool            // for its destination (Target.Await)
	bodyWait       bool            // for the rest of a request's body (next)
	headWait       bool            // for the rest of a head: the header timeout runs
	awaited        metrics.Request // the waiting request's labels (Target.Await)
	closing        bool            // closed once what is written is out (closeWritten)
	retried        bool            // routing again after that: no second wait
	timer          *evloop.Timer   // the header timeout, then the idle timeout
	keys           []string        // writeHead's, reused
	h2             *h2loop.Conn    // served by the Server's HTTP2 from its start
	served         bool            // a request came: no HTTP/2 preface any more
	h2pass         bool            // in h2's callbacks: the relays' writes to endpoints wait for the end (flushUps)
	ups            []*h2up         // the endpoints' connections written to in this pass
}

// downstream is where an exchange's response goes: an HTTP/1.1 client
// connection (client), or an HTTP/2 stream (h2stream, h2_linux.go).
type downstream interface {
	loop() *Loop
	server() *Server
	// request is the request as sent: its method frames the response.
	request() *http.Request
	// writeHead passes the response's head on (a 1xx's too), with what
	// of rest (the bytes after it) belongs to the body: it says how much.
	writeHead(x *exchange, rest []byte) (take int)
	// passBody passes on what of buf belongs to the body and says how
	// much of buf it took; room says whether it may take more now.
	passBody(x *exchange, buf []byte, eof bool) int
	room() bool
	// finish ends a response passed whole; flush writes what the
	// upstream's callback passed on.
	finish(x *exchange)
	flush()
	// The failures (server_linux.go's client has them all).
	failed(x *exchange, dial bool)
	peerFailed(x *exchange)
	respond502(x *exchange, text string)
	cut(x *exchange)
	// waits reports whether x is still its downstream's request with no
	// connection (an mTLS dial's end).
	waits(x *exchange) bool
}

func (c *client) loop() *Loop            { return c.lp }
func (c *client) server() *Server        { return c.s }
func (c *client) request() *http.Request { return &c.req }
func (c *client) room() bool             { return c.c.Pending() < maxPending }
func (c *client) flush()                 {}
func (c *client) waits(x *exchange) bool { return c.x == x && !c.closed && x.up == nil }

// exchange is one request on its way.
type exchange struct {
	d         downstream
	up        *upstream
	ep        *balance.Endpoint[*httpproxy.Upstream]
	labels    metrics.Request
	mtls      bool      // Target.MTLS
	connTLS   string    // Target.ConnTLS, or labels.TLS
	start     time.Time // for the metrics' latency
	begin     time.Time // for the balancer
	head      []byte    // the client's request as it came, to hand over
	out       []byte    // the request to send
	resp      http.Response
	respInto  *h1head.Reuse // resp.Header's storage (nil: a new one)
	remaining int64         // response body bytes still to pass (byLength)
	framing   int           // the response body's
	chunks    chunkScanner
	sent      bool // the response's head is out: no hand-over any more
	interim   bool // a 1xx response was passed on: no hand-over either
	done      bool // the response's end is out
	counted   bool // request_total has it
	resend    bool // may be sent again after a failure (handed over)
	broken    bool // the body's framing is malformed: the connections end after what was valid
}

func (c *client) Readable(ec *evloop.Conn) {
	if c.h2 != nil {
		c.h2pass = true
		c.h2.Readable()
		c.flushUps()
		return
	}
	if c.closing {
		if ec.Err() != nil {
			c.close()
		}
		return
	}
	if c.handoffWritten {
		if ec.Err() != nil {
			c.close() // what waited to be written never will be
		}
		return // the goroutine path reads the rest
	}
	if c.waiting {
		// The request is read again once its destination is known; a
		// client gone meanwhile is a cancellation, as the goroutine path
		// counts one whose destination was being resolved.
		if c.pull(); c.readErr() != nil || c.readEOF() {
			c.s.Metrics.ClientError(c.awaited.Direction, c.awaited.Authority, "canceled")
			c.close()
		}
		return
	}
	if c.x != nil || c.h1.x != nil {
		c.pull()
		switch {
		case c.readErr() != nil:
			c.abort()
		case c.readEOF() && !c.eof:
			// The client's end: the exchange is canceled as h1server
			// cancels a handler whose client is gone, once it has run for
			// its WatchDelay (a quick response still goes out).
			c.eof = true
			c.timer.Reset(max(h1server.WatchDelay-time.Since(c.started()), 0))
		}
		return // a pipelined request waits for the response
	}
	c.next()
}

// Written resumes what waited for the client to take the bytes written:
// a hand-over, or the rest of a response body.
func (c *client) Written(*evloop.Conn) {
	if c.h2 != nil {
		c.h2pass = true
		c.h2.Written()
		c.flushUps()
		return
	}
	if c.closing {
		c.close()
		return
	}
	if c.handoffWritten {
		c.handoffWritten = false
		c.handoff()
		return
	}
	if x := c.x; x != nil && x.sent && x.up != nil {
		x.up.Readable(x.up.c)
	}
	if x := c.h1.x; x != nil {
		// The response's DATA kept for want of room goes on.
		x.passResponse()
		x.flushUp()
		x.down.Flush()
	}
}

// started is when the request in flight started.
func (c *client) started() time.Time {
	if c.h1.x != nil {
		return c.h1.x.start
	}
	return c.x.start
}

// resume routes the request that waited for its destination again: it is
// served on the loop, or handed over.
func (c *client) resume() {
	c.waiting = false
	if !c.closed {
		c.retried = true
		c.next()
		c.retried = false
	}
}

// next serves the next request buffered, if it is in whole.
func (c *client) next() {
	c.pull()
	buf := c.buffered()
	if len(buf) == 0 {
		switch {
		case c.readErr() != nil:
			c.close()
		case c.readEOF() || c.eof:
			c.closeWritten() // the client is done: after what it was sent
		default:
			c.headWait = false
			c.timer.Reset(c.s.idleTimeout())
		}
		return
	}
	if c.s.HTTP2 != nil && !c.served {
		switch whole, part := h2Start(buf); {
		case whole:
			c.serveH2()
			return
		case part && !c.readEOF() && c.readErr() == nil:
			if !c.headWait {
				c.headWait = true
				c.timer.Reset(c.s.headerTimeout())
			}
			return // the rest of the preface to come
		}
	}
	n, ok := h1server.ParseHead(buf, &c.req, &c.reqInto)
	if !ok {
		if !c.readEOF() && c.readErr() == nil && len(buf) < 8<<10 && headEnd(buf) < 0 {
			if !c.headWait { // once: a head's drips do not extend it
				c.headWait = true
				c.timer.Reset(c.s.headerTimeout())
			}
			return // more of the head to come
		}
		c.handoff()
		return
	}
	c.headWait = false
	c.served = true
	if !loopable(&c.req) {
		c.handoff() // before waiting for a body: Expect waits for an answer first
		return
	}
	// A body (Content-Length: chunked heads are ReadRequest's) is sent
	// with the head once it is all here, when it fits in the loop's
	// buffer; a larger one is streamed by the goroutine path.
	full := n
	if cl := c.req.ContentLength; cl > 0 {
		if cl > int64(evloop.BufferSize-n) {
			c.handoff()
			return
		}
		full += int(cl)
		if len(buf) < full {
			if c.readEOF() || c.readErr() != nil {
				c.handoff() // cut short: the goroutine path answers it
				return
			}
			if !c.bodyWait { // once: a body's drips do not extend it
				c.bodyWait = true
				c.timer.Reset(c.s.headerTimeout())
			}
			return
		}
	}
	c.bodyWait = false
	var body []byte
	if full > n {
		body = buf[n:full]
	}
	x, h2 := c.route(&c.req, body)
	if c.waiting {
		return
	}
	if h2.H2 {
		rx := c.newH1Relay(&c.req, body, buf[:full], h2)
		if rx == nil {
			c.handoff()
			return
		}
		c.consume(full)
		c.timer.Stop()
		if !rx.send() {
			c.h1.handOver() // a dial refused a moment ago, or h2msg refuses it
		}
		return
	}
	if x == nil {
		c.handoff()
		return
	}
	x.head = append(x.head[:0], buf[:full]...)
	c.consume(full)
	c.timer.Stop()
	c.x = x
	x.send()
}

// loopable says whether the loop may serve r, by its head: HTTP/1.1, not
// HEAD, not closing, nothing to answer before the body (Expect) or to
// switch to (Upgrade), not the server-wide "*".
func loopable(r *http.Request) bool {
	return !r.Close && r.ProtoMinor == 1 && r.Method != http.MethodHead &&
		r.Header["Expect"] == nil && r.Header["Upgrade"] == nil && r.RequestURI != "*"
}

// route asks the Router where the request goes and builds the request to
// send; or the Target, for one to relay to an HTTP/2 endpoint (h2.H2);
// neither when the goroutine path must serve it.
func (c *client) route(r *http.Request, body []byte) (x *exchange, h2 Target) {
	s := c.s
	if s.MaxInFlight > 0 && s.inFlight().Load() >= s.MaxInFlight {
		return nil, h2 // the goroutine path sheds it
	}
	r.RemoteAddr = c.remote
	if c.tls != nil {
		r.TLS = &c.tls.state
	}
	t := s.Router.Route(r, c.value)
	if t.Endpoint == nil {
		if t.Await != nil && !c.retried {
			c.waiting, c.awaited = true, t.Labels
			await, l := t.Await, c.lp.l
			go func() {
				await()
				l.Post(c.resume)
			}()
		}
		return nil, h2
	}
	if t.MTLS && t.Labels.ServerID == "" {
		return nil, h2 // no identity to require: the goroutine path says why
	}
	if t.H2 {
		if s.HTTP2 == nil {
			return nil, h2 // HTTP/2 is the goroutine path's: none on the loops
		}
		return nil, t
	}
	x = &c.xs
	*x = exchange{d: c, ep: t.Endpoint, labels: t.Labels, mtls: t.MTLS, connTLS: t.ConnTLS, head: x.head, out: x.out, respInto: &c.respHeader}
	if x.connTLS == "" {
		x.connTLS = x.labels.TLS
	}
	httpproxy.PrepareOutgoing(r)
	// Sent again after a failure without a response only when the
	// goroutine path would send it again: idempotent, without a body.
	x.resend = httpproxy.Idempotent(r.Method) && r.ContentLength == 0
	var ok bool
	x.out, ok = c.lp.rw.AppendRequest(x.out[:0], r, body)
	if !ok {
		return nil, h2
	}
	return x, h2
}

// send sends x's request on an idle connection to its endpoint, or a new
// one.
func (x *exchange) send() {
	lp, s := x.d.loop(), x.d.server()
	x.start = time.Now()
	x.begin = x.ep.BeginRequest()
	s.inFlight().Add(1)
	// mTLS connections (a meshed endpoint's) are pooled apart from
	// plaintext ones to the same address, and each direction's apart.
	key := poolKey{direction: x.labels.Direction, addr: x.ep.Addr()}
	if x.mtls {
		key.serverID = x.labels.ServerID
	}
	p := lp.pool(key)
	up := p.get()
	for up != nil && !x.resend && !up.silent() {
		// A request not sent again goes on a connection known to be open
		// and quiet (as h1client checks): one the endpoint is closing
		// would fail it for good.
		up.close()
		up = p.get()
	}
	if up == nil {
		if x.mtls {
			p.dialOrWait(x, key)
			return
		}
		var err error
		up, err = lp.dial(key, s.connectTimeout(), s.Metrics, x.connTLS, s.Dialed)
		if err != nil {
			if s.Dialed != nil {
				s.Dialed(key.addr, err)
			}
			x.d.failed(x, true)
			return
		}
	}
	x.sendOn(up)
}

// sendOn writes x's request on up.
func (x *exchange) sendOn(up *upstream) {
	up.x = x
	x.up = up
	// While connecting, the socket takes nothing (EAGAIN): the request
	// waits in the connection's buffer until it is writable.
	if err := up.write(x.out, nil); err != nil {
		x.d.failed(x, up.connectFailed(err))
		return
	}
	if up.connecting && up.c.Pending() < len(x.out) {
		// The socket took bytes: connected (on loopback before the first
		// write), and the request may have been read from here on.
		up.connected()
	}
}

// failed is a request whose endpoint failed before a response byte: the
// balancer is told, and the connection goes to the goroutine path with
// the request, which tries again (and counts its attempts).
func (c *client) failed(x *exchange, dial bool) {
	if !dial && !x.resend {
		// Sent, and maybe taken: answered 502 as the goroutine path
		// answers a request it does not send again.
		c.respond502(x, "meridian proxy: the endpoint's connection ended without a response\n")
		return
	}
	x.ep.EndRequest(x.begin, true)
	if !dial {
		x.ep.Result("reset") // as the Forwarder reports the attempt it tries again
	}
	// A failed connect is the goroutine path's to make again, and to
	// count and back off from as it always does (its answer, when every
	// endpoint fails, names the connect failure).
	c.tryAgain(x)
}

// peerFailed is failed for a meshed endpoint's proxy's own 502 or 503:
// failure accrual is told what the response says.
func (c *client) peerFailed(x *exchange) {
	x.ep.EndRequest(x.begin, true)
	x.ep.Result(httpproxy.EndFailure(&x.resp, nil))
	c.tryAgain(x)
}

// tryAgain ends x uncounted (the goroutine path counts the attempts it
// makes) and hands the connection over with x's request in front of what
// is buffered, once the last response is out.
func (c *client) tryAgain(x *exchange) {
	c.s.inFlight().Add(-1)
	if x.up != nil {
		x.up.close()
	}
	c.x = nil
	c.handoffHead = append(c.handoffHead[:0], x.head...)
	c.handoff()
}

// handoff gives the connection to the goroutine path for good.
func (c *client) handoff() {
	if c.c.Pending() > 0 {
		c.handoffWritten = true
		return
	}
	c.goroutine(c.handoffHead)
}

// goroutine gives the connection to the goroutine path (Fallback), whose
// reads return head first, then what the loop read and did not consume.
func (c *client) goroutine(head []byte) {
	c.closed = true
	s := c.s
	t := c.tls
	fd, buffered, err := c.c.Detach()
	if err == nil {
		if t == nil && len(head) > 0 {
			buffered = append(append([]byte(nil), head...), buffered...)
		}
		var nc net.Conn
		if nc, err = evloop.FileConn(fd, buffered); err == nil {
			if s.Handover != nil {
				nc = s.Handover(nc)
			}
			c.mc.Conn = nc
		}
	}
	if err != nil {
		if t != nil {
			t.release()
		}
		c.mc.Close()
		c.done()
		return
	}
	c.timer.Stop()
	c.forget()
	var conn net.Conn = c.mc
	if t != nil {
		conn = t.back(head)
	}
	go s.Fallback(conn, c.value)
}

func (c *client) close() {
	if c.closed {
		return
	}
	c.closed = true
	if c.tls != nil {
		c.tls.close()
	}
	c.c.Close()
	c.mc.Close()
	c.done()
}

// closeWritten closes the connection once what was written to it is out
// (a response passed whole reaches the client whole), or at the idle
// timeout if the client takes no more.
func (c *client) closeWritten() {
	if c.closed {
		return
	}
	if c.c.Pending() == 0 {
		c.close()
		return
	}
	c.closing = true
	c.timer.Reset(c.s.idleTimeout())
}

// timeout closes a connection whose head took too long, or that sat idle;
// one whose body is slow goes to the goroutine path, whose rules apply.
func (c *client) timeout() {
	switch {
	case c.closing:
		c.close() // the client takes no more
	case (c.x != nil || c.h1.x != nil) && c.eof:
		c.abort() // the client ended its side: WatchDelay has passed
	case c.x != nil || c.h1.x != nil:
	case c.bodyWait:
		c.bodyWait = false
		c.handoff()
	default:
		c.close()
	}
}

// forget takes c off its loop's list of the Server's connections.
func (c *client) forget() {
	if sc := c.sc; sc != nil {
		delete(sc.conns, c)
		if len(sc.conns) == 0 && c.s.draining.Load() {
			delete(c.lp.servers, c.s) // the Server is going away
		}
	}
}

func (c *client) done() {
	c.timer.Stop()
	c.forget()
	if c.s.Closed != nil {
		c.s.Closed()
	}
}

// abort ends the exchange and the connection: the client went away.
func (c *client) abort() {
	if h2 := c.h2; h2 != nil {
		h2.Close() // its streams end, then its Transport closes c
		return
	}
	if x := c.x; x != nil {
		c.x = nil
		x.ep.EndRequest(x.begin, false)
		x.count()
		c.s.Metrics.ClientError(x.labels.Direction, x.labels.Authority, "canceled")
		c.s.inFlight().Add(-1)
		if x.up != nil {
			x.up.close()
		}
	}
	if x := c.h1.x; x != nil {
		c.h1.x = nil
		x.cancel()
	}
	c.close()
}

// cut ends an exchange whose response broke after its head (the endpoint
// closed or reset mid-body, or sent a malformed chunk): counted as the
// goroutine path counts a stream error, and both connections closed (the
// client's response cannot be completed).
func (c *client) cut(x *exchange) {
	c.x = nil
	x.ep.EndRequest(x.begin, true)
	x.ep.Result(httpproxy.EndFailure(&x.resp, io.ErrUnexpectedEOF))
	c.s.Metrics.ResponseDone(x.labels, metrics.Response{Status: x.resp.StatusCode, Error: "stream", Latency: time.Since(x.start)})
	c.s.inFlight().Add(-1)
	x.up.close()
	c.close()
}

// count counts the request once: when its endpoint answers, or the client
// leaves (not for an attempt that failed before a response, which the
// goroutine path makes again and counts).
func (x *exchange) count() {
	if !x.counted {
		x.counted = true
		x.d.server().Metrics.RequestStarted(x.labels)
	}
}
