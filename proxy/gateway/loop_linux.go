package gateway

// The event loops (Config.EventLoop): HTTP/1.1 requests (a plaintext
// port's, and HTTPS ones: looptls_linux.go) served by callbacks on
// proxy/internal/evloop instead of a goroutine per connection. They serve
// the requests they can serve exactly as the goroutine path does
// (README.md, "Event loop": a body only by Content-Length and within the
// loop's buffer, a rule without filters, timeouts, retries or sessions, an
// HTTP/1.1 endpoint), and hand the connection, with the bytes not
// consumed, to the goroutine path for anything else, for good. An
// idempotent request without a body whose endpoint fails before a response
// byte is handed over too (the goroutine path tries it again, as its
// connection-error retry would have); any other is never sent twice.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h1client"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h1server"
	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
	"github.com/meridian-mesh/meridian/proxy/internal/rawconn"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

type loopListener = *evloop.Listener

// loopState is one of the gateway's event loops and what lives on it.
type loopState struct {
	l     *evloop.Loop
	ports map[*portServer]*loopPort // the ports' connections served here
	pools map[string]*loopPool      // idle upstream connections by endpoint address
	bw    *bufio.Writer             // AppendRequest's, reused
	// TLS connections' (looptls_linux.go): spare plaintext buffers, and
	// what crypto/tls writes, sent at once.
	plainBufs [][]byte
	tlsOut    []byte
	tlsJoin   []byte // a head and body joined into one record
	date      []byte // "Date: ...\r\n", for dateSec
	dateSec   int64
	served    atomic.Int64 // final responses passed on (tests)
}

// loopPort is a port's connections on one loop.
type loopPort struct{ conns map[*loopClient]struct{} }

func (st *loopState) port(ps *portServer) *loopPort {
	lp := st.ports[ps]
	if lp == nil {
		lp = &loopPort{conns: map[*loopClient]struct{}{}}
		st.ports[ps] = lp
	}
	return lp
}

// startLoop runs the gateway's loops when Config.EventLoop asks for them:
// Config.EventLoops, or one per processor the runtime uses.
func (g *Gateway) startLoop() error {
	if !g.cfg.EventLoop {
		return nil
	}
	n := g.cfg.EventLoops
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	for range n {
		l, err := evloop.New()
		if err != nil {
			g.closeLoop()
			return err
		}
		l.Hold(g.cfg.EventLoopHold)
		g.loops = append(g.loops, &loopState{l: l, ports: map[*portServer]*loopPort{}, pools: map[string]*loopPool{}, bw: bufio.NewWriterSize(nil, 4096)})
		go l.Run(context.Background())
	}
	return nil
}

// closeLoop ends the loops, with the gateway.
func (g *Gateway) closeLoop() {
	for _, st := range g.loops {
		st.l.Close()
	}
}

// pickLoop is the loop a new connection is served on: each in turn.
func (g *Gateway) pickLoop() *loopState {
	return g.loops[int(g.nextLoop.Add(1)%uint32(len(g.loops)))]
}

// loopListen accepts the port's connections on the first loop, which
// deals them to the loops in turn; false when the port cannot be (not
// plaintext HTTP, a PROXY header, several sockets).
func (ps *portServer) loopListen() bool {
	g := ps.g
	if len(g.loops) == 0 {
		return false
	}
	t := g.table.Load()
	p := t.ports[ps.number]
	if p == nil || p.protocol != gatewaypb.Port_HTTP || p.proxyProtocol {
		return false
	}
	ln := ps.ln
	if rl, ok := ln.(rawconn.Listener); ok {
		ln = rl.Listener
	}
	if _, ok := ln.(*net.TCPListener); !ok {
		return false
	}
	errc := make(chan error, 1)
	l := g.loops[0].l
	l.Post(func() {
		lis, err := l.Listen(ln, ps.loopAccept)
		ps.loopLis = lis
		errc <- err
	})
	if err := <-errc; err != nil {
		g.log.Warn("event loop: listen", "port", ps.number, "err", err)
		return false
	}
	return true
}

// loopAccept is the first loop's: the connection goes to the next loop.
func (ps *portServer) loopAccept(fd int, sa unix.Sockaddr) {
	g := ps.g
	if ps.maxConns > 0 && ps.open.Load() >= ps.maxConns {
		g.metrics.ConnRefused("inbound", "max_connections")
		unix.Close(fd)
		return
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	ps.open.Add(1)
	ps.streams.Add(1)
	lc := &loopClient{ps: ps, remote: sockaddr(sa)}
	lc.mc = g.metrics.Conn(noConn{}, accepted)
	if st := g.pickLoop(); st == g.loops[0] {
		st.serve(lc, fd)
	} else {
		st.l.Post(func() { st.serve(lc, fd) })
	}
}

// serve serves lc, on fd, on st's loop (called there): ps.open and
// ps.streams count it already.
func (st *loopState) serve(lc *loopClient, fd int) {
	ps := lc.ps
	lc.st = st
	lc.timer = st.l.After(ps.g.cfg.HeaderTimeout, lc.timeout)
	c, err := st.l.NewConn(fd, lc)
	if err != nil {
		unix.Close(fd)
		lc.closed = true
		lc.mc.Close()
		lc.done()
		return
	}
	lc.c = c
	if lc.tls != nil {
		lc.tls.side.c = c
	}
	lc.lp = st.port(ps)
	lc.lp.conns[lc] = struct{}{}
	if ps.loopDraining.Load() {
		lc.close()
		return
	}
	// The handshake's last read may have taken the first request's
	// records with it: no readiness would tell of those.
	if lt := lc.tls; lt != nil {
		if lt.decrypt(); lt.r < lt.w || lt.eof || lt.err != nil {
			lc.next()
		}
	}
}

// loopDrain stops the loops' accepting on the port and closes its idle
// connections; the others close after their response (finish).
func (ps *portServer) loopDrain() {
	ps.loopDraining.Store(true)
	ps.onLoops(func(st *loopState) {
		if ps.loopLis != nil && st == ps.g.loops[0] {
			ps.loopLis.Close()
		}
		if lp := st.ports[ps]; lp != nil {
			for lc := range lp.conns {
				if lc.x == nil {
					lc.close()
				}
			}
		}
	})
}

// loopCut closes the port's loop connections at the drain deadline.
func (ps *portServer) loopCut() {
	ps.onLoops(func(st *loopState) {
		if lp := st.ports[ps]; lp != nil {
			for lc := range lp.conns {
				lc.abort()
			}
		}
	})
}

// onLoops runs f on each loop and waits for them all.
func (ps *portServer) onLoops(f func(*loopState)) {
	var wg sync.WaitGroup
	for _, st := range ps.g.loops {
		wg.Add(1)
		st.l.Post(func() { defer wg.Done(); f(st) })
	}
	wg.Wait()
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

// loopIdleTimeout is h1server's IdleTimeout for the port's connections.
const loopIdleTimeout = 5 * time.Minute

// noConn stands for a loop connection under its metrics.Conn.
type noConn struct{ net.Conn }

func (noConn) Close() error { return nil }

// loopClient is a client connection served on the loop.
type loopClient struct {
	loopStream     // the client's bytes
	ps             *portServer
	st             *loopState
	remote         string    // ip:port
	lp             *loopPort // the port's on this loop, nil until served
	tls            *loopTLS  // an HTTPS connection's TLS; nil: plaintext
	req            http.Request
	x              *loopExchange // the request out, nil between requests
	xs             loopExchange  // x's storage, reused
	eof            bool          // the client half-closed: close after the response
	closed         bool
	handoffWritten bool          // hand over once what is written is out
	handoffHead    []byte        // a failed request, handed over in front of the rest
	waiting        bool          // for its destination's resolution (route)
	bodyWait       bool          // for the rest of a request's body (next)
	retried        bool          // routing again after that: no second wait
	timer          *evloop.Timer // the header timeout, then the idle timeout
	keys           []string      // writeHead's, reused
}

// loopExchange is one request on its way.
type loopExchange struct {
	lc        *loopClient
	up        *loopUpstream
	ep        *balance.Endpoint[*httpproxy.Upstream]
	labels    metrics.Request
	start     time.Time // for the metrics' latency
	begin     time.Time // for the balancer
	head      []byte    // the client's request as it came, to hand over
	out       []byte    // the request to send
	resp      http.Response
	remaining int64 // response body bytes still to pass (byLength)
	framing   int   // the response body's
	chunks    chunkScanner
	sent      bool // the response's head is out: no hand-over any more
	interim   bool // a 1xx response was passed on: no hand-over either
	done      bool // the response's end is out
	counted   bool // request_total has it
	resend    bool // may be sent again after a failure (handed over)
	broken    bool // the body's framing is malformed: the connections end after what was valid
}

// loopServed counts the final responses the loop passed on (tests).
var loopServed atomic.Int64

func (lc *loopClient) Readable(c *evloop.Conn) {
	if lc.handoffWritten {
		if c.Err() != nil {
			lc.close() // what waited to be written never will be
		}
		return // the goroutine path reads the rest
	}
	if lc.waiting {
		return // the request is read again once its destination is resolved
	}
	if lc.x != nil {
		lc.pull()
		if lc.readErr() != nil {
			lc.abort()
		} else if lc.readEOF() {
			lc.eof = true
		}
		return // a pipelined request waits for the response
	}
	lc.next()
}

// Written resumes what waited for the client to take the bytes written:
// a hand-over, or the rest of a response body.
func (lc *loopClient) Written(c *evloop.Conn) {
	if lc.handoffWritten {
		lc.handoffWritten = false
		lc.handoff()
		return
	}
	if x := lc.x; x != nil && x.sent && x.up != nil {
		x.up.Readable(x.up.c)
	}
}

// resume routes the request that waited for its destination again: it is
// served on the loop, or handed over (not found, or the wait ran out).
func (lc *loopClient) resume() {
	lc.waiting = false
	if !lc.closed {
		lc.retried = true
		lc.next()
		lc.retried = false
	}
}

// next serves the next request buffered, if it is in whole.
func (lc *loopClient) next() {
	lc.pull()
	buf := lc.buffered()
	if len(buf) == 0 {
		if lc.readEOF() || lc.readErr() != nil || lc.eof {
			lc.close()
			return
		}
		lc.timer.Reset(loopIdleTimeout)
		return
	}
	n, ok := h1server.ParseHead(buf, &lc.req)
	if !ok {
		if !lc.readEOF() && lc.readErr() == nil && len(buf) < 8<<10 && headEnd(buf) < 0 {
			lc.timer.Reset(lc.ps.g.cfg.HeaderTimeout) // more of the head to come
			return
		}
		lc.handoff()
		return
	}
	// A body (Content-Length: chunked heads are ReadRequest's) is sent
	// with the head once it is all here, when it fits in the loop's
	// buffer; a larger one is streamed by the goroutine path.
	full := n
	if cl := lc.req.ContentLength; cl > 0 {
		if cl > int64(evloop.BufferSize-n) {
			lc.handoff()
			return
		}
		full += int(cl)
		if len(buf) < full {
			if lc.readEOF() || lc.readErr() != nil {
				lc.handoff() // cut short: the goroutine path answers it
				return
			}
			if !lc.bodyWait { // once: a body's drips do not extend it
				lc.bodyWait = true
				lc.timer.Reset(lc.ps.g.cfg.HeaderTimeout)
			}
			return
		}
	}
	lc.bodyWait = false
	var body []byte
	if full > n {
		body = buf[n:full]
	}
	x := lc.route(&lc.req, body)
	if lc.waiting {
		return
	}
	if x == nil {
		lc.handoff()
		return
	}
	x.head = append(x.head[:0], buf[:full]...)
	lc.consume(full)
	lc.timer.Stop()
	lc.x = x
	lc.send(x)
}

// route finds the request's rule, backend and endpoint, and builds the
// request to send; nil when the goroutine path must serve it.
func (lc *loopClient) route(r *http.Request, body []byte) *loopExchange {
	g := lc.ps.g
	if r.Close || r.ProtoMinor != 1 || r.Method == http.MethodHead ||
		r.Header["Expect"] != nil || r.Header["Upgrade"] != nil || r.RequestURI == "*" {
		return nil
	}
	t := g.table.Load()
	if t == nil {
		return nil
	}
	p := t.ports[lc.ps.number]
	if p == nil || p.protocol != lc.protocol() || p.proxyProtocol || headerBytes(r) > t.maxHeader {
		return nil
	}
	name := requestHost(r.Host)
	var l *listener
	if lt := lc.tls; lt != nil {
		l = p.listenerFor(name, gatewaypb.Listener_HTTPS)
		if lt.sni != "" && l != p.listenerFor(lt.sni, gatewaypb.Listener_HTTPS) {
			return nil // misdirected (421): the goroutine path answers
		}
		r.TLS = &lt.state
	} else {
		l = p.listenerFor(name, gatewaypb.Listener_HTTP)
	}
	if l == nil {
		return nil
	}
	h := l.hostFor(name)
	if h == nil {
		return nil
	}
	r.RemoteAddr = lc.remote
	rl := h.rule(r)
	if rl == nil || !rl.loopOK || g.sawBefore(r.Header) {
		return nil
	}
	be := pickWeighted(rl.backends, rl.total)
	if be == nil || be.authority == "" || !be.loopOK {
		return nil
	}
	d, ok := be.cache.Ready(be.authority)
	if !ok {
		if !lc.retried {
			// Resolved on a goroutine (Get waits for the destination
			// API's first answer); the request is routed again once it
			// is in, and handed over if it still is not.
			lc.waiting = true
			cache, authority, l := be.cache, be.authority, lc.st.l
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				cache.Get(ctx, authority)
				l.Post(lc.resume)
			}()
		}
		return nil
	}
	tgt := d.Target()
	if tgt.Profile != nil && tgt.Profile() != nil {
		return nil // a service profile's routes and retries: the goroutine path's
	}
	ep, err := tgt.Balancer.Pick()
	if err != nil || ep.Value().H2Only {
		return nil // h2 with prior knowledge: the goroutine path's
	}
	if max := g.cfg.MaxInFlight; max > 0 && g.inFlight.Load() >= int64(max) {
		return nil // the goroutine path sheds it (inflight's 503)
	}
	x := &lc.xs
	*x = loopExchange{lc: lc, ep: ep, head: x.head, out: x.out}
	x.labels = metrics.Request{Direction: direction, Authority: tgt.Authority, Route: be.key, Target: ep.Addr()}
	if tgt.TLS != nil {
		x.labels.TLS, x.labels.ServerID = tgt.TLS(ep.Addr())
	}
	if x.labels.TLS == metrics.TLSTrue && x.labels.ServerID == "" {
		return nil // no identity to require: the goroutine path says why
	}
	forwarded(r, t.trustedHops, l.scheme, g.id)
	httpproxy.PrepareOutgoing(r)
	// Sent again after a failure without a response only when the
	// goroutine path would send it again: idempotent, without a body.
	x.resend = idempotent[r.Method] && r.ContentLength == 0
	x.out, ok = h1client.AppendRequest(lc.st.bw, x.out[:0], r, body)
	if !ok {
		return nil
	}
	return x
}

// send sends x's request on an idle connection to its endpoint, or a new
// one.
func (lc *loopClient) send(x *loopExchange) {
	g := lc.ps.g
	x.start = time.Now()
	x.begin = x.ep.BeginRequest()
	g.inFlight.Add(1)
	// mTLS connections (a meshed endpoint's) are pooled apart from
	// plaintext ones to the same address.
	key := x.ep.Addr()
	mtls := x.labels.TLS == metrics.TLSTrue
	if mtls {
		key = "mtls " + x.labels.ServerID + " " + key
	}
	p := lc.st.pool(key)
	up := p.get()
	for up != nil && !x.resend && !up.silent() {
		// A request not sent again goes on a connection known to be open
		// and quiet (as h1client checks): one the endpoint is closing
		// would fail it for good.
		up.close()
		up = p.get()
	}
	if up == nil {
		if mtls {
			p.dialOrWait(x, key)
			return
		}
		var err error
		up, err = lc.st.dial(x.ep.Addr(), lc.ps.g.metrics, x.labels.TLS)
		if err != nil {
			lc.failed(x, true)
			return
		}
	}
	lc.sendOn(up, x)
}

// sendOn writes x's request on up.
func (lc *loopClient) sendOn(up *loopUpstream, x *loopExchange) {
	up.x = x
	x.up = up
	// While connecting, the socket takes nothing (EAGAIN): the request
	// waits in the connection's buffer until it is writable.
	if err := up.write(x.out, nil); err != nil {
		lc.failed(x, up.connecting)
	}
}

// failed is a request whose endpoint failed before a response byte: the
// balancer is told, and the connection goes to the goroutine path with
// the request, which tries again (and counts its attempts).
func (lc *loopClient) failed(x *loopExchange, dial bool) {
	if !dial && !x.resend {
		// Sent, and maybe taken: answered 502 as the goroutine path
		// answers a request it does not send again.
		lc.respond502(x, "meridian proxy: the endpoint's connection ended without a response\n")
		return
	}
	x.ep.EndRequest(x.begin, true)
	if dial {
		x.ep.Fail() // backoff; a "connect" failure for accrual too
	} else {
		x.ep.Result("reset") // as the Forwarder reports the attempt it tries again
	}
	lc.tryAgain(x)
}

// peerFailed is failed for a meshed endpoint's proxy's own 502 or 503:
// failure accrual is told what the response says.
func (lc *loopClient) peerFailed(x *loopExchange) {
	x.ep.EndRequest(x.begin, true)
	x.ep.Result(httpproxy.EndFailure(&x.resp, nil))
	lc.tryAgain(x)
}

// tryAgain ends x uncounted (the goroutine path counts the attempts it
// makes) and hands the connection over with x's request in front of what
// is buffered, once the last response is out.
func (lc *loopClient) tryAgain(x *loopExchange) {
	lc.ps.g.inFlight.Add(-1)
	if x.up != nil {
		x.up.close()
	}
	lc.x = nil
	lc.handoffHead = append(lc.handoffHead[:0], x.head...)
	lc.handoff()
}

// handoff gives the connection to the goroutine path for good.
func (lc *loopClient) handoff() {
	if lc.c.Pending() > 0 {
		lc.handoffWritten = true
		return
	}
	lc.goroutine(lc.handoffHead)
}

// goroutine gives the connection to the goroutine path (h1server), whose
// reads return head first, then what the loop read and did not consume.
func (lc *loopClient) goroutine(head []byte) {
	lc.closed = true
	ps := lc.ps
	lt := lc.tls
	fd, buffered, err := lc.c.Detach()
	if err == nil {
		if lt == nil && len(head) > 0 {
			buffered = append(append([]byte(nil), head...), buffered...)
		}
		var nc net.Conn
		if nc, err = evloop.FileConn(fd, buffered); err == nil {
			lc.mc.Conn = &counted{Conn: nc, ps: ps}
		}
	}
	if err != nil {
		if lt != nil {
			lt.release()
		}
		lc.mc.Close()
		lc.done()
		return
	}
	lc.timer.Stop()
	lc.forget()
	var conn net.Conn = lc.mc
	if lt != nil {
		conn = lt.back(head)
	}
	protocol := lc.protocol()
	go func() {
		defer ps.streams.Done()
		if t := ps.g.table.Load(); t == nil || t.ports[ps.number] == nil || t.ports[ps.number].protocol != protocol {
			conn.Close() // the port is no longer what it was
			return
		}
		ps.h1.ServeConn(context.Background(), conn)
	}()
}

// protocol is what the connection's port serves.
func (lc *loopClient) protocol() gatewaypb.Port_Protocol {
	if lc.tls != nil {
		return gatewaypb.Port_TLS
	}
	return gatewaypb.Port_HTTP
}

func (lc *loopClient) close() {
	if lc.closed {
		return
	}
	lc.closed = true
	if lc.tls != nil {
		lc.tls.close()
	}
	lc.c.Close()
	lc.mc.Close()
	lc.done()
}

// timeout closes a connection whose head took too long, or that sat idle;
// one whose body is slow goes to the goroutine path, whose rules apply.
func (lc *loopClient) timeout() {
	switch {
	case lc.x != nil:
	case lc.bodyWait:
		lc.bodyWait = false
		lc.handoff()
	default:
		lc.close()
	}
}

// forget takes lc off its loop's list of the port's connections.
func (lc *loopClient) forget() {
	if lp := lc.lp; lp != nil {
		delete(lp.conns, lc)
		if len(lp.conns) == 0 && lc.ps.loopDraining.Load() {
			delete(lc.st.ports, lc.ps) // the port is going away
		}
	}
}

func (lc *loopClient) done() {
	lc.timer.Stop()
	lc.forget()
	lc.ps.open.Add(-1)
	lc.ps.streams.Done()
}

// abort ends the exchange and the connection: the client went away.
func (lc *loopClient) abort() {
	if x := lc.x; x != nil {
		lc.x = nil
		x.ep.EndRequest(x.begin, false)
		x.count()
		lc.ps.g.metrics.ClientError(direction, x.labels.Authority, "canceled")
		lc.ps.g.inFlight.Add(-1)
		if x.up != nil {
			x.up.close()
		}
	}
	lc.close()
}

// cut ends an exchange whose response broke after its head (the endpoint
// closed or reset mid-body, or sent a malformed chunk): counted as the
// goroutine path counts a stream error, and both connections closed (the
// client's response cannot be completed).
func (lc *loopClient) cut(x *loopExchange) {
	lc.x = nil
	x.ep.EndRequest(x.begin, true)
	x.ep.Result(httpproxy.EndFailure(&x.resp, io.ErrUnexpectedEOF))
	lc.ps.g.metrics.ResponseDone(x.labels, metrics.Response{Status: x.resp.StatusCode, Error: "stream", Latency: time.Since(x.start)})
	lc.ps.g.inFlight.Add(-1)
	x.up.close()
	lc.close()
}

// count counts the request once: when its endpoint answers, or the client
// leaves (not for an attempt that failed before a response, which the
// goroutine path makes again and counts).
func (x *loopExchange) count() {
	if !x.counted {
		x.counted = true
		x.lc.ps.g.metrics.RequestStarted(x.labels)
	}
}

// loopUpstream is a connection to an endpoint.
type loopUpstream struct {
	loopStream // ts: mTLS to a meshed endpoint
	addr       string
	x          *loopExchange
	connecting bool
	closed     bool
}

// loopPool is one endpoint's connections on a loop. Its mTLS dials are
// bounded (dialOrWait, looptls_linux.go) as h1client's are.
type loopPool struct {
	idle    []*loopUpstream
	dialing int             // mTLS dials in progress
	waiting []*loopExchange // requests waiting for a connection or a dial, FIFO
}

func (st *loopState) pool(addr string) *loopPool {
	p := st.pools[addr]
	if p == nil {
		p = &loopPool{}
		st.pools[addr] = p
	}
	return p
}

func (p *loopPool) get() *loopUpstream {
	for n := len(p.idle); n > 0; n = len(p.idle) {
		up := p.idle[n-1]
		p.idle = p.idle[:n-1]
		if !up.closed {
			return up
		}
	}
	return nil
}

// dial starts a non-blocking connect to addr.
func (st *loopState) dial(addr string, m *metrics.Registry, tls string) (*loopUpstream, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	var sa unix.Sockaddr
	family := unix.AF_INET
	if ap.Addr().Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	up := &loopUpstream{addr: addr}
	err = unix.Connect(fd, sa)
	switch err {
	case nil:
	case unix.EINPROGRESS:
		up.connecting = true
	default:
		unix.Close(fd)
		return nil, err
	}
	if up.c, err = st.l.NewConn(fd, up); err != nil {
		unix.Close(fd)
		return nil, err
	}
	up.mc = m.Conn(noConn{}, metrics.ConnLabels{Direction: direction, Peer: metrics.PeerDst, Target: addr, TLS: tls})
	return up, nil
}

// silent reports whether an idle connection is open with nothing to
// read: no byte, end or error taken, none in the socket.
func (up *loopUpstream) silent() bool {
	if up.readEOF() || up.readErr() != nil || len(up.buffered()) > 0 {
		return false
	}
	return up.c.Silent()
}

func (up *loopUpstream) close() {
	if up.closed {
		return
	}
	up.closed = true
	if up.ts != nil {
		up.ts.close()
	}
	up.c.Close()
	up.mc.Close()
}

// Readable reads the response: its head (and any 1xx before it), then its
// body by its framing.
func (up *loopUpstream) Readable(c *evloop.Conn) {
	x := up.x
	up.pull()
	if x == nil {
		if up.ts != nil && len(up.buffered()) == 0 && up.readErr() == nil && !up.readEOF() {
			return // a post-handshake message (a session ticket), taken
		}
		up.close() // an idle connection's close, or bytes nobody asked for
		return
	}
	lc := x.lc
	for !x.sent {
		up.pull() // a TLS connection's next records, after a 1xx
		buf := up.buffered()
		if up.readErr() != nil && len(buf) == 0 {
			lc.failed(x, up.connecting) // refused, or reset before a response
			return
		}
		up.connecting = false
		n, ok := h1client.ParseResponseHead(buf, &lc.req, &x.resp)
		if ok {
			x.framing, x.remaining = byLength, x.resp.ContentLength
		} else {
			end := headEnd(buf)
			if end < 0 {
				if up.readErr() == nil && !up.readEOF() && len(buf) < evloop.BufferSize {
					return
				}
				// Cut short, or a head larger than the loop's buffer:
				// the goroutine path sends the request again and reads it.
				if !x.interim {
					lc.failed(x, false) // nothing came, or half a head: tried again
					return
				}
				lc.respond502(x, invalidText)
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(buf[:end])), &lc.req)
			if err != nil || resp.StatusCode == http.StatusSwitchingProtocols {
				lc.respond502(x, invalidText) // as the transport's error, or an unasked-for switch
				return
			}
			n, x.resp = end, *resp
			if x.resp.StatusCode >= 200 && !x.interim && x.resend && peerFailed(&x.resp) {
				lc.peerFailed(x) // as below, before it is counted
				return
			}
			x.count()
			if x.resp.StatusCode < 200 {
				// An interim response (103 Early Hints), passed on as
				// ReverseProxy passes them, and the final one read next.
				httpproxy.RemoveHopByHop(x.resp.Header)
				x.interim = true
				lc.writeHead(x, nil)
				up.consume(n)
				continue
			}
			x.framing = framingOf(&x.resp)
			x.remaining = x.resp.ContentLength
		}
		if !x.interim && x.resend && peerFailed(&x.resp) {
			// A meshed endpoint's proxy could not reach its application:
			// the goroutine path's retries take it from here, as a
			// connection error (not counted here; they count theirs). A
			// request it would not send again gets the answer as it is.
			lc.peerFailed(x)
			return
		}
		x.sent = true
		x.count()
		httpproxy.RemoveHopByHop(x.resp.Header)
		if x.framing == byChunks || x.framing == byClose {
			x.resp.Header["Transfer-Encoding"] = chunkedTE
		}
		loopServed.Add(1) // before the client can see the response
		lc.st.served.Add(1)
		// The head and the body's first bytes in one write.
		body, take := x.firstBody(buf[n:])
		lc.writeHead(x, body)
		up.consume(n + take)
	}
	// A TLS connection decrypts a buffer's worth at a time: what it read
	// beyond that comes with no readiness of its own.
	for !x.done && lc.c.Pending() < loopMaxPending {
		take := x.passBody(up.buffered(), up.readEOF())
		if take == 0 {
			break
		}
		up.consume(take)
		up.pull()
	}
	if x.done {
		lc.finish(x)
		return
	}
	if x.broken || up.readErr() != nil || (up.readEOF() && len(up.buffered()) == 0) {
		lc.cut(x)
	}
}

var (
	chunkedTE = []string{"chunked"}
	crlf      = []byte("\r\n")
	lastChunk = []byte("0\r\n\r\n")
)

// Response body framings.
const (
	byLength = iota // Content-Length bytes
	byChunks        // chunked, passed on as it comes
	byClose         // until the upstream closes: sent chunked
	noBody          // 1xx, 204, 304, Content-Length 0
)

func framingOf(resp *http.Response) int {
	switch {
	case resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified:
		return noBody
	case len(resp.TransferEncoding) > 0:
		return byChunks // ReadResponse takes only chunked
	case resp.ContentLength >= 0:
		return byLength
	default:
		return byClose
	}
}

// firstBody is the body's part of what followed the head (written with
// it, for byLength and byChunks) and how many buffered bytes that is.
func (x *loopExchange) firstBody(buf []byte) (body []byte, take int) {
	switch x.framing {
	case noBody:
		x.done = true
		return nil, 0
	case byLength:
		if int64(len(buf)) > x.remaining {
			buf = buf[:x.remaining]
		}
		x.remaining -= int64(len(buf))
		x.done = x.remaining == 0
		return buf, len(buf)
	case byChunks:
		n, done, err := x.chunks.scan(buf)
		if err != nil {
			x.broken = true
		}
		x.done = done
		return buf[:n], n
	}
	return nil, 0 // byClose: passed as chunks by passBody
}

// passBody writes what of buf belongs to the body to the client and says
// how much of buf it took.
func (x *loopExchange) passBody(buf []byte, eof bool) int {
	lc := x.lc
	switch x.framing {
	case byLength:
		if int64(len(buf)) > x.remaining {
			buf = buf[:x.remaining]
		}
		if len(buf) > 0 {
			lc.write(buf, nil)
		}
		x.remaining -= int64(len(buf))
		x.done = x.remaining == 0
		return len(buf)
	case byChunks:
		n, done, err := x.chunks.scan(buf)
		if err != nil {
			x.broken = true
		}
		if n > 0 {
			lc.write(buf[:n], nil)
		}
		x.done = done
		return n
	case byClose:
		if len(buf) > 0 {
			var size [20]byte
			h := append(strconv.AppendInt(size[:0], int64(len(buf)), 16), "\r\n"...)
			lc.write(h, buf)
			lc.write(crlf, nil)
		}
		if eof {
			lc.write(lastChunk, nil)
			x.done = true
			x.resp.Close = true // the upstream closed: not pooled
		}
		return len(buf)
	}
	return 0
}

// headEnd is the length of the head at the start of b (through its empty
// line), or -1.
func headEnd(b []byte) int {
	if i := bytes.Index(b, crlfcrlf); i >= 0 {
		return i + 4
	}
	return -1
}

var crlfcrlf = []byte("\r\n\r\n")

// chunkScanner follows a chunked body's framing (RFC 9112 7.1) to find
// its end, so that it is passed on as it is: sizes, extensions, data and
// trailers.
type chunkScanner struct {
	state     int   // chunkSize, chunkData, chunkDataEnd, chunkTrailer
	left      int64 // data bytes left of the chunk
	size      int64
	digits    int  // of the size line
	ext       bool // past the size, in an extension
	line      int  // bytes of the current size or trailer line
	lineEmpty bool // the trailer line is empty so far
}

const (
	chunkSize = iota
	chunkData
	chunkDataEnd
	chunkTrailer
)

// maxChunkLine bounds a size or trailer line.
const maxChunkLine = 4096

var errChunk = errors.New("malformed chunked body")

// scan takes the bytes of b that belong to the body, up to its end; done
// once the last chunk and the trailers are in.
func (s *chunkScanner) scan(b []byte) (n int, done bool, err error) {
	i := 0
	for i < len(b) {
		switch s.state {
		case chunkData:
			k := int(min(s.left, int64(len(b)-i)))
			i += k
			if s.left -= int64(k); s.left == 0 {
				s.state = chunkDataEnd
			}
			continue
		case chunkDataEnd:
			c := b[i]
			i++
			if c == '\n' {
				s.state = chunkSize
			} else if c != '\r' {
				return i, false, errChunk
			}
			continue
		}
		c := b[i]
		i++
		if s.line++; s.line > maxChunkLine {
			return i, false, errChunk
		}
		if s.state == chunkTrailer {
			if c == '\n' {
				if s.lineEmpty {
					return i, true, nil
				}
				s.lineEmpty, s.line = true, 0
			} else if c != '\r' {
				s.lineEmpty = false
			}
			continue
		}
		// chunkSize
		switch {
		case c == '\n':
			if s.digits == 0 {
				return i, false, errChunk
			}
			if s.size == 0 {
				s.state, s.lineEmpty = chunkTrailer, true
			} else {
				s.state, s.left = chunkData, s.size
			}
			s.size, s.digits, s.ext, s.line = 0, 0, false, 0
		case c == '\r' || s.ext:
		case c == ';' || c == ' ' || c == '\t':
			s.ext = true
		default:
			v := unhex(c)
			if v < 0 || s.digits >= 15 {
				return i, false, errChunk
			}
			s.size, s.digits = s.size<<4|int64(v), s.digits+1
		}
	}
	return i, false, nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// loopMaxPending is how much of a response may wait for a slow client
// before the upstream connection is read no more.
const loopMaxPending = 256 << 10

func (up *loopUpstream) Written(*evloop.Conn) { up.connecting = false }

// writeHead writes the response's head, and body, the body's first bytes,
// to the client as the goroutine path's server does for a handler that
// set Content-Length.
func (lc *loopClient) writeHead(x *loopExchange, body []byte) {
	st := lc.st
	b := x.out[:0]
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(x.resp.StatusCode), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(x.resp.StatusCode)...)
	b = append(b, "\r\n"...)
	if code := x.resp.StatusCode; code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		// No body: net/http's server sends none of the body's fields.
		delete(x.resp.Header, "Content-Type")
		delete(x.resp.Header, "Content-Length")
		delete(x.resp.Header, "Transfer-Encoding")
	}
	if _, ok := x.resp.Header["Date"]; !ok && x.resp.StatusCode >= 200 {
		b = append(b, st.dateLine()...)
	}
	b, lc.keys = appendHeader(b, x.resp.Header, lc.keys)
	b = append(b, "\r\n"...)
	lc.write(b, body)
	x.out = b
}

func (st *loopState) dateLine() []byte {
	now := st.l.Now()
	if s := now.Unix(); s != st.dateSec || st.date == nil {
		st.dateSec = s
		st.date = append(append(append(st.date[:0], "Date: "...), now.UTC().Format(http.TimeFormat)...), "\r\n"...)
	}
	return st.date
}

// appendHeader writes h's fields sorted by name, as net/http's server
// does.
func appendHeader(b []byte, h http.Header, keys []string) ([]byte, []string) {
	keys = keys[:0]
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	return b, keys
}

// finish ends a response passed whole: counted, the endpoint told, the
// upstream connection back in its pool, the next request served.
func (lc *loopClient) finish(x *loopExchange) {
	g := lc.ps.g
	status := x.resp.StatusCode
	x.ep.EndRequest(x.begin, status >= 500)
	x.ep.Succeed()
	x.ep.Result(httpproxy.EndFailure(&x.resp, nil)) // failure accrual, as the Forwarder reports
	g.metrics.ResponseDone(x.labels, metrics.Response{Status: status, Latency: time.Since(x.start)})
	lc.ps.g.inFlight.Add(-1)
	up := x.up
	up.x = nil
	if x.resp.Close || len(up.buffered()) > 0 || len(up.c.Buffered()) > 0 {
		up.close()
	} else {
		lc.st.pool(up.addr).put(up)
	}
	lc.x = nil
	if lc.ps.loopDraining.Load() {
		lc.close()
		return
	}
	lc.next()
}

const invalidText = "meridian proxy: the endpoint's response is not valid HTTP/1.1\n"

// respond502 answers a response the endpoint got wrong (a head that does
// not parse, an unasked-for 101), or none to a request not sent again, as
// the Forwarder answers them: 502 with the proxy's error header and text,
// the client's connection kept.
func (lc *loopClient) respond502(x *loopExchange, text string) {
	g := lc.ps.g
	x.ep.EndRequest(x.begin, true)
	x.ep.Result("reset") // the Forwarder's for a transport's error
	x.count()
	g.metrics.ResponseDone(x.labels, metrics.Response{Error: "upstream", Latency: time.Since(x.start)})
	g.inFlight.Add(-1)
	x.up.close()
	b := append(x.out[:0], "HTTP/1.1 502 Bad Gateway\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(text)), 10)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\n"...)
	b = append(b, lc.st.dateLine()...)
	b = append(b, httpproxy.ErrorHeader+": upstream\r\nX-Content-Type-Options: nosniff\r\n\r\n"+text...)
	lc.write(b, nil)
	x.out = b
	lc.x = nil
	lc.next()
}
