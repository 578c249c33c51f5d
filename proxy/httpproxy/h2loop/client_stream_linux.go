package h2loop

import (
	"net/http"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/internal/h2msg"
)

// ClientStream is one request a ClientConn sent and its response, the
// loop's alone: its methods are called on the loop only.
type ClientStream struct {
	// Trailer holds the keys of the trailers the response declared (its
	// Trailer field), with nil values, once Response was called; nil if
	// none. End has the trailers that came.
	Trailer http.Header

	c *ClientConn
	streamFlow
	recv       ResponseReceiver
	isHead     bool
	respLen    int64 // the response's Content-Length, -1 if none
	declLen    int64 // what its DATA must add up to, -1: unchecked
	gotLen     int64
	gotHeaders bool // the final response's HEADERS came
	closed     bool // End was called, or Reset
}

// ID is the stream's identifier.
func (st *ClientStream) ID() uint32 { return st.id }

// Conn is the stream's connection.
func (st *ClientStream) Conn() *ClientConn { return st.c }

// ContentLength is the final response's valid Content-Length, -1 if none
// (or before Response).
func (st *ClientStream) ContentLength() int64 { return st.respLen }

// Open reports whether the request may still be written to: not ended,
// not reset, the response not over, the connection not ended.
func (st *ClientStream) Open() bool {
	return !st.closed && !st.ended && !st.c.closed && !st.c.closing
}

// Write writes p as the request's DATA, as much as the stream's and the
// connection's send windows and the socket's backlog allow; with end, the
// last of p carries END_STREAM (an empty p: an empty DATA frame with it).
// Less than len(p) taken: Writable tells when to write the rest (and end
// is not acted on). The caller sends what the request declared
// (req.ContentLength): the server resets a stream that does not.
func (st *ClientStream) Write(p []byte, end bool) int { return st.c.writeData(st, p, end) }

// WriteTrailers ends the request with its trailers (HEADERS with
// END_STREAM, encoded as h2client encodes them), after the body's last
// Write; an empty h: an empty DATA frame with END_STREAM.
func (st *ClientStream) WriteTrailers(h http.Header) {
	if st.c.beginTrailers(st, h) {
		h2msg.EncodeTrailers(st.c.henc, h)
		st.c.endTrailers(st)
	}
}

// Reset ends the stream with RST_STREAM code (CANCEL: the caller gave
// up): no End follows, and what Data gave and was not Consumed goes back
// to the connection's window.
func (st *ClientStream) Reset(code http2.ErrCode) {
	c := st.c
	if st.closed || c.closed {
		st.closed = true
		return
	}
	c.closeStream(st)
	if !c.closing {
		c.wfr.WriteRSTStream(st.id, code)
	}
	if st.unconsumed > 0 {
		c.credit(st.unconsumed)
		st.unconsumed = 0
	}
	if !c.processing {
		c.maybeFinish()
	}
}

// Consumed gives n bytes of the response's DATA back to the windows (the
// receiver passed them on): the server may send as much again. Bytes Data
// gave hold the connection's window until then, even after End(nil).
func (st *ClientStream) Consumed(n int) { st.c.consumed(&st.streamFlow, n, !st.closed) }

// The core's flowStream.
func (st *ClientStream) flow() *streamFlow { return &st.streamFlow }
func (st *ClientStream) endSent()          { st.ended = true }
func (st *ClientStream) wants() bool       { return !st.closed && !st.ended }
func (st *ClientStream) writable()         { st.recv.Writable(st) }

// Flush is the connection's Flush.
func (st *ClientStream) Flush() { st.c.flush() }
