package h2client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/internal/h2msg"
)

type result struct {
	resp *http.Response
	body string
	err  error
}

// goRoundTrip runs a request in the background; the body is read whole.
func goRoundTrip(c *testClient, req *http.Request) chan result {
	ch := make(chan result, 1)
	go func() {
		resp, err := c.RoundTrip(req)
		if err != nil {
			ch <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- result{resp: resp, body: string(b), err: err}
	}()
	return ch
}

func wait(t *testing.T, ch chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(testTimeout):
		t.Fatal("no result")
		return result{}
	}
}

func isFrame[T http2.Frame](f http2.Frame) bool { _, ok := f.(T); return ok }

func TestWhatTheClientSends(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{StreamWindow: 100000, ConnWindow: 1 << 20})
	ch := goRoundTrip(c, newRequest(t, "GET", "http://a/x", nil))
	fc := <-fs.conns
	fc.nc.SetDeadline(time.Now().Add(testTimeout))
	preface := make([]byte, len(http2.ClientPreface))
	fullRead(fc.nc, preface)
	fc.fr = http2.NewFramer(fakeWriter{fc}, fc.nc)
	sf := fc.read().(*http2.SettingsFrame)
	want := map[http2.SettingID]uint32{http2.SettingEnablePush: 0, http2.SettingInitialWindowSize: 100000, http2.SettingMaxFrameSize: 1 << 20}
	for id, v := range want {
		if got, ok := sf.Value(id); !ok || got != v {
			t.Errorf("setting %v = %d, %v; want %d", id, got, ok, v)
		}
	}
	wu := fc.read().(*http2.WindowUpdateFrame)
	if wu.StreamID != 0 || wu.Increment != 1<<20 {
		t.Errorf("connection window update %+v", wu)
	}
	fc.fr.WriteSettings()
	// Nothing else until the server's SETTINGS: then the ACK; the request
	// went out already (Go's transport does not wait either).
	fc.t = t
	fc.fr.ReadMetaHeaders = newDecoder()
	var h *http2.MetaHeadersFrame
	gotAck := false
	for h == nil || !gotAck {
		switch f := fc.read().(type) {
		case *http2.MetaHeadersFrame:
			h = f
		case *http2.SettingsFrame:
			gotAck = f.IsAck()
		}
	}
	if h.StreamID != 1 || !h.StreamEnded() || h.PseudoValue("path") != "/x" || h.PseudoValue("scheme") != "http" || h.PseudoValue("authority") != "a" {
		t.Errorf("HEADERS %+v %v", h.FrameHeader, h.Fields)
	}
	fc.henc = newEncoder(&fc.hbuf)
	fc.headers(1, true, ":status", "204")
	if r := wait(t, ch); r.err != nil || r.resp.StatusCode != 204 || r.resp.ContentLength != 0 {
		t.Errorf("%+v", r)
	}
}

func TestResponseFramesInOneRead(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{})
	req := newRequest(t, "GET", "http://a/", nil)
	resCh := make(chan *http.Response, 1)
	go func() {
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Error(err)
		}
		resCh <- resp
	}()
	fc := fs.accept()
	h := fc.readHeaders()
	fc.batch(func() {
		fc.headers(h.StreamID, false, ":status", "200", "content-type", "application/grpc")
		fc.fr.WriteData(h.StreamID, false, []byte("abc"))
		fc.headers(h.StreamID, true, "grpc-status", "0")
	})
	resp := <-resCh
	if n, eof := resp.Body.(Buffered).Buffered(); n != 3 || !eof {
		t.Errorf("Buffered() = %d, %v: want the DATA and the end in with the HEADERS", n, eof)
	}
	p := make([]byte, 10)
	n, err := resp.Body.Read(p)
	if n != 3 || err != io.EOF || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Errorf("Read %d, %v; trailers %v", n, err, resp.Trailer)
	}
}

func TestGoAway(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{})
	ch1 := goRoundTrip(c, newRequest(t, "GET", "http://a/1", nil))
	fc := fs.accept()
	h1 := fc.readHeaders()
	ch3 := goRoundTrip(c, newRequest(t, "GET", "http://a/3", nil))
	h3 := fc.readHeaders()
	if h1.StreamID != 1 || h3.StreamID != 3 {
		t.Fatalf("streams %d %d", h1.StreamID, h3.StreamID)
	}
	fc.fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	// Stream 3 was not processed: it is sent again on a new connection.
	fc2 := fs.accept()
	h := fc2.readHeaders()
	if h.PseudoValue("path") != "/3" {
		t.Errorf("retried %q", h.PseudoValue("path"))
	}
	fc2.headers(h.StreamID, false, ":status", "200")
	fc2.fr.WriteData(h.StreamID, true, []byte("three"))
	if r := wait(t, ch3); r.err != nil || r.body != "three" {
		t.Errorf("stream 3: %+v", r)
	}
	// Stream 1 finishes on the old connection.
	fc.headers(1, false, ":status", "200")
	fc.fr.WriteData(1, true, []byte("one"))
	if r := wait(t, ch1); r.err != nil || r.body != "one" {
		t.Errorf("stream 1: %+v", r)
	}
	// The old connection closes once drained; new requests go to the new one.
	fc.nc.SetReadDeadline(time.Now().Add(testTimeout))
	for {
		if _, err := fc.fr.ReadFrame(); err != nil {
			break
		}
	}
	ch := goRoundTrip(c, newRequest(t, "GET", "http://a/5", nil))
	h = fc2.readHeaders()
	fc2.headers(h.StreamID, true, ":status", "204")
	if r := wait(t, ch); r.err != nil {
		t.Error(r.err)
	}
}

func TestGoAwayErrorOnFirstStream(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{})
	ch := goRoundTrip(c, newRequest(t, "GET", "http://a/", nil))
	fc := fs.accept()
	fc.readHeaders()
	fc.fr.WriteGoAway(0, http2.ErrCodeEnhanceYourCalm, []byte("calm"))
	r := wait(t, ch)
	if r.err == nil || !strings.Contains(r.err.Error(), "ENHANCE_YOUR_CALM") {
		t.Errorf("err %v, want the GOAWAY's code (not retried)", r.err)
	}
}

func TestRefusedStreamRetried(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{})
	ch := goRoundTrip(c, newRequest(t, "GET", "http://a/", nil))
	fc := fs.accept()
	h := fc.readHeaders()
	fc.fr.WriteRSTStream(h.StreamID, http2.ErrCodeRefusedStream)
	h2 := fc.readHeaders()
	if h2.StreamID != 3 {
		t.Errorf("retried on stream %d, want 3 (same connection)", h2.StreamID)
	}
	fc.headers(h2.StreamID, true, ":status", "204")
	if r := wait(t, ch); r.err != nil {
		t.Error(r.err)
	}
	// A body already read cannot be sent again.
	req := newRequest(t, "POST", "http://a/", nil)
	req.Body = io.NopCloser(strings.NewReader("data"))
	req.ContentLength = 4
	ch = goRoundTrip(c, req)
	h = fc.readHeaders()
	fc.readUntil(isFrame[*http2.DataFrame])
	fc.fr.WriteRSTStream(h.StreamID, http2.ErrCodeRefusedStream)
	var se http2.StreamError
	if r := wait(t, ch); !errors.As(r.err, &se) || se.Code != http2.ErrCodeRefusedStream || !IsRetryable(r.err) {
		t.Errorf("err %v, want REFUSED_STREAM returned (retryable elsewhere by a caller with the body)", r.err)
	}
}

func TestResetByServer(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{})
	req := newRequest(t, "GET", "http://a/", nil)
	respc := make(chan *http.Response, 1)
	go func() {
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Error(err)
		}
		respc <- resp
	}()
	fc := fs.accept()
	h := fc.readHeaders()
	fc.headers(h.StreamID, false, ":status", "200")
	fc.fr.WriteData(h.StreamID, false, []byte("part"))
	resp := <-respc
	p := make([]byte, 4)
	io.ReadFull(resp.Body, p)
	fc.fr.WriteRSTStream(h.StreamID, http2.ErrCodeInternal)
	_, err := io.ReadAll(resp.Body)
	var se http2.StreamError
	if !errors.As(err, &se) || se.Code != http2.ErrCodeInternal {
		t.Errorf("read after RST_STREAM: %v", err)
	}
	resp.Body.Close()
	// The connection is still usable.
	ch := goRoundTrip(c, newRequest(t, "GET", "http://a/", nil))
	h = fc.readHeaders()
	fc.headers(h.StreamID, true, ":status", "204")
	if r := wait(t, ch); r.err != nil || c.dials.Load() != 1 {
		t.Errorf("%v, %d dials", r.err, c.dials.Load())
	}
}

func TestCancelSendsReset(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	ch := goRoundTrip(c, newRequest(t, "GET", "http://a/", nil).WithContext(ctx))
	fc := fs.accept()
	h := fc.readHeaders()
	cancel()
	rst := fc.readUntil(isFrame[*http2.RSTStreamFrame]).(*http2.RSTStreamFrame)
	if rst.StreamID != h.StreamID || rst.ErrCode != http2.ErrCodeCancel {
		t.Errorf("%+v, want RST_STREAM CANCEL", rst)
	}
	if r := wait(t, ch); !errors.Is(r.err, context.Canceled) {
		t.Errorf("err %v", r.err)
	}
	// The server's late response to it is ignored (its DATA given back).
	fc.headers(h.StreamID, false, ":status", "200")
	fc.fr.WriteData(h.StreamID, true, make([]byte, 1000))
	ch = goRoundTrip(c, newRequest(t, "GET", "http://a/", nil))
	h = fc.readHeaders()
	fc.headers(h.StreamID, true, ":status", "204")
	if r := wait(t, ch); r.err != nil {
		t.Error(r.err)
	}
}

func TestMaxConcurrentStreams(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{})
	ch1 := goRoundTrip(c, newRequest(t, "GET", "http://a/", nil))
	fc := fs.accept(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	h := fc.readHeaders()
	fc.sync()
	// The connection is full: the next request gets another one.
	ch2 := goRoundTrip(c, newRequest(t, "GET", "http://a/", nil))
	fc2 := fs.accept()
	h2 := fc2.readHeaders()
	fc2.headers(h2.StreamID, true, ":status", "204")
	fc.headers(h.StreamID, true, ":status", "204")
	for _, ch := range []chan result{ch1, ch2} {
		if r := wait(t, ch); r.err != nil {
			t.Error(r.err)
		}
	}
}

// The server's send windows: INITIAL_WINDOW_SIZE (and its later changes,
// applied to open streams), WINDOW_UPDATEs, MAX_FRAME_SIZE.
func TestSendFlowControl(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{})
	// A first request, so that the server's SETTINGS are in before the
	// test's (a client may send before it has them, with the defaults).
	ch := goRoundTrip(c, newRequest(t, "GET", "http://a/", nil))
	fc := fs.accept(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	h := fc.readHeaders()
	fc.headers(h.StreamID, true, ":status", "204")
	if r := wait(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
	body := bytes.Repeat([]byte("b"), 100)
	req := newRequest(t, "POST", "http://a/", nil)
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = 100
	ch = goRoundTrip(c, req)
	h = fc.readHeaders()
	got := 0
	readData := func() *http2.DataFrame {
		d := fc.readUntil(isFrame[*http2.DataFrame]).(*http2.DataFrame)
		got += len(d.Data())
		return d
	}
	if d := readData(); len(d.Data()) != 10 {
		t.Fatalf("first DATA %d bytes, want the window's 10", len(d.Data()))
	}
	fc.fr.WriteWindowUpdate(h.StreamID, 20)
	if d := readData(); len(d.Data()) != 20 {
		t.Fatalf("DATA %d bytes after a 20-byte WINDOW_UPDATE", len(d.Data()))
	}
	// Raise the initial window: +40 for the open stream.
	fc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 50})
	if d := readData(); len(d.Data()) != 40 {
		t.Fatalf("DATA %d bytes after INITIAL_WINDOW_SIZE 10 -> 50", len(d.Data()))
	}
	fc.fr.WriteWindowUpdate(h.StreamID, 1000)
	for {
		d := readData()
		if d.StreamEnded() {
			break
		}
	}
	if got != 100 {
		t.Errorf("%d bytes sent", got)
	}
	fc.headers(h.StreamID, true, ":status", "204")
	if r := wait(t, ch); r.err != nil {
		t.Error(r.err)
	}
}

func TestMaxFrameSizeAndContinuation(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{})
	req := newRequest(t, "POST", "http://a/", nil)
	req.Header.Set("X-Big", strings.Repeat("v", 40000))
	req.Body = &bufferedBody{data: bytes.Repeat([]byte("d"), 40000)}
	req.ContentLength = 40000
	ch := goRoundTrip(c, req)
	fc := fs.accept(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16384}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	fc.fr.WriteWindowUpdate(0, 1<<20)
	h := fc.readHeaders() // the framer joins HEADERS and CONTINUATIONs
	big := ""
	for _, f := range h.RegularFields() {
		if f.Name == "x-big" {
			big = f.Value
		}
	}
	if len(big) != 40000 {
		t.Errorf("x-big of %d bytes over CONTINUATION frames", len(big))
	}
	n := 0
	for {
		d := fc.readUntil(isFrame[*http2.DataFrame]).(*http2.DataFrame)
		if len(d.Data()) > 16384 {
			t.Errorf("DATA of %d bytes over MAX_FRAME_SIZE", len(d.Data()))
		}
		n += len(d.Data())
		if d.StreamEnded() {
			break
		}
	}
	if n != 40000 {
		t.Errorf("%d bytes", n)
	}
	fc.headers(h.StreamID, true, ":status", "204")
	if r := wait(t, ch); r.err != nil {
		t.Error(r.err)
	}
}

// The client's receive windows: a server that sends past the stream's
// window is reset (FLOW_CONTROL_ERROR); WINDOW_UPDATEs follow reads.
func TestReceiveFlowControl(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{StreamWindow: 1000, ConnWindow: 100000})
	req := newRequest(t, "GET", "http://a/", nil)
	respc := make(chan *http.Response, 1)
	go func() {
		resp, _ := c.RoundTrip(req)
		respc <- resp
	}()
	fc := fs.accept()
	h := fc.readHeaders()
	fc.headers(h.StreamID, false, ":status", "200")
	fc.fr.WriteData(h.StreamID, false, make([]byte, 1000))
	resp := <-respc
	io.ReadFull(resp.Body, make([]byte, 1000))
	wu := fc.readUntil(func(f http2.Frame) bool {
		w, ok := f.(*http2.WindowUpdateFrame)
		return ok && w.StreamID == h.StreamID
	}).(*http2.WindowUpdateFrame)
	if wu.Increment != 1000 {
		t.Errorf("stream WINDOW_UPDATE %d after reading the window", wu.Increment)
	}
	fc.fr.WriteData(h.StreamID, false, make([]byte, 1001))
	rst := fc.readUntil(isFrame[*http2.RSTStreamFrame]).(*http2.RSTStreamFrame)
	if rst.ErrCode != http2.ErrCodeFlowControl {
		t.Errorf("%v, want FLOW_CONTROL_ERROR", rst.ErrCode)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("body read on")
	}
}

func TestBadResponses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		send  func(fc *fakeConn, id uint32)
		check func(t *testing.T, fc *fakeConn, r result)
	}{
		{"no status", func(fc *fakeConn, id uint32) { fc.headers(id, true, "x", "y") }, wantReset(http2.ErrCodeProtocol)},
		{"bad status", func(fc *fakeConn, id uint32) { fc.headers(id, true, ":status", "2000") }, wantReset(http2.ErrCodeProtocol)},
		{"uppercase field", func(fc *fakeConn, id uint32) { fc.headers(id, true, ":status", "200", "X-Up", "y") }, wantReset(http2.ErrCodeProtocol)},
		{"1xx with END_STREAM", func(fc *fakeConn, id uint32) { fc.headers(id, true, ":status", "103") }, wantReset(http2.ErrCodeProtocol)},
		{"data past content-length", func(fc *fakeConn, id uint32) {
			fc.headers(id, false, ":status", "200", "content-length", "2")
			fc.fr.WriteData(id, true, []byte("abc"))
		}, wantReset(http2.ErrCodeProtocol)},
		{"data short of content-length", func(fc *fakeConn, id uint32) {
			fc.headers(id, false, ":status", "200", "content-length", "5")
			fc.fr.WriteData(id, true, []byte("abc"))
		}, wantReset(http2.ErrCodeProtocol)},
		{"trailers without END_STREAM", func(fc *fakeConn, id uint32) {
			fc.headers(id, false, ":status", "200")
			fc.headers(id, false, "x", "y")
		}, wantGoAway(http2.ErrCodeProtocol)},
		{"data on an unopened stream", func(fc *fakeConn, id uint32) { fc.fr.WriteData(99, false, []byte("x")) }, wantGoAway(http2.ErrCodeProtocol)},
		{"push promise", func(fc *fakeConn, id uint32) {
			fc.fr.WritePushPromise(http2.PushPromiseParam{StreamID: id, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
		}, wantGoAway(http2.ErrCodeProtocol)},
		{"connection window overflow", func(fc *fakeConn, id uint32) { fc.fr.WriteWindowUpdate(0, 1<<31-1) }, wantGoAway(http2.ErrCodeFlowControl)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFakeServer(t)
			c := newTestClient(t, fs.addr(), Options{})
			ch := goRoundTrip(c, newRequest(t, "GET", "http://a/", nil))
			fc := fs.accept()
			h := fc.readHeaders()
			tc.send(fc, h.StreamID)
			tc.check(t, fc, wait(t, ch))
		})
	}
}

func wantReset(code http2.ErrCode) func(*testing.T, *fakeConn, result) {
	return func(t *testing.T, fc *fakeConn, r result) {
		t.Helper()
		if r.err == nil {
			t.Errorf("response %+v, want an error", r.resp)
		}
		rst := fc.readUntil(isFrame[*http2.RSTStreamFrame]).(*http2.RSTStreamFrame)
		if rst.ErrCode != code {
			t.Errorf("RST_STREAM %v, want %v", rst.ErrCode, code)
		}
	}
}

func wantGoAway(code http2.ErrCode) func(*testing.T, *fakeConn, result) {
	return func(t *testing.T, fc *fakeConn, r result) {
		t.Helper()
		if r.err == nil {
			t.Errorf("response %+v, want an error", r.resp)
		}
		ga := fc.readUntil(isFrame[*http2.GoAwayFrame]).(*http2.GoAwayFrame)
		if ga.ErrCode != code {
			t.Errorf("GOAWAY %v, want %v", ga.ErrCode, code)
		}
	}
}

func TestPings(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{SendPingTimeout: 100 * time.Millisecond, PingTimeout: 100 * time.Millisecond})
	ch := goRoundTrip(c, newRequest(t, "GET", "http://a/", nil))
	fc := fs.accept()
	fc.readHeaders()
	fc.fr.WritePing(false, [8]byte{1, 2, 3})
	ack := fc.readUntil(func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() }).(*http2.PingFrame)
	if ack.Data != [8]byte{1, 2, 3} {
		t.Errorf("PING ACK %v", ack.Data)
	}
	// Silence: the client pings, and without an answer gives up.
	p := fc.readUntil(isFrame[*http2.PingFrame]).(*http2.PingFrame)
	if p.IsAck() {
		t.Error("unexpected ACK")
	}
	if r := wait(t, ch); r.err == nil || !strings.Contains(r.err.Error(), "PING") {
		t.Errorf("err %v, want the lost connection's", r.err)
	}
}

func TestServerClosesConnection(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{})
	ch := goRoundTrip(c, newRequest(t, "GET", "http://a/", nil))
	fc := fs.accept()
	fc.readHeaders()
	fc.nc.Close()
	r := wait(t, ch)
	if r.err == nil || IsRetryable(r.err) {
		t.Errorf("err %v: want a failure, not retryable (the request was sent)", r.err)
	}
	// The dead connection left the pool.
	ch = goRoundTrip(c, newRequest(t, "GET", "http://a/", nil))
	fc = fs.accept()
	h := fc.readHeaders()
	fc.headers(h.StreamID, true, ":status", "204")
	if r := wait(t, ch); r.err != nil {
		t.Error(r.err)
	}
}

// A response that ends while the request body is still being sent stops
// the body (RST_STREAM CANCEL) and closes it; the response stays whole.
func TestResponseEndsBeforeRequestBody(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{})
	pr, _ := io.Pipe() // a body that never ends
	closed := make(chan struct{})
	req := newRequest(t, "POST", "http://a/", nil)
	req.Body = &closeNotifier{pr, closed}
	ch := goRoundTrip(c, req)
	fc := fs.accept()
	h := fc.readHeaders()
	fc.batch(func() {
		fc.headers(h.StreamID, false, ":status", "413")
		fc.fr.WriteData(h.StreamID, true, []byte("too big"))
	})
	rst := fc.readUntil(isFrame[*http2.RSTStreamFrame]).(*http2.RSTStreamFrame)
	if rst.ErrCode != http2.ErrCodeCancel {
		t.Errorf("RST_STREAM %v", rst.ErrCode)
	}
	if r := wait(t, ch); r.err != nil || r.body != "too big" || r.resp.StatusCode != 413 {
		t.Errorf("%+v", r)
	}
	select {
	case <-closed:
	case <-time.After(testTimeout):
		t.Error("the request body was not closed")
	}
}

type closeNotifier struct {
	*io.PipeReader
	closed chan struct{}
}

func (c *closeNotifier) Close() error {
	close(c.closed)
	return c.PipeReader.Close()
}

// A body that left whole with its HEADERS is sent again, from the bytes
// the client kept, when the stream was refused unprocessed (REFUSED_STREAM,
// above a GOAWAY's last stream).
func TestInlineBodyReplayed(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{})
	req := newRequest(t, "POST", "http://a/", nil)
	req.Body = &bufferedBody{data: []byte("grpc-message")}
	req.ContentLength = -1
	ch := goRoundTrip(c, req)
	fc := fs.accept()
	readBody := func(fc *fakeConn) (uint32, string) {
		h := fc.readHeaders()
		d := fc.readUntil(isFrame[*http2.DataFrame]).(*http2.DataFrame)
		if !d.StreamEnded() {
			t.Error("no END_STREAM on the body's DATA")
		}
		return h.StreamID, string(d.Data())
	}
	id, b := readBody(fc)
	fc.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
	id, b2 := readBody(fc)
	fc.fr.WriteGoAway(id-2, http2.ErrCodeNo, nil)
	fc2 := fs.accept()
	id, b3 := readBody(fc2)
	fc2.headers(id, true, ":status", "204")
	if r := wait(t, ch); r.err != nil {
		t.Error(r.err)
	}
	if b != "grpc-message" || b2 != b || b3 != b {
		t.Errorf("bodies sent %q %q %q", b, b2, b3)
	}
}

// A header list above the server's SETTINGS_MAX_HEADER_LIST_SIZE is
// refused before anything is written; the connection goes on.
func TestPeerMaxHeaderListSize(t *testing.T) {
	fs := newFakeServer(t)
	c := newTestClient(t, fs.addr(), Options{})
	ch := goRoundTrip(c, newRequest(t, "GET", "http://a/", nil))
	fc := fs.accept(http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: 200})
	h := fc.readHeaders()
	fc.sync()
	fc.headers(h.StreamID, true, ":status", "204")
	if r := wait(t, ch); r.err != nil {
		t.Fatal(r.err)
	}
	req := newRequest(t, "GET", "http://a/", nil)
	req.Header.Set("X-Big", strings.Repeat("v", 300))
	if _, err := c.RoundTrip(req); err != h2msg.ErrRequestHeaderListSize {
		t.Errorf("err %v, want %v", err, h2msg.ErrRequestHeaderListSize)
	}
	ch = goRoundTrip(c, newRequest(t, "GET", "http://a/", nil))
	h = fc.readHeaders()
	fc.headers(h.StreamID, true, ":status", "204")
	if r := wait(t, ch); r.err != nil || h.StreamID != 3 {
		t.Errorf("next request: %v on stream %d (want 3: the refused one took no id)", r.err, h.StreamID)
	}
}
