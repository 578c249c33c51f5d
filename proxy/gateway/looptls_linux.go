package gateway

// HTTPS on the event loop: a terminated HTTPS connection whose handshake
// (on its accepting goroutine, as before) settled HTTP/1.1 moves to the
// loop with its crypto/tls Conn, which keeps its state and runs over a
// transport (tlsTransport) that on the loop reads the ciphertext the loop
// read and collects what crypto/tls writes for the loop to send. A read
// that needs bytes not yet there fails with a temporary net.Error, which
// crypto/tls returns without ending the connection: the record read so far
// is kept for the next read. Requests are then served on the loop as a
// plaintext port's are, and a connection the loop cannot serve goes back
// to h1server over the same Conn (tlsBack).

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"

	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
	"github.com/meridian-mesh/meridian/proxy/internal/rawconn"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// loopTLS is an HTTPS connection's TLS on the loop.
type loopTLS struct {
	lc    *loopClient
	tc    *tls.Conn
	tr    *tlsTransport
	state tls.ConnectionState // the requests' r.TLS
	sni   string              // requestHost of the ClientHello's name
	plain []byte              // decrypted: plain[r:w] not consumed; nil while empty
	r, w  int
	eof   bool  // the client's close_notify, or its end at a record's boundary
	err   error // the connection's TLS failed
}

// loopTLS moves an HTTPS connection, its handshake done and HTTP/1.1
// settled by ALPN, to the loop; false (the caller serves it) for one the
// loop does not take: a client certificate (the requests carry it), a
// PROXY header, bytes read past the ClientHello's replay.
func (ps *portServer) loopTLS(tc *tls.Conn, tr *tlsTransport, st tls.ConnectionState) bool {
	g := ps.g
	if len(st.PeerCertificates) > 0 {
		return false
	}
	rc, ok := tr.Conn.(*replayConn)
	if !ok || (rc.r != nil && rc.r.Buffered() > 0) {
		return false
	}
	mc, ok := rc.Conn.(*metrics.Conn)
	if !ok {
		return false // a PROXY header's clientConn
	}
	cc, ok := mc.Conn.(*counted)
	if !ok {
		return false
	}
	var tcp *net.TCPConn
	switch c := cc.Conn.(type) {
	case *net.TCPConn:
		tcp = c
	case *rawconn.Conn:
		tcp = c.TCPConn
	default:
		return false
	}
	local, remote := tcp.LocalAddr(), tcp.RemoteAddr()
	fd, err := evloop.Take(tcp)
	if err != nil {
		// tcp is open still (Take closes it only once it has the
		// duplicate): the goroutine path serves it.
		g.log.Debug("event loop: TLS connection not taken", "port", ps.number, "err", err)
		return false
	}
	mc.Conn = noConn{}
	tr.Conn = onLoop{local: local, remote: remote}
	lt := &loopTLS{tc: tc, tr: tr, state: st, sni: requestHost(st.ServerName)}
	tr.loop = loopCipher{lt}
	ps.streams.Add(1) // the loop's, until lc.done
	lc := &loopClient{ps: ps, remote: remote.String(), mc: mc, tls: lt}
	lt.lc = lc
	to := g.pickLoop()
	to.l.Post(func() { to.serve(lc, fd) })
	return true
}

// errWouldBlock is the transport's read when the loop has no more bytes:
// temporary, so crypto/tls keeps the connection (and what it read).
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "evloop: no bytes yet" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// loopCipher is tlsTransport's loop side: the ciphertext the loop read,
// and what crypto/tls writes collected for one send (flush).
type loopCipher struct{ lt *loopTLS }

func (t loopCipher) Read(b []byte) (int, error) {
	lc := t.lt.lc
	buf := lc.c.Buffered()
	if len(buf) == 0 {
		switch {
		case lc.c.Err() != nil:
			return 0, lc.c.Err()
		case lc.c.EOF():
			return 0, io.EOF
		}
		return 0, errWouldBlock
	}
	n := copy(b, buf)
	lc.c.Consume(n)
	lc.mc.Count(n, 0)
	return n, nil
}

func (t loopCipher) Write(b []byte) (int, error) {
	st := t.lt.lc.st
	st.tlsOut = append(st.tlsOut, b...)
	return len(b), nil
}

// onLoop stands for the accepted connection under tlsTransport while the
// loop serves its socket: the loop's timers are its deadlines, and its
// closing is the loop's.
type onLoop struct{ local, remote net.Addr }

func (onLoop) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (onLoop) Write([]byte) (int, error)        { return 0, net.ErrClosed }
func (onLoop) Close() error                     { return nil }
func (o onLoop) LocalAddr() net.Addr            { return o.local }
func (o onLoop) RemoteAddr() net.Addr           { return o.remote }
func (onLoop) SetDeadline(time.Time) error      { return nil }
func (onLoop) SetReadDeadline(time.Time) error  { return nil }
func (onLoop) SetWriteDeadline(time.Time) error { return nil }

// decrypt reads records into plain while there is room and ciphertext.
func (lt *loopTLS) decrypt() {
	st := lt.lc.st
	for lt.err == nil && !lt.eof {
		if lt.plain == nil {
			if n := len(st.plainBufs); n > 0 {
				lt.plain = st.plainBufs[n-1]
				st.plainBufs = st.plainBufs[:n-1]
			} else {
				lt.plain = make([]byte, evloop.BufferSize)
			}
		}
		if lt.w == len(lt.plain) {
			if lt.r == 0 {
				break // full: the next request is read once this one is
			}
			lt.w = copy(lt.plain, lt.plain[lt.r:lt.w])
			lt.r = 0
		}
		n, err := lt.tc.Read(lt.plain[lt.w:])
		lt.w += n
		if err != nil {
			switch {
			case errors.Is(err, errWouldBlock):
			case err == io.EOF:
				lt.eof = true
			default:
				lt.err = err
			}
			break
		}
	}
	if len(st.tlsOut) > 0 {
		lt.lc.flush() // crypto/tls's answer to a post-handshake message
	}
	if lt.r == lt.w {
		lt.release()
	}
}

// release gives the plaintext buffer back.
func (lt *loopTLS) release() {
	if lt.plain != nil && len(lt.lc.st.plainBufs) < maxSparePlain {
		lt.lc.st.plainBufs = append(lt.lc.st.plainBufs, lt.plain)
	}
	lt.plain, lt.r, lt.w = nil, 0, 0
}

const maxSparePlain = 64

// close sends close_notify, as crypto/tls's Close does, with what the
// socket takes at once.
func (lt *loopTLS) close() {
	lt.tc.Close() // writes the alert through loopCipher; onLoop's Close is nothing
	lt.lc.flush()
	lt.release()
}

// back hands the connection back to the goroutine path: TLS over mc (the
// accepted connection again), head and the plaintext not consumed read
// first.
func (lt *loopTLS) back(mc net.Conn, head []byte) net.Conn {
	prefix := append(append([]byte(nil), head...), lt.plain[lt.r:lt.w]...)
	lt.release()
	lt.tr.Conn, lt.tr.loop = mc, nil
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

// The client connection's bytes, plaintext or through its TLS.

// pull decrypts what came, for a TLS connection.
func (lc *loopClient) pull() {
	if lc.tls != nil {
		lc.tls.decrypt()
	}
}

// buffered is the request bytes read and not consumed (after pull).
func (lc *loopClient) buffered() []byte {
	if lt := lc.tls; lt != nil {
		return lt.plain[lt.r:lt.w]
	}
	return lc.c.Buffered()
}

func (lc *loopClient) consume(n int) {
	if lt := lc.tls; lt != nil {
		if lt.r += n; lt.r == lt.w {
			lt.release()
		}
		return
	}
	lc.c.Consume(n)
	lc.mc.Count(n, 0)
}

// readEOF says the client ended its side (after pull).
func (lc *loopClient) readEOF() bool {
	if lc.tls != nil {
		return lc.tls.eof
	}
	return lc.c.EOF()
}

// readErr is what ended the client's side (after pull).
func (lc *loopClient) readErr() error {
	if lc.tls != nil {
		return lc.tls.err
	}
	return lc.c.Err()
}

// write sends a then b to the client: as they are, or in one TLS record
// (crypto/tls splits what is longer than a record's most).
func (lc *loopClient) write(a, b []byte) {
	lt := lc.tls
	if lt == nil {
		lc.c.Write2(a, b)
		lc.mc.Count(0, len(a)+len(b))
		return
	}
	st := lc.st
	p := a
	if len(b) > 0 {
		st.tlsJoin = append(append(st.tlsJoin[:0], a...), b...)
		p = st.tlsJoin
	}
	lt.tc.Write(p)
	if cap(st.tlsJoin) > 64<<10 {
		st.tlsJoin = nil
	}
	lc.flush()
}

// flush sends what crypto/tls wrote.
func (lc *loopClient) flush() {
	st := lc.st
	if len(st.tlsOut) == 0 {
		return
	}
	lc.c.Write(st.tlsOut)
	lc.mc.Count(0, len(st.tlsOut))
	st.tlsOut = st.tlsOut[:0]
	if cap(st.tlsOut) > 64<<10 {
		st.tlsOut = nil
	}
}
