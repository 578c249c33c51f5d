package h2client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/internal/h2msg"
)

// inlineMax is the most of a request body, complete when the request is
// sent, that leaves with its HEADERS in one write.
const inlineMax = 64 << 10

// stream is one request and its response. Fields after req are guarded
// by cc.mu.
type stream struct {
	cc     *conn
	ctx    context.Context
	req    *http.Request
	trace  *httptrace.ClientTrace
	isHead bool
	stop   func() bool // ends the context's AfterFunc

	id          uint32
	sendWin     int64
	inflow      inflow
	headersDone chan struct{} // closed when resp or respErr is set
	resp        *http.Response
	respErr     error
	pastHeaders bool
	gotTrailers bool
	buf         []byte // received, unread
	off         int
	readErr     error // after buf: io.EOF at END_STREAM, or why the stream ended
	readClosed  bool  // END_STREAM or reset received, or the stream failed
	writeClosed bool  // END_STREAM sent, or the stream failed
	removed     bool
	bodyClosed  bool // the caller closed the response body
	bodyTouched bool // a byte of the request body was read
	reqBody     io.ReadCloser
	writing     bool // a goroutine writes the request body
	declLen     int64
	gotLen      int64
	trailer     http.Header
	readCond    sync.Cond
	on100       chan struct{}
}

// roundTrip sends req on a reserved stream slot. touched reports that the
// request body was read from (it cannot be sent again), replay a body to
// send again in its place when the stream was refused unprocessed and the
// body had been sent whole with the HEADERS (its bytes are still here).
func (cc *conn) roundTrip(req *http.Request) (resp *http.Response, touched bool, replay io.ReadCloser, err error) {
	ctx := req.Context()
	body := req.Body
	if body == http.NoBody {
		body = nil
	}
	contentLength := req.ContentLength
	if body != nil && contentLength == 0 {
		contentLength = -1 // Go's rule: a body with no length is of unknown length
	}
	if body == nil {
		contentLength = 0
	}
	h, err := h2msg.CheckRequest(req, contentLength)
	if err != nil {
		cc.mu.Lock()
		cc.unreserveLocked()
		cc.mu.Unlock()
		closeBody(req)
		return nil, false, nil, err
	}
	cs := &stream{cc: cc, ctx: ctx, req: req, trace: httptrace.ContextClientTrace(ctx), isHead: req.Method == http.MethodHead,
		headersDone: make(chan struct{}), reqBody: body, declLen: -1}
	cs.readCond.L = &cc.mu
	expect := body != nil && req.Header.Get("Expect") == "100-continue"
	if expect {
		cs.on100 = make(chan struct{}, 1)
	}

	// A request body that is whole already leaves with the HEADERS.
	var inline []byte
	var inlineBuf *[]byte
	endWithHeaders := body == nil
	if body != nil && !expect {
		if b, ok := body.(Buffered); ok {
			if n, eof := b.Buffered(); eof && n <= inlineMax {
				inlineBuf = getBuf(n)
				inline, err = readAll(body, (*inlineBuf)[:0], n)
				if err != nil {
					putBuf(inlineBuf)
					cc.mu.Lock()
					cc.unreserveLocked()
					cc.mu.Unlock()
					closeBody(req)
					return nil, n > 0, nil, err
				}
				cs.bodyTouched = true
				if contentLength >= 0 && int64(len(inline)) != contentLength {
					putBuf(inlineBuf)
					cc.mu.Lock()
					cc.unreserveLocked()
					cc.mu.Unlock()
					closeBody(req)
					return nil, true, nil, fmt.Errorf("h2client: request body of %d bytes, Content-Length %d", len(inline), contentLength)
				}
				if len(req.Trailer) == 0 {
					body.Close()
					cs.reqBody = nil
				}
			}
		}
	}

	cc.wmu.Lock()
	cc.mu.Lock()
	cc.reserved--
	if !cc.usableLocked() {
		cc.maybeIdleLocked()
		cc.mu.Unlock()
		cc.wmu.Unlock()
		if inlineBuf != nil {
			putBuf(inlineBuf)
		}
		if cs.bodyTouched {
			closeBody(req)
		}
		return nil, cs.bodyTouched, nil, errConnUnusable
	}
	if err := h.CheckListSize(req, cc.peerMaxHeaders); err != nil {
		cc.maybeIdleLocked()
		cc.mu.Unlock()
		cc.wmu.Unlock()
		if inlineBuf != nil {
			putBuf(inlineBuf)
		}
		closeBody(req)
		return nil, cs.bodyTouched, nil, err
	}
	cs.id = cc.nextID
	cc.nextID += 2
	if req.Close || httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close") {
		cc.doNotReuse = true // Go's transport: the connection ends with this request
	}
	cc.streams[cs.id] = cs
	cs.sendWin = int64(cc.initialSendWin)
	cs.inflow.init(int32(cc.o.StreamWindow))
	maxFrame := int(cc.maxFrameSize)
	sendInline := false
	if inline != nil && int64(len(inline)) <= cs.sendWin && int64(len(inline)) <= cc.sendWin {
		cs.sendWin -= int64(len(inline))
		cc.sendWin -= int64(len(inline))
		sendInline = true
		if len(req.Trailer) == 0 {
			endWithHeaders = len(inline) == 0
		}
	}
	if endWithHeaders || (sendInline && len(req.Trailer) == 0) {
		cs.writeClosed = true
	}
	var rest io.Reader // what writeBody sends, from a goroutine
	if !cs.writeClosed && !sendInline {
		cs.writing = true
		rest = cs.reqBody
		if inline != nil {
			// Whole, but more than the send windows allow at once.
			rest = &sliceReader{b: inline, buf: inlineBuf}
			inlineBuf = nil
		}
	}
	cc.mu.Unlock()

	cc.hbuf.Reset()
	h.Encode(cc.henc, req)
	cc.writeHeaderBlock(cs.id, endWithHeaders, maxFrame, cc.hbuf.Bytes())
	var inlineSent []byte
	if sendInline && len(inline) > 0 {
		inlineSent = inline
		for len(inline) > 0 {
			chunk := inline[:min(len(inline), maxFrame)]
			inline = inline[len(chunk):]
			cc.fr.WriteData(cs.id, len(inline) == 0 && len(req.Trailer) == 0, chunk)
		}
		inline = nil
	}
	if sendInline && len(req.Trailer) > 0 {
		cc.writeTrailers(cs.id, maxFrame, req.Trailer)
		cc.mu.Lock()
		cs.reqBody = nil
		cs.writeClosed = true
		cc.mu.Unlock()
	}
	cc.bw.Flush()
	werr := cc.werr
	cc.wmu.Unlock()
	if sendInline && len(req.Trailer) > 0 {
		body.Close()
	}
	if werr != nil {
		putBuf(inlineBuf)
		cc.close(werr)
		return nil, cs.bodyTouched, nil, werr
	}
	if cs.trace != nil && cs.trace.WroteHeaders != nil {
		cs.trace.WroteHeaders()
	}

	cc.mu.Lock()
	cs.stop = context.AfterFunc(ctx, func() { cs.abort(context.Cause(ctx), true) })
	if cs.removed {
		cs.stop()
	}
	wrote := cs.writeClosed && !cs.writing
	cc.mu.Unlock()
	if rest != nil {
		// The body streams from a goroutine, so that a server that
		// answers before the body's end is heard, with flow control.
		go cs.writeBody(rest, expect)
	}
	if wrote && cs.trace != nil && cs.trace.WroteRequest != nil {
		cs.trace.WroteRequest(httptrace.WroteRequestInfo{})
	}

	<-cs.headersDone
	cc.mu.Lock()
	resp, err = cs.resp, cs.respErr
	touched = cs.bodyTouched
	cc.mu.Unlock()
	if err != nil && sendInline && len(req.Trailer) == 0 && canRetry(err) {
		replay = &memBody{data: append([]byte(nil), inlineSent...)}
	}
	putBuf(inlineBuf)
	if err != nil {
		return nil, touched, replay, err
	}
	return resp, touched, nil, nil
}

// writeHeaderBlock writes a HEADERS frame and the CONTINUATIONs its block
// needs (wmu held).
func (cc *conn) writeHeaderBlock(id uint32, endStream bool, maxFrame int, block []byte) {
	first := true
	for first || len(block) > 0 {
		chunk := block[:min(len(block), maxFrame)]
		block = block[len(chunk):]
		if first {
			cc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: endStream, EndHeaders: len(block) == 0})
			first = false
		} else {
			cc.fr.WriteContinuation(id, len(block) == 0, chunk)
		}
	}
}

// writeTrailers writes the request's trailers with END_STREAM (wmu held).
func (cc *conn) writeTrailers(id uint32, maxFrame int, trailer http.Header) {
	cc.hbuf.Reset()
	h2msg.EncodeTrailers(cc.henc, trailer)
	cc.writeHeaderBlock(id, true, maxFrame, cc.hbuf.Bytes())
}

var errStopBody = errors.New("h2client: request body not sent: the response came first")

// writeBody sends the request body from its own goroutine: DATA within
// the send windows, END_STREAM with the last bytes (a Read returning data
// and io.EOF together), then the trailers.
func (cs *stream) writeBody(body io.Reader, expect bool) {
	cc := cs.cc
	err := cs.waitContinue(expect)
	var bp *[]byte
	if err == nil {
		bp = getBuf(16 << 10)
		err = cs.copyBody(body, *bp)
		putBuf(bp)
	}
	cc.mu.Lock()
	cs.writing = false
	rb := cs.reqBody
	cs.reqBody = nil
	failed := err != nil && !cs.writeClosed
	if err == nil {
		cs.writeClosed = true
		cs.maybeRemoveLocked()
	} else if err == errStopBody && cs.readClosed && !cs.removed {
		// The response ended while the body waited (100-continue):
		// end the stream here (RST_STREAM CANCEL).
		failed, err = true, nil
	}
	cc.mu.Unlock()
	if rb != nil {
		rb.Close()
	}
	if err == nil {
		if cs.trace != nil && cs.trace.WroteRequest != nil {
			cs.trace.WroteRequest(httptrace.WroteRequestInfo{})
		}
		return
	}
	if failed && err != errStopBody {
		cs.abort(err, true) // nil: errStopBody, which leaves a response alone
	}
}

// waitContinue waits for the 100 (Continue) of a request that expects it,
// at most ExpectContinueTimeout; a final response first stops the body.
func (cs *stream) waitContinue(expect bool) error {
	if !expect {
		return nil
	}
	t := time.NewTimer(cs.cc.o.ExpectContinueTimeout)
	defer t.Stop()
	select {
	case <-cs.on100:
		return nil
	case <-t.C:
		return nil
	case <-cs.headersDone:
		return errStopBody
	}
}

func (cs *stream) copyBody(body io.Reader, buf []byte) error {
	cc := cs.cc
	var sent int64
	unflushed := false // DATA written but not flushed: flushed before waiting for window
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			cc.mu.Lock()
			cs.bodyTouched = true
			cc.mu.Unlock()
		}
		sent += int64(n)
		if rerr != nil && rerr != io.EOF {
			return fmt.Errorf("h2client: reading the request body: %w", rerr)
		}
		eof := rerr == io.EOF
		if eof && cs.declaredMismatch(sent) {
			return fmt.Errorf("h2client: request body of %d bytes, Content-Length %d", sent, cs.req.ContentLength)
		}
		if !eof && cs.req.ContentLength > 0 && sent > cs.req.ContentLength {
			return fmt.Errorf("h2client: request body longer than its Content-Length %d", cs.req.ContentLength)
		}
		trailers := eof && len(cs.req.Trailer) > 0
		data := buf[:n]
		for len(data) > 0 || (eof && !trailers) {
			take, _, err := cs.awaitSendWindow(len(data), &unflushed)
			if err != nil {
				return err
			}
			chunk := data[:take]
			data = data[take:]
			end := eof && !trailers && len(data) == 0
			cc.wmu.Lock()
			cc.fr.WriteData(cs.id, end, chunk)
			if end {
				cc.mu.Lock()
				cs.writeClosed = true
				cc.mu.Unlock()
			}
			if end || len(data) == 0 {
				cc.bw.Flush()
			} else {
				unflushed = true
			}
			werr := cc.werr
			cc.wmu.Unlock()
			if werr != nil {
				cc.close(werr)
				return werr
			}
			if end {
				return nil
			}
		}
		if trailers {
			_, maxFrame, err := cs.awaitSendWindow(0, &unflushed)
			if err != nil {
				return err
			}
			cc.wmu.Lock()
			cc.writeTrailers(cs.id, maxFrame, cs.req.Trailer)
			cc.mu.Lock()
			cs.writeClosed = true
			cc.mu.Unlock()
			cc.bw.Flush()
			werr := cc.werr
			cc.wmu.Unlock()
			if werr != nil {
				cc.close(werr)
				return werr
			}
			return nil
		}
		if eof {
			return nil
		}
	}
}

func (cs *stream) declaredMismatch(sent int64) bool {
	return cs.req.ContentLength > 0 && sent != cs.req.ContentLength
}

// awaitSendWindow waits until up to want bytes (at least one, at most a
// frame) may be sent; want 0 (END_STREAM alone) needs no window. Frames
// not yet flushed (*unflushed) are flushed before it waits: the peer
// gives window back for what it has received.
func (cs *stream) awaitSendWindow(want int, unflushed *bool) (int, int, error) {
	cc := cs.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for {
		if cc.closed {
			return 0, 0, cc.err
		}
		if cs.removed || cs.writeClosed {
			if cs.respErr != nil {
				return 0, 0, cs.respErr
			}
			return 0, 0, errStopBody
		}
		maxFrame := int(cc.maxFrameSize)
		if want == 0 {
			return 0, maxFrame, nil
		}
		if cs.sendWin > 0 && cc.sendWin > 0 {
			take := int64(min(want, maxFrame))
			take = min(take, cs.sendWin, cc.sendWin)
			cs.sendWin -= take
			cc.sendWin -= take
			return int(take), maxFrame, nil
		}
		if *unflushed {
			*unflushed = false
			cc.mu.Unlock()
			cc.wmu.Lock()
			cc.bw.Flush()
			cc.wmu.Unlock()
			cc.mu.Lock()
			continue
		}
		cc.cond.Wait()
	}
}

// abort ends the stream with err: its caller's wait for the response and
// its body's reads fail with it. reset sends RST_STREAM CANCEL (a
// cancellation, a body closed early) unless the stream is over.
func (cs *stream) abort(err error, reset bool) {
	cc := cs.cc
	cc.mu.Lock()
	if cs.removed {
		cc.mu.Unlock()
		return
	}
	if err == nil {
		err = errStopBody
	}
	sendReset := reset && !cc.closed && (!cs.readClosed || !cs.writeClosed)
	cs.failLocked(err)
	connAdd := cs.dropBufferedLocked()
	rb := cs.closeReqBodyLocked()
	cs.removeLocked()
	cc.mu.Unlock()
	if rb != nil {
		go rb.Close() // Close can block (an HTTP/1 server body); the writer must not
	}
	if sendReset {
		cc.writeReset(cs.id, http2.ErrCodeCancel)
	}
	cc.writeWindowUpdates(0, connAdd, 0)
}

// failLocked sets err for the response (if it has not come) and its body
// (unless the whole response is in: that stays readable).
func (cs *stream) failLocked(err error) {
	if cs.resp == nil && cs.respErr == nil {
		cs.respErr = err
		close(cs.headersDone)
	}
	if cs.readErr != io.EOF {
		cs.readErr = err
	}
	cs.readClosed, cs.writeClosed = true, true
	cs.readCond.Broadcast()
	cs.cc.cond.Broadcast()
}

// dropBufferedLocked discards unread data when the body's reader is gone
// (closed or failed) and returns the connection credit for it.
func (cs *stream) dropBufferedLocked() int32 {
	if cs.readErr == io.EOF && !cs.bodyClosed {
		return 0 // a complete response stays readable
	}
	n := len(cs.buf) - cs.off
	cs.buf, cs.off = nil, 0
	return cs.cc.inflow.add(n)
}

func (cs *stream) closeReqBodyLocked() io.Closer {
	if cs.reqBody == nil {
		return nil
	}
	rb := cs.reqBody
	cs.reqBody = nil
	return rb
}

// maybeRemoveLocked forgets a stream closed both ways.
func (cs *stream) maybeRemoveLocked() {
	if cs.readClosed && cs.writeClosed && !cs.writing {
		cs.removeLocked()
	}
}

func (cs *stream) removeLocked() {
	if cs.removed {
		return
	}
	cs.removed = true
	cc := cs.cc
	delete(cc.streams, cs.id)
	if cs.stop != nil {
		cs.stop()
	}
	cc.cond.Broadcast()
	cc.maybeIdleLocked()
}

// responseBody is a response's Body: the stream's received DATA.
type responseBody stream

var errClosedBody = errors.New("h2client: response body closed")

// Read returns the data received; with the last of it, io.EOF as soon as
// END_STREAM (or the trailers) is in, and then resp.Trailer is filled.
func (b *responseBody) Read(p []byte) (int, error) {
	cs := (*stream)(b)
	cc := cs.cc
	cc.mu.Lock()
	for cs.off == len(cs.buf) && cs.readErr == nil {
		cs.readCond.Wait()
	}
	if cs.bodyClosed {
		cc.mu.Unlock()
		return 0, errClosedBody
	}
	n := copy(p, cs.buf[cs.off:])
	cs.off += n
	if cs.off == len(cs.buf) {
		cs.buf, cs.off = cs.buf[:0], 0
	}
	var err error
	if cs.off == len(cs.buf) && cs.readErr != nil {
		err = cs.readErr
		if err == io.EOF {
			if cs.resp.Trailer == nil && len(cs.trailer) > 0 {
				cs.resp.Trailer = cs.trailer // none declared: the trailers as they came, not a copy
			} else {
				for k, vv := range cs.trailer {
					cs.resp.Trailer[k] = vv
				}
			}
			cs.trailer = nil
		}
	}
	connAdd := cc.inflow.add(n)
	var streamAdd int32
	if cs.readErr == nil && !cs.removed {
		streamAdd = cs.inflow.add(n)
	}
	id := cs.id
	cc.mu.Unlock()
	cc.writeWindowUpdates(id, connAdd, streamAdd)
	return n, err
}

// Buffered reports the bytes a Read returns without waiting, and whether
// the body's end comes with them.
func (b *responseBody) Buffered() (int, bool) {
	cs := (*stream)(b)
	cs.cc.mu.Lock()
	defer cs.cc.mu.Unlock()
	return len(cs.buf) - cs.off, cs.readErr == io.EOF
}

// Close ends the stream: before the response's end that is RST_STREAM
// CANCEL (the connection stays), and what was received unread goes back
// to the connection's window.
func (b *responseBody) Close() error {
	cs := (*stream)(b)
	cc := cs.cc
	cc.mu.Lock()
	if cs.bodyClosed {
		cc.mu.Unlock()
		return nil
	}
	cs.bodyClosed = true
	whole := cs.readErr == io.EOF
	if whole || cs.removed {
		connAdd := cs.dropBufferedLocked()
		cs.readErr = errClosedBody
		cc.mu.Unlock()
		cc.writeWindowUpdates(0, connAdd, 0)
		return nil
	}
	cc.mu.Unlock()
	cs.abort(errClosedBody, true)
	return nil
}

// sliceReader reads a buffer from the pool, and gives it back at its end.
type sliceReader struct {
	b   []byte
	buf *[]byte
}

func (r *sliceReader) Read(p []byte) (int, error) {
	n := copy(p, r.b)
	r.b = r.b[n:]
	if len(r.b) == 0 {
		if r.buf != nil {
			putBuf(r.buf)
			r.buf = nil
		}
		return n, io.EOF
	}
	return n, nil
}

// readAll reads a body that said it has n bytes and its end buffered.
func readAll(r io.Reader, buf []byte, n int) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, fmt.Errorf("h2client: reading the request body: %w", err)
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func getBuf(n int) *[]byte {
	bp := bufPool.Get().(*[]byte)
	if cap(*bp) < n {
		b := make([]byte, 0, n)
		bp = &b
	}
	*bp = (*bp)[:cap(*bp)]
	return bp
}

func putBuf(bp *[]byte) {
	if bp == nil || cap(*bp) > 64<<10 {
		return
	}
	*bp = (*bp)[:0]
	bufPool.Put(bp)
}

// memBody is a request body in memory, whole (Buffered): what RoundTrip
// sends again after a refusal.
type memBody struct{ data []byte }

func (b *memBody) Read(p []byte) (int, error) {
	n := copy(p, b.data)
	b.data = b.data[n:]
	if len(b.data) == 0 {
		return n, io.EOF
	}
	return n, nil
}
func (b *memBody) Buffered() (int, bool) { return len(b.data), true }
func (b *memBody) Close() error          { return nil }
