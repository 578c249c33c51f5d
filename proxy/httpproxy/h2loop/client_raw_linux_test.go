package h2loop

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
)

// clRaw is the server's side of a client connection, in frames (x/net's
// Framer): what a real server would not send.
type clRaw struct {
	t    testing.TB
	nc   net.Conn
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer
}

// clRawPair connects a ClientConn on a loop of its own to a raw server,
// which has read the client's preface, SETTINGS and WINDOW_UPDATE.
func clRawPair(t testing.TB, cfg ClientConfig) (*evloop.Loop, *ClientConn, *clRaw) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lp := clLoop(t)
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	c := clDial(t, lp, ln.Addr().String(), cfg)
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(clTimeout))
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(clTimeout))
	r := &clRaw{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.fr.MaxHeaderListSize = 1 << 20
	r.henc = hpack.NewEncoder(&r.hbuf)
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(nc, preface); err != nil || string(preface) != http2.ClientPreface {
		t.Fatalf("preface %q: %v", preface, err)
	}
	sf, ok := r.read().(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		t.Fatalf("the client's first frame: %v", sf)
	}
	if v, ok := sf.Value(http2.SettingEnablePush); !ok || v != 0 {
		t.Errorf("ENABLE_PUSH %d %v", v, ok)
	}
	if wu, ok := r.read().(*http2.WindowUpdateFrame); !ok || wu.StreamID != 0 {
		t.Fatalf("the client's second frame: %v", wu)
	}
	return lp, c, r
}

func (r *clRaw) read() http2.Frame {
	r.t.Helper()
	f, err := r.fr.ReadFrame()
	if err != nil {
		r.t.Fatalf("reading the client's frames: %v", err)
	}
	return f
}

// until reads the client's frames until one that ok accepts.
func (r *clRaw) until(what string, ok func(http2.Frame) bool) http2.Frame {
	r.t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok(f) {
			return f
		}
	}
}

// settings sends the server's SETTINGS and reads to the client's ACK.
func (r *clRaw) settings(s ...http2.Setting) {
	r.t.Helper()
	r.fr.WriteSettings(s...)
	r.until("SETTINGS ACK", func(f http2.Frame) bool {
		sf, ok := f.(*http2.SettingsFrame)
		return ok && sf.IsAck()
	})
}

// request reads the client's next request HEADERS.
func (r *clRaw) request() *http2.MetaHeadersFrame {
	r.t.Helper()
	return r.until("HEADERS", func(f http2.Frame) bool {
		_, ok := f.(*http2.MetaHeadersFrame)
		return ok
	}).(*http2.MetaHeadersFrame)
}

// headers writes a header block of name, value pairs.
func (r *clRaw) headers(id uint32, end bool, kv ...string) {
	r.t.Helper()
	r.hbuf.Reset()
	for i := 0; i < len(kv); i += 2 {
		r.henc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
}

func (r *clRaw) rst(id uint32) *http2.RSTStreamFrame {
	r.t.Helper()
	return r.until("RST_STREAM", func(f http2.Frame) bool {
		rf, ok := f.(*http2.RSTStreamFrame)
		return ok && rf.StreamID == id
	}).(*http2.RSTStreamFrame)
}

func (r *clRaw) goAway() *http2.GoAwayFrame {
	r.t.Helper()
	return r.until("GOAWAY", func(f http2.Frame) bool {
		_, ok := f.(*http2.GoAwayFrame)
		return ok
	}).(*http2.GoAwayFrame)
}

// clGet opens a GET on c and returns its receiver.
func clGet(t testing.TB, c *ClientConn, path string) *clRecv {
	t.Helper()
	r := newClRecv()
	clDo(t, c, clReq("GET", "http://example.com"+path, nil), nil, nil, r)
	return r
}

// TestClientRawPing: a PING is answered with its data; the SETTINGS are
// acknowledged.
func TestClientRawPing(t *testing.T) {
	_, _, r := clRawPair(t, ClientConfig{})
	r.settings()
	data := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	r.fr.WritePing(false, data)
	f := r.until("PING ACK", func(f http2.Frame) bool { _, ok := f.(*http2.PingFrame); return ok }).(*http2.PingFrame)
	if !f.IsAck() || f.Data != data {
		t.Fatalf("PING %v %v", f.IsAck(), f.Data)
	}
}

// TestClientRawStreamErrors: a server's error on one stream resets it
// (RST_STREAM with the code) and ends it with ErrProtocol; the connection
// goes on.
func TestClientRawStreamErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  ClientConfig
		send func(r *clRaw, id uint32)
		code http2.ErrCode
	}{
		{"status not three digits", ClientConfig{}, func(r *clRaw, id uint32) {
			r.headers(id, true, ":status", "2000")
		}, http2.ErrCodeProtocol},
		{"status missing", ClientConfig{}, func(r *clRaw, id uint32) {
			r.headers(id, true, "content-type", "text/plain")
		}, http2.ErrCodeProtocol},
		{"1xx with END_STREAM", ClientConfig{}, func(r *clRaw, id uint32) {
			r.headers(id, true, ":status", "103")
		}, http2.ErrCodeProtocol},
		{"more than content-length", ClientConfig{}, func(r *clRaw, id uint32) {
			r.headers(id, false, ":status", "200", "content-length", "3")
			r.fr.WriteData(id, true, []byte("hello"))
		}, http2.ErrCodeProtocol},
		{"less than content-length", ClientConfig{}, func(r *clRaw, id uint32) {
			r.headers(id, false, ":status", "200", "content-length", "10")
			r.fr.WriteData(id, true, []byte("hello"))
		}, http2.ErrCodeProtocol},
		{"DATA before HEADERS", ClientConfig{}, func(r *clRaw, id uint32) {
			r.fr.WriteData(id, true, []byte("hello"))
		}, http2.ErrCodeProtocol},
		{"DATA beyond the stream's window", ClientConfig{StreamWindow: 16 << 10}, func(r *clRaw, id uint32) {
			r.headers(id, false, ":status", "200")
			r.fr.WriteData(id, false, make([]byte, 20000))
		}, http2.ErrCodeFlowControl},
		{"stream WINDOW_UPDATE overflow", ClientConfig{}, func(r *clRaw, id uint32) {
			r.fr.WriteWindowUpdate(id, 1<<31-1)
		}, http2.ErrCodeFlowControl},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lp, c, r := clRawPair(t, tc.cfg)
			r.settings()
			rc := clGet(t, c, "/")
			id := r.request().StreamID
			tc.send(r, id)
			if f := r.rst(id); f.ErrCode != tc.code {
				t.Errorf("RST_STREAM %v, want %v", f.ErrCode, tc.code)
			}
			rc.wait(t)
			if !errors.Is(rc.err, ErrProtocol) || errors.Is(rc.err, ErrRefused) {
				t.Errorf("End: %v", rc.err)
			}
			// The connection goes on.
			rc2 := clGet(t, c, "/next")
			id2 := r.request().StreamID
			r.headers(id2, false, ":status", "200", "content-length", "2")
			r.fr.WriteData(id2, true, []byte("ok"))
			rc2.wait(t)
			if rc2.err != nil || rc2.body.String() != "ok" {
				t.Fatal(rc2.err, rc2.body.String())
			}
			var can bool
			confOn(t, lp, func() { can = c.CanOpen() })
			if !can {
				t.Error("the connection takes no new stream")
			}
		})
	}
}

// TestClientRawConnectionErrors: a server's connection error is GOAWAY
// with its code, and every stream ends with ErrConnection.
func TestClientRawConnectionErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      ClientConfig
		settings bool
		send     func(r *clRaw, id uint32)
		code     http2.ErrCode
	}{
		{"first frame not SETTINGS", ClientConfig{}, false, func(r *clRaw, id uint32) {
			r.fr.WritePing(false, [8]byte{})
		}, http2.ErrCodeProtocol},
		{"DATA beyond the connection's window", ClientConfig{StreamWindow: 1 << 20, ConnWindow: 1}, true, func(r *clRaw, id uint32) {
			r.headers(id, false, ":status", "200")
			r.fr.WriteData(id, false, make([]byte, 70000)) // 65535+1
		}, http2.ErrCodeFlowControl},
		{"connection WINDOW_UPDATE overflow", ClientConfig{}, true, func(r *clRaw, id uint32) {
			r.fr.WriteWindowUpdate(0, 1<<31-1)
		}, http2.ErrCodeFlowControl},
		{"PUSH_PROMISE", ClientConfig{}, true, func(r *clRaw, id uint32) {
			r.hbuf.Reset()
			r.henc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
			r.fr.WritePushPromise(http2.PushPromiseParam{StreamID: id, PromiseID: 2, BlockFragment: r.hbuf.Bytes(), EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"trailers without END_STREAM", ClientConfig{}, true, func(r *clRaw, id uint32) {
			r.headers(id, false, ":status", "200")
			r.headers(id, false, "x-trailer", "t")
		}, http2.ErrCodeProtocol},
		{"HEADERS on a stream never opened", ClientConfig{}, true, func(r *clRaw, id uint32) {
			r.headers(id+2, true, ":status", "200")
		}, http2.ErrCodeProtocol},
		{"DATA on a stream never opened", ClientConfig{}, true, func(r *clRaw, id uint32) {
			r.fr.WriteData(id+2, true, []byte("x"))
		}, http2.ErrCodeProtocol},
		{"SETTINGS ACK of nothing", ClientConfig{}, true, func(r *clRaw, id uint32) {
			r.fr.WriteSettingsAck() // the client's SETTINGS'
			r.fr.WriteSettingsAck() // of nothing
		}, http2.ErrCodeProtocol},
		{"ENABLE_PUSH 1", ClientConfig{}, true, func(r *clRaw, id uint32) {
			r.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 1})
		}, http2.ErrCodeProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unusable := make(chan struct{})
			tc.cfg.Unusable = func(*ClientConn) { close(unusable) }
			lp, c, r := clRawPair(t, tc.cfg)
			if tc.settings {
				r.settings()
			}
			rc := clGet(t, c, "/")
			id := r.request().StreamID
			tc.send(r, id)
			if f := r.goAway(); f.ErrCode != tc.code || f.LastStreamID != 0 {
				t.Errorf("GOAWAY %v (last %d), want %v", f.ErrCode, f.LastStreamID, tc.code)
			}
			rc.wait(t)
			if !errors.Is(rc.err, ErrConnection) {
				t.Errorf("End: %v", rc.err)
			}
			select {
			case <-unusable:
			case <-time.After(clTimeout):
				t.Fatal("Unusable was not called")
			}
			// The client half-closes after its GOAWAY, and closes once
			// the server does.
			if _, err := r.fr.ReadFrame(); err != io.EOF {
				t.Errorf("after GOAWAY: %v, want EOF", err)
			}
			r.nc.Close()
			var can bool
			confOn(t, lp, func() { can = c.CanOpen() })
			if can {
				t.Error("the connection still takes streams")
			}
		})
	}
}

// TestClientRawRefusedStream: REFUSED_STREAM is retryable; the
// connection goes on.
func TestClientRawRefusedStream(t *testing.T) {
	lp, c, r := clRawPair(t, ClientConfig{})
	r.settings()
	rc := clGet(t, c, "/")
	id := r.request().StreamID
	r.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
	rc.wait(t)
	var rst ServerResetError
	if !errors.Is(rc.err, ErrRefused) || !errors.Is(rc.err, ErrStreamReset) || !errors.As(rc.err, &rst) || rst.Code != http2.ErrCodeRefusedStream {
		t.Fatalf("End: %v", rc.err)
	}
	// Another code is not retryable.
	rc2 := clGet(t, c, "/")
	id2 := r.request().StreamID
	r.fr.WriteRSTStream(id2, http2.ErrCodeCancel)
	rc2.wait(t)
	if errors.Is(rc2.err, ErrRefused) || !errors.Is(rc2.err, ErrStreamReset) {
		t.Fatalf("End: %v", rc2.err)
	}
	var can bool
	confOn(t, lp, func() { can = c.CanOpen() })
	if !can {
		t.Error("the connection takes no new stream")
	}
}

// TestClientRawGoAway: streams above the GOAWAY's last are refused
// (retryable), the others finish, then the connection closes.
func TestClientRawGoAway(t *testing.T) {
	unusable := make(chan struct{})
	lp, c, r := clRawPair(t, ClientConfig{Unusable: func(*ClientConn) { close(unusable) }})
	r.settings()
	rcs := []*clRecv{clGet(t, c, "/1"), clGet(t, c, "/2"), clGet(t, c, "/3")}
	for range rcs {
		r.request()
	}
	r.fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	for _, rc := range rcs[1:] {
		rc.wait(t)
		if !errors.Is(rc.err, ErrRefused) {
			t.Fatalf("End: %v", rc.err)
		}
	}
	select {
	case <-unusable:
	case <-time.After(clTimeout):
		t.Fatal("Unusable was not called")
	}
	var err error
	confOn(t, lp, func() { _, err = c.Open(clReq("GET", "http://example.com/", nil), true, newClRecv()) })
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("Open after GOAWAY: %v", err)
	}
	r.headers(1, false, ":status", "200")
	r.fr.WriteData(1, true, []byte("one"))
	rcs[0].wait(t)
	if rcs[0].err != nil || rcs[0].body.String() != "one" {
		t.Fatal(rcs[0].err, rcs[0].body.String())
	}
	// Its last stream done, the client closes.
	for {
		if _, err := r.fr.ReadFrame(); err != nil {
			break
		}
	}
	var closed bool
	confOn(t, lp, func() { closed = c.Closed() })
	if !closed {
		t.Error("the connection is still open")
	}
}

// TestClientRawSettings: the server's INITIAL_WINDOW_SIZE bounds a
// request's DATA and moves the open streams' windows; its MAX_FRAME_SIZE
// splits the header block in CONTINUATION frames.
func TestClientRawSettings(t *testing.T) {
	lp, c, r := clRawPair(t, ClientConfig{})
	r.settings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	rc := newClRecv()
	req := clReq("POST", "http://example.com/", nil)
	req.ContentLength = 100
	clDo(t, c, req, bytes.Repeat([]byte("x"), 100), nil, rc)
	id := r.request().StreamID
	got := 0
	df := r.until("DATA", func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }).(*http2.DataFrame)
	got += len(df.Data())
	if got != 10 {
		t.Fatalf("%d bytes past a window of 10", got)
	}
	r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100})
	for got < 100 {
		df := r.until("DATA", func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }).(*http2.DataFrame)
		got += len(df.Data())
		if df.StreamEnded() && got != 100 {
			t.Fatalf("END_STREAM after %d bytes", got)
		}
	}
	r.headers(id, true, ":status", "204")
	rc.wait(t)
	if rc.err != nil || rc.status != 204 {
		t.Fatal(rc.err, rc.status)
	}

	// A header block past 16 KiB: HEADERS, then CONTINUATION.
	big := string(bytes.Repeat([]byte("b"), 60<<10)) // Huffman: 6 bits each
	rc2 := newClRecv()
	clDo(t, c, clReq("GET", "http://example.com/", http.Header{"X-Big": {big}}), nil, nil, rc2)
	r.fr.ReadMetaHeaders = nil
	hf := r.until("HEADERS", func(f http2.Frame) bool { _, ok := f.(*http2.HeadersFrame); return ok }).(*http2.HeadersFrame)
	if hf.HeadersEnded() || len(hf.HeaderBlockFragment()) != 16<<10 {
		t.Fatalf("HEADERS of %d bytes, END_HEADERS %v", len(hf.HeaderBlockFragment()), hf.HeadersEnded())
	}
	n := 0
	for {
		cf, ok := r.read().(*http2.ContinuationFrame)
		if !ok {
			t.Fatal("not a CONTINUATION")
		}
		n++
		if cf.HeadersEnded() {
			break
		}
	}
	if n < 2 {
		t.Errorf("%d CONTINUATION frames", n)
	}
	var streams int
	confOn(t, lp, func() { streams = c.Streams() })
	if streams != 1 {
		t.Errorf("%d streams", streams)
	}
}

// TestClientRawResponseFirst: a response that ends before the request
// stops the request (RST_STREAM CANCEL, as Go's transport) and ends the
// stream well.
func TestClientRawResponseFirst(t *testing.T) {
	lp, c, r := clRawPair(t, ClientConfig{})
	r.settings()
	rc := newClRecv()
	var st *ClientStream
	confOn(t, lp, func() {
		var err error
		st, err = c.Open(clReq("POST", "http://example.com/", nil), false, rc)
		if err != nil {
			t.Error(err)
		}
		c.Flush()
	})
	id := r.request().StreamID
	r.headers(id, true, ":status", "200")
	if f := r.rst(id); f.ErrCode != http2.ErrCodeCancel {
		t.Errorf("RST_STREAM %v", f.ErrCode)
	}
	rc.wait(t)
	if rc.err != nil || rc.status != 200 {
		t.Fatal(rc.err, rc.status)
	}
	var n int
	confOn(t, lp, func() { n = st.Write([]byte("late"), true) })
	if n != 0 {
		t.Errorf("Write after the end took %d bytes", n)
	}
}

// TestClientRawConnectionLost: the server gone mid-response ends the
// streams with ErrConnLost; Close ends them with ErrClientClosed.
func TestClientRawConnectionLost(t *testing.T) {
	_, c, r := clRawPair(t, ClientConfig{})
	r.settings()
	rc := clGet(t, c, "/")
	id := r.request().StreamID
	r.headers(id, false, ":status", "200", "content-length", "100")
	r.fr.WriteData(id, false, []byte("part"))
	r.nc.Close()
	rc.wait(t)
	if !errors.Is(rc.err, ErrConnLost) || rc.body.String() != "part" {
		t.Fatal(rc.err, rc.body.String())
	}

	lp2, c2, r2 := clRawPair(t, ClientConfig{})
	r2.settings()
	rc2 := clGet(t, c2, "/")
	r2.request()
	confOn(t, lp2, c2.Close)
	rc2.wait(t)
	if !errors.Is(rc2.err, ErrClientClosed) {
		t.Fatal(rc2.err)
	}
}

// TestClientRawReceiveWindows: DATA consumed goes back to the server in
// WINDOW_UPDATEs, batched; padding at once; a reset stream's unconsumed
// bytes go back to the connection.
func TestClientRawReceiveWindows(t *testing.T) {
	lp, c, r := clRawPair(t, ClientConfig{StreamWindow: 64 << 10, ConnWindow: 1 << 20})
	r.settings()
	rc := newClRecv()
	rc.hold = true
	st := clDo(t, c, clReq("GET", "http://example.com/", nil), nil, nil, rc)
	id := r.request().StreamID
	r.headers(id, false, ":status", "200")
	// Padding (and its length byte) goes back without Consumed, in
	// batches of 4 KiB: 16 frames of 255 bytes of it.
	for range 16 {
		if err := r.fr.WriteDataPadded(id, false, make([]byte, 10), make([]byte, 255)); err != nil {
			t.Fatal(err)
		}
	}
	credit := map[uint32]uint32{}
	for credit[0] < 4096 || credit[id] < 4096 {
		wu := r.until("WINDOW_UPDATE", func(f http2.Frame) bool { _, ok := f.(*http2.WindowUpdateFrame); return ok }).(*http2.WindowUpdateFrame)
		credit[wu.StreamID] += wu.Increment
	}
	if credit[0] != 4096 || credit[id] != 4096 {
		t.Fatalf("credit %v", credit)
	}
	// 160 consumed is below the batch: nothing until 4 KiB are.
	confOn(t, lp, func() { st.Consumed(160); st.Flush() })
	r.fr.WriteData(id, false, make([]byte, 8000))
	r.fr.WritePing(false, [8]byte{8})
	r.until("PING ACK", func(f http2.Frame) bool { _, ok := f.(*http2.PingFrame); return ok })
	confOn(t, lp, func() { st.Consumed(8000); st.Flush() })
	for credit[0] < 4096+8160 || credit[id] < 4096+8160 {
		wu := r.until("WINDOW_UPDATE", func(f http2.Frame) bool { _, ok := f.(*http2.WindowUpdateFrame); return ok }).(*http2.WindowUpdateFrame)
		credit[wu.StreamID] += wu.Increment
	}
	if credit[0] != 4096+8160 || credit[id] != 4096+8160 {
		t.Fatalf("credit %v", credit)
	}
	// Unconsumed bytes of a stream reset go back to the connection.
	r.fr.WriteData(id, false, make([]byte, 7000))
	// A PING after the DATA: once its ACK is back, the DATA is in.
	r.fr.WritePing(false, [8]byte{9})
	r.until("PING ACK", func(f http2.Frame) bool { _, ok := f.(*http2.PingFrame); return ok })
	confOn(t, lp, func() { st.Reset(http2.ErrCodeCancel); st.Flush() })
	for {
		f := r.read()
		if wu, ok := f.(*http2.WindowUpdateFrame); ok {
			if wu.StreamID != 0 || wu.Increment != 7000 {
				t.Fatalf("WINDOW_UPDATE %d +%d", wu.StreamID, wu.Increment)
			}
			break
		}
		if rf, ok := f.(*http2.RSTStreamFrame); ok && rf.ErrCode != http2.ErrCodeCancel {
			t.Fatalf("RST_STREAM %v", rf.ErrCode)
		}
	}
	select {
	case <-rc.done:
		t.Error("End after Reset")
	default:
	}
}
