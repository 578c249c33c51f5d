package gateway

// TLS on the event loops, both ways: a terminated HTTPS connection whose
// handshake (on its accepting goroutine, as before) settled HTTP/1.1, and
// an mTLS connection to a meshed endpoint (dialed and shaken hands on a
// goroutine, by the endpoint's own dialer). Either moves to a loop with its
// crypto/tls Conn, which keeps its keys and state: the socket under the
// Conn's metrics.Conn (which goes on counting the bytes) is replaced by a
// loopSide that reads the ciphertext the loop read and collects what
// crypto/tls writes for the loop to send. A read that needs bytes not yet
// there fails with a temporary net.Error, which crypto/tls returns without
// ending the connection: the part of a record read so far is kept for the
// next read. A client connection the loop cannot serve goes back to
// h1server over the same Conn (tlsBack).

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

// loopSide stands, under a crypto/tls Conn's metrics.Conn, for the socket a
// loop serves (c): reads take the bytes the loop read, writes are kept in
// the loop's tlsOut until flush; closing is the loop's, deadlines its
// timers.
type loopSide struct {
	c             *evloop.Conn // set once the loop serves the socket
	st            *loopState
	local, remote net.Addr
}

func (s *loopSide) Read(b []byte) (int, error) {
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

func (s *loopSide) Write(b []byte) (int, error) {
	s.st.tlsOut = append(s.st.tlsOut, b...)
	return len(b), nil
}

func (*loopSide) Close() error                     { return nil }
func (s *loopSide) LocalAddr() net.Addr            { return s.local }
func (s *loopSide) RemoteAddr() net.Addr           { return s.remote }
func (*loopSide) SetDeadline(time.Time) error      { return nil }
func (*loopSide) SetReadDeadline(time.Time) error  { return nil }
func (*loopSide) SetWriteDeadline(time.Time) error { return nil }

// errWouldBlock is loopSide's read when the loop has no more bytes:
// temporary, so crypto/tls keeps the connection (and what it read), and a
// deadline's kind of error, so metrics.Conn does not count it a failure.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string        { return "evloop: no bytes yet" }
func (wouldBlock) Timeout() bool        { return true }
func (wouldBlock) Temporary() bool      { return true }
func (wouldBlock) Is(target error) bool { return target == os.ErrDeadlineExceeded }

// takeTLS moves tc's socket to st's loop: its descriptor (evloop.Take) and
// a loopSide in the socket's place under tc's metrics.Conn, which must be
// the connection under tc, or the one under a replayConn with nothing
// left to replay. Nothing happens (false) for any other shape.
func takeTLS(tc *tls.Conn, st *loopState) (fd int, ts *tlsStream, mc *metrics.Conn, ok bool) {
	under := tc.NetConn()
	if rc, isReplay := under.(*replayConn); isReplay {
		if rc.r != nil && rc.r.Buffered() > 0 {
			return -1, nil, nil, false
		}
		under = rc.Conn
	}
	if mc, ok = under.(*metrics.Conn); !ok {
		return -1, nil, nil, false // a PROXY header's clientConn, say
	}
	raw := mc.Conn
	if cc, isCounted := raw.(*counted); isCounted {
		raw = cc.Conn
	}
	var tcp *net.TCPConn
	switch c := raw.(type) {
	case *net.TCPConn:
		tcp = c
	case *rawconn.Conn:
		tcp = c.TCPConn
	default:
		return -1, nil, nil, false
	}
	side := &loopSide{st: st, local: tcp.LocalAddr(), remote: tcp.RemoteAddr()}
	fd, err := evloop.Take(tcp)
	if err != nil {
		// tcp is open still (Take closes it only once it has the
		// duplicate): the caller goes on without the loop.
		return -1, nil, nil, false
	}
	mc.Conn = side
	return fd, &tlsStream{tc: tc, side: side}, mc, true
}

// tlsStream is a crypto/tls Conn on a loop: records are decrypted into
// plain while there is room for them.
type tlsStream struct {
	tc    *tls.Conn
	side  *loopSide
	plain []byte // decrypted: plain[r:w] not consumed; nil while empty
	r, w  int
	eof   bool  // the peer's close_notify, or its end at a record's boundary
	err   error // the connection's TLS failed
}

// decrypt reads records into plain while there is room and ciphertext.
func (ts *tlsStream) decrypt() {
	st := ts.side.st
	for ts.err == nil && !ts.eof {
		if ts.plain == nil {
			if n := len(st.plainBufs); n > 0 {
				ts.plain = st.plainBufs[n-1]
				st.plainBufs = st.plainBufs[:n-1]
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
	st := ts.side.st
	if ts.plain != nil && len(st.plainBufs) < maxSparePlain {
		st.plainBufs = append(st.plainBufs, ts.plain)
	}
	ts.plain, ts.r, ts.w = nil, 0, 0
}

const maxSparePlain = 64

// write sends a then b, in one record when they fit in one.
func (ts *tlsStream) write(a, b []byte) {
	st := ts.side.st
	p := a
	if len(b) > 0 {
		st.tlsJoin = append(append(st.tlsJoin[:0], a...), b...)
		p = st.tlsJoin
	}
	ts.tc.Write(p)
	if cap(st.tlsJoin) > 64<<10 {
		st.tlsJoin = nil
	}
	ts.flush()
}

// flush sends what crypto/tls wrote.
func (ts *tlsStream) flush() {
	st := ts.side.st
	if len(st.tlsOut) == 0 {
		return
	}
	ts.side.c.Write(st.tlsOut)
	st.tlsOut = st.tlsOut[:0]
	if cap(st.tlsOut) > 64<<10 {
		st.tlsOut = nil
	}
}

// close sends close_notify, as crypto/tls's Close does, with what the
// socket takes at once; the caller closes the socket.
func (ts *tlsStream) close() {
	ts.tc.Close() // the alert through loopSide, whose Close is nothing
	ts.flush()
	ts.release()
}

// The client side: HTTPS.

// loopTLS is an HTTPS client connection's TLS on a loop.
type loopTLS struct {
	tlsStream
	state tls.ConnectionState // the requests' r.TLS
	sni   string              // requestHost of the ClientHello's name
}

// loopTLS moves an HTTPS connection, its handshake done and HTTP/1.1
// settled by ALPN, to the next loop; false (the caller serves it) for one
// the loops do not take: a client certificate (the requests carry it), a
// PROXY header, bytes read past the ClientHello's replay.
func (ps *portServer) loopTLS(tc *tls.Conn, st tls.ConnectionState) bool {
	g := ps.g
	if len(st.PeerCertificates) > 0 {
		return false
	}
	to := g.pickLoop()
	fd, ts, mc, ok := takeTLS(tc, to)
	if !ok {
		return false
	}
	ps.streams.Add(1) // the loop's, until lc.done
	lt := &loopTLS{tlsStream: *ts, state: st, sni: requestHost(st.ServerName)}
	lc := &loopClient{ps: ps, remote: ts.side.remote.String(), tls: lt}
	lc.mc, lc.ts = mc, &lt.tlsStream
	to.l.Post(func() { to.serve(lc, fd) })
	return true
}

// back hands the connection back to the goroutine path: TLS over mc's
// new connection, head and the plaintext not consumed read first.
func (lt *loopTLS) back(head []byte) net.Conn {
	prefix := append(append([]byte(nil), head...), lt.buffered()...)
	lt.release()
	return &tlsBack{Conn: lt.tc, prefix: prefix}
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

// loopStream is one side's bytes on a loop, a client's or an endpoint's:
// the socket's as they are (counted in mc), or through its TLS (ts, counted
// by the metrics.Conn under the TLS Conn).
type loopStream struct {
	c  *evloop.Conn
	mc *metrics.Conn
	ts *tlsStream // nil: plaintext
}

// pull decrypts what came, for a TLS connection.
func (s *loopStream) pull() {
	if s.ts != nil {
		s.ts.decrypt()
	}
}

// buffered is the bytes read and not consumed (after pull).
func (s *loopStream) buffered() []byte {
	if s.ts != nil {
		return s.ts.buffered()
	}
	return s.c.Buffered()
}

func (s *loopStream) consume(n int) {
	if s.ts != nil {
		s.ts.consume(n)
		return
	}
	s.c.Consume(n)
	s.mc.Count(n, 0)
}

// readEOF says the peer ended its side (after pull).
func (s *loopStream) readEOF() bool {
	if s.ts != nil {
		return s.ts.eof
	}
	return s.c.EOF()
}

// readErr is what ended the peer's side (after pull).
func (s *loopStream) readErr() error {
	if s.ts != nil {
		return s.ts.err
	}
	return s.c.Err()
}

// write sends a then b: as they are, or in one record when they fit.
func (s *loopStream) write(a, b []byte) error {
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

// loopMaxDialing bounds the mTLS dials in progress from one loop to one
// endpoint, as h1client bounds the goroutine path's: each costs a
// handshake, and unbounded, a burst of requests to an endpoint with no
// idle connection had each dial its own while the handshakes before it
// took the core (bench/README.md, "the mTLS HTTP/1.1 hop's connection
// pile-up").
const loopMaxDialing = h1client.DefaultMaxDialing

// dialOrWait dials for x, or has it wait for the first connection given
// back or dial let go when loopMaxDialing dials are in progress.
func (p *loopPool) dialOrWait(x *loopExchange, key string) {
	if p.dialing < loopMaxDialing {
		p.dialing++
		x.lc.dialTLS(x, key)
		return
	}
	p.waiting = append(p.waiting, x)
}

// waits reports whether x is still its client's request with no
// connection: a client that went away leaves its request behind.
func (x *loopExchange) waits() bool {
	lc := x.lc
	return lc.x == x && !lc.closed && x.up == nil
}

// nextWaiting takes the first request still waiting, or nil.
func (p *loopPool) nextWaiting() *loopExchange {
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
func (p *loopPool) put(up *loopUpstream) {
	if x := p.nextWaiting(); x != nil {
		x.lc.sendOn(up, x)
		return
	}
	p.idle = append(p.idle, up)
}

// dialDone lets the first request waiting dial in the place of a dial
// that ended. When that dial failed, the requests waiting fail as it did
// instead (each goes to the goroutine path, which tries again), as
// h1client's waiting requests do.
func (p *loopPool) dialDone(key string, err error) {
	if err != nil {
		for x := p.nextWaiting(); x != nil; x = p.nextWaiting() {
			x.lc.failed(x, true)
		}
		return
	}
	if p.dialing < loopMaxDialing {
		if x := p.nextWaiting(); x != nil {
			p.dialing++
			x.lc.dialTLS(x, key)
		}
	}
}

// dialTLS opens an mTLS connection to x's endpoint with the endpoint's
// own dialer (its handshake on a goroutine), then sends x on it on the
// loop. x waits meanwhile: its client is read for its end only.
func (lc *loopClient) dialTLS(x *loopExchange, key string) {
	st := lc.st
	u := x.ep.Value()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), loopDialTimeout)
		c, err := u.DialHTTP1(ctx)
		cancel()
		st.l.Post(func() { lc.dialed(x, key, c, err) })
	}()
}

// loopDialTimeout bounds an mTLS connection's dial and handshake, as the
// goroutine path's connect timeout does.
const loopDialTimeout = 10 * time.Second

// dialed is dialTLS's end, on the loop.
func (lc *loopClient) dialed(x *loopExchange, key string, c net.Conn, err error) {
	var up *loopUpstream
	if err == nil {
		if up, err = lc.st.takeUpstream(c, key); err != nil {
			c.Close()
		}
	}
	p := lc.st.pool(key)
	p.dialing--
	switch current := x.waits(); {
	case err != nil:
		if current {
			lc.failed(x, true) // the goroutine path dials again
		}
	case current:
		lc.sendOn(up, x)
	default:
		// The client went away meanwhile: the connection is for the
		// next request to the endpoint.
		p.put(up)
	}
	p.dialDone(key, err)
}

var errNotTaken = errors.New("event loop: the connection's shape is not one the loop takes")

// takeUpstream serves c, an mTLS connection to an endpoint, on st's loop.
func (st *loopState) takeUpstream(c net.Conn, key string) (*loopUpstream, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil, errNotTaken
	}
	fd, ts, mc, ok := takeTLS(tc, st)
	if !ok {
		return nil, errNotTaken
	}
	up := &loopUpstream{addr: key}
	up.mc, up.ts = mc, ts
	uc, err := st.l.NewConn(fd, up)
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
