package h1loop

// TLS on the loops, both ways: a client's connection whose handshake (on
// its accepting goroutine) settled HTTP/1.1, and an mTLS connection to a
// meshed endpoint (dialed and shaken hands on a goroutine, by the
// endpoint's own dialer). Either moves to a loop with its crypto/tls Conn,
// which keeps its keys and state: the socket under the Conn's
// metrics.Conn (which goes on counting the bytes) is replaced by a side
// that reads the ciphertext the loop read and collects what crypto/tls
// writes for the loop to send. A read that needs bytes not yet there
// fails with a temporary net.Error, which crypto/tls returns without
// ending the connection: the part of a record read so far is kept for the
// next read. A client connection the loop cannot serve goes back to the
// goroutine path over the same Conn (tlsBack).

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meridian-mesh/meridian/proxy/httpproxy/h1client"
	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
	"github.com/meridian-mesh/meridian/proxy/internal/rawconn"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// side stands, under a crypto/tls Conn's metrics.Conn, for the socket a
// loop serves (c): reads take the bytes the loop read, writes are kept in
// the loop's tlsOut until flush; closing is the loop's, deadlines its
// timers.
type side struct {
	c             *evloop.Conn // set once the loop serves the socket
	lp            *Loop
	local, remote net.Addr
}

func (s *side) Read(b []byte) (int, error) {
	buf := s.c.Buffered()
	if len(buf) == 0 {
		switch {
		case s.c.Err() != nil:
			return 0, s.c.Err()
		case s.c.EOF():
			return 0, io.EOF
		}
		return 0, errWouldBlock
	}
	n := copy(b, buf)
	s.c.Consume(n)
	return n, nil
}

func (s *side) Write(b []byte) (int, error) {
	s.lp.tlsOut = append(s.lp.tlsOut, b...)
	return len(b), nil
}

func (*side) Close() error                     { return nil }
func (s *side) LocalAddr() net.Addr            { return s.local }
func (s *side) RemoteAddr() net.Addr           { return s.remote }
func (*side) SetDeadline(time.Time) error      { return nil }
func (*side) SetReadDeadline(time.Time) error  { return nil }
func (*side) SetWriteDeadline(time.Time) error { return nil }

// errWouldBlock is side's read when the loop has no more bytes:
// temporary, so crypto/tls keeps the connection (and what it read), and a
// deadline's kind of error, so metrics.Conn does not count it a failure.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string        { return "evloop: no bytes yet" }
func (wouldBlock) Timeout() bool        { return true }
func (wouldBlock) Temporary() bool      { return true }
func (wouldBlock) Is(target error) bool { return target == os.ErrDeadlineExceeded }

// take takes nc's socket for a loop (evloop.Take), and finds the
// metrics.Conn over it, with unwrap's help for layers it does not know:
// the bytes they read and did not consume come first (pre, within the
// loop's buffer). Nothing happens (false) for any other shape.
func take(nc net.Conn, unwrap func(net.Conn) (net.Conn, []byte, bool)) (fd int, mc *metrics.Conn, tcp *net.TCPConn, pre []byte, ok bool) {
	for under := nc; tcp == nil; {
		switch c := under.(type) {
		case *metrics.Conn:
			if mc != nil {
				return -1, nil, nil, nil, false
			}
			mc, under = c, c.Conn
		case *net.TCPConn:
			tcp = c
		case *rawconn.Conn:
			tcp = c.TCPConn
		default:
			var b []byte
			if unwrap == nil {
				return -1, nil, nil, nil, false
			}
			if under, b, ok = unwrap(under); !ok {
				return -1, nil, nil, nil, false
			}
			pre = append(pre, b...)
		}
	}
	if mc == nil || len(pre) > evloop.BufferSize {
		return -1, nil, nil, nil, false
	}
	fd, err := evloop.Take(tcp)
	if err != nil {
		// tcp is open still (Take closes it only once it has the
		// duplicate): the caller goes on without the loop.
		return -1, nil, nil, nil, false
	}
	return fd, mc, tcp, pre, true
}

// takeTLS is take for tc's connection, whose socket a side then stands
// for, on lp's loop, under tc's metrics.Conn.
func takeTLS(tc *tls.Conn, lp *Loop, unwrap func(net.Conn) (net.Conn, []byte, bool)) (fd int, ts *tlsStream, mc *metrics.Conn, pre []byte, ok bool) {
	fd, mc, tcp, pre, ok := take(tc.NetConn(), unwrap)
	if !ok {
		return -1, nil, nil, nil, false
	}
	s := &side{lp: lp, local: tcp.LocalAddr(), remote: tcp.RemoteAddr()}
	mc.Conn = s
	return fd, &tlsStream{tc: tc, side: s}, mc, pre, true
}

// tlsStream is a crypto/tls Conn on a loop: records are decrypted into
// plain while there is room for them.
type tlsStream struct {
	tc    *tls.Conn
	side  *side
	plain []byte // decrypted: plain[r:w] not consumed; nil while empty
	r, w  int
	eof   bool  // the peer's close_notify, or its end at a record's boundary
	err   error // the connection's TLS failed
}

// decrypt reads records into plain while there is room and ciphertext.
func (ts *tlsStream) decrypt() {
	lp := ts.side.lp
	for ts.err == nil && !ts.eof {
		if ts.plain == nil {
			if n := len(lp.plainBufs); n > 0 {
				ts.plain = lp.plainBufs[n-1]
				lp.plainBufs = lp.plainBufs[:n-1]
			} else {
				ts.plain = make([]byte, evloop.BufferSize)
			}
		}
		if ts.w == len(ts.plain) {
			if ts.r == 0 {
				break // full: more is read once this is consumed
			}
			ts.w = copy(ts.plain, ts.plain[ts.r:ts.w])
			ts.r = 0
		}
		n, err := ts.tc.Read(ts.plain[ts.w:])
		ts.w += n
		if err != nil {
			switch {
			case errors.Is(err, errWouldBlock):
			case err == io.EOF:
				ts.eof = true
			default:
				ts.err = err
			}
			break
		}
	}
	ts.flush() // crypto/tls's answer to a post-handshake message, if any
	if ts.r == ts.w {
		ts.release()
	}
}

func (ts *tlsStream) buffered() []byte { return ts.plain[ts.r:ts.w] }

func (ts *tlsStream) consume(n int) {
	if ts.r += n; ts.r == ts.w {
		ts.release()
	}
}

// release gives the plaintext buffer back.
func (ts *tlsStream) release() {
	lp := ts.side.lp
	if ts.plain != nil && len(lp.plainBufs) < maxSparePlain {
		lp.plainBufs = append(lp.plainBufs, ts.plain)
	}
	ts.plain, ts.r, ts.w = nil, 0, 0
}

const maxSparePlain = 64

// write sends a then b, in one record when they fit in one.
func (ts *tlsStream) write(a, b []byte) {
	lp := ts.side.lp
	p := a
	if len(b) > 0 {
		lp.tlsJoin = append(append(lp.tlsJoin[:0], a...), b...)
		p = lp.tlsJoin
	}
	ts.tc.Write(p)
	if cap(lp.tlsJoin) > 64<<10 {
		lp.tlsJoin = nil
	}
	ts.flush()
}

// flush sends what crypto/tls wrote.
func (ts *tlsStream) flush() {
	lp := ts.side.lp
	if len(lp.tlsOut) == 0 {
		return
	}
	ts.side.c.Write(lp.tlsOut)
	lp.tlsOut = lp.tlsOut[:0]
	if cap(lp.tlsOut) > 64<<10 {
		lp.tlsOut = nil
	}
}

// close sends close_notify, as crypto/tls's Close does, with what the
// socket takes at once; the caller closes the socket.
func (ts *tlsStream) close() {
	ts.tc.Close() // the alert through side, whose Close is nothing
	ts.flush()
	ts.release()
}

// The client side: HTTPS.

// tlsClient is a client connection's TLS on a loop.
type tlsClient struct {
	tlsStream
	state tls.ConnectionState // the requests' r.TLS
}

// ServeTLS moves a client's TLS connection, its handshake done (state)
// and HTTP/1.1 settled (or h2, served by HTTP2), to the next loop, as
// ServeConn; false (the caller
// serves it, and Closed is not told) for one the loops do not take (see
// Unwrap).
func (s *Server) ServeTLS(tc *tls.Conn, state tls.ConnectionState, value any, headDeadline time.Time) bool {
	if state.NegotiatedProtocol == "h2" && s.HTTP2 == nil {
		return false
	}
	to := s.Group.pick()
	fd, ts, mc, pre, ok := takeTLS(tc, to, s.Unwrap)
	if !ok {
		return false
	}
	t := &tlsClient{tlsStream: *ts, state: state}
	c := &client{s: s, remote: ts.side.remote.String(), tls: t, value: value, headDeadline: headDeadline}
	c.mc, c.ts = mc, &t.tlsStream
	to.l.Post(func() { to.serve(c, fd, pre) })
	return true
}

// back hands the connection back to the goroutine path: TLS over mc's
// new connection, head and the plaintext not consumed read first.
func (t *tlsClient) back(head []byte) net.Conn {
	prefix := append(append([]byte(nil), head...), t.buffered()...)
	t.release()
	return &tlsBack{Conn: t.tc, prefix: prefix}
}

// tlsBack is an HTTPS connection the loop handed back. h1server takes its
// TLS state from ConnectionState.
type tlsBack struct {
	*tls.Conn
	prefix []byte
}

func (c *tlsBack) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// stream is one side's bytes on a loop, a client's or an endpoint's:
// the socket's as they are (counted in mc), or through its TLS (ts, counted
// by the metrics.Conn under the TLS Conn).
type stream struct {
	c  *evloop.Conn
	mc *metrics.Conn
	ts *tlsStream // nil: plaintext
}

// pull decrypts what came, for a TLS connection.
func (s *stream) pull() {
	if s.ts != nil {
		s.ts.decrypt()
	}
}

// buffered is the bytes read and not consumed (after pull).
func (s *stream) buffered() []byte {
	if s.ts != nil {
		return s.ts.buffered()
	}
	return s.c.Buffered()
}

func (s *stream) consume(n int) {
	if s.ts != nil {
		s.ts.consume(n)
		return
	}
	s.c.Consume(n)
	s.mc.Count(n, 0)
}

// readEOF says the peer ended its side (after pull).
func (s *stream) readEOF() bool {
	if s.ts != nil {
		return s.ts.eof
	}
	return s.c.EOF()
}

// readErr is what ended the peer's side (after pull).
func (s *stream) readErr() error {
	if s.ts != nil {
		return s.ts.err
	}
	return s.c.Err()
}

// write sends a then b: as they are, or in one record when they fit.
func (s *stream) write(a, b []byte) error {
	if s.ts != nil {
		s.ts.write(a, b)
		return s.c.Err()
	}
	if err := s.c.Write2(a, b); err != nil {
		return err
	}
	s.mc.Count(0, len(a)+len(b))
	return nil
}

// The upstream side: mTLS to meshed endpoints.

// MaxDialing bounds the mTLS dials in progress from one loop to one
// endpoint, as h1client bounds the goroutine path's: each costs a
// handshake, and unbounded, a burst of requests to an endpoint with no
// idle connection had each dial its own while the handshakes before it
// took the core (bench/README.md, "the mTLS HTTP/1.1 hop's connection
// pile-up").
const MaxDialing = h1client.DefaultMaxDialing

// dialOrWait dials for x, or has it wait for the first connection given
// back or dial let go when MaxDialing dials are in progress.
func (p *pool) dialOrWait(x *exchange, key poolKey) {
	if p.dialing < MaxDialing {
		p.dialing++
		x.dialTLS(key)
		return
	}
	p.waiting = append(p.waiting, x)
}

// waits reports whether x is still its downstream's request with no
// connection: a client that went away leaves its request behind.
func (x *exchange) waits() bool { return x.d.waits(x) }

// nextWaiting takes the first request still waiting, or nil.
func (p *pool) nextWaiting() *exchange {
	for len(p.waiting) > 0 {
		x := p.waiting[0]
		p.waiting[0] = nil
		p.waiting = p.waiting[1:]
		if x.waits() {
			return x
		}
	}
	return nil
}

// put gives up, idle and reusable, to the first request waiting, or keeps
// it for the next.
func (p *pool) put(up *upstream) {
	if x := p.nextWaiting(); x != nil {
		x.sendOn(up)
		return
	}
	p.idle = append(p.idle, up)
}

// dialDone lets the first request waiting dial in the place of a dial
// that ended. When that dial failed, the requests waiting fail as it did
// instead (each goes to the goroutine path, which tries again), as
// h1client's waiting requests do.
func (p *pool) dialDone(key poolKey, err error) {
	if err != nil {
		for x := p.nextWaiting(); x != nil; x = p.nextWaiting() {
			x.d.failed(x, true)
			x.d.flush() // an HTTP/2 stream's answer, if any (a posted callback's)
		}
		return
	}
	if p.dialing < MaxDialing {
		if x := p.nextWaiting(); x != nil {
			p.dialing++
			x.dialTLS(key)
		}
	}
}

// dialTLS opens an mTLS connection to x's endpoint with the endpoint's
// own dialer (its handshake on a goroutine), then sends x on it on the
// loop. x waits meanwhile: its client is read for its end only.
func (x *exchange) dialTLS(key poolKey) {
	lp := x.d.loop()
	u := x.ep.Value()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		nc, err := u.DialHTTP1(ctx)
		cancel()
		lp.l.Post(func() { x.dialed(key, nc, err) })
	}()
}

// dialTimeout bounds an mTLS connection's dial and handshake, as the
// goroutine path's connect timeout does.
const dialTimeout = 10 * time.Second

// dialed is dialTLS's end, on the loop.
func (x *exchange) dialed(key poolKey, nc net.Conn, err error) {
	lp := x.d.loop()
	var up *upstream
	if err == nil {
		if up, err = lp.takeUpstream(nc, key); err != nil {
			nc.Close()
		}
	}
	p := lp.pool(key)
	p.dialing--
	switch current := x.waits(); {
	case err != nil:
		if current {
			x.d.failed(x, true) // the goroutine path dials again
			x.d.flush()
		}
	case current:
		x.sendOn(up)
	default:
		// The client went away meanwhile: the connection is for the
		// next request to the endpoint.
		p.put(up)
	}
	p.dialDone(key, err)
}

var errNotTaken = errors.New("h1loop: the connection's shape is not one the loop takes")

// takeUpstream serves nc, an mTLS connection to an endpoint, on lp's loop.
func (lp *Loop) takeUpstream(nc net.Conn, key poolKey) (*upstream, error) {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return nil, errNotTaken
	}
	fd, ts, mc, _, ok := takeTLS(tc, lp, nil)
	if !ok {
		return nil, errNotTaken
	}
	up := &upstream{key: key}
	up.mc, up.ts = mc, ts
	uc, err := lp.l.NewConn(fd, up)
	if err != nil {
		unix.Close(fd)
		mc.Close()
		return nil, err
	}
	up.c, ts.side.c = uc, uc
	// The handshake's last read may have taken records with it (a
	// session ticket): no readiness would tell of those.
	ts.decrypt()
	return up, nil
}
