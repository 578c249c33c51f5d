package h2server

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-mesh/meridian/proxy/internal/fieldname"
)

// bufSize is what a response buffers before it writes (Go's server's
// handlerChunkWriteSize): a small response leaves whole at the handler's
// end, with its HEADERS and trailers, in one write.
const bufSize = 4 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, bufSize); return &b }}

// headerSnap is a response's header as it was at WriteHeader (what
// Header.Clone would give), kept until its HEADERS are encoded and then
// reused: a map and a values array per response otherwise.
type headerSnap struct {
	h    http.Header
	vals []string
}

var snapPool = sync.Pool{New: func() any { return &headerSnap{h: make(http.Header)} }}

// snapshot is h.Clone() (h not empty) in a pooled headerSnap.
func snapshot(h http.Header) *headerSnap {
	s := snapPool.Get().(*headerSnap)
	n := 0
	for _, vv := range h {
		n += len(vv)
	}
	if cap(s.vals) < n {
		s.vals = make([]string, n)
	}
	vals := s.vals[:n]
	for k, vv := range h {
		if vv == nil {
			s.h[k] = nil // as Clone: a nil value stays nil
			continue
		}
		m := copy(vals, vv)
		s.h[k] = vals[:m:m]
		vals = vals[m:]
	}
	return s
}

func (s *headerSnap) release() {
	clear(s.h)
	clear(s.vals)
	snapPool.Put(s)
}

// responseWriter is a stream's http.ResponseWriter. Its handler writes
// the frames itself; nothing is written before the first Write beyond the
// buffer, Flush, or the handler's end.
type responseWriter struct {
	rh     ResponseHead // the header and its rules, shared with h2loop's Bridge
	c      *conn
	st     *stream
	req    *http.Request
	isHead bool

	sentHeader atomic.Bool // the final HEADERS left (read by 1xx writers on other goroutines)
	ended      bool        // END_STREAM or RST_STREAM sent
	buf        *[]byte
}

var _ http.Flusher = (*responseWriter)(nil)

func (w *responseWriter) Header() http.Header { return w.rh.Header() }

func (w *responseWriter) WriteHeader(code int) {
	if h, ok := w.rh.SetStatus(code); ok {
		w.write1xx(code, h)
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.rh.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if err := w.rh.CheckWrite(len(p)); err != nil {
		return 0, err
	}
	if w.buf == nil {
		w.buf = bufPool.Get().(*[]byte)
	}
	if len(*w.buf)+len(p) <= bufSize {
		*w.buf = append(*w.buf, p...)
		return len(p), nil
	}
	err := w.emit(*w.buf, p, false)
	*w.buf = (*w.buf)[:0]
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *responseWriter) WriteString(s string) (int, error) {
	if w.buf != nil && len(*w.buf)+len(s) <= bufSize && w.rh.wroteHeader && !w.rh.done &&
		BodyAllowedForStatus(w.rh.status) && (w.rh.declLen < 0 || w.rh.wrote+int64(len(s)) <= w.rh.declLen) {
		*w.buf = append(*w.buf, s...)
		w.rh.wrote += int64(len(s))
		return len(s), nil
	}
	return w.Write([]byte(s))
}

func (w *responseWriter) Flush() { w.FlushError() }

// FlushError sends the response's HEADERS (200 if none was set) and the
// body buffered so far.
func (w *responseWriter) FlushError() error {
	if w.rh.done {
		return errHandlerFinished
	}
	if !w.rh.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	var b []byte
	if w.buf != nil {
		b = *w.buf
		*w.buf = b[:0]
	}
	return w.emit(b, nil, false)
}

// EnableFullDuplex: HTTP/2 requests and responses are always full duplex.
func (w *responseWriter) EnableFullDuplex() error { return nil }

// SetReadDeadline ends the request body's reads with
// os.ErrDeadlineExceeded at t, as Go's server does.
func (w *responseWriter) SetReadDeadline(t time.Time) error {
	st, c := w.st, w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.readTimer != nil && !st.readTimer.Stop() {
		return nil // fired already, or the stream is closed
	}
	if t.IsZero() {
		st.readTimer = nil
		return nil
	}
	d := time.Until(t)
	if d <= 0 {
		c.readTimeoutLocked(st)
		return nil
	}
	if st.readTimer == nil {
		st.readTimer = time.AfterFunc(d, func() {
			c.mu.Lock()
			c.readTimeoutLocked(st)
			c.mu.Unlock()
		})
	} else {
		st.readTimer.Reset(d)
	}
	return nil
}

// SetWriteDeadline resets the stream (INTERNAL_ERROR) at t unless the
// response is over, as Go's server does.
func (w *responseWriter) SetWriteDeadline(t time.Time) error {
	st, c := w.st, w.c
	c.mu.Lock()
	if st.writeTimer != nil && !st.writeTimer.Stop() {
		c.mu.Unlock()
		return nil
	}
	if t.IsZero() {
		st.writeTimer = nil
		c.mu.Unlock()
		return nil
	}
	timeout := func() {
		c.resetStream(st.id, http2.ErrCodeInternal, http2.StreamError{StreamID: st.id, Code: http2.ErrCodeInternal, Cause: errWriteTimeout})
	}
	d := time.Until(t)
	if d > 0 && st.writeTimer == nil {
		st.writeTimer = time.AfterFunc(d, timeout)
	} else if d > 0 {
		st.writeTimer.Reset(d)
	}
	c.mu.Unlock()
	if d <= 0 {
		timeout()
	}
	return nil
}

var errWriteTimeout = fmt.Errorf("http2: write deadline: %w", os.ErrDeadlineExceeded)

// finish ends the response when the handler returns: what is buffered,
// the trailers, END_STREAM.
func (w *responseWriter) finish() {
	if !w.rh.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.rh.PromoteTrailers()
	var b []byte
	if w.buf != nil {
		b = *w.buf
	}
	w.rh.done = true
	w.emit(b, nil, true)
}

// release gives the buffer back; the writer refuses use from now on.
func (w *responseWriter) release() {
	w.rh.done = true
	if w.buf != nil {
		*w.buf = (*w.buf)[:0]
		bufPool.Put(w.buf)
		w.buf = nil
	}
}

// write1xx sends an informational response unless the final one is out.
func (w *responseWriter) write1xx(code int, h http.Header) {
	c, st := w.c, w.st
	c.wmu.Lock()
	c.mu.Lock()
	closed, maxFrame := st.state == stateClosed, c.peerMaxFrame
	c.mu.Unlock()
	if !closed && !w.sentHeader.Load() {
		c.writeHeadersLocked(st.id, maxFrame, false, func() {
			c.encodeStatus(code)
			c.encodeHeaderMap(h, nil)
		})
		c.flushLocked()
	}
	c.unlockWriter()
}

// emit writes HEADERS (if not yet sent), a and b as DATA, and if end, the
// trailers or END_STREAM: all in one write when the flow-control windows
// allow.
func (w *responseWriter) emit(a, b []byte, end bool) error {
	c, st := w.c, w.st
	if w.ended {
		if end {
			return nil
		}
		return st.closeErr
	}
	total := len(a) + len(b)
	sendHeaders := !w.sentHeader.Load()
	var head FinalHead
	endOnHeaders := false
	if sendHeaders {
		first := a
		if len(first) == 0 {
			first = b
		}
		head = w.rh.Final(first, total, end, w.isHead)
		if head.Close {
			// As Go's server: a handler's "Connection: close" drains
			// the connection.
			go c.startGracefulShutdown()
		}
		endOnHeaders = (end && len(w.rh.trailers) == 0 && total == 0) || w.isHead
	}
	if w.isHead {
		total = 0
	}
	trailers := end && w.rh.HasTrailers()
	for {
		n := 0
		if total > 0 && !endOnHeaders {
			var err error
			if n, err = c.takeSend(st, total, !sendHeaders); err != nil {
				return err
			}
		}
		c.wmu.Lock()
		c.mu.Lock()
		closed, maxFrame, closeErr := st.state == stateClosed, int(c.peerMaxFrame), st.closeErr
		if closed && n > 0 {
			c.sendWin += int64(n) // the stream's window is moot; the connection's is not
			c.flowCond.Broadcast()
		}
		c.mu.Unlock()
		if closed {
			c.unlockWriter()
			return closeErr
		}
		ended := false
		if sendHeaders {
			sendHeaders = false
			c.writeHeadersLocked(st.id, uint32(maxFrame), endOnHeaders, func() {
				c.encodeStatus(w.rh.status)
				c.encodeHeaderMap(head.Header, nil)
				if head.ContentType != "" {
					c.encodeField("content-type", head.ContentType)
				}
				if head.ContentLength != "" {
					c.encodeField("content-length", head.ContentLength)
				}
				if head.Date != "" {
					c.encodeField("date", head.Date)
				}
			})
			w.sentHeader.Store(true)
			ended = endOnHeaders
			w.rh.Release() // encoded: not used again
		}
		if !ended {
			left := n
			for left > 0 {
				chunk := min(left, maxFrame)
				var p []byte
				if len(a) > 0 {
					chunk = min(chunk, len(a))
					p, a = a[:chunk], a[chunk:]
				} else {
					chunk = min(chunk, len(b))
					p, b = b[:chunk], b[chunk:]
				}
				left -= chunk
				total -= chunk
				last := end && total == 0 && !trailers
				c.wfr.WriteData(st.id, last, p)
				ended = last
			}
			if end && total == 0 && !ended {
				if trailers {
					c.writeHeadersLocked(st.id, uint32(maxFrame), true, func() {
						c.encodeHeaderMap(w.rh.handlerHeader, w.rh.trailers)
					})
				} else {
					c.wfr.WriteData(st.id, true, nil)
				}
				ended = true
			}
		}
		if ended {
			w.ended = true
			c.mu.Lock()
			if st.state == stateOpen {
				// RFC 9113 8.1: the response is complete; the rest of
				// the request is not wanted.
				c.wfr.WriteRSTStream(st.id, http2.ErrCodeNo)
			}
			c.closeStream(st, errHandlerComplete)
			c.mu.Unlock()
		}
		err := c.flushLocked()
		c.unlockWriter()
		if err != nil {
			return err
		}
		if ended || total == 0 {
			return nil
		}
	}
}

// writeHeadersLocked (wmu held) encodes a header block with encode and
// writes it as HEADERS and CONTINUATION frames of at most maxFrame bytes.
func (c *conn) writeHeadersLocked(id, maxFrame uint32, endStream bool, encode func()) {
	if v := c.encTable.Swap(-1); v >= 0 {
		c.henc.SetMaxDynamicTableSizeLimit(uint32(v))
	}
	c.hbuf.Reset()
	encode()
	block := c.hbuf.Bytes()
	first := true
	for first || len(block) > 0 {
		frag := block[:min(len(block), int(maxFrame))]
		block = block[len(frag):]
		if first {
			c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: endStream, EndHeaders: len(block) == 0})
			first = false
		} else {
			c.wfr.WriteContinuation(id, len(block) == 0, frag)
		}
	}
}

func (c *conn) encodeField(k, v string) {
	c.henc.WriteField(hpack.HeaderField{Name: k, Value: v})
}

func (c *conn) encodeStatus(code int) {
	var s string
	switch code {
	case 200:
		s = "200"
	case 100:
		s = "100"
	default:
		s = strconv.Itoa(code)
	}
	c.encodeField(":status", s)
}

// encodeHeaderMap encodes h's fields named in keys (all, sorted, when
// nil), lower-cased, without those HTTP/2 forbids (RFC 9113 8.2.2) and
// those no valid field could carry, as Go's server.
func (c *conn) encodeHeaderMap(h http.Header, keys []string) {
	if keys == nil {
		c.keys = c.keys[:0]
		for k := range h {
			c.keys = append(c.keys, k)
		}
		slices.Sort(c.keys)
		keys = c.keys
	} else {
		slices.Sort(keys) // the caller's own slice (a response's trailer names)
	}
	for _, k := range keys {
		vv := h[k]
		lk := fieldname.Lower(k) // lower case: what is left to check is a token
		if !httpguts.ValidHeaderFieldName(lk) {
			continue
		}
		switch lk {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			continue
		}
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				c.encodeField(lk, v)
			}
		}
	}
}
