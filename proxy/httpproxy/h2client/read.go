package h2client

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/internal/h2head"
	"github.com/meridian-mesh/meridian/proxy/internal/h2msg"
)

// readLoop is the connection's one reader: it reads frames and delivers
// them to their streams until the connection ends.
func (cc *conn) readLoop() {
	defer close(cc.readerDone)
	gotSettings := false
	for {
		if !cc.nextFrameBuffered() {
			// About to wait for the socket: wake the callers whose
			// responses came in what was read.
			cc.wakePending()
		}
		f, err := cc.hr.ReadFrame()
		if cc.br.Buffered() == 0 {
			cc.lastRead.Store(time.Now().UnixNano())
		}
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				cc.streamError(se.StreamID, se.Code, fmt.Errorf("h2client: stream error from the server: %v", se))
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				cc.connError(http2.ErrCode(ce), err.Error())
			} else {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				cc.close(fmt.Errorf("h2client: reading from the server: %w", err))
			}
			cc.wakePending()
			return
		}
		if !gotSettings {
			if _, ok := f.(*http2.SettingsFrame); !ok {
				cc.connError(http2.ErrCodeProtocol, fmt.Sprintf("received %T before a SETTINGS frame", f))
				cc.wakePending()
				return
			}
			gotSettings = true
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			err = cc.processHeaders(f)
		case *http2.DataFrame:
			err = cc.processData(f)
		case *http2.GoAwayFrame:
			cc.processGoAway(f)
		case *http2.RSTStreamFrame:
			cc.processReset(f)
		case *http2.SettingsFrame:
			err = cc.processSettings(f)
		case *http2.PushPromiseFrame:
			// SETTINGS_ENABLE_PUSH is 0 (RFC 9113 8.4).
			err = http2.ConnectionError(http2.ErrCodeProtocol)
		case *http2.WindowUpdateFrame:
			err = cc.processWindowUpdate(f)
		case *http2.PingFrame:
			err = cc.processPing(f)
		}
		if err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				cc.connError(http2.ErrCode(ce), fmt.Sprintf("%v frame: %v", f.Header().Type, err))
			} else {
				cc.close(err)
			}
			cc.wakePending()
			return
		}
	}
}

// nextFrameBuffered reports whether the next frame is whole in the read
// buffer (reading it will not wait for the socket).
func (cc *conn) nextFrameBuffered() bool {
	n := cc.br.Buffered()
	if n < 9 {
		return false
	}
	h, _ := cc.br.Peek(9)
	return n >= 9+(int(h[0])<<16|int(h[1])<<8|int(h[2]))
}

func (cc *conn) wakePending() {
	if len(cc.pending) == 0 {
		return
	}
	for i, cs := range cc.pending {
		close(cs.headersDone)
		cc.pending[i] = nil
	}
	cc.pending = cc.pending[:0]
}

// streamByID returns an open stream (c.mu held).
func (cc *conn) streamLocked(id uint32) *stream {
	cs := cc.streams[id]
	if cs == nil || cs.removed {
		return nil
	}
	return cs
}

// streamError resets a stream for an error of the server's.
func (cc *conn) streamError(id uint32, code http2.ErrCode, err error) {
	cc.mu.Lock()
	cs := cc.streamLocked(id)
	cc.mu.Unlock()
	if cs == nil {
		cc.writeReset(id, code)
		return
	}
	cs.resetWith(code, err)
}

// resetWith fails the stream and sends RST_STREAM with code.
func (cs *stream) resetWith(code http2.ErrCode, err error) {
	cc := cs.cc
	cc.mu.Lock()
	if cs.removed {
		cc.mu.Unlock()
		return
	}
	cs.failLocked(err)
	connAdd := cs.dropBufferedLocked()
	rb := cs.closeReqBodyLocked()
	cs.removeLocked()
	cc.mu.Unlock()
	if rb != nil {
		go rb.Close()
	}
	cc.writeReset(cs.id, code)
	cc.writeWindowUpdates(0, connAdd, 0)
}

func (cc *conn) processHeaders(f *http2.MetaHeadersFrame) error {
	cc.mu.Lock()
	cs := cc.streamLocked(f.StreamID)
	cc.mu.Unlock()
	if cs == nil {
		// A stream cancelled while its response was on the way (the
		// framer has decoded the block: HPACK state is kept).
		return nil
	}
	cc.mu.Lock()
	readClosed, pastHeaders := cs.readClosed, cs.pastHeaders
	cc.mu.Unlock()
	if readClosed {
		cs.resetWith(http2.ErrCodeProtocol, errors.New("h2client: protocol error: HEADERS after END_STREAM"))
		return nil
	}
	if pastHeaders {
		return cc.processTrailers(cs, f)
	}
	if cs.trace != nil && cs.trace.GotFirstResponseByte != nil {
		cs.trace.GotFirstResponseByte()
	}
	resp, err := cs.handleResponse(f)
	if err != nil {
		cs.resetWith(http2.ErrCodeProtocol, err)
		return nil
	}
	if resp == nil {
		return nil // 1xx
	}
	cc.mu.Lock()
	if cs.removed {
		cc.mu.Unlock()
		return nil
	}
	cs.pastHeaders = true
	cs.resp = resp
	cc.pending = append(cc.pending, cs)
	if f.StreamEnded() {
		cs.endStreamLocked()
	}
	cc.mu.Unlock()
	return nil
}

// handleResponse builds the response of a HEADERS block (Go's transport's
// handleResponse, its head read by h2msg); nil, nil for a 1xx, reported
// to the trace.
func (cs *stream) handleResponse(f *http2.MetaHeadersFrame) (*http.Response, error) {
	r, err := h2msg.ParseResponse(f)
	if err != nil {
		return nil, err
	}
	code := r.Code
	if r.Informational() {
		if code == http.StatusContinue {
			if cs.trace != nil && cs.trace.Got100Continue != nil {
				cs.trace.Got100Continue()
			}
			if cs.on100 != nil {
				select {
				case cs.on100 <- struct{}{}:
				default:
				}
			}
		}
		if cs.trace != nil && cs.trace.Got1xxResponse != nil {
			if err := cs.trace.Got1xxResponse(code, textproto.MIMEHeader(r.Header)); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	resp := &http.Response{
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        r.Header,
		Trailer:       r.Trailer,
		StatusCode:    code,
		Status:        statusLine(r.Status, code),
		Request:       cs.req,
		ContentLength: r.ContentLength,
	}
	if resp.ContentLength < 0 && f.StreamEnded() && !cs.isHead {
		resp.ContentLength = 0
	}
	if cs.isHead {
		resp.Body = http.NoBody
		return resp, nil
	}
	if f.StreamEnded() {
		if resp.ContentLength > 0 {
			resp.Body = missingBody{}
		} else {
			resp.Body = http.NoBody
		}
		return resp, nil
	}
	cs.declLen = resp.ContentLength
	resp.Body = (*responseBody)(cs)
	return resp, nil
}

// statusLines are Go's transport's Status strings of the codes 100-599
// ("200 OK"), made once instead of per response.
var statusLines = func() (s [600]string) {
	for code := 100; code < len(s); code++ {
		s[code] = strconv.Itoa(code) + " " + http.StatusText(code)
	}
	return s
}()

// statusLine is status + " " + http.StatusText(code), from statusLines
// when status is the code's own three digits.
func statusLine(status string, code int) string {
	if code >= 100 && code < len(statusLines) && statusLines[code][:3] == status {
		return statusLines[code]
	}
	return status + " " + http.StatusText(code)
}

// missingBody is the body of a response that declared content and ended
// without it.
type missingBody struct{}

func (missingBody) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }
func (missingBody) Close() error             { return nil }

func (cc *conn) processTrailers(cs *stream, f *http2.MetaHeadersFrame) error {
	if cs.gotTrailers || !f.StreamEnded() || len(f.PseudoFields()) > 0 {
		// A second trailer block, trailers without END_STREAM, or with
		// pseudo-fields: Go's transport's connection error.
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if f.Truncated {
		cs.resetWith(http2.ErrCodeProtocol, errors.New("h2client: response trailer list larger than the client's limit"))
		return nil
	}
	trailer := h2head.Header(f.RegularFields())
	cc.mu.Lock()
	if cs.removed {
		cc.mu.Unlock()
		return nil
	}
	cs.gotTrailers = true
	cs.trailer = trailer
	cs.endStreamLocked()
	cc.mu.Unlock()
	return nil
}

// endStreamLocked: END_STREAM came. A declared length must have been met
// (RFC 9113 8.1.1); a request body still being sent is stopped (the
// response is complete: RST_STREAM CANCEL, as Go's transport).
func (cs *stream) endStreamLocked() {
	if cs.declLen >= 0 && cs.gotLen != cs.declLen && !cs.isHead {
		// Malformed (RFC 9113 8.1.1): the stream's PROTOCOL_ERROR.
		cs.failLocked(fmt.Errorf("h2client: response body of %d bytes, Content-Length %d", cs.gotLen, cs.declLen))
		connAdd := cs.dropBufferedLocked()
		rb := cs.closeReqBodyLocked()
		cs.removeLocked()
		cc, id := cs.cc, cs.id
		go func() {
			if rb != nil {
				rb.Close()
			}
			cc.writeReset(id, http2.ErrCodeProtocol)
			cc.writeWindowUpdates(0, connAdd, 0)
		}()
		return
	}
	cs.readClosed = true
	cs.readErr = io.EOF
	cs.readCond.Broadcast()
	if !cs.writeClosed {
		// The request body is not all sent (or waits for 100-continue):
		// stop it. Closing the request body ends a Read its writer may
		// block in; the writer then finds the stream gone.
		go cs.abort(nil, true)
		return
	}
	cs.maybeRemoveLocked()
}

func (cc *conn) processData(f *http2.DataFrame) error {
	data := f.Data()
	cc.mu.Lock()
	cs := cc.streamLocked(f.StreamID)
	if cs == nil {
		if f.StreamID >= cc.nextID {
			cc.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeProtocol) // never opened
		}
		// A stream we are done with (cancelled): give the connection's
		// window back.
		var connAdd int32
		if f.Length > 0 {
			if !cc.inflow.take(f.Length) {
				cc.mu.Unlock()
				return http2.ConnectionError(http2.ErrCodeFlowControl)
			}
			connAdd = cc.inflow.add(int(f.Length))
		}
		cc.mu.Unlock()
		cc.writeWindowUpdates(0, connAdd, 0)
		return nil
	}
	if cs.readClosed || !cs.pastHeaders || (cs.isHead && len(data) > 0) {
		cc.mu.Unlock()
		why := "DATA after END_STREAM"
		if !cs.pastHeaders {
			why = "DATA before HEADERS"
		} else if cs.isHead {
			why = "DATA on a HEAD request"
		}
		// Its flow control still counts for the connection.
		cc.mu.Lock()
		ok := cc.inflow.take(f.Length)
		connAdd := cc.inflow.add(int(f.Length))
		cc.mu.Unlock()
		if !ok {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		cc.writeWindowUpdates(0, connAdd, 0)
		cs.resetWith(http2.ErrCodeProtocol, errors.New("h2client: protocol error: "+why))
		return nil
	}
	if f.Length > 0 {
		if f.Length > uint32(cc.inflow.avail) {
			cc.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		if f.Length > uint32(cs.inflow.avail) {
			cc.inflow.take(f.Length)
			connAdd := cc.inflow.add(int(f.Length))
			cc.mu.Unlock()
			cc.writeWindowUpdates(0, connAdd, 0)
			cs.resetWith(http2.ErrCodeFlowControl, errors.New("h2client: the server sent more than the stream's window"))
			return nil
		}
		cc.inflow.take(f.Length)
		cs.inflow.take(f.Length)
		var connAdd, streamAdd int32
		if pad := int(f.Length) - len(data); pad > 0 {
			// Padding is never read: its credit goes back now.
			connAdd = cc.inflow.add(pad)
			streamAdd = cs.inflow.add(pad)
		}
		cs.gotLen += int64(len(data))
		if cs.declLen >= 0 && cs.gotLen > cs.declLen {
			cc.mu.Unlock()
			cc.writeWindowUpdates(cs.id, connAdd, streamAdd)
			cs.resetWith(http2.ErrCodeProtocol, fmt.Errorf("h2client: server replied with more than its Content-Length %d", cs.declLen))
			return nil
		}
		if cs.bodyClosed {
			connAdd += cc.inflow.add(len(data))
		} else if len(data) > 0 {
			cs.buf = append(cs.buf, data...)
			cs.readCond.Broadcast()
		}
		id := cs.id
		if f.StreamEnded() {
			cs.endStreamLocked()
		}
		cc.mu.Unlock()
		cc.writeWindowUpdates(id, connAdd, streamAdd)
		return nil
	}
	if f.StreamEnded() {
		cs.endStreamLocked()
	}
	cc.mu.Unlock()
	return nil
}

func (cc *conn) processGoAway(f *http2.GoAwayFrame) {
	cc.mu.Lock()
	cc.goAway = true
	if cc.goAwayCode == http2.ErrCodeNo {
		cc.goAwayCode = f.ErrCode
	}
	var refused []*stream
	for id, cs := range cc.streams {
		if id > f.LastStreamID {
			refused = append(refused, cs)
		}
	}
	code := cc.goAwayCode
	empty := len(cc.streams) == len(refused) && cc.reserved == 0
	cc.mu.Unlock()
	cc.cl.forget(cc)
	for _, cs := range refused {
		if cs.id == 1 && code != http2.ErrCodeNo {
			// The first stream of a connection the server refuses with an
			// error: another connection would fare no better (Go's rule).
			cs.abort(fmt.Errorf("h2client: the server sent GOAWAY with error code %v", code), false)
		} else {
			cs.abort(errGotGoAway, false) // not processed: retried
		}
	}
	if empty {
		cc.close(errGotGoAway)
	}
}

func (cc *conn) processReset(f *http2.RSTStreamFrame) {
	cc.mu.Lock()
	cs := cc.streamLocked(f.StreamID)
	if f.ErrCode == http2.ErrCodeProtocol {
		cc.doNotReuse = true
	}
	if cs == nil {
		cc.mu.Unlock()
		return
	}
	err := http2.StreamError{StreamID: f.StreamID, Code: f.ErrCode, Cause: errFromPeer}
	if f.ErrCode == http2.ErrCodeNo && cs.readErr == io.EOF {
		// The response is whole: the server only asks to stop sending
		// the request (RFC 9113 8.1).
		rb := cs.closeReqBodyLocked()
		cs.writeClosed = true
		cs.writing = false
		cs.removeLocked()
		cs.cc.cond.Broadcast()
		cc.mu.Unlock()
		if rb != nil {
			go rb.Close()
		}
		return
	}
	cs.failLocked(err)
	connAdd := cs.dropBufferedLocked()
	rb := cs.closeReqBodyLocked()
	cs.removeLocked()
	cc.mu.Unlock()
	if rb != nil {
		go rb.Close()
	}
	cc.writeWindowUpdates(0, connAdd, 0)
}

func (cc *conn) processSettings(f *http2.SettingsFrame) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	cc.mu.Lock()
	if f.IsAck() {
		defer cc.mu.Unlock()
		if cc.wantSettingsAck {
			cc.wantSettingsAck = false
			return nil
		}
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	seenMax := false
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingMaxFrameSize:
			cc.maxFrameSize = s.Val
		case http2.SettingMaxConcurrentStreams:
			cc.maxConcurrent = s.Val
			seenMax = true
		case http2.SettingMaxHeaderListSize:
			cc.peerMaxHeaders = uint64(s.Val)
		case http2.SettingInitialWindowSize:
			// Applies to every open stream's send window (RFC 9113 6.9.2).
			delta := int64(s.Val) - int64(cc.initialSendWin)
			for _, cs := range cc.streams {
				if cs.sendWin+delta > maxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
			for _, cs := range cc.streams {
				cs.sendWin += delta
			}
			cc.initialSendWin = int32(s.Val)
			cc.cond.Broadcast()
		case http2.SettingHeaderTableSize:
			cc.henc.SetMaxDynamicTableSize(s.Val)
		}
		return nil
	})
	if err == nil && !cc.seenSettings {
		if !seenMax {
			cc.maxConcurrent = defaultMaxConcurrent
		}
		cc.seenSettings = true
	}
	cc.mu.Unlock()
	if err != nil {
		return err
	}
	cc.fr.WriteSettingsAck()
	cc.bw.Flush()
	return nil
}

func (cc *conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if f.StreamID == 0 {
		if cc.sendWin+int64(f.Increment) > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		cc.sendWin += int64(f.Increment)
		cc.cond.Broadcast()
		return nil
	}
	cs := cc.streamLocked(f.StreamID)
	if cs == nil {
		return nil
	}
	if cs.sendWin+int64(f.Increment) > maxWindow {
		go cs.resetWith(http2.ErrCodeFlowControl, errors.New("h2client: the server's WINDOW_UPDATE overflows the stream's window"))
		return nil
	}
	cs.sendWin += int64(f.Increment)
	cc.cond.Broadcast()
	return nil
}

func (cc *conn) processPing(f *http2.PingFrame) error {
	if f.IsAck() {
		cc.mu.Lock()
		if c, ok := cc.pings[f.Data]; ok {
			close(c)
			delete(cc.pings, f.Data)
		}
		cc.mu.Unlock()
		return nil
	}
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	cc.fr.WritePing(true, f.Data)
	return cc.bw.Flush()
}
