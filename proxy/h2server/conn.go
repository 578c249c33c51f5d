package h2server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-mesh/meridian/proxy/internal/fieldname"
	"github.com/meridian-mesh/meridian/proxy/internal/h2head"
)

// conn is one HTTP/2 connection. Its goroutine (serve) reads and
// processes every frame; each stream's handler runs on a goroutine of its
// own and writes its response's frames itself, under wmu.
type conn struct {
	srv        *Server
	cfg        Config
	nc         net.Conn
	baseCtx    context.Context
	handler    http.Handler // the connection's, or nil: the server's
	sawPreface bool
	tls        *tls.ConnectionState
	remote     string
	br         *bufio.Reader
	fr         *http2.Framer  // reads; used by serve only
	hr         *h2head.Reader // fr's frames, header blocks decoded

	// Writing: the handler goroutines and serve write frames into bw
	// holding wmu, and flush before they release it. serve never waits for
	// wmu: a control frame it cannot write at once is queued in ctl and
	// written by whoever holds wmu next (see writeControl).
	wmu      sync.Mutex
	bw       *bufio.Writer
	wfr      *http2.Framer // writes into bw
	henc     *hpack.Encoder
	hbuf     bytes.Buffer
	keys     []string     // sorting scratch for header encoding
	werr     error        // the first write error; the connection is over
	encTable atomic.Int64 // a table size the client set, to apply (-1: none)

	ctlMu      sync.Mutex
	ctl        bytes.Buffer // encoded control frames waiting for wmu
	ctlFr      *http2.Framer
	ctlFrames  int
	ctlPending atomic.Bool

	// mu guards the stream table, flow control and the connection's state.
	mu              sync.Mutex
	flowCond        sync.Cond // a send window grew, or a stream or the connection closed
	streams         map[uint32]*stream
	maxClientID     uint32
	handlers        int       // handler goroutines running (reset streams' included)
	unstarted       []*stream // streams waiting for a handler slot (rapid reset bound)
	peerInitialWin  int32     // SETTINGS_INITIAL_WINDOW_SIZE of the client
	peerMaxFrame    uint32    // SETTINGS_MAX_FRAME_SIZE of the client
	sendWin         int64     // connection-level send window
	recvAvail       int32     // connection-level receive window left to the client
	recvUnsent      int32     // consumed bytes not yet returned by WINDOW_UPDATE
	sawSettings     bool      // the client's first SETTINGS arrived
	unackedSettings int       // our SETTINGS the client has not acknowledged
	goAway          bool      // GOAWAY sent
	goAwayCode      http2.ErrCode
	goAwayLastID    uint32
	closing         bool // graceful close begun: reading only to discard
	closed          bool // the connection is over
	idleTimer       *time.Timer
}

func newConn(s *Server, nc net.Conn, ctx context.Context) *conn {
	c := &conn{
		srv:            s,
		cfg:            s.Config.fill(),
		nc:             nc,
		baseCtx:        ctx,
		remote:         nc.RemoteAddr().String(),
		streams:        map[uint32]*stream{},
		peerInitialWin: initialWindowSize,
		peerMaxFrame:   minMaxFrameSize,
		sendWin:        initialWindowSize,
		recvAvail:      initialWindowSize,
	}
	c.flowCond.L = &c.mu
	if tc, ok := nc.(interface{ ConnectionState() tls.ConnectionState }); ok {
		st := tc.ConnectionState()
		c.tls = &st
	}
	c.bw = bufio.NewWriterSize(nc, 16<<10)
	c.wfr = http2.NewFramer(c.bw, nil)
	c.ctlFr = http2.NewFramer(&c.ctl, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.henc.SetMaxDynamicTableSizeLimit(uint32(c.cfg.MaxEncoderHeaderTableSize))
	c.encTable.Store(-1)
	c.br = bufio.NewReaderSize(nc, 16<<10)
	c.fr = http2.NewFramer(io.Discard, c.br)
	c.fr.MaxHeaderListSize = c.maxHeaderListSize()
	c.fr.SetMaxReadFrameSize(uint32(c.cfg.MaxReadFrameSize))
	c.fr.SetReuseFrames()
	c.hr = h2head.NewReader(c.fr, c.br, hpack.NewDecoder(uint32(c.cfg.MaxDecoderHeaderTableSize), nil))
	// Held until serve has written the SETTINGS: nothing (a GOAWAY from
	// Shutdown) may go before them.
	c.wmu.Lock()
	return c
}

func (c *conn) maxHeaderListSize() uint32 {
	return uint32(c.cfg.MaxHeaderBytes + 10*32)
}

var (
	errStreamClosed     = errors.New("http2: stream closed")
	errClientGone       = errors.New("http2: client disconnected")
	errHandlerComplete  = errors.New("http2: request body closed due to handler exiting")
	errClosedBody       = errors.New("http2: request body closed by handler")
	errTooManyControl   = errors.New("h2server: too many control frames queued")
	errPrefaceTimeout   = errors.New("h2server: timeout waiting for the client preface")
	errPrefaceMismatch  = errors.New("h2server: bad client connection preface")
	errHandlerFinished  = errors.New("h2server: ResponseWriter used after the handler returned")
	errBodyOverDeclared = errors.New("http2: handler wrote more than declared Content-Length")
)

// serve runs the connection: its SETTINGS, the client's preface, then
// frames until the connection ends. It closes the connection.
func (c *conn) serve() error {
	defer c.teardown()
	if c.baseCtx.Done() != nil {
		// The streams' contexts end with the connection's: their
		// watches (ctxwatch) run then.
		stop := context.AfterFunc(c.baseCtx, c.fireWatches)
		defer stop()
	}
	if c.tls != nil && c.tls.Version < tls.VersionTLS12 {
		// RFC 9113 9.2: TLS 1.2 at least.
		c.unlockWriter()
		c.connError(http2.ErrCodeInadequateSecurity)
		c.drainAndClose()
		return fmt.Errorf("h2server: %s: TLS version %#x is too old for HTTP/2", c.remote, c.tls.Version)
	}
	settings := []http2.Setting{
		{ID: http2.SettingMaxFrameSize, Val: uint32(c.cfg.MaxReadFrameSize)},
		{ID: http2.SettingMaxConcurrentStreams, Val: uint32(c.cfg.MaxConcurrentStreams)},
		{ID: http2.SettingMaxHeaderListSize, Val: c.maxHeaderListSize()},
		{ID: http2.SettingHeaderTableSize, Val: uint32(c.cfg.MaxDecoderHeaderTableSize)},
		{ID: http2.SettingInitialWindowSize, Val: uint32(c.cfg.MaxReceiveBufferPerStream)},
	}
	c.unackedSettings = 1
	c.wfr.WriteSettings(settings...)
	if d := c.cfg.MaxReceiveBufferPerConnection - initialWindowSize; d > 0 {
		c.wfr.WriteWindowUpdate(0, uint32(d))
		c.recvAvail += int32(d)
	}
	err := c.flushLocked()
	c.unlockWriter()
	if err != nil {
		return err
	}
	if !c.sawPreface {
		c.nc.SetReadDeadline(time.Now().Add(c.cfg.PrefaceTimeout))
		var preface [len(http2.ClientPreface)]byte
		if _, err := io.ReadFull(c.br, preface[:]); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return errPrefaceTimeout
			}
			return err
		}
		if string(preface[:]) != http2.ClientPreface {
			c.connError(http2.ErrCodeProtocol)
			c.drainAndClose()
			return errPrefaceMismatch
		}
		c.nc.SetReadDeadline(time.Time{})
	}
	if c.cfg.IdleTimeout > 0 {
		c.mu.Lock()
		c.idleTimer = time.AfterFunc(c.cfg.IdleTimeout, c.onIdle)
		c.mu.Unlock()
	}
	for {
		f, err := c.hr.ReadFrame()
		if err == nil {
			err = c.processFrame(f)
		}
		if err == nil {
			continue
		}
		var se http2.StreamError
		var ce http2.ConnectionError
		switch {
		case c.isClosing():
			return nil // reading on only to drain what the client sent
		case errors.As(err, &se):
			c.resetStream(se.StreamID, se.Code, se)
			if c.isClosing() { // the RST_STREAM could not be queued
				c.drainAndClose()
				return nil
			}
		case errors.As(err, &ce):
			c.srv.logf("http2: connection error from %v: %v", c.remote, err) // why a client saw GOAWAY
			c.connError(http2.ErrCode(ce))
			c.drainAndClose()
			return nil
		case errors.Is(err, http2.ErrFrameTooLarge):
			c.connError(http2.ErrCodeFrameSize)
			c.drainAndClose()
			return nil
		case errors.Is(err, errTooManyControl):
			c.connError(http2.ErrCodeEnhanceYourCalm)
			c.drainAndClose()
			return nil
		default:
			if err == io.EOF || err == io.ErrUnexpectedEOF || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
	}
}

func (c *conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// fireWatches runs the watches of the streams open once the
// connection's context has ended. Each stream's context, its child, ends
// in the same cancel, maybe after this runs: each is waited for.
func (c *conn) fireWatches() {
	c.mu.Lock()
	open := make([]*stream, 0, len(c.streams))
	for _, st := range c.streams {
		open = append(open, st)
	}
	c.mu.Unlock()
	for _, st := range open {
		<-st.ctx.Done()
		st.ctx.Slot.Fire()
	}
}

// teardown ends the connection: every stream's request is cancelled and
// its writes fail.
func (c *conn) teardown() {
	c.mu.Lock()
	c.closed = true
	c.closing = true
	for _, st := range c.streams {
		c.closeStream(st, errClientGone)
	}
	c.unstarted = nil
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.flowCond.Broadcast()
	c.mu.Unlock()
	c.nc.Close()
}

// connError ends the connection for a protocol error: GOAWAY with code,
// then reading (and discarding) until the client closes or goAwayTimeout.
func (c *conn) connError(code http2.ErrCode) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.goAway, c.goAwayCode, c.goAwayLastID, c.closing = true, code, c.maxClientID, true
	for _, st := range c.streams {
		c.closeStream(st, errClientGone)
	}
	c.unstarted = nil
	last := c.goAwayLastID
	c.mu.Unlock()
	c.ctlMu.Lock()
	c.ctlFr.WriteGoAway(last, code, nil)
	c.ctlFrames++
	c.ctlPending.Store(true)
	c.ctlMu.Unlock()
}

// drainAndClose, on the reading goroutine after connError: the GOAWAY is
// written, then what the client sends is read and discarded (the framer's
// state may be broken) until it closes or goAwayTimeout passes.
func (c *conn) drainAndClose() {
	c.finishClose()
	io.Copy(io.Discard, c.br)
}

// startGracefulShutdown sends GOAWAY NO_ERROR with the last stream the
// connection processes; it closes once those streams are done.
func (c *conn) startGracefulShutdown() {
	c.mu.Lock()
	if c.goAway {
		c.mu.Unlock()
		return
	}
	c.goAway, c.goAwayCode, c.goAwayLastID = true, http2.ErrCodeNo, c.maxClientID
	last, empty := c.goAwayLastID, len(c.streams) == 0 && len(c.unstarted) == 0
	if empty {
		c.closing = true
	}
	c.mu.Unlock()
	c.writeControl(func(fr *http2.Framer) error { return fr.WriteGoAway(last, http2.ErrCodeNo, nil) })
	if empty {
		go c.finishClose()
	}
}

// finishClose flushes what is queued, half-closes the connection where it
// can, and lets the reading goroutine drain the client's bytes until EOF
// or goAwayTimeout (closing with unread bytes would reset the connection
// under the GOAWAY).
func (c *conn) finishClose() {
	// A handler's write to a client that does not read would hold the
	// writer for ever: bounded, as the connection is ending anyway.
	c.nc.SetWriteDeadline(time.Now().Add(goAwayTimeout))
	c.wmu.Lock()
	c.flushLocked()
	c.wmu.Unlock()
	c.nc.SetReadDeadline(time.Now().Add(goAwayTimeout))
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

func (c *conn) onIdle() {
	c.mu.Lock()
	idle := len(c.streams) == 0 && len(c.unstarted) == 0
	c.mu.Unlock()
	if idle {
		c.startGracefulShutdown()
	}
}

// writeControl writes a control frame (SETTINGS ACK, PING ACK,
// WINDOW_UPDATE, RST_STREAM, GOAWAY) now if the writer is free, or queues
// it for whoever holds it: the reading goroutine never waits for a
// handler's write. The queue is bounded (a PING flood against a client
// that does not read).
func (c *conn) writeControl(write func(*http2.Framer) error) error {
	c.ctlMu.Lock()
	if c.ctlFrames >= maxQueuedControl {
		c.ctlMu.Unlock()
		return errTooManyControl
	}
	write(c.ctlFr)
	c.ctlFrames++
	c.ctlPending.Store(true)
	c.ctlMu.Unlock()
	c.drainControl()
	return nil
}

// drainControl writes queued control frames if the writer is free. Every
// holder of wmu calls it after releasing it, so a frame queued while it
// held it is not left behind.
func (c *conn) drainControl() {
	for c.ctlPending.Load() && c.wmu.TryLock() {
		c.flushLocked()
		c.wmu.Unlock()
	}
}

func (c *conn) unlockWriter() {
	c.wmu.Unlock()
	c.drainControl()
}

// flushLocked (wmu held) appends the queued control frames and flushes.
func (c *conn) flushLocked() error {
	if c.ctlPending.Load() {
		c.ctlMu.Lock()
		c.bw.Write(c.ctl.Bytes())
		c.ctl.Reset()
		c.ctlFrames = 0
		c.ctlPending.Store(false)
		c.ctlMu.Unlock()
	}
	if c.werr != nil {
		return c.werr
	}
	if err := c.bw.Flush(); err != nil {
		c.werr = err
		c.nc.Close() // the reading goroutine ends the connection
	}
	return c.werr
}

// resetStream sends RST_STREAM for id and closes the stream if it is open.
func (c *conn) resetStream(id uint32, code http2.ErrCode, err error) {
	c.mu.Lock()
	if st := c.streams[id]; st != nil {
		c.closeStream(st, err)
	} else if id > c.maxClientID && id%2 == 1 {
		c.maxClientID = id // a HEADERS frame refused: the stream existed
	}
	c.mu.Unlock()
	if werr := c.writeControl(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, code) }); werr != nil {
		c.connError(http2.ErrCodeEnhanceYourCalm)
	}
}

type streamState uint8

const (
	stateOpen streamState = iota
	stateHalfClosedRemote
	stateClosed
)

// state is the state of stream id (RFC 9113 5.1) and the stream if it is
// open or half closed; c.mu held.
func (c *conn) state(id uint32) (bool, *stream) {
	if st := c.streams[id]; st != nil {
		return false, st
	}
	return id > c.maxClientID, nil // idle, or closed
}

// closeStream (c.mu held) closes st: its request is cancelled, its body
// reads end with err once the data buffered is read, its writes fail.
func (c *conn) closeStream(st *stream, err error) {
	if st.state == stateClosed {
		return
	}
	st.state = stateClosed
	delete(c.streams, st.id)
	if st.bodyErr == nil {
		st.bodyErr = err
	}
	st.closeErr = errStreamClosed
	if se, ok := err.(http2.StreamError); ok && se.Cause != nil {
		st.closeErr = se.Cause
	}
	st.bodyCond.Broadcast()
	if st.readTimer != nil {
		st.readTimer.Stop()
	}
	if st.writeTimer != nil {
		st.writeTimer.Stop()
	}
	st.cancel()
	c.flowCond.Broadcast()
	if len(c.streams) == 0 {
		if c.idleTimer != nil && !c.closed {
			c.idleTimer.Reset(c.cfg.IdleTimeout)
		}
		if c.goAway && !c.closing && len(c.unstarted) == 0 {
			c.closing = true
			go c.finishClose()
		}
	}
}

// inflowAdd returns consumed bytes to a receive window, and how much to
// announce in a WINDOW_UPDATE (0: not yet, batched as Go's server does).
func inflowAdd(avail, unsent *int32, n int32) int32 {
	u := *unsent + n
	if u < 4<<10 && u < *avail {
		*unsent = u
		return 0
	}
	*avail += u
	*unsent = 0
	return u
}

// creditLocked returns n bytes to the connection's window and, if st is
// not nil, m to the stream's; the WINDOW_UPDATEs to send are returned.
func (c *conn) creditLocked(st *stream, n, m int32) (conn, strm int32) {
	if n > 0 {
		conn = inflowAdd(&c.recvAvail, &c.recvUnsent, n)
	}
	if st != nil && m > 0 && st.state != stateClosed && st.bodyErr == nil {
		strm = inflowAdd(&st.recvAvail, &st.recvUnsent, m)
	}
	return conn, strm
}

func (c *conn) sendWindowUpdates(id uint32, conn, strm int32) error {
	if conn == 0 && strm == 0 {
		return nil
	}
	return c.writeControl(func(fr *http2.Framer) error {
		if conn > 0 {
			fr.WriteWindowUpdate(0, uint32(conn))
		}
		if strm > 0 {
			fr.WriteWindowUpdate(id, uint32(strm))
		}
		return nil
	})
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
	c.mu.Lock()
	ignore := c.closing || (c.goAway && id > c.goAwayLastID)
	c.mu.Unlock()
	if ignore {
		// RFC 9113 6.8: streams above the GOAWAY's last are not
		// processed; their DATA still counts against the connection's
		// window, which is given back.
		if d, ok := f.(*http2.DataFrame); ok {
			c.mu.Lock()
			if int32(d.Length) > c.recvAvail {
				c.mu.Unlock()
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
			c.recvAvail -= int32(d.Length)
			cw, _ := c.creditLocked(nil, int32(d.Length), 0)
			c.mu.Unlock()
			return c.sendWindowUpdates(0, cw, 0)
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
	case *http2.WindowUpdateFrame:
		return c.processWindowUpdate(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil // RFC 9113 6.7: never answered
		}
		data := f.Data
		return c.writeControl(func(fr *http2.Framer) error { return fr.WritePing(true, data) })
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		idle, st := c.state(id)
		if st != nil {
			c.closeStream(st, http2.StreamError{StreamID: id, Code: f.ErrCode})
		}
		c.mu.Unlock()
		if idle {
			return http2.ConnectionError(http2.ErrCodeProtocol) // RFC 9113 6.4
		}
		return nil
	case *http2.PriorityFrame:
		// Priorities are ignored (RFC 9113 5.3.2), but a stream cannot
		// depend on itself (5.3.1).
		if f.StreamDep == id {
			err := http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
			c.mu.Lock()
			if st := c.streams[id]; st != nil {
				c.closeStream(st, err)
			}
			c.mu.Unlock()
			return err
		}
		return nil
	case *http2.GoAwayFrame:
		c.startGracefulShutdown()
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // RFC 9113 8.4: clients cannot push
	default:
		return nil // unknown extension frames are ignored (RFC 9113 5.5)
	}
}

func (c *conn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		c.mu.Lock()
		c.unackedSettings--
		bad := c.unackedSettings < 0
		c.mu.Unlock()
		if bad {
			return http2.ConnectionError(http2.ErrCodeProtocol) // an ACK of nothing sent
		}
		return nil
	}
	if f.NumSettings() > maxSettingsEntries || f.HasDuplicates() {
		return http2.ConnectionError(http2.ErrCodeProtocol) // as Go's server
	}
	c.mu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingHeaderTableSize:
			c.encTable.Store(int64(min(s.Val, uint32(c.cfg.MaxEncoderHeaderTableSize))))
		case http2.SettingInitialWindowSize:
			// RFC 9113 6.9.2: applies to every open stream's window.
			delta := int64(s.Val) - int64(c.peerInitialWin)
			for _, st := range c.streams {
				st.sendWin += delta
				if st.sendWin > maxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
			c.peerInitialWin = int32(s.Val)
			c.flowCond.Broadcast()
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		}
		return nil
	})
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.writeControl(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
}

func (c *conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.sendWin += int64(f.Increment)
		if c.sendWin > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl) // RFC 9113 6.9.1
		}
		c.flowCond.Broadcast()
		return nil
	}
	idle, st := c.state(f.StreamID)
	if idle {
		return http2.ConnectionError(http2.ErrCodeProtocol) // RFC 9113 5.1
	}
	if st == nil {
		return nil // a closed stream's: allowed (RFC 9113 5.1)
	}
	st.sendWin += int64(f.Increment)
	if st.sendWin > maxWindow {
		err := http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
		c.closeStream(st, err)
		return err
	}
	c.flowCond.Broadcast()
	return nil
}

func (c *conn) processData(f *http2.DataFrame) error {
	id := f.StreamID
	data := f.Data()
	flen := int32(f.Length)
	c.mu.Lock()
	idle, st := c.state(id)
	if idle {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol) // RFC 9113 5.1, 6.1
	}
	if flen > c.recvAvail {
		c.mu.Unlock()
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
		st.bodyErr = fmt.Errorf("http2: sender tried to send more than declared Content-Length of %d bytes", st.declLen)
		serr = http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	if serr != nil {
		if st != nil {
			// Closed now, under the lock: the handler must not finish its
			// response (and RST_STREAM NO_ERROR) before this RST_STREAM.
			c.closeStream(st, serr)
		}
		cw, _ := c.creditLocked(nil, flen, 0)
		c.mu.Unlock()
		if err := c.sendWindowUpdates(0, cw, 0); err != nil {
			return err
		}
		return serr
	}
	st.recvAvail -= flen
	st.gotLen += int64(len(data))
	pad := flen - int32(len(data))
	if st.bodyBroken {
		pad = flen // nobody reads it: the connection's window is given back now
		st.recvAvail += int32(len(data))
	} else if len(data) > 0 {
		if st.bodyOff > 0 && st.bodyOff >= len(st.body)/2 {
			n := copy(st.body, st.body[st.bodyOff:])
			st.body, st.bodyOff = st.body[:n], 0
		}
		st.body = append(st.body, data...)
		st.bodyCond.Signal()
	}
	var endErr error
	if f.StreamEnded() {
		endErr = c.endStream(st)
	}
	var cw, sw int32
	if pad > 0 {
		cw, sw = c.creditLocked(st, pad, pad)
	}
	c.mu.Unlock()
	if err := c.sendWindowUpdates(id, cw, sw); err != nil {
		return err
	}
	return endErr
}

// endStream (c.mu held): the client's END_STREAM. A body shorter than its
// content-length is malformed (RFC 9113 8.1.1): the stream is closed and
// the error returned, for its RST_STREAM PROTOCOL_ERROR (Go's server only
// fails the body's read, and answers).
func (c *conn) endStream(st *stream) error {
	if st.bodyErr == nil && st.declLen >= 0 && st.declLen != st.gotLen {
		st.bodyErr = fmt.Errorf("http2: request declared a Content-Length of %d but only wrote %d bytes", st.declLen, st.gotLen)
		err := http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
		c.closeStream(st, err)
		return err
	}
	if st.bodyErr == nil {
		st.bodyErr = io.EOF
	}
	st.state = stateHalfClosedRemote
	st.bodyCond.Broadcast()
	return nil
}

func (c *conn) processHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 != 1 {
		return http2.ConnectionError(http2.ErrCodeProtocol) // RFC 9113 5.1.1
	}
	c.mu.Lock()
	if st := c.streams[id]; st != nil {
		err := c.processTrailers(st, f)
		c.mu.Unlock()
		return err
	}
	if id <= c.maxClientID {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol) // RFC 9113 5.1.1: ids only go up
	}
	c.maxClientID = id
	defer c.mu.Unlock()
	if f.HasPriority() && f.Priority.StreamDep == id {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol} // RFC 9113 5.3.1
	}
	if len(c.streams) >= c.cfg.MaxConcurrentStreams || c.closing {
		// RFC 9113 5.1.2: REFUSED_STREAM, which the client may retry.
		// (closing: the idle timeout's GOAWAY raced this stream.)
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	}
	st, err := c.newStream(f)
	if err != nil {
		return err
	}
	c.streams[id] = st
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	// Handlers running at once are bounded by the streams advertised, reset
	// ones included (CVE-2023-44487): the others wait, and a client that
	// makes more than four times that wait is told to calm down, as Go's
	// server does.
	if c.handlers < c.cfg.MaxConcurrentStreams {
		c.handlers++
		c.srv.workers.run(func() { c.runHandler(st) })
		return nil
	}
	if len(c.unstarted) > 4*c.cfg.MaxConcurrentStreams {
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	c.unstarted = append(c.unstarted, st)
	return nil
}

// processTrailers (c.mu held): a HEADERS frame on an open stream.
func (c *conn) processTrailers(st *stream, f *http2.MetaHeadersFrame) error {
	if st.state != stateOpen {
		err := http2.StreamError{StreamID: st.id, Code: http2.ErrCodeStreamClosed} // RFC 9113 5.1
		c.closeStream(st, err)
		return err
	}
	if st.gotTrailers {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	st.gotTrailers = true
	if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
		err := http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol} // RFC 9113 8.1
		c.closeStream(st, err)
		return err
	}
	if st.req.Trailer != nil {
		for _, hf := range f.RegularFields() {
			key := fieldname.Canonical(hf.Name)
			if !httpguts.ValidTrailerHeader(key) {
				err := http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
				c.closeStream(st, err)
				return err
			}
			if st.trailer == nil {
				st.trailer = http.Header{}
			}
			st.trailer[key] = append(st.trailer[key], hf.Value)
		}
	}
	return c.endStream(st)
}

// runHandler serves st's request on the calling goroutine, then those of
// streams waiting for a handler slot.
func (c *conn) runHandler(st *stream) {
	for st != nil {
		c.serveStream(st)
		st = c.handlerDone()
	}
}

// handlerDone frees a handler slot and returns the waiting stream to serve
// in it, if any.
func (c *conn) handlerDone() *stream {
	var credit int32
	defer func() { c.sendWindowUpdates(0, credit, 0) }()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handlers--
	var next *stream
	for len(c.unstarted) > 0 && c.handlers < c.cfg.MaxConcurrentStreams {
		u := c.unstarted[0]
		c.unstarted = c.unstarted[1:]
		if u.state == stateClosed {
			credit += c.discardBodyLocked(u, errClientGone) // reset before it started
			continue
		}
		c.handlers++
		next = u
		break
	}
	if len(c.unstarted) == 0 {
		c.unstarted = nil
	}
	if next == nil && c.goAway && !c.closing && len(c.streams) == 0 && len(c.unstarted) == 0 {
		c.closing = true
		go c.finishClose()
	}
	return next
}

func (c *conn) serveStream(st *stream) {
	rw := st.rw
	done := false
	defer func() {
		if !done {
			// A panic, or runtime.Goexit: the response is cut short.
			e := recover()
			if e != nil && e != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.srv.logf("http2: panic serving %v: %v\n%s", c.remote, e, buf)
			}
			c.resetStream(st.id, http2.ErrCodeInternal, errStreamClosed)
			if e == nil {
				// runtime.Goexit: this goroutine ends, the next
				// waiting stream gets one of its own.
				defer func() {
					if next := c.handlerDone(); next != nil {
						c.srv.workers.run(func() { c.runHandler(next) })
					}
				}()
			}
		}
		rw.release()
		c.discardBody(st, errHandlerComplete)
		st.cancel()
	}()
	h := st.handler
	if h == nil {
		h = c.handler
	}
	if h == nil {
		h = c.srv.Handler
	}
	if h == nil {
		h = http.DefaultServeMux
	}
	h.ServeHTTP(rw, st.req)
	rw.finish()
	done = true
}
