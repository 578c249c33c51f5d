package h1loop

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h1client"
	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// upstream is a connection to an endpoint.
type upstream struct {
	stream             // ts: mTLS to a meshed endpoint
	key        poolKey // its pool's
	x          *exchange
	connecting bool
	connect    *evloop.Timer                // bounds connecting; nil once connected
	dialed     func(addr string, err error) // Server.Dialed
	closed     bool
}

// pool is one endpoint's connections on a loop. Its mTLS dials are
// bounded (dialOrWait, tls_linux.go) as h1client's are.
type pool struct {
	idle    []*upstream
	dialing int         // mTLS dials in progress
	waiting []*exchange // requests waiting for a connection or a dial, FIFO
}

// poolKey names a pool: an endpoint's address, and the identity its mTLS
// connections require ("": plaintext), for one direction.
type poolKey struct{ direction, serverID, addr string }

func (lp *Loop) pool(key poolKey) *pool {
	p := lp.pools[key]
	if p == nil {
		p = &pool{}
		lp.pools[key] = p
	}
	return p
}

func (p *pool) get() *upstream {
	for n := len(p.idle); n > 0; n = len(p.idle) {
		up := p.idle[n-1]
		p.idle = p.idle[:n-1]
		if !up.closed {
			return up
		}
	}
	return nil
}

// dial starts a non-blocking connect to key's address, within timeout, a
// plaintext connection whose tcp_* series have key's direction and the tls
// label tls.
func (lp *Loop) dial(key poolKey, timeout time.Duration, m *metrics.Registry, tls string, dialed func(string, error)) (*upstream, error) {
	addr := key.addr
	fd, connecting, err := connectFD(addr)
	if err != nil {
		return nil, err
	}
	up := &upstream{key: key, dialed: dialed, connecting: connecting}
	if up.c, err = lp.l.NewConn(fd, up); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if up.connecting {
		up.connect = lp.l.After(timeout, up.connectTimedOut)
	}
	up.mc = m.Conn(noConn{}, metrics.ConnLabels{Direction: key.direction, Peer: metrics.PeerDst, Target: addr, TLS: tls})
	if !up.connecting && dialed != nil {
		dialed(addr, nil) // connected at once
	}
	return up, nil
}

// connectFD starts a non-blocking connect to addr (ip:port): connecting
// says it is in progress.
func connectFD(addr string) (fd int, connecting bool, err error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return -1, false, err
	}
	var sa unix.Sockaddr
	family := unix.AF_INET
	if ap.Addr().Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, false, err
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	switch err = unix.Connect(fd, sa); err {
	case nil:
		return fd, false, nil
	case unix.EINPROGRESS:
		return fd, true, nil
	}
	unix.Close(fd)
	return -1, false, err
}

// silent reports whether an idle connection is open with nothing to
// read: no byte, end or error taken, none in the socket.
func (up *upstream) silent() bool {
	if up.readEOF() || up.readErr() != nil || len(up.buffered()) > 0 {
		return false
	}
	return up.c.Silent()
}

// connectTimedOut fails a connect that took too long (an endpoint that
// does not answer), as the goroutine path's dialer does: its request goes
// there, which dials again.
func (up *upstream) connectTimedOut() {
	up.connect = nil
	if !up.connecting || up.closed {
		return
	}
	x := up.x
	up.connectFailed(errConnectTimeout)
	up.close()
	if x != nil {
		x.d.failed(x, true)
		x.d.flush()
	}
}

var errConnectTimeout = errors.New("h1loop: connect timed out")

// connected is the end of connecting.
func (up *upstream) connected() {
	if !up.connecting {
		return
	}
	up.connecting = false
	if up.connect != nil {
		up.connect.Stop()
		up.connect = nil
	}
	if up.dialed != nil {
		up.dialed(up.key.addr, nil)
	}
}

// connectFailed tells Dialed of err when it ended a connect, and reports
// whether it did.
func (up *upstream) connectFailed(err error) bool {
	if !up.connecting {
		return false
	}
	up.connecting = false
	if up.dialed != nil {
		up.dialed(up.key.addr, err)
	}
	return true
}

func (up *upstream) close() {
	if up.closed {
		return
	}
	up.closed = true
	if up.connect != nil {
		up.connect.Stop()
		up.connect = nil
	}
	if up.ts != nil {
		up.ts.close()
	}
	up.c.Close()
	up.mc.Close()
}

// Readable reads the response: its head (and any 1xx before it), then its
// body by its framing.
func (up *upstream) Readable(*evloop.Conn) {
	x := up.x
	up.readable()
	if x != nil {
		x.d.flush()
	}
}

// readable passes on what the endpoint sent.
func (up *upstream) readable() {
	x := up.x
	up.pull()
	if x == nil {
		if up.ts != nil && len(up.buffered()) == 0 && up.readErr() == nil && !up.readEOF() {
			return // a post-handshake message (a session ticket), taken
		}
		up.close() // an idle connection's close, or bytes nobody asked for
		return
	}
	c := x.d
	for !x.sent {
		up.pull() // a TLS connection's next records, after a 1xx
		buf := up.buffered()
		if up.readErr() != nil && len(buf) == 0 {
			c.failed(x, up.connectFailed(up.readErr())) // refused, or reset before a response
			return
		}
		up.connected()
		n, ok := h1client.ParseResponseHead(buf, c.request(), &x.resp, x.respInto)
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
					c.failed(x, false) // nothing came, or half a head: tried again
					return
				}
				c.respond502(x, invalidText)
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(buf[:end])), c.request())
			if err != nil || resp.StatusCode == http.StatusSwitchingProtocols {
				c.respond502(x, invalidText) // as the transport's error, or an unasked-for switch
				return
			}
			n, x.resp = end, *resp
			if x.resp.StatusCode >= 200 && !x.interim && x.resend && httpproxy.PeerFailed(&x.resp) {
				c.peerFailed(x) // as below, before it is counted
				return
			}
			x.count()
			if x.resp.StatusCode < 200 {
				// An interim response (103 Early Hints), passed on as
				// ReverseProxy passes them, and the final one read next.
				httpproxy.RemoveHopByHop(x.resp.Header)
				x.interim = true
				c.writeHead(x, nil)
				up.consume(n)
				continue
			}
			x.framing = framingOf(&x.resp)
			x.remaining = x.resp.ContentLength
		}
		if !x.interim && x.resend && httpproxy.PeerFailed(&x.resp) {
			// A meshed endpoint's proxy could not reach its application:
			// the goroutine path's retries take it from here, as a
			// connection error (not counted here; they count theirs). A
			// request it would not send again gets the answer as it is.
			c.peerFailed(x)
			return
		}
		x.sent = true
		x.count()
		httpproxy.RemoveHopByHop(x.resp.Header)
		announceTrailers(&x.resp)
		if x.framing == byChunks || x.framing == byClose {
			x.resp.Header["Transfer-Encoding"] = chunkedTE
		}
		c.loop().served.Add(1) // before the client can see the response
		// The head and the body's first bytes in one write.
		take := c.writeHead(x, buf[n:])
		up.consume(n + take)
	}
	// A TLS connection decrypts a buffer's worth at a time: what it read
	// beyond that comes with no readiness of its own.
	for !x.done && c.room() {
		take := c.passBody(x, up.buffered(), up.readEOF())
		if take == 0 {
			break
		}
		up.consume(take)
		up.pull()
	}
	if x.done {
		c.finish(x)
		return
	}
	if x.broken || up.readErr() != nil || (up.readEOF() && len(up.buffered()) == 0) {
		c.cut(x)
	}
}

// announceTrailers declares the trailers the endpoint declared (the
// Trailer field, hop-by-hop, is gone with the others), as the Forwarder
// announces them, the names sorted.
func announceTrailers(resp *http.Response) {
	if len(resp.Trailer) == 0 {
		return
	}
	keys := make([]string, 0, len(resp.Trailer))
	for k := range resp.Trailer {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	resp.Header["Trailer"] = []string{strings.Join(keys, ", ")}
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
func (x *exchange) firstBody(buf []byte) (body []byte, take int) {
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
func (c *client) passBody(x *exchange, buf []byte, eof bool) int {
	switch x.framing {
	case byLength:
		if int64(len(buf)) > x.remaining {
			buf = buf[:x.remaining]
		}
		if len(buf) > 0 {
			c.write(buf, nil)
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
			c.write(buf[:n], nil)
		}
		x.done = done
		return n
	case byClose:
		if len(buf) > 0 {
			var size [20]byte
			h := append(strconv.AppendInt(size[:0], int64(len(buf)), 16), "\r\n"...)
			c.write(h, buf)
			c.write(crlf, nil)
		}
		if eof {
			c.write(lastChunk, nil)
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

// maxPending is how much of a response may wait for a slow client
// before the upstream connection is read no more.
const maxPending = 256 << 10

func (up *upstream) Written(*evloop.Conn) { up.connected() }

// writeHead writes the response's head, and the body's first bytes of
// rest with it, to the client as the goroutine path's server does for a
// handler that set Content-Length.
func (c *client) writeHead(x *exchange, rest []byte) (take int) {
	var body []byte
	if x.resp.StatusCode >= 200 {
		body, take = x.firstBody(rest)
	}
	c.writeHeadBody(x, body)
	return take
}

func (c *client) writeHeadBody(x *exchange, body []byte) {
	b := c.appendHead(x.out[:0], x.resp.StatusCode, x.resp.Header)
	c.write(b, body)
	x.out = b
}

// appendHead appends a response's head: its status line, a Date unless h
// has one (not on a 1xx), h's fields sorted, the empty line.
func (c *client) appendHead(b []byte, code int, h http.Header) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\n"...)
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		// No body: net/http's server sends none of the body's fields.
		delete(h, "Content-Type")
		delete(h, "Content-Length")
		delete(h, "Transfer-Encoding")
	}
	if _, ok := h["Date"]; !ok && code >= 200 {
		b = append(b, c.lp.dateLine()...)
	}
	b, c.keys = appendHeader(b, h, c.keys)
	return append(b, "\r\n"...)
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
func (c *client) finish(x *exchange) {
	status := x.resp.StatusCode
	x.ep.EndRequest(x.begin, status >= 500)
	x.ep.Succeed()
	x.ep.Result(httpproxy.EndFailure(&x.resp, nil)) // failure accrual, as the Forwarder reports
	c.s.Metrics.ResponseDone(x.labels, metrics.Response{Status: status, Latency: time.Since(x.start)})
	c.s.inFlight().Add(-1)
	up := x.up
	up.x = nil
	if x.resp.Close || len(up.buffered()) > 0 || len(up.c.Buffered()) > 0 {
		up.close()
	} else {
		c.lp.pool(up.key).put(up)
	}
	c.x = nil
	if c.s.draining.Load() {
		c.closeWritten()
		return
	}
	c.next()
}

const invalidText = "meridian proxy: the endpoint's response is not valid HTTP/1.1\n"

// respond502 answers a response the endpoint got wrong (a head that does
// not parse, an unasked-for 101), or none to a request not sent again, as
// the Forwarder answers them: 502 with the proxy's error header and text,
// the client's connection kept.
func (c *client) respond502(x *exchange, text string) {
	x.ep.EndRequest(x.begin, true)
	x.ep.Result("reset") // the Forwarder's for a transport's error
	x.count()
	c.s.Metrics.ResponseDone(x.labels, metrics.Response{Error: "upstream", Latency: time.Since(x.start)})
	c.s.inFlight().Add(-1)
	x.up.close()
	b := append(x.out[:0], "HTTP/1.1 502 Bad Gateway\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(text)), 10)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\n"...)
	b = append(b, c.lp.dateLine()...)
	b = append(b, httpproxy.ErrorHeader+": upstream\r\nX-Content-Type-Options: nosniff\r\n\r\n"+text...)
	c.write(b, nil)
	x.out = b
	c.x = nil
	c.next()
}
