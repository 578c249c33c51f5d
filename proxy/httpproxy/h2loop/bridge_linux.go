package h2loop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/h2server"
)

// Bridge serves streams with an http.Handler, each on a goroutine of its
// own, as proxy/h2server serves them: for the streams a loop handler does
// not carry itself.
type Bridge struct {
	Handler http.Handler
	// BaseContext is the context a stream's request derives from (what
	// http.Server.ConnContext would give); context.Background() if nil.
	BaseContext func(s *Stream) context.Context
	// Logf hears of handlers' panics; log.Printf if nil.
	Logf func(format string, args ...any)

	workers h2server.Workers // a warm stack for each handler
}

// maxQueued is how much of a response a handler's writes may have queued
// for the loop before they wait for it to take them.
const maxQueued = 64 << 10

// bufSize is what a response buffers before it writes (Go's server's
// handlerChunkWriteSize): a small response goes whole, with its HEADERS
// and trailers, in one hand-over to the loop.
const bufSize = 4 << 10

var (
	errHandlerComplete = errors.New("http2: request body closed due to handler exiting")
	errClosedBody      = errors.New("http2: request body closed by handler")
	errHandlerFinished = errors.New("h2loop: ResponseWriter used after the handler returned")
	errWriteTimeout    = fmt.Errorf("http2: write deadline: %w", os.ErrDeadlineExceeded)
)

// Stop ends the goroutines kept warm for the next handlers, at once
// rather than after their idle time, and those running a handler when it
// returns: for a server whose loops have stopped. Handlers still running
// are not interrupted; a stream served after Stop has a goroutine of its
// own, which ends with its handler.
func (b *Bridge) Stop() { b.workers.Stop() }

// ServeStream starts s's handler on a goroutine.
func (b *Bridge) ServeStream(s *Stream) Receiver { return b.start(s, nil, false) }

// ServeStreamBody is ServeStream for a stream another Handler took first
// and hands over: body is what it was given of the request's body and did
// not give back to the windows (Consumed), which the handler reads first;
// a request whose END_STREAM came meanwhile ends after it, with its
// trailers.
func (b *Bridge) ServeStreamBody(s *Stream, body []byte) Receiver { return b.start(s, body, true) }

func (b *Bridge) start(s *Stream, body []byte, handedOver bool) Receiver {
	ctx := context.Background()
	if b.BaseContext != nil {
		ctx = b.BaseContext(s)
	}
	bs := &bridged{b: b, s: s}
	bs.cond.L = &bs.mu
	bs.ctx, bs.cancel = context.WithCancel(ctx)
	req := s.Request // a copy: the loop's stays the loop's
	ended := s.state != stateOpen
	if ended && (!handedOver || len(body) == 0 && len(s.Trailer) == 0) {
		req.Body = http.NoBody
		bs.bodyErr = io.EOF
	} else {
		req.Body = (*bridgeBody)(bs)
		bs.needsContinue = s.ExpectsContinue() // sent at the body's first read, as Go's server does
		bs.body = append(bs.body, body...)
	}
	if req.Trailer != nil {
		req.Trailer = req.Trailer.Clone()
	}
	bs.req = req.WithContext(bs.ctx)
	if ended && bs.bodyErr == nil {
		bs.End(s, nil) // the body's end, and the trailers, came before the hand-over
	}
	bs.rw = bridgeWriter{bs: bs, isHead: req.Method == "HEAD"}
	b.workers.Run(bs.serve)
	return bs
}

// bridged is one stream served by a handler. Its fields below mu are
// shared by the loop and the handler's goroutine.
type bridged struct {
	b      *Bridge
	s      *Stream // the loop's only
	ctx    context.Context
	cancel context.CancelFunc
	req    *http.Request
	rw     bridgeWriter

	// Loop-only: the op being written.
	cur *op

	mu       sync.Mutex
	cond     sync.Cond
	body     []byte // received, unread
	bodyOff  int
	bodyErr  error // after body: io.EOF at END_STREAM, or why it ended
	broken   error // the handler closed the body (or returned): reads fail with it
	consumed int   // read, not yet given back to the windows
	ops      []*op // the response's writes, for the loop
	queued   int   // bytes in ops
	posted   bool  // a drain is posted to the loop
	over     error // the stream is over: writes fail with it
	readTmr  *time.Timer
	writeTmr *time.Timer

	needsContinue bool // the body's first read sends 100 Continue
}

// op is a response write handed to the loop.
type op struct {
	status   int         // HEADERS: a 1xx, or the final one (with h)
	h        http.Header // the HEADERS' fields
	data     []byte      // DATA
	end      bool        // the response's end: END_STREAM on the trailers, or else on the data
	trailers http.Header // with end: the trailers, if any
	done     bool        // the handler returned: the stream is let go
	reset    bool        // RST_STREAM INTERNAL_ERROR (a panic)
	shutdown bool        // the connection is drained after this response (Connection: close)
}

// Data keeps p for the handler's reads.
func (bs *bridged) Data(s *Stream, p []byte) {
	bs.mu.Lock()
	if bs.broken != nil {
		bs.mu.Unlock()
		s.Consumed(len(p)) // nobody reads it
		return
	}
	if bs.bodyOff > 0 && bs.bodyOff >= len(bs.body)/2 {
		n := copy(bs.body, bs.body[bs.bodyOff:])
		bs.body, bs.bodyOff = bs.body[:n], 0
	}
	bs.body = append(bs.body, p...)
	bs.cond.Broadcast()
	bs.mu.Unlock()
}

// End ends the body's reads at its end, or the stream's: the body's error
// and the request's context's end under one lock, as h2server's
// closeStream does (a handler woken by either sees both: its read fails,
// after what was buffered, and its context is canceled), a client's
// RST_STREAM as h2server has it, an http2.StreamError with its code
// (grpc-go's ServeHTTP tells CANCEL's codes.Canceled by it).
func (bs *bridged) End(s *Stream, err error) {
	if err != nil {
		var re StreamResetError
		if errors.As(err, &re) {
			err = http2.StreamError{StreamID: s.ID(), Code: re.Code}
		}
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if err == nil {
		if bs.bodyErr == nil {
			bs.bodyErr = io.EOF
			for k, vv := range s.Trailer {
				if _, ok := bs.req.Trailer[k]; ok {
					bs.req.Trailer[k] = vv // declared ones only, as Go's server
				}
			}
		}
		bs.cond.Broadcast()
		return
	}
	if bs.bodyErr == nil || bs.bodyErr == io.EOF {
		bs.bodyErr = err
	}
	if bs.over == nil {
		bs.over = err
	}
	bs.ops, bs.queued = nil, 0
	bs.cur = nil
	bs.cancel()
	bs.cond.Broadcast()
}

// Writable resumes the response's writes.
func (bs *bridged) Writable(*Stream) { bs.drain() }

// post hands o to the loop.
func (bs *bridged) post(o *op) error {
	bs.mu.Lock()
	if bs.over != nil && !o.done {
		err := bs.over
		bs.mu.Unlock()
		return err
	}
	bs.ops = append(bs.ops, o)
	bs.queued += len(o.data)
	if !bs.posted {
		bs.posted = true
		bs.s.c.lp.Post(bs.drain)
	}
	for bs.queued > maxQueued && bs.over == nil {
		bs.cond.Wait()
	}
	err := bs.over
	bs.mu.Unlock()
	if o.end && err == errResponseDone {
		err = nil
	}
	return err
}

// errResponseDone: the response went whole; a write after it fails.
var errResponseDone = errors.New("http2: response complete")

// drain writes the handler's ops on the loop, as the windows allow.
func (bs *bridged) drain() {
	s := bs.s
	bs.mu.Lock()
	bs.posted = false
	consumed := bs.consumed
	bs.consumed = 0
	bs.mu.Unlock()
	if consumed > 0 {
		s.Consumed(consumed)
	}
	for {
		o := bs.cur
		if o == nil {
			bs.mu.Lock()
			if len(bs.ops) == 0 {
				bs.mu.Unlock()
				break
			}
			o = bs.ops[0]
			bs.ops = bs.ops[1:]
			bs.mu.Unlock()
			bs.cur = o
		}
		if !bs.apply(o) {
			break // Writable resumes
		}
		bs.cur = nil
		bs.mu.Lock()
		bs.queued -= len(o.data)
		bs.cond.Broadcast()
		bs.mu.Unlock()
	}
	s.Flush()
}

// apply writes o on the stream; false: the windows took part of its
// data only (the rest stays in o.data for Writable).
func (bs *bridged) apply(o *op) bool {
	s := bs.s
	switch {
	case o.done:
		if s.Open() {
			s.Reset(http2.ErrCodeInternal) // a handler gone without an end (never: finish ends it)
		}
		s.Done()
		return true
	case o.reset:
		bs.fail(errStreamClosed)
		s.Reset(http2.ErrCodeInternal)
		return true
	case o.status != 0 && o.status < 200:
		s.WriteHeader(o.status, o.h, false)
		return true
	case o.status != 0:
		endOnHeaders := o.end && len(o.data) == 0 && o.trailers == nil
		s.WriteHeader(o.status, o.h, endOnHeaders)
		if o.shutdown {
			s.c.Shutdown()
		}
		o.status, o.h = 0, nil
		if endOnHeaders {
			bs.fail(errResponseDone)
			return true
		}
	}
	if len(o.data) > 0 {
		last := o.end && o.trailers == nil
		n := s.Write(o.data, last)
		bs.mu.Lock()
		bs.queued -= n
		bs.cond.Broadcast()
		bs.mu.Unlock()
		o.data = o.data[n:]
		if len(o.data) > 0 {
			if !s.Open() {
				bs.fail(errStreamClosed)
				return true
			}
			return false
		}
		if last {
			bs.fail(errResponseDone)
			return true
		}
	}
	if o.end {
		s.WriteTrailers(o.trailers) // none: an empty DATA frame with END_STREAM
		bs.fail(errResponseDone)
	}
	return true
}

var errStreamClosed = errors.New("http2: stream closed")

// fail makes the handler's further writes fail with err.
func (bs *bridged) fail(err error) {
	bs.mu.Lock()
	if bs.over == nil {
		bs.over = err
	}
	bs.cond.Broadcast()
	bs.mu.Unlock()
}

// serve runs the handler, then ends the response and lets the stream go.
func (bs *bridged) serve() {
	rw := &bs.rw
	done := false
	defer func() {
		if !done {
			// A panic, or runtime.Goexit: the response is cut short.
			e := recover()
			if e != nil && e != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				bs.logf("http2: panic serving %v: %v\n%s", bs.req.RemoteAddr, e, buf)
			}
			bs.post(&op{reset: true})
		}
		rw.rh.SetDone()
		bs.closeBody(errHandlerComplete)
		bs.stopTimers()
		bs.cancel()
		bs.post(&op{done: true})
	}()
	bs.b.Handler.ServeHTTP(rw, bs.req)
	rw.finish()
	done = true
}

func (bs *bridged) logf(format string, args ...any) {
	if bs.b.Logf != nil {
		bs.b.Logf(format, args...)
		return
	}
	bs.s.c.srv.logf(format, args...)
}

func (bs *bridged) stopTimers() {
	bs.mu.Lock()
	if bs.readTmr != nil {
		bs.readTmr.Stop()
	}
	if bs.writeTmr != nil {
		bs.writeTmr.Stop()
	}
	bs.mu.Unlock()
}

// closeBody ends the body's reads with err and gives what is unread back
// to the windows.
func (bs *bridged) closeBody(err error) {
	bs.mu.Lock()
	if bs.broken != nil {
		bs.mu.Unlock()
		return
	}
	bs.broken = err
	bs.consumed += len(bs.body) - bs.bodyOff
	bs.body, bs.bodyOff = nil, 0
	bs.cond.Broadcast()
	bs.postConsumedLocked()
	bs.mu.Unlock()
}

// postConsumedLocked (mu held) has the loop give the bytes read back.
func (bs *bridged) postConsumedLocked() {
	if bs.consumed > 0 && !bs.posted {
		bs.posted = true
		bs.s.c.lp.Post(bs.drain)
	}
}

// bridgeBody is a bridged stream's Request.Body.
type bridgeBody bridged

// Read returns the bytes received; with the last of them, io.EOF as soon
// as the client's END_STREAM is in (so that a Go transport relaying it
// sends END_STREAM on its last DATA frame).
func (b *bridgeBody) Read(p []byte) (int, error) {
	bs := (*bridged)(b)
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if bs.needsContinue {
		bs.needsContinue = false
		s := bs.s
		s.c.lp.Post(func() {
			s.Continue()
			s.Flush()
		})
	}
	for bs.broken == nil && bs.bodyOff == len(bs.body) && bs.bodyErr == nil {
		bs.cond.Wait()
	}
	if bs.broken != nil {
		return 0, bs.broken
	}
	n := copy(p, bs.body[bs.bodyOff:])
	bs.bodyOff += n
	if bs.bodyOff == len(bs.body) {
		bs.body, bs.bodyOff = bs.body[:0], 0
	}
	var err error
	if bs.bodyOff == len(bs.body) && bs.bodyErr != nil {
		err = bs.bodyErr
	}
	bs.consumed += n
	bs.postConsumedLocked()
	return n, err
}

// Buffered reports the bytes a Read returns without waiting, and whether
// the client's END_STREAM is in with them (h2client.Buffered).
func (b *bridgeBody) Buffered() (int, bool) {
	bs := (*bridged)(b)
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if bs.broken != nil {
		return 0, false
	}
	return len(bs.body) - bs.bodyOff, bs.bodyErr == io.EOF
}

// Close discards what is unread, and gives the windows back.
func (b *bridgeBody) Close() error {
	(*bridged)(b).closeBody(errClosedBody)
	return nil
}

// bridgeWriter is a bridged stream's http.ResponseWriter, with
// h2server's rules (proxy/h2server/README.md, "Responses").
type bridgeWriter struct {
	rh     h2server.ResponseHead // the header and its rules, as h2server's ResponseWriter
	bs     *bridged
	isHead bool

	sentHeader bool
	ended      bool // the response's end was handed over
	buf        []byte
}

func (w *bridgeWriter) Header() http.Header { return w.rh.Header() }

func (w *bridgeWriter) WriteHeader(code int) {
	if h, ok := w.rh.SetStatus(code); ok {
		w.bs.post(&op{status: code, h: h.Clone()}) // the loop's: the handler may go on changing its own
	}
}

func (w *bridgeWriter) Write(p []byte) (int, error) {
	if !w.rh.WroteHeader() {
		w.WriteHeader(http.StatusOK)
	}
	if err := w.rh.CheckWrite(len(p)); err != nil {
		return 0, err
	}
	if len(w.buf)+len(p) <= bufSize {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	data := append(w.buf, p...)
	w.buf = nil
	if err := w.emit(data, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *bridgeWriter) WriteString(s string) (int, error) { return w.Write([]byte(s)) }

func (w *bridgeWriter) Flush() { w.FlushError() }

// FlushError sends the response's HEADERS (200 if none was set) and the
// body buffered so far.
func (w *bridgeWriter) FlushError() error {
	if w.rh.Done() {
		return errHandlerFinished
	}
	if !w.rh.WroteHeader() {
		w.WriteHeader(http.StatusOK)
	}
	data := w.buf
	w.buf = nil
	return w.emit(data, false)
}

// EnableFullDuplex: HTTP/2 requests and responses are always full duplex.
func (w *bridgeWriter) EnableFullDuplex() error { return nil }

// SetReadDeadline ends the request body's reads with
// os.ErrDeadlineExceeded at t, as Go's server does.
func (w *bridgeWriter) SetReadDeadline(t time.Time) error {
	bs := w.bs
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if bs.readTmr != nil && !bs.readTmr.Stop() {
		return nil
	}
	if t.IsZero() {
		bs.readTmr = nil
		return nil
	}
	expire := func() {
		bs.mu.Lock()
		if bs.bodyErr == nil {
			bs.bodyErr = fmt.Errorf("%w", os.ErrDeadlineExceeded)
			bs.cond.Broadcast()
		}
		bs.mu.Unlock()
	}
	d := time.Until(t)
	if d <= 0 {
		bs.mu.Unlock()
		expire()
		bs.mu.Lock()
		return nil
	}
	bs.readTmr = time.AfterFunc(d, expire)
	return nil
}

// SetWriteDeadline resets the stream (INTERNAL_ERROR) at t unless the
// response is over, as Go's server does.
func (w *bridgeWriter) SetWriteDeadline(t time.Time) error {
	bs := w.bs
	bs.mu.Lock()
	if bs.writeTmr != nil && !bs.writeTmr.Stop() {
		bs.mu.Unlock()
		return nil
	}
	if t.IsZero() {
		bs.writeTmr = nil
		bs.mu.Unlock()
		return nil
	}
	expire := func() {
		bs.mu.Lock()
		over := bs.over
		if over == nil {
			bs.over = errWriteTimeout
			bs.cond.Broadcast()
		}
		bs.mu.Unlock()
		if over == nil {
			bs.s.c.lp.Post(func() {
				if bs.s.Open() {
					bs.s.Reset(http2.ErrCodeInternal)
					bs.s.Flush()
				}
			})
		}
	}
	d := time.Until(t)
	if d > 0 {
		bs.writeTmr = time.AfterFunc(d, expire)
	}
	bs.mu.Unlock()
	if d <= 0 {
		expire()
	}
	return nil
}

// finish ends the response when the handler returns: what is buffered,
// the trailers, END_STREAM.
func (w *bridgeWriter) finish() {
	if !w.rh.WroteHeader() {
		w.WriteHeader(http.StatusOK)
	}
	w.rh.PromoteTrailers()
	data := w.buf
	w.buf = nil
	w.rh.SetDone()
	w.emit(data, true)
}

// emit hands the HEADERS (if not yet sent), data and, with end, the
// trailers or END_STREAM to the loop.
func (w *bridgeWriter) emit(data []byte, end bool) error {
	if w.ended {
		return nil
	}
	o := &op{data: data, end: end}
	if !w.sentHeader {
		w.sentHeader = true
		head := w.rh.Final(data, len(data), end, w.isHead)
		h := head.Header // the handler's snapshot, never released: the loop encodes it
		if h == nil {
			h = http.Header{}
		}
		if head.ContentLength != "" {
			h["Content-Length"] = []string{head.ContentLength}
		}
		if head.ContentType != "" {
			h["Content-Type"] = []string{head.ContentType}
		}
		if head.Date != "" {
			h["Date"] = []string{head.Date}
		}
		o.shutdown = head.Close // as Go's server: the connection is drained
		o.status, o.h = w.rh.Status(), h
		if w.isHead {
			o.data, o.end = nil, true // a HEAD response ends with its HEADERS
		}
	} else if w.isHead {
		if !end {
			return nil
		}
		o.data = nil
	}
	if end {
		w.ended = true
		if !w.isHead {
			o.trailers = w.rh.Trailers()
		}
	}
	return w.bs.post(o)
}
