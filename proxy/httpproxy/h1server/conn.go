package h1server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/meridian-mesh/meridian/proxy/httpproxy/internal/h1head"
)

// conn is one connection being served (net/http's conn).
type conn struct {
	server     *Server
	cancelCtx  context.CancelFunc
	rwc        net.Conn
	remoteAddr string
	tlsState   *tls.ConnectionState
	werr       error // the first write error
	r          *connReader
	bufr       *bufio.Reader
	bufw       *bufio.Writer
	// bufw2k is the response's buffer before chunking, kept across the
	// connection's requests (net/http takes one from a pool per request).
	bufw2k     *bufio.Writer
	lastMethod string
	// head is the current request's head as read (see readRequest), kept
	// across requests.
	head []byte
	// watch starts the client-gone read of a handler that runs long.
	watch *time.Timer

	curReq   atomic.Pointer[response]
	curState atomic.Uint64 // unixtime<<8 | uint8(ConnState)

	mu        sync.Mutex // guards hijackedv
	hijackedv bool
}

func (c *conn) hijacked() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hijackedv
}

func (c *conn) hijackLocked() (rwc net.Conn, buf *bufio.ReadWriter, err error) {
	if c.hijackedv {
		return nil, nil, http.ErrHijacked
	}
	c.stopWatch()
	c.hijackedv = true
	rwc = c.rwc
	rwc.SetDeadline(time.Time{})
	if c.r.hasByte {
		if _, err := c.bufr.Peek(c.bufr.Buffered() + 1); err != nil {
			return nil, nil, fmt.Errorf("unexpected Peek failure reading buffered byte: %v", err)
		}
	}
	c.bufw.Reset(rwc)
	buf = bufio.NewReadWriter(c.bufr, c.bufw)
	c.setState(http.StateHijacked)
	return
}

func (c *conn) setState(state http.ConnState) {
	switch state {
	case http.StateHijacked, http.StateClosed:
		c.server.trackConn(c, false)
	}
	// Only a new connection's time is read (closeIdleConns); any other
	// state stores 1, not 0, which there means "no state yet". Saves the
	// two clock reads per request of the Active and Idle switches.
	sec := uint64(1)
	if state == http.StateNew {
		sec = uint64(time.Now().Unix())
	}
	c.curState.Store(sec<<8 | uint64(state))
}

func (c *conn) getState() (http.ConnState, int64) {
	p := c.curState.Load()
	return http.ConnState(p & 0xff), int64(p >> 8)
}

// connReader is net/http's: a read limit while a head is read, and the
// one-byte background read that notices a client gone while its handler
// runs. Unlike net/http's, the background read starts only once the
// handler has run for WatchDelay and its request body has been read.
type connReader struct {
	rwc net.Conn

	mu      sync.Mutex
	conn    *conn // nil after the handler of a hijacked connection exits
	hasByte bool
	byteBuf [1]byte
	cond    *sync.Cond
	inRead  bool
	aborted bool
	remain  int64

	// rec, while a head is read, gets every byte read (readRequest).
	rec *[]byte

	// The watch of the request in flight: armed while its handler runs,
	// due once WatchDelay has passed, bodyDone once its body hit EOF
	// (or it has none). The background read starts when all three hold.
	armed, due, bodyDone bool
}

func (cr *connReader) lock() {
	cr.mu.Lock()
	if cr.cond == nil {
		cr.cond = sync.NewCond(&cr.mu)
	}
}

func (cr *connReader) unlock() { cr.mu.Unlock() }

func (cr *connReader) releaseConn() {
	cr.lock()
	defer cr.unlock()
	cr.conn = nil
}

// arm starts the watch of a request whose handler is about to run.
func (cr *connReader) arm(bodyDone bool) {
	cr.lock()
	cr.armed, cr.due, cr.bodyDone = true, false, bodyDone
	cr.unlock()
}

// watchDue is the WatchDelay timer's callback.
func (cr *connReader) watchDue() {
	cr.lock()
	defer cr.unlock()
	if cr.armed {
		cr.due = true
		cr.maybeStartLocked()
	}
}

// bodyEOF is called when the request body hits EOF.
func (cr *connReader) bodyEOF() {
	cr.lock()
	defer cr.unlock()
	cr.bodyDone = true
	if cr.armed && cr.due {
		cr.maybeStartLocked()
	}
}

func (cr *connReader) maybeStartLocked() {
	if !cr.bodyDone || cr.inRead || cr.hasByte || cr.conn == nil {
		return
	}
	cr.inRead = true
	cr.rwc.SetReadDeadline(time.Time{})
	go cr.backgroundRead()
}

// stopWatch ends the watch of the request in flight: no background read
// starts any more, and one in flight is aborted (net/http's
// abortPendingRead).
func (c *conn) stopWatch() {
	if c.watch != nil {
		c.watch.Stop()
	}
	c.r.disarm()
}

func (cr *connReader) disarm() {
	cr.lock()
	defer cr.unlock()
	cr.armed = false
	if !cr.inRead {
		return
	}
	cr.aborted = true
	cr.rwc.SetReadDeadline(aLongTimeAgo)
	for cr.inRead {
		cr.cond.Wait()
	}
	cr.rwc.SetReadDeadline(time.Time{})
}

var aLongTimeAgo = time.Unix(1, 0)

func (cr *connReader) backgroundRead() {
	n, err := cr.rwc.Read(cr.byteBuf[:])
	cr.lock()
	if n == 1 {
		// A pipelined request's first byte: kept for it, and no
		// cancellation (net/http's rule since Go 1.11).
		cr.hasByte = true
	}
	if ne, ok := err.(net.Error); ok && cr.aborted && ne.Timeout() {
		// stopWatch's doing.
	} else if err != nil {
		cr.handleReadErrorLocked(err)
	}
	cr.aborted = false
	cr.inRead = false
	cr.unlock()
	cr.cond.Broadcast()
}

func (cr *connReader) setReadLimit(remain int64) { cr.remain = remain }
func (cr *connReader) setInfiniteReadLimit()     { cr.remain = 1<<63 - 1 }
func (cr *connReader) hitReadLimit() bool        { return cr.remain <= 0 }

// handleReadErrorLocked: a failed read means the client is gone; the
// connection's context (and the request's) ends.
func (cr *connReader) handleReadErrorLocked(error) {
	if cr.conn == nil {
		return
	}
	cr.conn.cancelCtx()
}

func (cr *connReader) Read(p []byte) (n int, err error) {
	cr.lock()
	if cr.conn == nil {
		cr.unlock()
		return cr.rwc.Read(p)
	}
	if cr.inRead {
		hijacked := cr.conn.hijacked()
		cr.unlock()
		if hijacked {
			panic("invalid Body.Read call. After hijacked, the original Request must not be used")
		}
		panic("invalid concurrent Body.Read call")
	}
	if cr.hitReadLimit() {
		cr.unlock()
		return 0, io.EOF
	}
	if len(p) == 0 {
		cr.unlock()
		return 0, nil
	}
	if int64(len(p)) > cr.remain {
		p = p[:cr.remain]
	}
	if cr.hasByte {
		p[0] = cr.byteBuf[0]
		cr.hasByte = false
		if cr.rec != nil {
			*cr.rec = append(*cr.rec, p[0])
		}
		cr.unlock()
		return 1, nil
	}
	cr.inRead = true
	cr.unlock()
	n, err = cr.rwc.Read(p)

	cr.lock()
	cr.inRead = false
	if err != nil {
		cr.handleReadErrorLocked(err)
	}
	cr.remain -= int64(n)
	if cr.rec != nil && n > 0 {
		*cr.rec = append(*cr.rec, p[:n]...)
	}
	cr.unlock()
	cr.cond.Broadcast()
	return n, err
}

var (
	bufioReaderPool   sync.Pool
	bufioWriter2kPool sync.Pool
	bufioWriter4kPool sync.Pool
)

func newBufioReader(r io.Reader) *bufio.Reader {
	if v := bufioReaderPool.Get(); v != nil {
		br := v.(*bufio.Reader)
		br.Reset(r)
		return br
	}
	return bufio.NewReader(r)
}

func newBufioWriter(pool *sync.Pool, w io.Writer, size int) *bufio.Writer {
	if v := pool.Get(); v != nil {
		bw := v.(*bufio.Writer)
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, size)
}

func putBufioWriter(pool *sync.Pool, bw *bufio.Writer) {
	bw.Reset(nil)
	pool.Put(bw)
}

// maxKeptHead bounds the head buffer a connection keeps between requests.
const maxKeptHead = 16 << 10

// readRequest reads the next request (net/http's conn.readRequest, over
// http.ReadRequest). The head's bytes are kept while it is read: the
// server's checks need the Host and Content-Length fields that
// http.ReadRequest drops.
func (c *conn) readRequest(ctx context.Context) (w *response, err error) {
	if c.hijacked() {
		return nil, http.ErrHijacked
	}
	c.r.setReadLimit(c.server.initialReadLimitSize())
	if c.lastMethod == "POST" {
		// RFC 7230 section 3 tolerance for old buggy clients.
		peek, _ := c.bufr.Peek(4)
		c.bufr.Discard(numLeadingCRorLF(peek))
	}
	buffered, _ := c.bufr.Peek(c.bufr.Buffered())
	if cap(c.head) > maxKeptHead {
		c.head = nil
	}
	c.head = append(c.head[:0], buffered...)
	c.r.lock()
	c.r.rec = &c.head
	c.r.unlock()
	// The first read waits for the request; a head that arrived whole is
	// parsed in place (parseHead), any other with net/http's reader.
	// A head parsed in place is on the stack until the request, with its
	// context, is copied to the heap below (WithContext): one Request
	// allocation where http.ReadRequest's request takes two.
	var parsed http.Request
	var req *http.Request // parsed or http.ReadRequest's: must not escape
	if _, err = c.bufr.Peek(1); err == nil {
		buf, _ := c.bufr.Peek(c.bufr.Buffered())
		if n, ok := parseHead(buf, c.bufr, &parsed, nil); ok {
			c.bufr.Discard(n)
			req = &parsed
		} else {
			req, err = http.ReadRequest(c.bufr)
		}
	}
	c.r.lock()
	c.r.rec = nil
	c.r.unlock()
	if err != nil {
		if c.r.hitReadLimit() {
			return nil, errTooLarge
		}
		return nil, err
	}
	head := c.head[:len(c.head)-c.bufr.Buffered()]

	if !http1ServerSupportsRequest(req) {
		return nil, statusError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	}
	c.lastMethod = req.Method
	c.r.setInfiniteReadLimit()

	// http.ReadRequest deleted the Host field: when the target is in
	// origin form and req.Host is set, it came from that field, the only
	// one (ReadRequest refuses two); otherwise the head says.
	var fields textproto.MIMEHeader
	haveHost, host := req.URL.Host == "" && req.Host != "", req.Host
	if !haveHost {
		fields = headFields(head)
		var hosts []string
		hosts, haveHost = fields["Host"]
		if haveHost && len(hosts) > 0 {
			host = hosts[0]
		}
	}
	isH2Upgrade := req.Method == "PRI" && len(req.Header) == 0 && !haveHost && req.URL.Path == "*" && req.Proto == "HTTP/2.0"
	if req.ProtoAtLeast(1, 1) && !haveHost && !isH2Upgrade && req.Method != "CONNECT" {
		return nil, badRequestError("missing required Host header")
	}
	if haveHost && !httpguts.ValidHostHeader(host) {
		return nil, badRequestError("malformed Host header")
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, badRequestError("invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, badRequestError("invalid header value")
			}
		}
	}
	ambiguous := false
	if len(req.TransferEncoding) > 0 {
		// ReadRequest framed the body by Transfer-Encoding and dropped any
		// Content-Length (HTTP/1.1 only: for 1.0 it ignores the former).
		if fields == nil {
			fields = headFields(head)
		}
		_, ambiguous = fields["Content-Length"]
	}

	ctx, cancelCtx := context.WithCancel(ctx)
	w = &response{
		conn:          c,
		cancelCtx:     cancelCtx,
		handlerHeader: make(http.Header),
		contentLength: -1,
		ambiguous:     ambiguous,

		wants10KeepAlive: req.ProtoMajor == 1 && req.ProtoMinor == 0 && h1head.HasToken(h1head.Get(req.Header, "Connection"), "keep-alive"),
		wantsClose:       req.Close || h1head.HasToken(h1head.Get(req.Header, "Connection"), "close"),
	}
	w.rctx.Reset(ctx)
	r := req.WithContext(&w.rctx)
	r.RemoteAddr = c.remoteAddr
	r.TLS = c.tlsState
	w.req = r
	if r.Body != http.NoBody && r.Body != nil {
		r.Body = &body{src: r.Body, remain: r.ContentLength, chunked: r.ContentLength < 0, closing: r.Close, r: c.r}
	}
	w.reqBody = r.Body
	c.rwc.SetReadDeadline(time.Time{})
	if isH2Upgrade {
		w.closeAfterReply = true
	}
	w.cw.res = w
	c.bufw2k.Reset(&w.cw)
	w.w = c.bufw2k
	return w, nil
}

// headFields parses a head's header fields as http.ReadRequest did.
func headFields(head []byte) textproto.MIMEHeader {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(head)))
	if _, err := tp.ReadLine(); err != nil {
		return nil
	}
	h, _ := tp.ReadMIMEHeader()
	return h
}

func http1ServerSupportsRequest(req *http.Request) bool {
	if req.ProtoMajor == 1 {
		return true
	}
	return req.ProtoMajor == 2 && req.ProtoMinor == 0 && req.Method == "PRI" && req.RequestURI == "*"
}

func numLeadingCRorLF(v []byte) (n int) {
	for _, b := range v {
		if b == '\r' || b == '\n' {
			n++
			continue
		}
		break
	}
	return
}

func isCommonNetReadError(err error) bool {
	if err == io.EOF {
		return true
	}
	if neterr, ok := err.(net.Error); ok && neterr.Timeout() {
		return true
	}
	if oe, ok := err.(*net.OpError); ok && oe.Op == "read" {
		return true
	}
	return false
}

func isUnsupportedTEError(err error) bool {
	// http.ReadRequest's *unsupportedTEError, known by its texts.
	s := err.Error()
	return strings.HasPrefix(s, "unsupported transfer encoding: ") || strings.HasPrefix(s, "too many transfer encodings: ")
}

type connectionStater interface {
	ConnectionState() tls.ConnectionState
}

// rstAvoidanceDelay is net/http's: after a 431 or a request body too
// large, the write side is shut and the socket closed this much later.
var rstAvoidanceDelay = 500 * time.Millisecond

func (c *conn) finalFlush() {
	if c.bufr != nil {
		c.bufr.Reset(nil)
		bufioReaderPool.Put(c.bufr)
		c.bufr = nil
	}
	if c.bufw != nil {
		c.bufw.Flush()
		putBufioWriter(&bufioWriter4kPool, c.bufw)
		c.bufw = nil
	}
	if c.bufw2k != nil {
		putBufioWriter(&bufioWriter2kPool, c.bufw2k)
		c.bufw2k = nil
	}
}

func (c *conn) close() {
	c.finalFlush()
	c.rwc.Close()
}

func (c *conn) closeWriteAndWait() {
	c.finalFlush()
	if tcp, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		tcp.CloseWrite()
	}
	time.Sleep(rstAvoidanceDelay)
}

// h2Preface is the HTTP/2 client preface (RFC 9113 §3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// maybeH2C hands a connection that opens with the HTTP/2 preface to
// Server.H2C, peeking as net/http's server does.
func (c *conn) maybeH2C() bool {
	if c.server.H2C == nil {
		return false
	}
	hasPreface := func(preface string) bool {
		c.r.setReadLimit(int64(len(preface)) - int64(c.bufr.Buffered()))
		got, err := c.bufr.Peek(len(preface))
		c.r.setInfiniteReadLimit()
		return err == nil && string(got) == preface
	}
	if !hasPreface(h2Preface[:14]) || !hasPreface(h2Preface) {
		return false
	}
	c.setState(http.StateHijacked) // no longer this server's
	c.r.releaseConn()
	br := c.bufr
	c.bufr = nil
	c.finalFlush()
	c.server.H2C(&replayConn{Conn: c.rwc, r: br})
	return true
}

// replayConn reads the bytes buffered before the rest.
type replayConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(p)
		}
		c.r = nil
	}
	return c.Conn.Read(p)
}

func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// NetConn is the connection underneath.
func (c *replayConn) NetConn() net.Conn { return c.Conn }

// serve is net/http's conn.serve for HTTP/1.x.
func (c *conn) serve(ctx context.Context) {
	if ra := c.rwc.RemoteAddr(); ra != nil {
		c.remoteAddr = ra.String()
	}
	ctx = &connValues{Context: ctx, c: c}
	if cc := c.server.ConnContext; cc != nil {
		ctx = cc(ctx, c.rwc)
		if ctx == nil {
			panic("ConnContext returned nil")
		}
	}
	var inFlightResponse *response
	handedOver := false
	defer func() {
		if err := recover(); err != nil && err != http.ErrAbortHandler {
			const size = 64 << 10
			buf := make([]byte, size)
			buf = buf[:runtime.Stack(buf, false)]
			c.server.logf("http: panic serving %v: %v\n%s", c.remoteAddr, err, buf)
		}
		if inFlightResponse != nil {
			inFlightResponse.cancel()
			inFlightResponse.disableWriteContinue()
		}
		if handedOver {
			return
		}
		if !c.hijacked() {
			if inFlightResponse != nil {
				inFlightResponse.conn.stopWatch()
				inFlightResponse.reqBody.Close()
			}
			c.close()
			c.setState(http.StateClosed)
		}
	}()

	if tc, ok := c.rwc.(*tls.Conn); ok && !tc.ConnectionState().HandshakeComplete {
		st, err := c.tlsHandshake(ctx, tc)
		if err != nil {
			c.server.logf("%v", err)
			return
		}
		c.tlsState = st
	} else if tc, ok := c.rwc.(connectionStater); ok {
		c.tlsState = new(tls.ConnectionState)
		*c.tlsState = tc.ConnectionState()
	}

	ctx, cancelCtx := context.WithCancel(ctx)
	c.cancelCtx = cancelCtx
	defer cancelCtx()
	// The request in flight's context ends with the connection's: its
	// watch (ctxwatch.Context) runs then. Stopped before the connection's end
	// cancels it, which needs no watch (the last request's is done).
	stopFire := context.AfterFunc(ctx, c.fireCurrent)
	defer stopFire()

	c.r = &connReader{conn: c, rwc: c.rwc}
	c.bufr = newBufioReader(c.r)
	c.bufw = newBufioWriter(&bufioWriter4kPool, checkConnErrorWriter{c}, 4<<10)
	c.bufw2k = newBufioWriter(&bufioWriter2kPool, nil, bufferBeforeChunkingSize)

	if d := c.server.ReadHeaderTimeout; d > 0 {
		c.rwc.SetReadDeadline(time.Now().Add(d))
	}
	if c.tlsState == nil && c.maybeH2C() {
		handedOver = true
		return
	}

	for {
		w, err := c.readRequest(ctx)
		if c.r.remain != c.server.initialReadLimitSize() {
			c.setState(http.StateActive)
		}
		if c.server.shuttingDown() {
			return
		}
		if err != nil {
			const errorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
			switch {
			case err == errTooLarge:
				const publicErr = "431 Request Header Fields Too Large"
				fmt.Fprintf(c.rwc, "HTTP/1.1 "+publicErr+errorHeaders+publicErr)
				c.closeWriteAndWait()
				return
			case isUnsupportedTEError(err):
				code := http.StatusNotImplemented
				fmt.Fprintf(c.rwc, "HTTP/1.1 %d %s%sUnsupported transfer encoding", code, http.StatusText(code), errorHeaders)
				return
			case isCommonNetReadError(err):
				return
			default:
				if v, ok := err.(statusError); ok {
					fmt.Fprintf(c.rwc, "HTTP/1.1 %d %s: %s%s%d %s: %s", v.code, http.StatusText(v.code), v.text, errorHeaders, v.code, http.StatusText(v.code), v.text)
					return
				}
				const publicErr = "400 Bad Request"
				fmt.Fprintf(c.rwc, "HTTP/1.1 "+publicErr+errorHeaders+publicErr)
				return
			}
		}

		req := w.req
		if h1head.HasToken(h1head.Get(req.Header, "Expect"), "100-continue") {
			if req.ProtoAtLeast(1, 1) && req.ContentLength != 0 {
				req.Body = &expectContinueReader{readCloser: req.Body, resp: w}
				w.canWriteContinue.Store(true)
			}
		} else if h1head.Get(req.Header, "Expect") != "" {
			w.sendExpectationFailed()
			return
		}

		c.curReq.Store(w)
		c.r.arm(!requestBodyRemains(w.reqBody))
		if c.watch == nil {
			c.watch = time.AfterFunc(WatchDelay, c.r.watchDue)
		} else {
			c.watch.Reset(WatchDelay)
		}

		inFlightResponse = w
		c.serverHandler(w, w.req)
		inFlightResponse = nil
		w.cancel()
		if c.hijacked() {
			c.r.releaseConn()
			return
		}
		w.finishRequest()
		c.rwc.SetWriteDeadline(time.Time{})
		if !w.shouldReuseConnection() {
			if w.requestBodyLimitHit || w.closedRequestBodyEarly() {
				c.closeWriteAndWait()
			}
			return
		}
		c.setState(http.StateIdle)
		c.curReq.Store(nil)

		if !c.server.doKeepAlives() {
			return
		}
		if d := c.server.IdleTimeout; d > 0 {
			c.rwc.SetReadDeadline(time.Now().Add(d))
		} else {
			c.rwc.SetReadDeadline(time.Time{})
		}
		// The next request's header timeout starts at its first bytes.
		if _, err := c.bufr.Peek(4); err != nil {
			return
		}
		if c.headBuffered() {
			// Its whole head arrived with them: reading it cannot block,
			// and readRequest clears the idle deadline after it.
		} else if d := c.server.ReadHeaderTimeout; d > 0 {
			c.rwc.SetReadDeadline(time.Now().Add(d))
		} else {
			c.rwc.SetReadDeadline(time.Time{})
		}
	}
}

// headBuffered reports whether the buffer holds a whole request head (up
// to its CRLF CRLF; a head of bare LFs just takes the slower path). Empty
// lines before it do not count: after a POST readRequest discards them
// and then reads on, and a client that sent only those must still meet
// the header timeout.
func (c *conn) headBuffered() bool {
	b, _ := c.bufr.Peek(c.bufr.Buffered())
	return bytes.Contains(bytes.TrimLeft(b, "\r\n"), crlfcrlf)
}

var crlfcrlf = []byte("\r\n\r\n")

// fireCurrent runs the watch of the request in flight, if any, once the
// connection's context has ended.
func (c *conn) fireCurrent() {
	if w := c.curReq.Load(); w != nil {
		// The connection's cancel ends its children in turn, this
		// callback's goroutine starting among them: the request's
		// context, its child, ends at once if it has not yet.
		<-w.rctx.Done()
		w.rctx.Slot.Fire()
	}
}

// serverHandler is net/http's serverHandler.ServeHTTP.
func (c *conn) serverHandler(w *response, req *http.Request) {
	h := c.server.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	if !c.server.DisableGeneralOptionsHandler && req.RequestURI == "*" && req.Method == "OPTIONS" {
		// net/http's globalOptionsHandler: up to 4 KiB of body is read,
		// more closes the connection (its MaxBytesReader).
		w.Header().Set("Content-Length", "0")
		if req.ContentLength != 0 {
			if n, _ := io.CopyN(io.Discard, req.Body, 4<<10+1); n > 4<<10 {
				w.requestTooLarge()
			}
		}
		return
	}
	h.ServeHTTP(w, req)
}

type checkConnErrorWriter struct{ c *conn }

func (w checkConnErrorWriter) Write(p []byte) (n int, err error) {
	n, err = w.c.rwc.Write(p)
	if err != nil && w.c.werr == nil {
		w.c.werr = err
		w.c.cancelCtx()
	}
	return
}
