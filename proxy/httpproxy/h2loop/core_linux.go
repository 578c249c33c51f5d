package h2loop

import (
	"bytes"
	"errors"
	"log"
	"net/http"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
)

// The connection's core: what an HTTP/2 connection on a loop is whichever
// side it is on. The server's conn and the client's ClientConn embed it and
// keep only their own rules (the server: requests, their dispatch and the
// handler slots; the client: opening streams and reading responses), so
// that the frames both write, flow control both ways, SETTINGS, PING and
// the connection's errors are one code.

// role is what the core asks of the side that embeds it.
type role interface {
	// read processes the whole frames buffered (the server reads the
	// client's preface first), with the core's readFrames.
	read()
	// processFrame handles a frame by the role's rules; what it leaves to
	// the core goes to processConnFrame.
	processFrame(f http2.Frame) error
	// streamFailed ends (or just resets) the stream a frame's StreamError
	// names.
	streamFailed(se http2.StreamError)
	// connError ends the connection for a protocol error: GOAWAY with
	// code, the streams ended, then drain.
	connError(code http2.ErrCode, err error)
	// lost ends the connection at once: the Transport failed, or the peer
	// closed it.
	lost()
	// close closes the Transport: the drain is over.
	close()
	// settle runs after frames were processed, at the end of a readiness
	// callback: the client closes a connection that takes no new stream
	// once its last is done.
	settle()
	// flow is stream id's send and receive state, for a WINDOW_UPDATE:
	// nil if closed; idle, a stream never opened.
	flow(id uint32) (fl *streamFlow, idle bool)
	// windowOverflow: a WINDOW_UPDATE took stream id's send window past
	// 2^31-1 (a stream error, RFC 9113 6.9.1); the error, if any, goes to
	// frameError.
	windowOverflow(id uint32) error
	// moveSendWindows adds delta to every open stream's send window
	// (SETTINGS_INITIAL_WINDOW_SIZE): a FLOW_CONTROL_ERROR if one
	// overflows.
	moveSendWindows(delta int64) error
	// setting applies a setting of the peer's that only the role takes.
	setting(s http2.Setting) error
}

// connCore is the connection's state and code both roles share: the
// frames written and their flush, the peer's settings, the send and
// receive windows, the streams waiting for the windows or the socket.
type connCore struct {
	role role
	lp   *evloop.Loop
	frameIn

	out  bytes.Buffer // frames written, not yet given to ec
	wfr  *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer

	// The 4-byte fields together: the server's conn stays in the 512-byte
	// size class it had before the core.
	blocked         []flowStream // streams waiting for the windows or the socket
	sendWin         int64
	peerInitialWin  int32
	peerMaxFrame    uint32
	recvAvail       int32
	recvUnsent      int32
	unackedSettings int32         // SETTINGS sent and not acknowledged yet
	encoderTable    uint32        // the HPACK table's bound, whatever the peer allows
	slowPeer        error         // connError's when the peer does not read its frames
	timer           *evloop.Timer // the server's preface and idle timeouts; the drain's end
	closing         bool          // draining after GOAWAY: reading only to discard, then closed
	closed          bool
	processing      bool // in a readiness callback: the flush is at its end
}

// initCore ties the core to its role and loop, with RFC 9113's initial
// windows and frame size until the peer's SETTINGS say otherwise.
func (c *connCore) initCore(r role, lp *evloop.Loop, slowPeer error) {
	c.role, c.lp, c.slowPeer = r, lp, slowPeer
	c.peerInitialWin = initialWindowSize
	c.peerMaxFrame = minMaxFrameSize
	c.sendWin = initialWindowSize
	c.recvAvail = initialWindowSize
}

// initWriter sets the frame writer and the HPACK encoder up (once ec is
// known, with the reader: begin).
func (c *connCore) initWriter(encoderTable uint32) {
	c.wfr = http2.NewFramer(&c.out, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.henc.SetMaxDynamicTableSizeLimit(encoderTable)
	c.encoderTable = encoderTable
}

// readable processes the whole frames buffered, or the Transport's end.
func (c *connCore) readable() {
	if c.closed {
		return
	}
	c.processing = true
	c.role.read()
	c.processing = false
	if c.closed {
		return
	}
	c.flush()
	c.role.settle()
	if !c.closing && !c.closed && (c.ec.EOF() || c.ec.Err() != nil) {
		c.role.lost() // what is left of a frame never ends
	}
}

// written resumes what waited for the socket: the frames not read while
// too much waited to be written, the streams' DATA.
func (c *connCore) written() {
	if c.closed || c.closing {
		return
	}
	c.processing = true
	c.role.read()
	c.processing = false
	c.flush()
	c.role.settle()
}

// readFrames processes the frames buffered while they are whole (and
// discards all while draining).
func (c *connCore) readFrames() {
	for !c.closed {
		if c.closing {
			c.consume(len(c.input())) // discarded until the peer closes
			if c.ec.EOF() || c.ec.Err() != nil {
				c.role.close()
			}
			return
		}
		if c.ec.Pending() > maxPendingRead {
			return // written resumes
		}
		b := c.input()
		f, n, err := c.frame(b)
		if n == 0 && err == nil {
			if c.keep(b) {
				continue
			}
			return
		}
		if err == nil {
			err = c.role.processFrame(f)
		}
		if err != nil {
			c.frameError(err)
		}
		c.role.settle()
	}
}

// frameError ends what err ends: the stream, or the connection.
func (c *connCore) frameError(err error) {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		c.role.streamFailed(se)
	case errors.As(err, &ce):
		c.role.connError(http2.ErrCode(ce), err)
	case errors.Is(err, http2.ErrFrameTooLarge):
		c.role.connError(http2.ErrCodeFrameSize, err)
	default:
		c.role.connError(http2.ErrCodeProtocol, err)
	}
}

// processConnFrame handles the frames whose rules are the same on both
// sides: WINDOW_UPDATE, PING, PUSH_PROMISE (RFC 9113 8.4: a client cannot
// push, and the client's SETTINGS_ENABLE_PUSH is 0); others are ignored
// (RFC 9113 5.5: unknown extension frames).
func (c *connCore) processConnFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.WindowUpdateFrame:
		return c.processWindowUpdate(f)
	case *http2.PingFrame:
		if !f.IsAck() { // RFC 9113 6.7: an ACK is never answered (and neither side sends PINGs)
			c.wfr.WritePing(true, f.Data)
		}
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	default:
		return nil
	}
}

// applySettings applies the peer's SETTINGS, or its ACK of ours: the
// settings both sides take, and the role's own. grew says the streams'
// send windows grew: ackSettings wakes them.
func (c *connCore) applySettings(f *http2.SettingsFrame) (grew bool, err error) {
	if f.IsAck() {
		c.unackedSettings--
		if c.unackedSettings < 0 {
			return false, http2.ConnectionError(http2.ErrCodeProtocol) // an ACK of nothing sent
		}
		return false, nil
	}
	err = f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(min(s.Val, c.encoderTable))
		case http2.SettingInitialWindowSize:
			// RFC 9113 6.9.2: applies to every open stream's window.
			delta := int64(s.Val) - int64(c.peerInitialWin)
			if err := c.role.moveSendWindows(delta); err != nil {
				return err
			}
			c.peerInitialWin = int32(s.Val)
			grew = grew || delta > 0
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		default:
			return c.role.setting(s)
		}
		return nil
	})
	return grew, err
}

// ackSettings acknowledges the peer's SETTINGS once applied, and lets the
// streams whose windows grew write.
func (c *connCore) ackSettings(grew bool) {
	c.wfr.WriteSettingsAck()
	if grew {
		c.wakeBlocked()
	}
}

func (c *connCore) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	if f.StreamID == 0 {
		c.sendWin += int64(f.Increment)
		if c.sendWin > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl) // RFC 9113 6.9.1
		}
		c.wakeBlocked()
		return nil
	}
	fl, idle := c.role.flow(f.StreamID)
	if idle {
		return http2.ConnectionError(http2.ErrCodeProtocol) // RFC 9113 5.1
	}
	if fl == nil {
		return nil // a closed stream's: allowed (RFC 9113 5.1)
	}
	fl.sendWin += int64(f.Increment)
	if fl.sendWin > maxWindow {
		return c.role.windowOverflow(f.StreamID)
	}
	if fl.blocked {
		c.wakeBlocked()
	}
	return nil
}

// flush gives the frames written to the socket, then lets the streams
// that waited for room in it write, while there is room.
func (c *connCore) flush() {
	for !c.closed {
		if c.out.Len() > 0 {
			if err := c.ec.Write(c.out.Bytes()); err != nil {
				c.out.Reset()
				c.role.lost()
				return
			}
			c.out.Reset()
			if c.ec.Pending() > maxPendingCalm && !c.closing {
				c.role.connError(http2.ErrCodeEnhanceYourCalm, c.slowPeer)
				return
			}
		}
		if c.processing || len(c.blocked) == 0 || c.sendWin <= 0 || c.ec.Pending() > maxPending {
			return
		}
		c.processing = true
		c.wakeBlocked()
		c.processing = false
		if c.out.Len() == 0 {
			return
		}
	}
}

// drain writes what is pending, half-closes, and reads on (discarding)
// until the peer closes or goAwayTimeout passes: closing with unread bytes
// would send a TCP RST that can destroy the GOAWAY in flight.
func (c *connCore) drain() {
	c.closing = true
	c.flush()
	if c.closed {
		return
	}
	c.ec.CloseWrite()
	if c.timer == nil {
		c.timer = c.lp.After(goAwayTimeout, c.role.close)
	} else {
		c.timer.Reset(goAwayTimeout)
	}
	c.consume(len(c.input()))
	if c.ec.EOF() || c.ec.Err() != nil {
		c.role.close()
	}
}

// closeTransport lets go of the Transport and what waited on it, at the
// end of the role's close.
func (c *connCore) closeTransport() {
	if c.timer != nil {
		c.timer.Stop()
	}
	c.ec.Close()
	c.acc = nil
	c.blocked = nil
}

// credit gives n bytes back to the connection's receive window, writing
// the WINDOW_UPDATE when it is due (none once the connection is ending).
func (c *connCore) credit(n int32) {
	if n <= 0 || c.closed || c.closing {
		return
	}
	if u := inflowAdd(&c.recvAvail, &c.recvUnsent, n); u > 0 {
		c.wfr.WriteWindowUpdate(0, uint32(u))
	}
}

// writeBlock writes the header block in hbuf as HEADERS and CONTINUATION
// frames of at most the peer's frame size.
func (c *connCore) writeBlock(id uint32, end bool) {
	writeHeaderBlock(c.wfr, id, c.hbuf.Bytes(), c.peerMaxFrame, end)
}

// streamFlow is a stream's flow control both ways, in both roles'
// streams.
type streamFlow struct {
	id         uint32
	sendWin    int64
	recvAvail  int32
	recvUnsent int32
	unconsumed int32 // DATA given to the receiver and not Consumed yet
	blocked    bool  // in the core's blocked
	ended      bool  // END_STREAM or RST_STREAM sent
}

// flowStream is a stream of either role, as the core writes it.
type flowStream interface {
	flow() *streamFlow
	// Open reports whether the stream may still be written to.
	Open() bool
	// endSent: END_STREAM went out, on DATA or trailers (the server
	// closes the stream, or resets the request's rest).
	endSent()
	// wants says whether the stream's receiver is to hear Writable.
	wants() bool
	// writable tells the stream's receiver that it may write again.
	writable()
}

// wakeBlocked tells the streams that waited for the windows or the socket
// that they may write, while they can.
func (c *connCore) wakeBlocked() {
	if len(c.blocked) == 0 || c.sendWin <= 0 || c.ec.Pending()+c.out.Len() > maxPending {
		return
	}
	blocked := c.blocked
	c.blocked = nil
	for _, st := range blocked {
		st.flow().blocked = false // set again by a Write that stops short
	}
	for i, st := range blocked {
		fl := st.flow()
		switch {
		case fl.blocked || !st.wants():
		case fl.sendWin <= 0:
			c.block(st, fl) // its own window: a WINDOW_UPDATE for it wakes it
		default:
			st.writable()
		}
		if c.closed {
			return
		}
		if c.sendWin <= 0 || c.ec.Pending()+c.out.Len() > maxPending {
			for _, rest := range blocked[i+1:] {
				c.block(rest, rest.flow())
			}
			return
		}
	}
}

// block puts st among the streams waiting for the windows or the socket.
func (c *connCore) block(st flowStream, fl *streamFlow) {
	if !fl.blocked {
		fl.blocked = true
		c.blocked = append(c.blocked, st)
	}
}

// writeData writes p as st's DATA, as much as the stream's and the
// connection's send windows and the socket's backlog allow; with end, the
// last of p carries END_STREAM (an empty p: an empty DATA frame with it),
// and st hears endSent. Less than len(p) taken: st waits among the
// blocked, for Writable (and end is not acted on).
func (c *connCore) writeData(st flowStream, p []byte, end bool) int {
	if !st.Open() {
		return 0
	}
	fl := st.flow()
	n := 0
	for {
		if len(p) == n {
			if end {
				c.wfr.WriteData(fl.id, true, nil)
				st.endSent()
			}
			break
		}
		room := min(int64(len(p)-n), fl.sendWin, c.sendWin, int64(c.peerMaxFrame))
		if c.ec.Pending()+c.out.Len() > maxPending {
			room = 0
		}
		if room <= 0 {
			c.block(st, fl)
			break
		}
		chunk := p[n : n+int(room)]
		n += len(chunk)
		fl.sendWin -= room
		c.sendWin -= room
		last := end && n == len(p)
		c.wfr.WriteData(fl.id, last, chunk)
		if last {
			st.endSent()
			break
		}
	}
	return n
}

// beginTrailers starts the trailers that end st: true, the caller encodes
// h into hbuf and calls endTrailers; false, nothing to encode (st is not
// open, or h is empty: an empty DATA frame with END_STREAM went).
func (c *connCore) beginTrailers(st flowStream, h http.Header) bool {
	if !st.Open() {
		return false
	}
	if len(h) == 0 {
		c.writeData(st, nil, true)
		return false
	}
	c.hbuf.Reset()
	return true
}

// endTrailers writes the trailers encoded in hbuf with END_STREAM.
func (c *connCore) endTrailers(st flowStream) {
	c.writeBlock(st.flow().id, true)
	st.endSent()
}

// consumed gives n bytes of the DATA the receiver was given back to the
// windows: the connection's, and the stream's while its peer still sends
// on it.
func (c *connCore) consumed(fl *streamFlow, n int, sending bool) {
	if n <= 0 || c.closed || c.closing {
		return
	}
	m := min(int32(n), fl.unconsumed)
	fl.unconsumed -= m
	c.credit(m)
	if sending {
		c.creditStream(fl, m)
	}
}

// received takes a DATA frame of flen bytes, n of them data, out of a
// stream's receive window (the connection's was already): its padding goes
// back to both at once.
func (c *connCore) received(fl *streamFlow, flen int32, n int) {
	fl.recvAvail -= flen
	if pad := flen - int32(n); pad > 0 {
		c.credit(pad)
		c.creditStream(fl, pad)
	}
}

// creditStream gives n bytes back to a stream's receive window, writing
// its WINDOW_UPDATE when it is due.
func (c *connCore) creditStream(fl *streamFlow, n int32) {
	if u := inflowAdd(&fl.recvAvail, &fl.recvUnsent, n); u > 0 {
		c.wfr.WriteWindowUpdate(fl.id, uint32(u))
	}
}

// logTo logs with logf, the role's configured one, or log.Printf if it is
// nil.
func logTo(logf func(format string, args ...any), format string, args ...any) {
	if logf != nil {
		logf(format, args...)
		return
	}
	log.Printf(format, args...)
}
