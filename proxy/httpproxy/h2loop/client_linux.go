package h2loop

import (
	"errors"
	"fmt"
	"net/http"
	"slices"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"

	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
	"github.com/meridian-mesh/meridian/proxy/internal/h2head"
	"github.com/meridian-mesh/meridian/proxy/internal/h2msg"
)

// ClientConfig configures a ClientConn. Zero values take the defaults
// named.
type ClientConfig struct {
	// StreamWindow and ConnWindow bound what the server may send ahead of
	// the receivers' Consumed, per stream and per connection (256 KiB and
	// 4 MiB: httpproxy's DefaultH2StreamWindow and
	// DefaultH2ConnectionWindow, what the proxy's upstreams are given;
	// Go's 4 MiB and 1 GiB let a stalled stream hold far too much).
	StreamWindow, ConnWindow int
	// MaxReadFrameSize is the largest frame read, advertised as
	// SETTINGS_MAX_FRAME_SIZE (1 MiB, Go's transport's; at least 16 KiB).
	MaxReadFrameSize int
	// MaxHeaderListSize bounds a response's header list, advertised as
	// SETTINGS_MAX_HEADER_LIST_SIZE (10 MiB, Go's).
	MaxHeaderListSize uint32
	// MaxEncoderHeaderTableSize bounds the HPACK table requests are
	// encoded with, whatever the server allows (4 KiB).
	MaxEncoderHeaderTableSize int
	// Logf, if set, hears of connection errors (why the server saw
	// GOAWAY); log.Printf if nil.
	Logf func(format string, args ...any)
	// Unusable, if set, is called once (on the loop) when the connection
	// stops taking new streams for good: the server's GOAWAY, a
	// connection error, its end (a pool takes it out then).
	Unusable func(c *ClientConn)
}

const (
	defaultClientStreamWindow = 256 << 10
	defaultClientConnWindow   = 4 << 20
	defaultClientMaxFrame     = 1 << 20
	defaultClientMaxHeaders   = 10 << 20
	defaultClientTable        = 4096
	maxMaxFrameSize           = 1<<24 - 1
	// Before the server's SETTINGS, streams are limited to Go's initial
	// guess; a SETTINGS without MAX_CONCURRENT_STREAMS lifts it to Go's
	// default ("unlimited" per RFC 9113), as h2client.
	initialMaxConcurrent = 100
	defaultMaxConcurrent = 1000
)

func (cfg ClientConfig) withDefaults() ClientConfig {
	if cfg.StreamWindow <= 0 {
		cfg.StreamWindow = defaultClientStreamWindow
	}
	cfg.StreamWindow = min(cfg.StreamWindow, maxWindow)
	if cfg.ConnWindow <= 0 {
		cfg.ConnWindow = defaultClientConnWindow
	}
	cfg.ConnWindow = min(cfg.ConnWindow, maxWindow-initialWindowSize)
	if cfg.MaxReadFrameSize <= 0 {
		cfg.MaxReadFrameSize = defaultClientMaxFrame
	}
	cfg.MaxReadFrameSize = min(max(cfg.MaxReadFrameSize, minMaxFrameSize), maxMaxFrameSize)
	if cfg.MaxHeaderListSize == 0 {
		cfg.MaxHeaderListSize = defaultClientMaxHeaders
	}
	if cfg.MaxEncoderHeaderTableSize <= 0 {
		cfg.MaxEncoderHeaderTableSize = defaultClientTable
	}
	return cfg
}

// ResponseReceiver hears of one request's response, on the loop.
type ResponseReceiver interface {
	// Informational is a 1xx response (any number of them before the
	// final one): 100 Continue is the time to send the body of a request
	// that expects it.
	Informational(s *ClientStream, status int, h http.Header)
	// Response is the final response's head, validated as Go's transport
	// does (h2msg.ParseResponse: connection-specific fields removed,
	// Content-Length only when valid, s.ContentLength; the declared
	// trailers' keys in s.Trailer).
	Response(s *ClientStream, status int, h http.Header)
	// Data is a DATA frame's payload, valid during the call only. Its
	// bytes hold the receive windows until s.Consumed, End or not.
	Data(s *ClientStream, p []byte)
	// End is the stream's end, once: the response's END_STREAM (err nil,
	// with its trailers if any), or its failure: a ServerResetError, an
	// error that errors.Is ErrRefused (not processed by the server: safe
	// to send again), ErrProtocol (the server broke the rules on the
	// stream; the client reset it), ErrConnection (on the connection:
	// GOAWAY sent), ErrConnLost, ErrClientClosed. Nothing can be written
	// on s after it.
	End(s *ClientStream, trailers http.Header, err error)
	// Writable: the send windows grew, or the connection took what
	// waited, after a Write that did not take everything.
	Writable(s *ClientStream)
}

// The errors a ResponseReceiver's End hears, besides ServerResetError and
// ErrConnection.
var (
	// ErrRefused: the server did not process the stream (REFUSED_STREAM,
	// or a stream above the last of its GOAWAY), or the connection could
	// take no stream (Open): it may be sent again, on another connection.
	ErrRefused = errors.New("h2loop: stream not processed by the server")
	// ErrProtocol: the server broke HTTP/2's rules on the stream (a
	// malformed response, DATA against its Content-Length or beyond the
	// stream's window): the client reset it.
	ErrProtocol = errors.New("h2loop: protocol error from the server")
	// ErrConnLost: the connection ended (the server closed it, or it
	// failed) before the stream's end.
	ErrConnLost = errors.New("h2loop: connection to the server lost")
	// ErrClientClosed: ClientConn.Close ended the connection.
	ErrClientClosed = errors.New("h2loop: client connection closed")
)

// ServerResetError is End's error for a stream the server reset: errors.Is
// it ErrStreamReset, and ErrRefused as well for REFUSED_STREAM.
type ServerResetError struct{ Code http2.ErrCode }

func (e ServerResetError) Error() string {
	return "http2: stream reset by the server: " + e.Code.String()
}

func (e ServerResetError) Is(target error) bool {
	return target == ErrStreamReset || target == ErrRefused && e.Code == http2.ErrCodeRefusedStream
}

var errConnUnusable = fmt.Errorf("%w: the connection takes no new stream", ErrRefused)

// ClientConn is an HTTP/2 client connection on a loop: streams opened by
// Open, their responses told to their ResponseReceivers. Its methods and
// its streams' are called on the loop.
type ClientConn struct {
	connCore
	cfg ClientConfig

	streams        map[uint32]*ClientStream
	nextID         uint32
	maxConcurrent  uint32
	peerMaxHeaders uint64
	sawSettings    bool // the first frame, a SETTINGS, came
	gotSettings    bool // the server's first SETTINGS (not an ACK) came
	goAway         bool // received: no new streams
	doNotReuse     bool // a request with Connection: close
	released       bool // the Transport closed
	toldUnusable   bool
}

var errServerNotReading = errors.New("h2loop: server does not read its frames")

// NewClientConn starts an HTTP/2 connection over t on lp (h2c with prior
// knowledge, or TLS that negotiated h2): it writes the client preface,
// SETTINGS (push disabled, the windows, the limits) and the connection's
// WINDOW_UPDATE. The caller tells it of t's readiness (Readable,
// Written); its Close closes t. Called on lp's goroutine.
func NewClientConn(lp *evloop.Loop, t Transport, cfg ClientConfig) *ClientConn {
	c := newClientConn(lp, cfg)
	c.ec = t
	c.begin()
	return c
}

// NewClientConnFD starts an HTTP/2 connection (h2c with prior knowledge)
// over the stream socket fd, connected or connecting (non-blocking: what
// is written waits for the connection), which lp owns from then on (the
// caller's still if an error is returned). Called on lp's goroutine.
func NewClientConnFD(lp *evloop.Loop, fd int, cfg ClientConfig) (*ClientConn, error) {
	// As Go's net sets it: a small frame written after another must not
	// wait for the server's delayed ACK.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	c := newClientConn(lp, cfg)
	ec, err := lp.NewConn(fd, clientHandler{c})
	if err != nil {
		return nil, err
	}
	c.ec = ec
	c.begin()
	return c, nil
}

// clientHandler is a ClientConn's evloop.ConnHandler for its own socket.
type clientHandler struct{ c *ClientConn }

func (h clientHandler) Readable(*evloop.Conn) { h.c.Readable() }
func (h clientHandler) Written(*evloop.Conn)  { h.c.Written() }

func newClientConn(lp *evloop.Loop, cfg ClientConfig) *ClientConn {
	c := &ClientConn{
		cfg:            cfg.withDefaults(),
		streams:        map[uint32]*ClientStream{},
		nextID:         1,
		maxConcurrent:  initialMaxConcurrent,
		peerMaxHeaders: 1<<64 - 1,
	}
	c.initCore(c, lp, errServerNotReading)
	return c
}

func (c *ClientConn) begin() {
	c.initReader(c.cfg.MaxReadFrameSize, c.cfg.MaxHeaderListSize, defaultClientTable)
	c.initWriter(uint32(c.cfg.MaxEncoderHeaderTableSize))
	c.out.WriteString(http2.ClientPreface)
	c.wfr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(c.cfg.StreamWindow)},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: uint32(c.cfg.MaxReadFrameSize)},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.cfg.MaxHeaderListSize},
	)
	c.unackedSettings++
	c.wfr.WriteWindowUpdate(0, uint32(c.cfg.ConnWindow))
	c.recvAvail += int32(c.cfg.ConnWindow)
	c.flush()
}

func (c *ClientConn) logf(format string, args ...any) { logTo(c.cfg.Logf, format, args...) }

// CanOpen reports whether Open can take a stream now: below the server's
// SETTINGS_MAX_CONCURRENT_STREAMS (100 until its first SETTINGS, as Go's
// transport), no GOAWAY from it, no Connection: close request sent, the
// connection not ended.
func (c *ClientConn) CanOpen() bool {
	return !c.closed && !c.closing && !c.goAway && !c.doNotReuse &&
		uint32(len(c.streams)) < c.maxConcurrent && c.nextID < maxWindow-1 &&
		!c.ec.EOF() && c.ec.Err() == nil
}

// Streams is how many streams are open.
func (c *ClientConn) Streams() int { return len(c.streams) }

// Closed reports whether the connection has ended (or ends once its last
// stream does: GOAWAY received, a Connection: close request).
func (c *ClientConn) Closed() bool { return c.closed || c.closing }

// Open sends req's HEADERS on a new stream, with END_STREAM if endStream
// (a request without a body; otherwise the stream's Write and
// WriteTrailers send it, and its length is req.ContentLength when above
// 0, unknown otherwise). The request is Go's transport's for req
// (h2msg: pseudo-headers, connection-specific fields dropped, TE only
// trailers, cookie crumbs, content-length when known, the trailer field
// for req.Trailer); req.Body is not read. A request those rules refuse,
// one above the server's SETTINGS_MAX_HEADER_LIST_SIZE, or a connection
// that cannot take it (CanOpen; an error that errors.Is ErrRefused) is an
// error and nothing is written. r hears of the response. Written frames
// leave at Flush, or at the end of the connection's callback that opened
// it.
func (c *ClientConn) Open(req *http.Request, endStream bool, r ResponseReceiver) (*ClientStream, error) {
	if !c.CanOpen() {
		return nil, errConnUnusable
	}
	cl := int64(0)
	if !endStream {
		cl = req.ContentLength
		if cl <= 0 {
			cl = -1 // Go's rule: a body with no length is of unknown length
		}
	}
	h, err := h2msg.CheckRequest(req, cl)
	if err != nil {
		return nil, err
	}
	if err := h.CheckListSize(req, c.peerMaxHeaders); err != nil {
		return nil, err
	}
	st := &ClientStream{
		c:          c,
		streamFlow: streamFlow{id: c.nextID, sendWin: int64(c.peerInitialWin), recvAvail: int32(c.cfg.StreamWindow), ended: endStream},
		recv:       r,
		isHead:     req.Method == http.MethodHead,
		respLen:    -1,
		declLen:    -1,
	}
	c.nextID += 2
	if req.Close || httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close") {
		c.doNotReuse = true // Go's transport: the connection ends with this request
	}
	c.streams[st.id] = st
	c.hbuf.Reset()
	h.Encode(c.henc, req)
	c.writeBlock(st.id, endStream)
	return st, nil
}

// Flush writes what the connection's streams wrote. Within the
// connection's own callbacks (the ResponseReceivers') it is done at their
// end; what is written from any other callback on the loop (another
// connection's, a timer's) stays buffered until Flush, so that what one
// callback writes goes out in one system call.
func (c *ClientConn) Flush() { c.flush() }

// Close ends the connection at once: its streams' receivers hear
// ErrClientClosed, and the Transport is closed.
func (c *ClientConn) Close() { c.lostWith(ErrClientClosed) }

// Readable processes the whole frames the Transport holds, or its end.
func (c *ClientConn) Readable() { c.readable() }

// Written resumes what waited for the socket: the frames not read while
// too much waited to be written, the streams' DATA.
func (c *ClientConn) Written() { c.written() }

func (c *ClientConn) read() { c.readFrames() }

// settle closes a connection that takes no new streams once its last
// stream is done: after each frame, and at the end of its callbacks.
func (c *ClientConn) settle() { c.maybeFinish() }

// lost: the server is gone.
func (c *ClientConn) lost() { c.lostWith(ErrConnLost) }

// streamFailed ends the stream a frame's error names (ErrProtocol), or
// resets one already ended.
func (c *ClientConn) streamFailed(se http2.StreamError) {
	if st := c.streams[se.StreamID]; st != nil {
		c.streamError(st, se.Code, fmt.Errorf("%w: %w", ErrProtocol, se))
	} else {
		c.wfr.WriteRSTStream(se.StreamID, se.Code)
	}
}

// connError ends the connection for a protocol error of the server's:
// GOAWAY with code, the streams ended, then the server's bytes read and
// discarded until it closes or goAwayTimeout passes.
func (c *ClientConn) connError(code http2.ErrCode, err error) {
	if c.closing || c.closed {
		return
	}
	c.logf("http2: connection error from the server: %v", err)
	c.goAway = true
	c.tellUnusable()
	c.wfr.WriteGoAway(0, code, nil) // no stream of the server's was processed: push is off
	c.closing = true                // no End below writes a frame
	c.endStreams(fmt.Errorf("%w: %w", ErrConnection, err))
	c.drain()
}

// maybeFinish closes a connection that takes no new streams once its
// last stream is done.
func (c *ClientConn) maybeFinish() {
	if (c.goAway || c.doNotReuse) && !c.closing && !c.closed && len(c.streams) == 0 {
		c.flush()
		c.close()
	}
}

func (c *ClientConn) tellUnusable() {
	if !c.toldUnusable {
		c.toldUnusable = true
		if c.cfg.Unusable != nil {
			c.cfg.Unusable(c)
		}
	}
}

// lostWith ends the connection at once, its streams with err.
func (c *ClientConn) lostWith(err error) {
	if c.closed {
		return
	}
	c.closed = true // the receivers' End sees it ended
	c.tellUnusable()
	c.endStreams(err)
	c.close()
}

func (c *ClientConn) close() {
	if c.released {
		return
	}
	c.released = true
	c.closed = true
	c.tellUnusable()
	c.endStreams(ErrConnLost)
	c.closeTransport()
}

// endStreams ends every stream with err, in the order they were opened.
func (c *ClientConn) endStreams(err error) {
	if len(c.streams) == 0 {
		return
	}
	ids := make([]uint32, 0, len(c.streams))
	for id := range c.streams {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if st := c.streams[id]; st != nil {
			c.endStream(st, nil, err)
		}
	}
}

// endStream closes st and tells its receiver. A failed stream's unread
// bytes go back to the connection's window: nobody will consume them.
func (c *ClientConn) endStream(st *ClientStream, trailers http.Header, err error) {
	if st.closed {
		return
	}
	c.closeStream(st)
	if err != nil && st.unconsumed > 0 {
		c.credit(st.unconsumed)
		st.unconsumed = 0
	}
	st.recv.End(st, trailers, err)
}

func (c *ClientConn) closeStream(st *ClientStream) {
	st.closed = true
	delete(c.streams, st.id)
}

// streamError resets st for an error of the server's.
func (c *ClientConn) streamError(st *ClientStream, code http2.ErrCode, err error) {
	c.wfr.WriteRSTStream(st.id, code)
	c.endStream(st, nil, err)
}

// lookup returns the open stream id; idle says no stream id was ever
// opened (the server opens none: push is disabled).
func (c *ClientConn) lookup(id uint32) (st *ClientStream, idle bool) {
	if st := c.streams[id]; st != nil {
		return st, false
	}
	return nil, id%2 == 0 || id >= c.nextID
}

// processFrame handles a frame; its error says which.
func (c *ClientConn) processFrame(f http2.Frame) error {
	if err := c.process(f); err != nil {
		return fmt.Errorf("%v frame: %w", f.Header().Type, err)
	}
	return nil
}

func (c *ClientConn) process(f http2.Frame) error {
	if !c.sawSettings {
		// RFC 9113 3.4: the server's preface is a SETTINGS frame.
		if _, ok := f.(*http2.SettingsFrame); !ok {
			return fmt.Errorf("%w: received %v before a SETTINGS frame", http2.ConnectionError(http2.ErrCodeProtocol), f.Header().Type)
		}
		c.sawSettings = true
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return c.processSettings(f)
	case *http2.MetaHeadersFrame:
		return c.processHeaders(f)
	case *http2.DataFrame:
		return c.processData(f)
	case *http2.RSTStreamFrame:
		return c.processReset(f)
	case *http2.GoAwayFrame:
		c.processGoAway(f)
		return nil
	default:
		return c.processConnFrame(f) // WINDOW_UPDATE, PING, PUSH_PROMISE; PRIORITY and unknown frames ignored (RFC 9113 5.3.2, 5.5)
	}
}

func (c *ClientConn) processSettings(f *http2.SettingsFrame) error {
	if !f.IsAck() && !c.gotSettings {
		// The server's first SETTINGS: without MAX_CONCURRENT_STREAMS,
		// Go's default.
		c.maxConcurrent = defaultMaxConcurrent
		c.gotSettings = true
	}
	grew, err := c.applySettings(f)
	if err == nil && !f.IsAck() {
		c.ackSettings(grew)
	}
	return err
}

// setting applies the server's settings the client takes beyond the
// core's.
func (c *ClientConn) setting(s http2.Setting) error {
	switch s.ID {
	case http2.SettingEnablePush:
		if s.Val != 0 {
			return http2.ConnectionError(http2.ErrCodeProtocol) // RFC 9113 6.5.2: a server never sends 1
		}
	case http2.SettingMaxConcurrentStreams:
		c.maxConcurrent = s.Val
	case http2.SettingMaxHeaderListSize:
		c.peerMaxHeaders = uint64(s.Val)
	}
	return nil
}

// moveSendWindows: the windows are checked all before any moves.
func (c *ClientConn) moveSendWindows(delta int64) error {
	for _, st := range c.streams {
		if st.sendWin+delta > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	}
	for _, st := range c.streams {
		st.sendWin += delta
	}
	return nil
}

// flow is stream id's flow control, for the core's WINDOW_UPDATE.
func (c *ClientConn) flow(id uint32) (*streamFlow, bool) {
	st, idle := c.lookup(id)
	if st == nil {
		return nil, idle
	}
	return &st.streamFlow, false
}

// windowOverflow resets the stream (ErrProtocol).
func (c *ClientConn) windowOverflow(id uint32) error {
	c.streamError(c.streams[id], http2.ErrCodeFlowControl, fmt.Errorf("%w: WINDOW_UPDATE overflows the stream's window", ErrProtocol))
	return nil
}

func (c *ClientConn) processReset(f *http2.RSTStreamFrame) error {
	st, idle := c.lookup(f.StreamID)
	if idle {
		return http2.ConnectionError(http2.ErrCodeProtocol) // RFC 9113 6.4
	}
	if f.ErrCode == http2.ErrCodeProtocol {
		c.doNotReuse = true // as Go's transport: the server finds us broken
	}
	if st != nil {
		c.endStream(st, nil, ServerResetError{Code: f.ErrCode})
	}
	return nil
}

// processGoAway: the server takes no new streams; those above its last
// were not processed (RFC 9113 6.8) and end with ErrRefused, the others
// finish, then the connection closes.
func (c *ClientConn) processGoAway(f *http2.GoAwayFrame) {
	if f.ErrCode != http2.ErrCodeNo {
		c.logf("http2: the server sent GOAWAY %v (last stream %d): %q", f.ErrCode, f.LastStreamID, f.DebugData())
	}
	c.goAway = true
	c.tellUnusable()
	var refused []uint32
	for id := range c.streams {
		if id > f.LastStreamID {
			refused = append(refused, id)
		}
	}
	slices.Sort(refused)
	for _, id := range refused {
		if st := c.streams[id]; st != nil {
			c.endStream(st, nil, fmt.Errorf("%w: above the last stream (%d) of the server's GOAWAY %v", ErrRefused, f.LastStreamID, f.ErrCode))
		}
	}
}

func (c *ClientConn) processHeaders(f *http2.MetaHeadersFrame) error {
	st, idle := c.lookup(f.StreamID)
	if st == nil {
		if idle {
			return http2.ConnectionError(http2.ErrCodeProtocol) // RFC 9113 5.1: the server opens no stream
		}
		return nil // a stream reset while its response was on the way: the block was decoded, HPACK's state kept
	}
	if st.gotHeaders {
		return c.processTrailers(st, f)
	}
	r, err := h2msg.ParseResponse(f)
	if err != nil {
		c.streamError(st, http2.ErrCodeProtocol, fmt.Errorf("%w: %w", ErrProtocol, err))
		return nil
	}
	if r.Informational() {
		st.recv.Informational(st, r.Code, r.Header)
		return nil
	}
	st.gotHeaders = true
	st.respLen = r.ContentLength
	if !st.isHead {
		st.declLen = r.ContentLength
	}
	st.Trailer = r.Trailer
	st.recv.Response(st, r.Code, r.Header)
	if f.StreamEnded() && !st.closed {
		c.remoteEnd(st, nil)
	}
	return nil
}

// processTrailers: a HEADERS frame after the response's.
func (c *ClientConn) processTrailers(st *ClientStream, f *http2.MetaHeadersFrame) error {
	if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
		// Trailers without END_STREAM, or with pseudo-fields: Go's
		// transport's connection error.
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if f.Truncated {
		c.streamError(st, http2.ErrCodeProtocol, fmt.Errorf("%w: response trailer list larger than the client's limit", ErrProtocol))
		return nil
	}
	c.remoteEnd(st, h2head.Header(f.RegularFields()))
	return nil
}

// remoteEnd: the response's END_STREAM. A declared length must have been
// met (RFC 9113 8.1.1); a request still being sent is stopped (the
// response is complete: RST_STREAM CANCEL, as Go's transport).
func (c *ClientConn) remoteEnd(st *ClientStream, trailers http.Header) {
	if st.declLen >= 0 && st.gotLen != st.declLen {
		c.streamError(st, http2.ErrCodeProtocol, fmt.Errorf("%w: response body of %d bytes, Content-Length %d", ErrProtocol, st.gotLen, st.declLen))
		return
	}
	if !st.ended {
		st.ended = true
		c.wfr.WriteRSTStream(st.id, http2.ErrCodeCancel)
	}
	c.endStream(st, trailers, nil)
}

func (c *ClientConn) processData(f *http2.DataFrame) error {
	data := f.Data()
	flen := int32(f.Length)
	st, idle := c.lookup(f.StreamID)
	if idle {
		return http2.ConnectionError(http2.ErrCodeProtocol) // RFC 9113 5.1, 6.1: never opened
	}
	if flen > c.recvAvail {
		return http2.ConnectionError(http2.ErrCodeFlowControl) // RFC 9113 6.9.1
	}
	c.recvAvail -= flen
	if st == nil {
		c.credit(flen) // a stream we are done with: the window goes back
		return nil
	}
	var serr error
	code := http2.ErrCodeProtocol
	switch {
	case !st.gotHeaders:
		serr = errors.New("DATA before HEADERS")
	case st.isHead && len(data) > 0:
		serr = errors.New("DATA on a HEAD request")
	case flen > st.recvAvail:
		serr, code = errors.New("DATA beyond the stream's window"), http2.ErrCodeFlowControl
	case st.declLen >= 0 && st.gotLen+int64(len(data)) > st.declLen:
		// RFC 9113 8.1.1: more than content-length is malformed.
		serr = fmt.Errorf("more than its Content-Length %d", st.declLen)
	}
	if serr != nil {
		c.credit(flen) // the connection's window still counts it, and goes back
		c.streamError(st, code, fmt.Errorf("%w: %w", ErrProtocol, serr))
		return nil
	}
	c.received(&st.streamFlow, flen, len(data))
	st.gotLen += int64(len(data))
	if len(data) > 0 {
		st.unconsumed += int32(len(data))
		st.recv.Data(st, data)
	}
	if f.StreamEnded() && !st.closed && !c.closed {
		c.remoteEnd(st, nil)
	}
	return nil
}
