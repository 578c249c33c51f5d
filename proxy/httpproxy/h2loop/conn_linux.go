package h2loop

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"

	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
	"github.com/meridian-mesh/meridian/proxy/internal/h2head"
)

// Handler serves a Server's streams, on the loop.
type Handler interface {
	// ServeStream is called when a request's HEADERS are in (s.Request,
	// without a Body). It must not block: it answers through s, now or
	// from later callbacks on the same loop, and returns what hears of
	// the stream's body and end.
	ServeStream(s *Stream) Receiver
}

// Receiver hears of one stream, on the loop.
type Receiver interface {
	// Data is a DATA frame's payload, valid during the call only. Its
	// bytes hold the stream's receive window until Consumed.
	Data(s *Stream, p []byte)
	// End is the client's END_STREAM (err nil; its trailers, if any, in
	// s.Trailer) or the stream's end before the handler's own (the
	// client reset it, sent more than it declared, or the connection
	// ended). After an End with an error nothing may be written on s, and
	// the handler calls Done once it has let go of it.
	End(s *Stream, err error)
	// Writable: the windows grew, or the connection took what waited,
	// after a Write that did not take everything.
	Writable(s *Stream)
}

// Server serves HTTP/2 connections on loops. Its fields are set before
// its first use and not changed after.
type Server struct {
	// Config's limits and timeouts are h2server's, with the same
	// defaults.
	Config  h2server.Config
	Handler Handler
	// Logf, if set, hears of connection errors (why a client saw GOAWAY);
	// log.Printf if nil.
	Logf func(format string, args ...any)

	mu    sync.Mutex
	conns map[*conn]struct{} // for Shutdown and Close
}

func (s *Server) logf(format string, args ...any) { logTo(s.Logf, format, args...) }

const (
	initialWindowSize  = 65535 // RFC 9113 6.9.2
	maxWindow          = 1<<31 - 1
	minMaxFrameSize    = 16 << 10
	maxSettingsEntries = 100
	// maxPending is how much written and not yet taken by the socket
	// stops the streams' DATA (Write takes nothing more) until it is
	// taken; at maxPendingRead the connection's frames are not read
	// either (a client that sends but does not read is held by TCP, not
	// queued for); at maxPendingCalm it is told to calm down (a flood of
	// PINGs or SETTINGS answered into a socket nobody reads).
	maxPending     = 256 << 10
	maxPendingRead = 1 << 20
	maxPendingCalm = 4 << 20
)

// goAwayTimeout is how long a connection that sent GOAWAY keeps reading
// (and discarding) before it closes: closing with unread bytes would send
// a TCP RST that can destroy the GOAWAY in flight (golang.org/issue/18701).
var goAwayTimeout = time.Second

// The errors a Receiver's End hears.
var (
	// ErrClientGone: the connection ended (the client closed it, or it
	// failed).
	ErrClientGone = errors.New("http2: client disconnected")
	// ErrStreamReset: the client reset the stream (a StreamResetError
	// says with what code), or broke its rules (sent more than it
	// declared).
	ErrStreamReset = errors.New("http2: stream reset")
	// ErrConnection: the connection ended for a protocol error.
	ErrConnection = errors.New("http2: connection error")
)

// StreamResetError is End's error for a stream the client reset: errors.Is
// it ErrStreamReset.
type StreamResetError struct{ Code http2.ErrCode }

func (e StreamResetError) Error() string {
	return "http2: stream reset by the client: " + e.Code.String()
}
func (e StreamResetError) Is(target error) bool { return target == ErrStreamReset }

var (
	errPrefaceWrong     = errors.New("h2loop: bad client connection preface")
	errClientNotReading = errors.New("h2loop: client does not read its frames")
)

// conn is one HTTP/2 server connection, the loop's alone: the core, and
// the requests, their dispatch to the handler and its slots.
type conn struct {
	connCore
	srv    *Server
	cfg    h2server.Config
	value  any // ServeTransport's
	remote string
	tls    *tls.ConnectionState

	keys []string // encodeHeaderMap's

	streams      map[uint32]*Stream
	active       int       // streams the handler has not let go of
	unstarted    []*Stream // streams waiting for a handler slot
	maxClientID  uint32
	goAwayLastID uint32
	sawPreface   bool
	sawSettings  bool
	goAway       bool
}

// Transport is a connection's bytes on a loop, as an *evloop.Conn has
// them: what was read and not consumed, and writes that never block. A
// TLS layer over an evloop.Conn is one too.
type Transport interface {
	Buffered() []byte
	Consume(n int)
	Write(b []byte) error
	// Pending is how much was written and not taken by the socket yet.
	Pending() int
	EOF() bool
	Err() error
	CloseWrite() error
	Close() error
}

// Conn is a connection a Server serves over a Transport of the caller's
// (ServeTransport), who tells it of the Transport's readiness. Its
// methods are called on the loop.
type Conn struct{ c *conn }

// Readable: the Transport has more bytes, or its read side ended.
func (cn *Conn) Readable() { cn.c.Readable(nil) }

// Written: the Transport's socket took what was pending.
func (cn *Conn) Written() { cn.c.Written(nil) }

// Shutdown sends GOAWAY NO_ERROR; the connection closes once the streams
// up to its last are done.
func (cn *Conn) Shutdown() { cn.c.Shutdown() }

// Close ends the connection at once: its streams' handlers hear
// ErrClientGone, and the Transport is closed.
func (cn *Conn) Close() { cn.c.end(ErrClientGone) }

// Serve serves the HTTP/2 connection fd (h2c with prior knowledge; pre is
// what was read from it before, the client's preface or part of it) on
// lp, which owns fd from then on. It is called on lp's goroutine.
func (s *Server) Serve(lp *evloop.Loop, fd int, remote string, pre []byte) error {
	// As Go's net sets it for its TCP connections: a small frame written
	// after another must not wait for the client's delayed ACK.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	c := s.newConn(lp, remote, nil)
	ec, err := lp.NewConn(fd, c)
	if err != nil {
		s.forget(c)
		return err
	}
	c.ec = ec
	if err := ec.Unread(pre); err != nil {
		c.acc = append(c.acc, pre...)
	}
	c.begin()
	if len(pre) > 0 {
		c.Readable(nil)
	}
	return nil
}

// ServeTransport serves an HTTP/2 connection over t on lp (the bytes t
// holds are read at once); called on lp's goroutine. tls is the
// connection's TLS state, if any: https requests carry it. The caller
// tells the Conn of t's readiness, and t's Close ends it. value is the
// connection's, for the handler (Stream.ConnValue).
func (s *Server) ServeTransport(lp *evloop.Loop, t Transport, remote string, tls *tls.ConnectionState, value any) *Conn {
	c := s.newConn(lp, remote, tls)
	c.ec = t
	c.value = value
	c.begin()
	c.Readable(nil)
	return &Conn{c}
}

func (s *Server) newConn(lp *evloop.Loop, remote string, tls *tls.ConnectionState) *conn {
	c := &conn{
		srv:     s,
		cfg:     s.Config.WithDefaults(),
		remote:  remote,
		tls:     tls,
		streams: map[uint32]*Stream{},
	}
	c.initCore(c, lp, errClientNotReading)
	s.mu.Lock()
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	return c
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown sends every connection GOAWAY NO_ERROR: each closes once the
// streams up to its last are done.
func (s *Server) Shutdown() { s.each(func(c *conn) { c.Shutdown() }) }

// Close ends every connection at once: their streams' handlers hear
// ErrClientGone.
func (s *Server) Close() { s.each(func(c *conn) { c.end(ErrClientGone) }) }

// each runs f on every connection, on its loop.
func (s *Server) each(f func(*conn)) {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.lp.Post(func() {
			if !c.closed {
				f(c)
				c.flush()
			}
		})
	}
}

// begin writes the server's SETTINGS and arms the preface timeout.
func (c *conn) begin() {
	c.initReader(c.cfg.MaxReadFrameSize, uint32(c.cfg.MaxHeaderBytes+10*32), uint32(c.cfg.MaxDecoderHeaderTableSize))
	c.initWriter(uint32(c.cfg.MaxEncoderHeaderTableSize))

	c.wfr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: uint32(c.cfg.MaxReadFrameSize)},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: uint32(c.cfg.MaxConcurrentStreams)},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.fr.MaxHeaderListSize},
		http2.Setting{ID: http2.SettingHeaderTableSize, Val: uint32(c.cfg.MaxDecoderHeaderTableSize)},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(c.cfg.MaxReceiveBufferPerStream)},
	)
	c.unackedSettings++
	if d := c.cfg.MaxReceiveBufferPerConnection - initialWindowSize; d > 0 {
		c.wfr.WriteWindowUpdate(0, uint32(d))
		c.recvAvail += int32(d)
	}
	c.timer = c.lp.After(c.cfg.PrefaceTimeout, c.timeout)
	c.flush()
}

// Readable processes the whole frames buffered (evloop.ConnHandler's).
func (c *conn) Readable(*evloop.Conn) { c.readable() }

// Written resumes what waited for the socket (evloop.ConnHandler's).
func (c *conn) Written(*evloop.Conn) { c.written() }

// read reads the client's preface, then its frames.
func (c *conn) read() {
	if !c.sawPreface && !c.closing && !c.readPreface() {
		return
	}
	c.readFrames()
}

// readPreface consumes the client's connection preface: false if it is
// not all in yet, or wrong.
func (c *conn) readPreface() bool {
	for {
		b := c.input()
		if len(b) < len(http2.ClientPreface) {
			if !bytes.HasPrefix([]byte(http2.ClientPreface), b) {
				c.prefaceWrong()
				return false
			}
			if c.keep(b) {
				continue
			}
			return false
		}
		if string(b[:len(http2.ClientPreface)]) != http2.ClientPreface {
			c.prefaceWrong()
			return false
		}
		c.consume(len(http2.ClientPreface))
		c.sawPreface = true
		c.armIdle()
		return true
	}
}

func (c *conn) prefaceWrong() {
	c.connError(http2.ErrCodeProtocol, errPrefaceWrong)
}

// streamFailed resets the stream a frame's error names.
func (c *conn) streamFailed(se http2.StreamError) {
	c.resetStream(se.StreamID, se.Code, fmt.Errorf("%w: %w", ErrStreamReset, se))
}

// lost: the client is gone.
func (c *conn) lost() { c.end(ErrClientGone) }

// settle: nothing to do for the server after its frames (its streams'
// ends finish a drained connection as they come).
func (c *conn) settle() {}

func (c *conn) timeout() {
	switch {
	case c.closed:
	case c.closing:
		c.close() // the drain's end
	case !c.sawPreface:
		c.close() // no preface in time: nothing to say to a client that sent none
	default:
		if len(c.streams) == 0 && c.active == 0 {
			c.Shutdown()
		}
	}
}

func (c *conn) armIdle() {
	if c.cfg.IdleTimeout > 0 && len(c.streams) == 0 && c.active == 0 && !c.goAway {
		c.timer.Reset(c.cfg.IdleTimeout)
	} else {
		c.timer.Stop()
	}
}

// Shutdown sends GOAWAY NO_ERROR with the last stream processed; the
// connection closes once those streams are done.
func (c *conn) Shutdown() {
	if c.goAway || c.closed {
		return
	}
	c.goAway, c.goAwayLastID = true, c.maxClientID
	c.wfr.WriteGoAway(c.maxClientID, http2.ErrCodeNo, nil)
	c.maybeFinish()
	if !c.processing {
		c.flush()
	}
}

// maybeFinish begins the close of a connection that sent GOAWAY once its
// streams are done.
func (c *conn) maybeFinish() {
	if c.goAway && !c.closing && len(c.streams) == 0 && c.active == 0 && len(c.unstarted) == 0 {
		c.drain()
	}
}

// connError ends the connection for a protocol error: GOAWAY with code,
// the streams ended, then the client's bytes read and discarded until it
// closes or goAwayTimeout passes.
func (c *conn) connError(code http2.ErrCode, err error) {
	if c.closing || c.closed {
		return
	}
	c.srv.logf("http2: connection error from %v: %v", c.remote, err)
	c.goAway, c.goAwayLastID = true, c.maxClientID
	c.wfr.WriteGoAway(c.maxClientID, code, nil)
	c.endStreams(ErrConnection)
	c.drain()
}

// end ends the connection at once (the client is gone).
func (c *conn) end(err error) {
	c.endStreams(err)
	c.close()
}

func (c *conn) endStreams(err error) {
	for _, st := range c.streams {
		c.closeStream(st, err)
	}
	for _, st := range c.unstarted {
		st.released = true
	}
	c.unstarted = nil
}

func (c *conn) close() {
	if c.closed {
		return
	}
	c.endStreams(ErrClientGone)
	c.closed = true
	c.srv.forget(c)
	c.closeTransport()
}

// resetStream sends RST_STREAM for id and closes the stream if it is open.
func (c *conn) resetStream(id uint32, code http2.ErrCode, err error) {
	if st := c.streams[id]; st != nil {
		c.closeStream(st, err)
	} else if id > c.maxClientID && id%2 == 1 {
		c.maxClientID = id // a HEADERS frame refused: the stream existed
	}
	c.wfr.WriteRSTStream(id, code)
}

// state is the state of stream id (RFC 9113 5.1): idle, or the stream if
// it is open or half closed (nil: closed).
func (c *conn) state(id uint32) (bool, *Stream) {
	if st := c.streams[id]; st != nil {
		return false, st
	}
	return id > c.maxClientID, nil
}

// flow is stream id's flow control, for the core's WINDOW_UPDATE.
func (c *conn) flow(id uint32) (*streamFlow, bool) {
	idle, st := c.state(id)
	if st == nil {
		return nil, idle
	}
	return &st.streamFlow, false
}

// windowOverflow: RST_STREAM FLOW_CONTROL_ERROR (RFC 9113 6.9.1).
func (c *conn) windowOverflow(id uint32) error {
	return http2.StreamError{StreamID: id, Code: http2.ErrCodeFlowControl}
}

func (c *conn) processFrame(f http2.Frame) error {
	if !c.sawSettings {
		// RFC 9113 3.4: the preface ends with a SETTINGS frame.
		if _, ok := f.(*http2.SettingsFrame); !ok {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		c.sawSettings = true
	}
	id := f.Header().StreamID
	if c.goAway && id > c.goAwayLastID {
		// RFC 9113 6.8: streams above the GOAWAY's last are not
		// processed; their DATA still counts against the connection's
		// window, which is given back.
		if d, ok := f.(*http2.DataFrame); ok {
			if int32(d.Length) > c.recvAvail {
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
			c.recvAvail -= int32(d.Length)
			c.credit(int32(d.Length))
		}
		return nil
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return c.processSettings(f)
	case *http2.MetaHeadersFrame:
		return c.processHeaders(f)
	case *http2.DataFrame:
		return c.processData(f)
	case *http2.RSTStreamFrame:
		idle, st := c.state(id)
		if idle {
			return http2.ConnectionError(http2.ErrCodeProtocol) // RFC 9113 6.4
		}
		if st != nil {
			c.closeStream(st, StreamResetError{Code: f.ErrCode})
		}
		return nil
	case *http2.PriorityFrame:
		// Priorities are ignored (RFC 9113 5.3.2), but a stream cannot
		// depend on itself (5.3.1).
		if f.StreamDep == id {
			return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
		}
		return nil
	case *http2.GoAwayFrame:
		c.Shutdown()
		return nil
	default:
		return c.processConnFrame(f) // WINDOW_UPDATE, PING, PUSH_PROMISE, unknown
	}
}

func (c *conn) processSettings(f *http2.SettingsFrame) error {
	if f.NumSettings() > maxSettingsEntries || f.HasDuplicates() {
		return http2.ConnectionError(http2.ErrCodeProtocol) // as Go's server (an ACK has none)
	}
	grew, err := c.applySettings(f)
	if err == nil && !f.IsAck() {
		c.ackSettings(grew)
	}
	return err
}

// setting: the client's settings the server takes beyond the core's are
// none (its MAX_CONCURRENT_STREAMS and MAX_HEADER_LIST_SIZE are advisory).
func (c *conn) setting(http2.Setting) error { return nil }

func (c *conn) moveSendWindows(delta int64) error {
	for _, st := range c.streams {
		if st.sendWin += delta; st.sendWin > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	}
	return nil
}

func (c *conn) processData(f *http2.DataFrame) error {
	id := f.StreamID
	data := f.Data()
	flen := int32(f.Length)
	idle, st := c.state(id)
	if idle {
		return http2.ConnectionError(http2.ErrCodeProtocol) // RFC 9113 5.1, 6.1
	}
	if flen > c.recvAvail {
		return http2.ConnectionError(http2.ErrCodeFlowControl) // RFC 9113 6.9.1
	}
	c.recvAvail -= flen
	var serr error
	switch {
	case st == nil || st.state != stateOpen || st.gotTrailers:
		// RFC 9113 5.1: STREAM_CLOSED; the connection's window is given back.
		serr = http2.StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed}
	case flen > st.recvAvail:
		serr = http2.StreamError{StreamID: id, Code: http2.ErrCodeFlowControl}
	case st.declLen >= 0 && st.gotLen+int64(len(data)) > st.declLen:
		// RFC 9113 8.1.1: more than content-length is malformed.
		serr = http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol, Cause: errBodyOverDeclared}
	}
	if serr != nil {
		c.credit(flen)
		return serr
	}
	c.received(&st.streamFlow, flen, len(data))
	st.gotLen += int64(len(data))
	if len(data) > 0 {
		switch {
		case !st.isStarted:
			// Waiting for a handler slot: kept (bounded by the windows).
			st.unconsumed += int32(len(data))
			st.early = append(st.early, data...)
		case st.recv != nil && !st.released:
			st.unconsumed += int32(len(data))
			st.recv.Data(st, data)
		default:
			st.recvAvail += int32(len(data)) // nobody reads it
			c.credit(int32(len(data)))
		}
	}
	if f.StreamEnded() && st.state == stateOpen {
		return c.endStream(st)
	}
	return nil
}

var (
	errBodyOverDeclared  = errors.New("http2: sender tried to send more than declared Content-Length")
	errBodyUnderDeclared = errors.New("http2: request declared a Content-Length it did not send")
)

// endStream: the client's END_STREAM.
func (c *conn) endStream(st *Stream) error {
	if st.declLen >= 0 && st.declLen != st.gotLen {
		// RFC 9113 8.1.1: malformed.
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol, Cause: errBodyUnderDeclared}
	}
	st.state = stateHalfClosedRemote
	if st.ended {
		c.closeStream(st, nil)
	}
	if st.isStarted && st.recv != nil && !st.released {
		st.recv.End(st, nil)
	}
	return nil
}

func (c *conn) processHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 != 1 {
		return http2.ConnectionError(http2.ErrCodeProtocol) // RFC 9113 5.1.1
	}
	if st := c.streams[id]; st != nil {
		return c.processTrailers(st, f)
	}
	if id <= c.maxClientID {
		return http2.ConnectionError(http2.ErrCodeProtocol) // RFC 9113 5.1.1: ids only go up
	}
	c.maxClientID = id
	if f.HasPriority() && f.Priority.StreamDep == id {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol} // RFC 9113 5.3.1
	}
	if len(c.streams) >= c.cfg.MaxConcurrentStreams || c.goAway {
		// RFC 9113 5.1.2: REFUSED_STREAM, which the client may retry.
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	}
	h, ok := h2server.ParseRequestHead(f)
	if !ok {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	st := &Stream{c: c, streamFlow: streamFlow{id: id, sendWin: int64(c.peerInitialWin)}, declLen: h.DeclLen}
	st.recvAvail = int32(c.cfg.MaxReceiveBufferPerStream)
	st.Request = http.Request{
		Method:        h.Method,
		URL:           h.URL,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        h.Header,
		Host:          h.Authority,
		RemoteAddr:    c.remote,
		RequestURI:    h.RequestURI,
		Trailer:       h.Trailer,
		ContentLength: h.DeclLen,
	}
	st.Request.TLS = c.tls // every request of a TLS connection, as net/http's server sets it
	if f.StreamEnded() {
		st.state = stateHalfClosedRemote
		st.Request.ContentLength = 0
	}
	st.needsContinue = h.NeedsContinue
	switch {
	case f.Truncated:
		st.refuse = refuseTooLarge
	case h.Invalid != nil:
		st.refuse = refuseInvalid
		st.refuseErr = h.Invalid
	}
	c.streams[id] = st
	c.timer.Stop()
	// Streams the handler holds at once are bounded by those advertised,
	// reset ones included until it lets go (CVE-2023-44487): the others
	// wait, and a client that makes more than four times that wait is
	// told to calm down, as Go's server does.
	if c.active < c.cfg.MaxConcurrentStreams {
		c.start(st)
		return nil
	}
	if len(c.unstarted) > 4*c.cfg.MaxConcurrentStreams {
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	c.unstarted = append(c.unstarted, st)
	return nil
}

// start gives st to the handler.
func (c *conn) start(st *Stream) {
	c.active++
	st.isStarted = true
	if st.refuse != 0 {
		st.answerRefused()
		return
	}
	st.recv = c.srv.Handler.ServeStream(st)
	if early := st.early; len(early) > 0 && st.recv != nil && !st.released {
		st.early = nil
		st.recv.Data(st, early)
	}
	if st.state == stateHalfClosedRemote && st.recv != nil && !st.released {
		st.recv.End(st, nil)
	}
}

// processTrailers: a HEADERS frame on an open stream.
func (c *conn) processTrailers(st *Stream, f *http2.MetaHeadersFrame) error {
	if st.state != stateOpen {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeStreamClosed} // RFC 9113 5.1
	}
	if st.gotTrailers {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	st.gotTrailers = true
	if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol} // RFC 9113 8.1
	}
	if fields := f.RegularFields(); len(fields) > 0 {
		st.Trailer = h2head.Header(fields)
	}
	return c.endStream(st)
}

// closeStream closes st; the handler, if it holds it, hears of err (none
// for a stream ended both ways).
func (c *conn) closeStream(st *Stream, err error) {
	if st.state == stateClosed {
		return
	}
	st.state = stateClosed
	delete(c.streams, st.id)
	if err != nil && st.recv != nil && !st.released {
		st.recv.End(st, err)
	}
	if unread := st.unconsumed; unread > 0 {
		st.unconsumed = 0
		c.credit(unread) // what the handler did not consume goes back to the connection
	}
	if len(c.streams) == 0 {
		c.armIdle()
		c.maybeFinish()
	}
}

// release frees st's handler slot, and starts a waiting stream in it.
func (c *conn) release(st *Stream) {
	if st.released {
		return
	}
	st.released = true
	if !st.isStarted {
		return
	}
	c.active--
	if c.closed {
		return
	}
	for len(c.unstarted) > 0 && c.active < c.cfg.MaxConcurrentStreams {
		u := c.unstarted[0]
		c.unstarted = c.unstarted[1:]
		if u.state == stateClosed && u.released {
			continue
		}
		if u.state == stateClosed {
			u.released = true // reset before it started
			continue
		}
		c.start(u)
	}
	if len(c.unstarted) == 0 {
		c.unstarted = nil
	}
	if len(c.streams) == 0 && c.active == 0 {
		c.armIdle()
		c.maybeFinish()
	}
}
