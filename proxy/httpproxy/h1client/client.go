// Package h1client is a synchronous HTTP/1.1 client for one endpoint: a
// keep-alive pool of connections and an http.RoundTripper over it that
// runs each request on its caller's goroutine. net/http's Transport runs
// every HTTP/1 request over three goroutines (the caller, the connection's
// writeLoop and readLoop) with channel handoffs between them, and its
// readLoop peeks the connection after every response (a read that returns
// EAGAIN and parks); for a proxy that forwards small requests over
// loopback those are most of the cost.
//
// The wire format stays net/http's: requests are written by
// (*http.Request).Write and responses parsed by http.ReadResponse.
package h1client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/meridian-mesh/meridian/proxy/httpproxy/internal/h1head"
	"github.com/meridian-mesh/meridian/proxy/internal/ctxwatch"
)

// Defaults, those of the net/http Transport the proxy used before.
const (
	DefaultMaxIdle                = 256
	DefaultMaxDialing             = 4
	DefaultIdleTimeout            = 90 * time.Second
	DefaultMaxResponseHeaderBytes = 10 << 20
	DefaultBufferSize             = 4 << 10
)

// How long a finished response waits for its request body's writer before
// giving up on the connection (net/http's maxWriteWaitBeforeConnReuse).
const writeWait = 50 * time.Millisecond

// Options configure a Client. Zero values take the defaults above.
type Options struct {
	// Dial opens a connection to the endpoint. Its error is returned as
	// it is (the caller's retry logic may look at it).
	Dial func(ctx context.Context) (net.Conn, error)
	// MaxIdle bounds the idle connections kept; one more is closed.
	MaxIdle int
	// IdleTimeout closes a connection idle for that long.
	IdleTimeout time.Duration
	// MaxDialing bounds the dials in progress. A request that finds no
	// idle connection and every dial taken waits for whichever comes
	// first: a connection another request gives back, or a dial let go
	// (it then dials itself). When the last dial in progress fails, the
	// requests waiting fail with its error, as each would have by dialing.
	MaxDialing int
	// MaxResponseHeaderBytes bounds a response's head (1xx heads included).
	MaxResponseHeaderBytes int64
	// ReadBufferSize and WriteBufferSize size each connection's buffers.
	ReadBufferSize, WriteBufferSize int
}

// ErrUnsupported is returned for requests this client leaves to net/http's
// Transport: Expect: 100-continue and protocol upgrades.
var ErrUnsupported = errors.New("h1client: requests with Expect: 100-continue or Upgrade need net/http's Transport")

var errClosedBody = errors.New("http: read on closed response body")

// Client is a pool of HTTP/1.1 connections to one endpoint. Its methods
// are safe for concurrent use.
type Client struct {
	o Options

	mu      sync.Mutex
	idle    []*conn     // LIFO: the most recently used last, the oldest first
	timer   *time.Timer // closes idle connections past IdleTimeout
	armed   bool
	dialing int       // dials in progress
	waiting []*waiter // requests waiting for a connection or a dial, FIFO
}

// waiter is a request waiting in get; grants are sent to it once, with
// c.mu held by the sender, who has taken it off c.waiting.
type waiter struct{ ch chan grant }

// grant is what a waiter gets: a connection given back (pc), the right to
// dial (dial), or the error of the dial it waited on (err).
type grant struct {
	pc   *conn
	dial bool
	err  error
}

// New returns a client; o.Dial is required.
func New(o Options) *Client {
	if o.MaxIdle <= 0 {
		o.MaxIdle = DefaultMaxIdle
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxDialing <= 0 {
		o.MaxDialing = DefaultMaxDialing
	}
	if o.MaxResponseHeaderBytes <= 0 {
		o.MaxResponseHeaderBytes = DefaultMaxResponseHeaderBytes
	}
	if o.ReadBufferSize <= 0 {
		o.ReadBufferSize = DefaultBufferSize
	}
	if o.WriteBufferSize <= 0 {
		o.WriteBufferSize = DefaultBufferSize
	}
	return &Client{o: o}
}

// RoundTrip sends req on an idle connection, or a new one, and reads the
// response head. The response body reads from the connection; the
// connection returns to the pool at the body's end, when both sides allow
// it, and is closed when the body is closed before its end.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := check(req); err != nil {
		closeBody(req)
		return nil, err
	}
	replayable := isReplayable(req)
	for attempt := 0; ; attempt++ {
		// A retry dials: a second stale connection would not prove more.
		pc, err := c.get(req.Context(), attempt > 0, !replayable)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := pc.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		var stale *staleError
		if attempt > 0 || !replayable || !errors.As(err, &stale) {
			return nil, err
		}
		if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			r := *req
			r.Body = body
			req = &r
		}
	}
}

// CloseIdleConnections closes the idle connections; requests in flight
// finish on theirs.
func (c *Client) CloseIdleConnections() {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	if c.timer != nil {
		c.timer.Stop()
		c.armed = false
	}
	c.mu.Unlock()
	for _, pc := range idle {
		pc.nc.Close()
	}
}

// get takes the most recently used idle connection, or dials one. With
// check, a connection is first probed for a close by the server, for a
// request that must not be sent twice. With dial (a retry after a stale
// connection) it dials at once, whatever the dials in progress.
//
// Dials are bounded (Options.MaxDialing) because each may cost a TLS
// handshake: unbounded, a load that starts at a steady rate on a busy core
// had every request dial while the handshakes before it took the core,
// and the pool ended with hundreds of connections where a few carry the
// load (bench/README.md, "the mTLS HTTP/1.1 hop's connection pile-up").
func (c *Client) get(ctx context.Context, dial, check bool) (*conn, error) {
	for {
		pc, err := c.take(ctx, dial)
		if err != nil {
			return nil, err
		}
		if pc == nil {
			return c.dial(ctx)
		}
		// A writeReader's request is written after the poller is
		// re-armed (writeReader): a close the poller saw while the
		// connection was idle would not wake the response's wait when
		// the server only half-closed and lingers, reading. One idle
		// for writeReadFresh or longer is probed first, as one for a
		// request that must not be sent twice is.
		probe := check || (pc.wr != nil && time.Since(pc.idleAt) >= writeReadFresh)
		if pc.br.Buffered() > 0 || (probe && !pc.idleAlive()) {
			// Bytes nobody asked for, or the server closed it.
			pc.nc.Close()
			continue
		}
		pc.reused = true
		return pc, nil
	}
}

// take returns an idle connection or one given back while waiting, or nil
// with a dial counted in c.dialing, which the caller must make (dial).
func (c *Client) take(ctx context.Context, dial bool) (*conn, error) {
	c.mu.Lock()
	if n := len(c.idle); n > 0 && !dial {
		pc := c.idle[n-1]
		c.idle[n-1] = nil
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		return pc, nil
	}
	if dial || c.dialing < c.o.MaxDialing {
		c.dialing++
		c.mu.Unlock()
		return nil, nil
	}
	w := &waiter{ch: make(chan grant, 1)}
	c.waiting = append(c.waiting, w)
	c.mu.Unlock()
	select {
	case g := <-w.ch:
		return g.pc, g.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if i := slices.Index(c.waiting, w); i >= 0 {
		c.waiting = slices.Delete(c.waiting, i, i+1)
		c.mu.Unlock()
		return nil, context.Cause(ctx)
	}
	c.mu.Unlock()
	// Granted as the context ended: pass it on.
	switch g := <-w.ch; {
	case g.pc != nil:
		c.put(g.pc)
	case g.dial:
		c.dialDone(nil)
	}
	return nil, context.Cause(ctx)
}

// dial opens a connection for the dial take counted.
func (c *Client) dial(ctx context.Context) (*conn, error) {
	// A request its client gave up on fails with its context's cause, not
	// as a failure to connect (as net/http's Transport does).
	if ctx.Err() != nil {
		c.dialDone(nil)
		return nil, context.Cause(ctx)
	}
	nc, err := c.o.Dial(ctx)
	if err != nil {
		if ctx.Err() != nil {
			c.dialDone(nil)
			return nil, context.Cause(ctx)
		}
		c.dialDone(err)
		return nil, err
	}
	c.dialDone(nil)
	pc := &conn{c: c, nc: nc, raw: rawConn(nc)}
	pc.cancel = func() { pc.nc.SetDeadline(aLongTimeAgo) }
	pc.cr = connReader{pc: pc, limit: -1}
	pc.br = bufio.NewReaderSize(&pc.cr, c.o.ReadBufferSize)
	pc.wr, _ = nc.(writeReader)
	pc.cw = connWriter{pc: pc}
	var w io.Writer = &pc.cw
	if _, ok := nc.(io.ReaderFrom); ok {
		w = readerFromWriter{&pc.cw}
	}
	pc.bw = bufio.NewWriterSize(w, c.o.WriteBufferSize)
	return pc, nil
}

// dialDone ends a dial counted by take, and lets the first request
// waiting dial. A failed one (err) fails the requests waiting instead, as
// Envoy's pool purges its pending requests when a connection attempt
// fails: each would have dialed and, in all likelihood, failed the same
// way, and the connect loop moves them to another endpoint at once. Given
// the failed dial's place instead, they would fail in turns of MaxDialing,
// a connect timeout each against an endpoint that does not answer.
func (c *Client) dialDone(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dialing--
	if err != nil {
		for _, w := range c.waiting {
			w.ch <- grant{err: err}
		}
		clear(c.waiting)
		c.waiting = c.waiting[:0]
		return
	}
	if len(c.waiting) > 0 && c.dialing < c.o.MaxDialing {
		w := c.waiting[0]
		c.waiting = slices.Delete(c.waiting, 0, 1)
		c.dialing++
		w.ch <- grant{dial: true}
	}
}

// put returns pc to the idle pool, or closes it when the pool is full.
func (c *Client) put(pc *conn) {
	pc.idleAt = time.Now()
	c.mu.Lock()
	if len(c.waiting) > 0 {
		w := c.waiting[0]
		c.waiting = slices.Delete(c.waiting, 0, 1)
		w.ch <- grant{pc: pc}
		c.mu.Unlock()
		return
	}
	if len(c.idle) >= c.o.MaxIdle {
		c.mu.Unlock()
		pc.nc.Close()
		return
	}
	c.idle = append(c.idle, pc)
	if !c.armed {
		c.armed = true
		if c.timer == nil {
			c.timer = time.AfterFunc(c.o.IdleTimeout, c.sweep)
		} else {
			c.timer.Reset(c.o.IdleTimeout)
		}
	}
	c.mu.Unlock()
}

// sweep closes the connections idle for IdleTimeout or longer, and sets
// the timer for the oldest one left: one timer for the pool, not one per
// connection.
func (c *Client) sweep() {
	c.mu.Lock()
	now := time.Now()
	n := 0
	for n < len(c.idle) && now.Sub(c.idle[n].idleAt) >= c.o.IdleTimeout {
		n++
	}
	old := make([]*conn, n)
	copy(old, c.idle[:n])
	k := copy(c.idle, c.idle[n:])
	clear(c.idle[k:])
	c.idle = c.idle[:k]
	if k > 0 {
		c.timer.Reset(c.o.IdleTimeout - now.Sub(c.idle[0].idleAt))
	} else {
		c.armed = false
	}
	c.mu.Unlock()
	for _, pc := range old {
		pc.nc.Close()
	}
}

// conn is one connection. It belongs to one request at a time (its
// caller's goroutine, and the goroutine writing the request's body), or to
// the idle pool.
type conn struct {
	c      *Client
	nc     net.Conn
	raw    syscall.RawConn // nil when nc does not give it (idleAlive cannot tell)
	cr     connReader
	br     *bufio.Reader
	bw     *bufio.Writer
	reused bool
	idleAt time.Time
	// cancel makes blocked I/O return: a request's cancellation, made
	// once per connection.
	cancel func()
	// wrote gets one value from each request's body writer when it ends,
	// and end takes it: a connection whose writer's value was not taken
	// is closed, never reused, so the next request finds it empty.
	wrote chan struct{}
	// With wr, a request without a body is not written at its flush but
	// with the response's first read (writeReader): pending is its bytes,
	// in bw's buffer, and deferWrite makes the flush leave them there.
	wr         writeReader
	cw         connWriter
	pending    []byte
	deferWrite bool
	// idleAlive's, so that a probe allocates nothing.
	peek      [1]byte
	peekAlive bool
	peekFn    func(fd uintptr) bool
}

// writeReadFresh is how long a writeReader connection may have been idle
// and carry a request without a probe of its socket (Client.get): a
// server that closed it sooner after its last response and did not say
// so in it (Connection: close), and then lingers reading without a reset,
// would leave the response's wait to the request's timeout. Under load
// connections come back sooner, and the probe costs the system call the
// writeReader saves.
const writeReadFresh = 10 * time.Millisecond

// writeReader is a connection that writes a request and reads its answer
// with one wait (proxy/internal/rawconn's WriteRead, through
// proxy/metrics' Conn): a read tried at once after the write fails, the
// answer not being there yet, a system call wasted per request.
type writeReader interface {
	WriteRead(w, r []byte) (int, error)
}

// connWriter is bw's writer: the connection, but for the flush of a
// request without a body when the connection is a writeReader, which it
// keeps for the response's first read.
type connWriter struct{ pc *conn }

func (w *connWriter) Write(p []byte) (int, error) {
	if w.pc.deferWrite {
		w.pc.pending = p // bw's buffer: nothing is written to bw before it goes
		return len(p), nil
	}
	return w.pc.nc.Write(p)
}

// readerFromWriter is connWriter for a connection with ReadFrom, which
// bufio.Writer's ReadFrom then reaches as before (a body spliced from
// another socket); without one, bufio copies through its own buffer.
type readerFromWriter struct{ *connWriter }

func (w readerFromWriter) ReadFrom(r io.Reader) (int64, error) {
	return w.pc.nc.(io.ReaderFrom).ReadFrom(r)
}

// connReader counts what is read from the connection, to tell a request
// that got nothing back, and bounds it while a response head is read.
type connReader struct {
	pc    *conn
	n     int64
	limit int64 // bytes the head may still take; < 0: no bound
}

func (r *connReader) Read(p []byte) (int, error) {
	if r.limit == 0 {
		return 0, fmt.Errorf("h1client: response headers from %s exceeded %d bytes", r.pc.nc.RemoteAddr(), r.pc.c.o.MaxResponseHeaderBytes)
	}
	if r.limit > 0 && int64(len(p)) > r.limit {
		p = p[:r.limit]
	}
	var n int
	var err error
	if w := r.pc.pending; w != nil {
		r.pc.pending = nil
		n, err = r.pc.wr.WriteRead(w, p)
	} else {
		n, err = r.pc.nc.Read(p)
	}
	r.n += int64(n)
	if r.limit > 0 {
		r.limit -= int64(n)
	}
	return n, err
}

// staleError is a failure on a reused connection before any byte of the
// response: the server closed the connection while it was idle, and a
// replayable request may be sent again.
type staleError struct{ err error }

func (e *staleError) Error() string {
	return "h1client: the server closed the idle connection: " + e.err.Error()
}
func (e *staleError) Unwrap() error { return e.err }

// aLongTimeAgo is a deadline in the past: it makes blocked I/O return.
var aLongTimeAgo = time.Unix(1, 0)

// roundTrip sends req on pc and reads the response head.
func (pc *conn) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	ex := &exchange{pc: pc, req: req}
	if ctx.Done() != nil {
		// A cancellation makes the connection's blocked I/O return. The
		// watch of h1server's request context costs nothing;
		// context.AfterFunc, for any other, 4 allocations.
		if s, id, ok := ctxwatch.Watch(ctx, pc.cancel); ok {
			ex.watch, ex.watchID = s, id
		} else {
			ex.stop = context.AfterFunc(ctx, pc.cancel)
		}
	}
	start := pc.cr.n
	if req.Body == nil || req.Body == http.NoBody {
		var err error
		if !writeRequest(pc.bw, req, nil) {
			err = req.Write(pc.bw)
		}
		if err == nil {
			// Written with the response's first read (writeReader).
			pc.deferWrite = pc.wr != nil
			err = pc.bw.Flush()
			pc.deferWrite = false
		}
		if err != nil {
			ex.end(false)
			return nil, pc.mapError(req, start, err)
		}
	} else {
		// The server may answer before it has read the body (413, 401 on
		// an upload): the body is written while the response is read. The
		// body is read on this goroutine, not the caller's, so that a
		// cancellation or a route timeout ends the request even while its
		// client is still sending the body.
		if pc.wrote == nil {
			pc.wrote = make(chan struct{}, 1)
		}
		ex.wrote = pc.wrote
		go func() {
			w := req
			small, err := readSmallBody(req)
			written := false
			if small != nil {
				// A small body of known length, now in memory: the head and
				// the body leave in one write.
				if written = writeRequest(pc.bw, req, small.buf[:req.ContentLength]); !written {
					r := *req
					r.Body = small.rc
					w = &r
				}
			}
			if err == nil && !written {
				err = w.Write(pc.bw)
			}
			if err == nil {
				err = pc.bw.Flush()
			}
			if small != nil {
				small.release()
			}
			ex.werr = err
			if err != nil {
				// Told before the connection closes: the response read
				// fails of the close and must report this cause.
				ex.failed.Store(&err)
				// The rest of the request will not come: a response
				// wait would be endless (net/http closes it too).
				pc.nc.Close()
			}
			ex.wrote <- struct{}{}
		}()
	}
	resp, err := pc.readResponse(ex)
	if err != nil {
		ex.end(false)
		if werr := ex.failed.Load(); werr != nil && req.Context().Err() == nil {
			// The body failed (its client sent less than it said, or
			// broke off): the cause, and not a stale connection's.
			return nil, *werr
		}
		return nil, pc.mapError(req, start, err)
	}
	ex.alive = !resp.Close && !req.Close && resp.StatusCode >= 200 && !claimsContent(resp)
	if resp.Body == http.NoBody {
		ex.end(ex.alive)
		return resp, nil
	}
	ex.body = body{ex: ex, rc: resp.Body}
	resp.Body = &ex.body
	return resp, nil
}

// readResponse reads the final response's head: 1xx responses but 101 are
// passed to the request's httptrace.ClientTrace, as net/http does.
func (pc *conn) readResponse(ex *exchange) (*http.Response, error) {
	req := ex.req
	pc.cr.limit = pc.c.o.MaxResponseHeaderBytes
	defer func() { pc.cr.limit = -1 }()
	for {
		// The first read waits for the response; a head that arrived
		// whole is parsed in place (parseResponseHead), any other with
		// net/http's reader.
		if _, err := pc.br.Peek(1); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // as http.ReadResponse says it
			}
			return nil, err
		}
		buf, _ := pc.br.Peek(pc.br.Buffered())
		if n, ok := parseResponseHead(buf, pc.br, req, &ex.resp, &ex.respBody, nil); ok {
			pc.br.Discard(n)
			return &ex.resp, nil
		}
		resp, err := http.ReadResponse(pc.br, req)
		if err != nil {
			return nil, err
		}
		if code := resp.StatusCode; code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
			if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
					return nil, err
				}
			}
			continue
		}
		return resp, nil
	}
}

// mapError makes err the request's: the context's cause when it ended,
// a staleError when a reused connection gave nothing back.
func (pc *conn) mapError(req *http.Request, start int64, err error) error {
	if ctx := req.Context(); ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if pc.reused && pc.cr.n == start {
		return &staleError{err}
	}
	return err
}

// exchange is one request on a connection, until its response ends.
type exchange struct {
	pc   *conn
	req  *http.Request
	stop func() bool // stops the cancellation (context.AfterFunc's); nil without one
	// Or, the cancellation is watch's (ctxwatch).
	watch   *ctxwatch.Slot
	watchID uint64
	wrote   chan struct{} // the body writer's end: pc.wrote; nil without a body
	werr    error         // the body writer's error, set before its send on wrote
	// failed is the body writer's error too, stored before it closes the
	// connection, for the response read that fails of that close.
	failed atomic.Pointer[error]
	alive  bool // both sides allow another request on the connection
	once   sync.Once
	body   body // the response's, allocated with the exchange
	// The response and its Content-Length body, when parsed in place
	// (parseResponseHead): allocated with the exchange too.
	resp     http.Response
	respBody h1head.Body
}

// end releases the connection once: back to the pool when reuse is
// allowed, the request is fully written and was not cancelled; else it is
// closed, and with it the request body a writer may still be reading.
func (ex *exchange) end(reuse bool) {
	ex.once.Do(func() {
		if ex.stop != nil && !ex.stop() {
			reuse = false // cancelled: the deadline is set
		}
		if ex.watch != nil && !ex.watch.Stop(ex.watchID) {
			reuse = false
		}
		if ex.wrote != nil {
			written := true
			select {
			case <-ex.wrote:
			default:
				if reuse {
					t := time.NewTimer(writeWait)
					select {
					case <-ex.wrote:
					case <-t.C:
						written = false
					}
					t.Stop()
				} else {
					written = false
				}
			}
			if !written || ex.werr != nil {
				reuse = false
			}
			if !written {
				ex.pc.nc.Close()
				ex.req.Body.Close() // stops the writer blocked reading it
				return
			}
		}
		if reuse {
			ex.pc.c.put(ex.pc)
			return
		}
		ex.pc.nc.Close()
	})
}

// body is a response body: it reads from the connection and ends the
// exchange at EOF (reusing the connection) or at an error or Close
// (closing it).
type body struct {
	ex     *exchange
	rc     io.ReadCloser // http.ReadResponse's body over the connection
	closed atomic.Bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errClosedBody
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		// Trailers were read with the last chunk.
		b.ex.end(b.ex.alive)
	case err != nil:
		b.ex.end(false)
		if ctx := b.ex.req.Context(); ctx.Err() != nil {
			err = context.Cause(ctx)
		}
	}
	return n, err
}

// Close before EOF closes the connection: what is left of the body is not
// read (as net/http's Transport does).
func (b *body) Close() error {
	b.closed.Store(true)
	b.ex.end(false)
	return nil
}

// smallBodyMax bounds the request bodies read whole before the request is
// sent, so that head and body leave in one write.
const smallBodyMax = 4 << 10

var smallBodies = sync.Pool{New: func() any {
	b := new(smallBody)
	b.rc = io.NopCloser(&b.r)
	return b
}}

// smallBody is a request body read whole. (*http.Request).Write writes an
// io.NopCloser of a *bytes.Reader with the head, where it flushes the head
// on its own before any other body.
type smallBody struct {
	r   bytes.Reader
	rc  io.ReadCloser          // io.NopCloser(&r)
	buf [smallBodyMax + 1]byte // one more, to see the body's EOF
}

func (b *smallBody) release() {
	b.r.Reset(nil)
	smallBodies.Put(b)
}

// readSmallBody reads a body of a known length up to smallBodyMax whole,
// and closes it; nil for other bodies, which are streamed. An error is the
// body's: its client sent less than it said, or broke off.
func readSmallBody(req *http.Request) (*smallBody, error) {
	n := req.ContentLength
	if n <= 0 || n > smallBodyMax || req.Body == nil || req.Body == http.NoBody || len(req.TransferEncoding) > 0 || req.Trailer != nil {
		return nil, nil
	}
	b := smallBodies.Get().(*smallBody)
	_, err := io.ReadFull(req.Body, b.buf[:n])
	if err == nil {
		// As net/http does: a body longer than its ContentLength is an error.
		if m, _ := req.Body.Read(b.buf[n : n+1]); m > 0 {
			err = fmt.Errorf("http: ContentLength=%d with a longer Body", n)
		}
	}
	req.Body.Close()
	if err != nil {
		b.release()
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("http: ContentLength=%d with a shorter Body: %w", n, err)
		}
		return nil, err
	}
	b.r.Reset(b.buf[:n])
	return b, nil
}

// check refuses what net/http's Transport refuses, and what this client
// leaves to it.
func check(req *http.Request) error {
	if req.URL == nil {
		return errors.New("h1client: request has no URL")
	}
	if req.URL.Scheme != "http" {
		return fmt.Errorf("h1client: request URL scheme %q: only \"http\" is allowed", req.URL.Scheme)
	}
	if req.Method != "" && !httpguts.ValidHeaderFieldName(req.Method) {
		return fmt.Errorf("net/http: invalid method %q", req.Method)
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("net/http: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("net/http: invalid header field value for %q", k)
			}
		}
	}
	if httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue") || h1head.Get(req.Header, "Upgrade") != "" {
		return ErrUnsupported
	}
	return nil
}

// isReplayable is net/http's rule for sending a request again.
func isReplayable(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody || r.GetBody != nil {
		switch r.Method {
		case "", "GET", "HEAD", "OPTIONS", "TRACE":
			return true
		}
		if _, ok := r.Header["Idempotency-Key"]; ok {
			return true
		}
		if _, ok := r.Header["X-Idempotency-Key"]; ok {
			return true
		}
	}
	return false
}

// claimsContent: a response that cannot have content (1xx, 204, 304) but
// declares some. What the server sends anyway would be read as the next
// response: the connection is not reused.
func claimsContent(resp *http.Response) bool {
	s := resp.StatusCode
	if !(s >= 100 && s < 200) && s != http.StatusNoContent && s != http.StatusNotModified {
		return false
	}
	if len(resp.TransferEncoding) > 0 {
		return true
	}
	cl := h1head.Get(resp.Header, "Content-Length")
	return cl != "" && cl != "0"
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
