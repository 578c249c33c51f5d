package h2loop

import (
	"net/http"
	"slices"
	"strconv"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-mesh/meridian/proxy/internal/fieldname"
)

type streamState uint8

const (
	stateOpen streamState = iota
	stateHalfClosedRemote
	stateClosed
)

type refusal uint8

const (
	refuseNone     refusal = iota
	refuseTooLarge         // the header list past MaxHeaderBytes: 431
	refuseInvalid          // connection-specific fields: 400
)

// Stream is one request and its response, the loop's alone: its methods
// are called on the loop only.
type Stream struct {
	// Request is the request's head (no Body): ContentLength is the
	// declared one, -1 if none, 0 if the HEADERS ended the stream.
	Request http.Request
	// Trailer holds the request's trailers once End(nil) said they came.
	Trailer http.Header

	c          *conn
	streamFlow // unconsumed counts the DATA kept in early too
	recv       Receiver
	state      streamState
	early      []byte // DATA that came before the handler had the stream
	declLen    int64
	gotLen     int64

	gotTrailers   bool
	needsContinue bool
	wroteHeader   bool // the final HEADERS went out
	released      bool // the handler let go (or never had it)
	isStarted     bool
	refuse        refusal
	refuseErr     error
}

// ConnValue is the value its connection was served with
// (ServeTransport's; nil for Serve's).
func (st *Stream) ConnValue() any { return st.c.value }

// RequestEnded says the client's side of the stream is over: its
// END_STREAM is in (with the HEADERS, for a request without a body).
func (st *Stream) RequestEnded() bool { return st.state != stateOpen }

// ID is the stream's identifier.
func (st *Stream) ID() uint32 { return st.id }

// Open reports whether the stream may still be written to: not reset, not
// ended, the connection not over.
func (st *Stream) Open() bool { return st.state != stateClosed && !st.ended && !st.c.closed }

// WriteHeader writes the response's HEADERS: a 1xx interim response (any
// number of them) or the final one, which ends the stream if end is set.
// h's fields are sent lower-cased, sorted, without those HTTP/2 forbids
// (RFC 9113 8.2.2) and those no valid field could carry, as Go's server
// sends them.
func (st *Stream) WriteHeader(status int, h http.Header, end bool) {
	if !st.Open() || st.wroteHeader {
		return
	}
	if status >= 200 {
		st.wroteHeader = true
	} else {
		end = false
	}
	c := st.c
	c.hbuf.Reset()
	encodeStatus(c.henc, status)
	c.encodeHeaderMap(h)
	c.writeBlock(st.id, end)
	if end {
		st.endSent()
	}
}

// Write writes p as the response's DATA, as much as the stream's and the
// connection's windows and the socket's backlog allow; with end, the last
// of p carries END_STREAM (an empty p: an empty DATA frame with it). Less
// than len(p) taken: Writable tells when to write the rest (and end is
// not acted on).
func (st *Stream) Write(p []byte, end bool) int { return st.c.writeData(st, p, end) }

// WriteTrailers ends the response with its trailers (HEADERS with
// END_STREAM); an empty h: an empty DATA frame with END_STREAM.
func (st *Stream) WriteTrailers(h http.Header) {
	if st.c.beginTrailers(st, h) {
		st.c.encodeHeaderMap(h)
		st.c.endTrailers(st)
	}
}

// Reset ends the stream with RST_STREAM code. The handler has let go of
// it: no End follows.
func (st *Stream) Reset(code http2.ErrCode) {
	c := st.c
	if st.state == stateClosed || c.closed {
		c.release(st)
		return
	}
	st.ended = true
	c.release(st)
	c.resetStream(st.id, code, nil)
}

// Consumed gives n bytes of the request's DATA back to the windows (the
// handler passed them on): the client may send as much again.
func (st *Stream) Consumed(n int) { st.c.consumed(&st.streamFlow, n, st.state == stateOpen) }

// The core's flowStream.
func (st *Stream) flow() *streamFlow { return &st.streamFlow }
func (st *Stream) wants() bool       { return st.state != stateClosed && !st.ended && st.recv != nil }
func (st *Stream) writable()         { st.recv.Writable(st) }

// ExpectsContinue says the request asked for 100 Continue (Expect:
// 100-continue, taken out of its header) and has not had it.
func (st *Stream) ExpectsContinue() bool { return st.needsContinue && st.Open() && !st.wroteHeader }

// Continue sends 100 Continue if the request expects it: the handler is
// ready for the body.
func (st *Stream) Continue() {
	if st.ExpectsContinue() {
		st.needsContinue = false
		st.WriteHeader(http.StatusContinue, nil, false)
	}
}

// Done says the handler has let go of a stream that ended with an error
// (End): its slot goes to the next stream. On a stream still open, the
// handler gives up on it: RST_STREAM CANCEL.
func (st *Stream) Done() {
	if st.Open() {
		st.Reset(http2.ErrCodeCancel)
		return
	}
	st.c.release(st)
}

// Flush writes what the connection's streams wrote. Within the
// connection's own callbacks (ServeStream, the Receiver's) it is done at
// their end; a write from any other callback on the loop (another
// connection's, a timer's) stays buffered until Flush, so that what one
// callback writes goes out in one system call.
func (st *Stream) Flush() { st.c.flush() }

// endSent: END_STREAM went out; the stream closes if the client's side is
// done, else RST_STREAM NO_ERROR tells the client to stop sending (RFC
// 9113 8.1), as Go's server does.
func (st *Stream) endSent() {
	st.ended = true
	c := st.c
	c.release(st)
	if st.state == stateOpen {
		c.wfr.WriteRSTStream(st.id, http2.ErrCodeNo)
		c.closeStream(st, nil)
		return
	}
	c.closeStream(st, nil)
}

// answerRefused answers a stream whose request was refused at its head.
func (st *Stream) answerRefused() {
	st.isStarted = true
	h := http.Header{"Content-Type": {"text/plain; charset=utf-8"}, "X-Content-Type-Options": {"nosniff"}}
	var status int
	var body string
	if st.refuse == refuseTooLarge {
		status, body = http.StatusRequestHeaderFieldsTooLarge, "<h1>HTTP Error 431</h1><p>Request Header Field(s) Too Large</p>"
		h = http.Header{"Content-Type": {"text/html; charset=utf-8"}}
	} else {
		status, body = http.StatusBadRequest, st.refuseErr.Error()+"\n"
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	st.WriteHeader(status, h, false)
	st.Write([]byte(body), true)
}

func encodeStatus(enc *hpack.Encoder, code int) {
	var s string
	switch code {
	case 200:
		s = "200"
	default:
		s = strconv.Itoa(code)
	}
	enc.WriteField(hpack.HeaderField{Name: ":status", Value: s})
}

// encodeHeaderMap encodes h's fields, sorted, lower-cased, without those
// HTTP/2 forbids (RFC 9113 8.2.2) and those no valid field could carry.
func (c *conn) encodeHeaderMap(h http.Header) {
	c.keys = c.keys[:0]
	for k := range h {
		c.keys = append(c.keys, k)
	}
	slices.Sort(c.keys)
	for _, k := range c.keys {
		lk := fieldname.Lower(k)
		if !httpguts.ValidHeaderFieldName(lk) {
			continue
		}
		switch lk {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			continue
		}
		for _, v := range h[k] {
			if httpguts.ValidHeaderFieldValue(v) {
				c.henc.WriteField(hpack.HeaderField{Name: lk, Value: v})
			}
		}
	}
}
