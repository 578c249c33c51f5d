package h2server

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/internal/h2test"
)

// The RFC 9113 rules, one test each, as raw frames on a real socket (in
// the spirit of h2spec, which is neither packaged nor fetchable here).

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
}

func rawServer(t *testing.T, cfg Config, h http.Handler, s ...http2.Setting) *h2test.Client {
	t.Helper()
	if h == nil {
		h = okHandler()
	}
	ts := startServer(t, cfg, h)
	rc := h2test.Dial(t, ts.addr)
	rc.Handshake(s...)
	return rc
}

func TestPrefaceAndSettings(t *testing.T) {
	rc := rawServer(t, Config{MaxConcurrentStreams: 7, MaxReadFrameSize: 32 << 10, MaxReceiveBufferPerStream: 100000, MaxDecoderHeaderTableSize: 2048}, nil)
	want := map[http2.SettingID]uint32{
		http2.SettingMaxConcurrentStreams: 7, http2.SettingMaxFrameSize: 32 << 10,
		http2.SettingInitialWindowSize: 100000, http2.SettingHeaderTableSize: 2048,
		http2.SettingMaxHeaderListSize: http.DefaultMaxHeaderBytes + 320,
	}
	for id, v := range want {
		if rc.Settings[id] != v {
			t.Errorf("setting %v = %d, want %d", id, rc.Settings[id], v)
		}
	}
	rc.Headers(1, true)
	if r := rc.Response(1); r.Status != "200" || string(r.Body) != "ok" {
		t.Fatalf("%+v", r)
	}
}

func TestBadPreface(t *testing.T) {
	ts := startServer(t, Config{}, okHandler())
	rc := h2test.Dial(t, ts.addr)
	io.WriteString(rc.C, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	rc.Read() // the server's SETTINGS
	rc.ExpectGoAway(http2.ErrCodeProtocol)
}

func TestFirstFrameNotSettings(t *testing.T) {
	ts := startServer(t, Config{}, okHandler())
	rc := h2test.Dial(t, ts.addr)
	io.WriteString(rc.C, http2.ClientPreface)
	rc.Fr.WritePing(false, [8]byte{})
	rc.ExpectGoAway(http2.ErrCodeProtocol)
}

// Connection errors: each frame sequence ends in GOAWAY with the code.
func TestConnectionErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		send func(rc *h2test.Client)
		code http2.ErrCode
	}{
		{"settings window too large", Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		}, http2.ErrCodeFlowControl},
		{"settings frame size too small", Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 100})
		}, http2.ErrCodeProtocol},
		{"settings enable push 2", Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 2})
		}, http2.ErrCodeProtocol},
		{"settings ack with payload", Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteRawFrame(http2.FrameSettings, http2.FlagSettingsAck, 0, make([]byte, 6))
		}, http2.ErrCodeFrameSize},
		{"settings ack never asked", Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteSettingsAck()
		}, http2.ErrCodeProtocol},
		{"settings on a stream", Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteRawFrame(http2.FrameSettings, 0, 1, nil)
		}, http2.ErrCodeProtocol},
		{"ping on a stream", Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteRawFrame(http2.FramePing, 0, 1, make([]byte, 8))
		}, http2.ErrCodeProtocol},
		{"ping of 7 bytes", Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteRawFrame(http2.FramePing, 0, 0, make([]byte, 7))
		}, http2.ErrCodeFrameSize},
		{"headers on an even stream", Config{}, func(rc *h2test.Client) { rc.Headers(2, true) }, http2.ErrCodeProtocol},
		{"stream id going down", Config{}, func(rc *h2test.Client) {
			rc.Headers(5, true)
			rc.Headers(3, true)
		}, http2.ErrCodeProtocol},
		{"data on an idle stream", Config{}, func(rc *h2test.Client) { rc.Fr.WriteData(1, true, []byte("x")) }, http2.ErrCodeProtocol},
		{"data on stream 0", Config{}, func(rc *h2test.Client) { rc.Fr.WriteData(0, true, []byte("x")) }, http2.ErrCodeProtocol},
		{"rst_stream on an idle stream", Config{}, func(rc *h2test.Client) { rc.Fr.WriteRSTStream(1, http2.ErrCodeCancel) }, http2.ErrCodeProtocol},
		{"rst_stream on stream 0", Config{}, func(rc *h2test.Client) { rc.Fr.WriteRSTStream(0, http2.ErrCodeCancel) }, http2.ErrCodeProtocol},
		{"window_update on an idle stream", Config{}, func(rc *h2test.Client) { rc.Fr.WriteWindowUpdate(1, 10) }, http2.ErrCodeProtocol},
		{"window_update of 0 on the connection", Config{}, func(rc *h2test.Client) { rc.Fr.WriteWindowUpdate(0, 0) }, http2.ErrCodeProtocol},
		{"connection window overflow", Config{}, func(rc *h2test.Client) { rc.Fr.WriteWindowUpdate(0, 1<<31-1) }, http2.ErrCodeFlowControl},
		{"settings window change overflows an open stream", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WriteWindowUpdate(1, 1<<31-1-65535)
			rc.Fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65536})
		}, http2.ErrCodeFlowControl},
		{"continuation without headers", Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteContinuation(1, true, rc.Block(h2test.Get...))
		}, http2.ErrCodeProtocol},
		{"headers interrupted before end_headers", Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block(h2test.Get...), EndStream: true})
			rc.Fr.WritePing(false, [8]byte{})
		}, http2.ErrCodeProtocol},
		{"push_promise from a client", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: rc.Block(h2test.Get...), EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"frame over max frame size", Config{MaxReadFrameSize: 16 << 10}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WriteData(1, false, make([]byte, 16<<10+1))
		}, http2.ErrCodeFrameSize},
		{"data over the connection window", Config{MaxReceiveBufferPerConnection: 65535, MaxReceiveBufferPerStream: 1 << 20}, func(rc *h2test.Client) {
			rc.Headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/noread")
			for range 4 {
				rc.Fr.WriteData(1, false, make([]byte, 16384))
			}
		}, http2.ErrCodeFlowControl},
		{"hpack table size update over the advertised", Config{MaxDecoderHeaderTableSize: 4096}, func(rc *h2test.Client) {
			// 0x3f e1 1f: dynamic table size update to 8192 (RFC 7541 6.3).
			blk := append([]byte{0x3f, 0xe1, 0x3f}, rc.Block(h2test.Get...)...)
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk, EndStream: true, EndHeaders: true})
		}, http2.ErrCodeCompression},
		{"second trailers", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block("x-a", "1"), EndStream: false, EndHeaders: true})
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block("x-a", "1"), EndStream: true, EndHeaders: true})
		}, http2.ErrCodeProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := rawServer(t, tc.cfg, blockingHandler())
			tc.send(rc)
			rc.ExpectGoAway(tc.code)
			// and the connection closes
			rc.C.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				if _, err := rc.Fr.ReadFrame(); err != nil {
					if strings.Contains(err.Error(), "timeout") {
						t.Fatal("connection not closed after GOAWAY")
					}
					break
				}
			}
		})
	}
}

// blockingHandler reads the body, then answers; on /noread it waits for
// the request's end without reading.
func blockingHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/noread" {
			<-r.Context().Done()
			return
		}
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("done"))
	})
}

// Stream errors: RST_STREAM with the code, and the connection serves on.
func TestStreamErrors(t *testing.T) {
	g := h2test.Get
	with := func(extra ...string) []string { return append(append([]string{}, g...), extra...) }
	for _, tc := range []struct {
		name string
		cfg  Config
		send func(rc *h2test.Client)
		id   uint32
		code http2.ErrCode
	}{
		{"uppercase field name", Config{}, func(rc *h2test.Client) { rc.Headers(1, true, with("X-Upper", "1")...) }, 1, http2.ErrCodeProtocol},
		{"pseudo after regular", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "GET", ":scheme", "http", "x-a", "1", ":path", "/", ":authority", "a")
		}, 1, http2.ErrCodeProtocol},
		{"pseudo twice", Config{}, func(rc *h2test.Client) { rc.Headers(1, true, with(":path", "/again")...) }, 1, http2.ErrCodeProtocol},
		{"unknown pseudo", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/", ":foo", "x")
		}, 1, http2.ErrCodeProtocol},
		{"response pseudo in request", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/", ":status", "200")
		}, 1, http2.ErrCodeProtocol},
		{"no method", Config{}, func(rc *h2test.Client) { rc.Headers(1, true, ":scheme", "http", ":path", "/", ":authority", "a") }, 1, http2.ErrCodeProtocol},
		{"no scheme", Config{}, func(rc *h2test.Client) { rc.Headers(1, true, ":method", "GET", ":path", "/", ":authority", "a") }, 1, http2.ErrCodeProtocol},
		{"no path", Config{}, func(rc *h2test.Client) { rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":authority", "a") }, 1, http2.ErrCodeProtocol},
		{"empty path", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":path", "", ":authority", "a")
		}, 1, http2.ErrCodeProtocol},
		{"relative path", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":path", "x", ":authority", "a")
		}, 1, http2.ErrCodeProtocol},
		{"connect with a path", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "CONNECT", ":authority", "a:443", ":path", "/")
		}, 1, http2.ErrCodeProtocol},
		{"connect without authority", Config{}, func(rc *h2test.Client) { rc.Headers(1, true, ":method", "CONNECT") }, 1, http2.ErrCodeProtocol},
		{"extended connect not offered", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/", ":authority", "a")
		}, 1, http2.ErrCodeProtocol},
		{"host and authority differ", Config{}, func(rc *h2test.Client) { rc.Headers(1, true, with("host", "other")...) }, 1, http2.ErrCodeProtocol},
		{"userinfo in authority", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/", ":authority", "u@a")
		}, 1, http2.ErrCodeProtocol},
		{"bad content-length", Config{}, func(rc *h2test.Client) { rc.Headers(1, false, with("content-length", "x")...) }, 1, http2.ErrCodeProtocol},
		{"content-length without data", Config{}, func(rc *h2test.Client) { rc.Headers(1, true, with("content-length", "3")...) }, 1, http2.ErrCodeProtocol},
		{"data over content-length", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false, with("content-length", "3")...)
			rc.Fr.WriteData(1, true, []byte("abcd"))
		}, 1, http2.ErrCodeProtocol},
		{"data after end_stream", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/noread")
			rc.Fr.WriteData(1, true, []byte("ab"))
			rc.Fr.WriteData(1, true, []byte("cd"))
		}, 1, http2.ErrCodeStreamClosed},
		{"data on a closed stream", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true)
			rc.Response(1)
			rc.Fr.WriteData(1, true, []byte("x"))
		}, 1, http2.ErrCodeStreamClosed},
		{"headers after end_stream", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/noread")
			rc.Fr.WriteData(1, true, nil)
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block("x-a", "1"), EndStream: true, EndHeaders: true})
		}, 1, http2.ErrCodeStreamClosed},
		{"trailers without end_stream", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block("x-a", "1"), EndHeaders: true})
		}, 1, http2.ErrCodeProtocol},
		{"trailers with a pseudo field", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block(":path", "/"), EndStream: true, EndHeaders: true})
		}, 1, http2.ErrCodeProtocol},
		{"stream window overflow", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WriteWindowUpdate(1, 1<<31-1)
		}, 1, http2.ErrCodeFlowControl},
		{"stream window_update of 0", Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WriteWindowUpdate(1, 0)
		}, 1, http2.ErrCodeProtocol},
		{"data over the stream window", Config{MaxReceiveBufferPerStream: 16384}, func(rc *h2test.Client) {
			rc.Headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/noread")
			rc.Fr.WriteData(1, false, make([]byte, 16384))
			rc.Fr.WriteData(1, false, make([]byte, 1))
		}, 1, http2.ErrCodeFlowControl},
		{"depends on itself (headers)", Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block(h2test.Get...), EndStream: true, EndHeaders: true,
				Priority: http2.PriorityParam{StreamDep: 1, Weight: 1}})
		}, 1, http2.ErrCodeProtocol},
		{"depends on itself (priority)", Config{}, func(rc *h2test.Client) {
			rc.Fr.WritePriority(3, http2.PriorityParam{StreamDep: 3})
		}, 3, http2.ErrCodeProtocol},
		{"over max concurrent streams", Config{MaxConcurrentStreams: 2}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Headers(3, false)
			rc.Headers(5, false)
			rc.ExpectRST(5, http2.ErrCodeRefusedStream)
			rc.Fr.WriteRSTStream(1, http2.ErrCodeCancel)
			rc.Fr.WriteRSTStream(3, http2.ErrCodeCancel)
			rc.Headers(7, false)
			rc.Fr.WriteRSTStream(7, http2.ErrCodeCancel)
		}, 7, http2.ErrCodeNo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := rawServer(t, tc.cfg, blockingHandler())
			tc.send(rc)
			if tc.code != http2.ErrCodeNo {
				rc.ExpectRST(tc.id, tc.code)
			}
			// The connection still serves.
			id := tc.id + 10
			rc.Headers(id, true)
			if r := rc.Response(id); r.Status != "200" {
				t.Fatalf("next stream: %+v", r)
			}
		})
	}
}

// Malformed requests Go's server answers with 400 (connection-specific
// fields, RFC 9113 8.2.2), and oversized header lists with 431.
func TestBadRequestResponses(t *testing.T) {
	for _, tc := range []struct {
		fields []string
		status string
	}{
		{append(append([]string{}, h2test.Get...), "connection", "keep-alive"), "400"},
		{append(append([]string{}, h2test.Get...), "transfer-encoding", "chunked"), "400"},
		{append(append([]string{}, h2test.Get...), "upgrade", "h2c"), "400"},
		{append(append([]string{}, h2test.Get...), "te", "gzip"), "400"},
		{append(append([]string{}, h2test.Get...), "te", "trailers"), "200"},
		{append(append([]string{}, h2test.Get...), "x-big1", strings.Repeat("a", 500), "x-big2", strings.Repeat("a", 500), "x-big3", strings.Repeat("a", 500)), "431"},
	} {
		rc := rawServer(t, Config{MaxHeaderBytes: 1000}, okHandler())
		rc.Headers(1, true, tc.fields...)
		if r := rc.Response(1); r.Status != tc.status {
			t.Errorf("%q: status %s, want %s", tc.fields[len(tc.fields)-2], r.Status, tc.status)
		}
	}
}

func TestPing(t *testing.T) {
	rc := rawServer(t, Config{}, nil)
	data := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	rc.Fr.WritePing(false, data)
	rc.Fr.WritePing(true, [8]byte{9}) // an ACK: not answered
	p, ok := rc.Read().(*http2.PingFrame)
	if !ok || !p.IsAck() || p.Data != data {
		t.Fatalf("%v", p)
	}
	rc.Headers(1, true)
	if r := rc.Response(1); r.Status != "200" {
		t.Fatal(r.Status)
	}
}

func TestPriorityAndUnknownFramesIgnored(t *testing.T) {
	rc := rawServer(t, Config{}, nil)
	rc.Fr.WritePriority(5, http2.PriorityParam{StreamDep: 3, Weight: 10}) // on an idle stream: allowed
	rc.Fr.WriteRawFrame(0xfa, 0, 0, []byte("extension"))
	rc.Fr.WriteRawFrame(0xfa, 0, 1, []byte("extension"))
	rc.Headers(7, true)
	if r := rc.Response(7); r.Status != "200" {
		t.Fatal(r.Status)
	}
	rc.Fr.WritePriority(7, http2.PriorityParam{StreamDep: 0, Weight: 10}) // on a closed stream
	rc.Fr.WriteRSTStream(7, http2.ErrCodeCancel)                          // on a closed stream: ignored
	rc.Fr.WriteWindowUpdate(7, 100)                                       // on a closed stream: allowed
	rc.Headers(9, true)
	if r := rc.Response(9); r.Status != "200" {
		t.Fatal(r.Status)
	}
}

func TestHeadersWithContinuation(t *testing.T) {
	rc := rawServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Long"))
	}))
	long := strings.Repeat("v", 40000)
	blk := rc.Block(append(append([]string{}, h2test.Get...), "x-long", long)...)
	rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:10000], EndStream: true})
	rc.Fr.WriteContinuation(1, false, blk[10000:20000])
	rc.Fr.WriteContinuation(1, true, blk[20000:])
	if r := rc.Response(1); string(r.Body) != long {
		t.Fatalf("body of %d bytes", len(r.Body))
	}
}

// CVE-2023-45288: a header block that never ends is not buffered: the
// connection is closed once it passes the header list bound.
func TestContinuationFlood(t *testing.T) {
	var served atomic.Int32
	rc := rawServer(t, Config{MaxHeaderBytes: 16 << 10}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1) }))
	blk := rc.Block(h2test.Get...)
	rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk})
	one := rc.Block("x-flood", strings.Repeat("f", 1000))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100000; i++ {
			if rc.Fr.WriteContinuation(1, false, one) != nil {
				return
			}
		}
	}()
	rc.ExpectGoAway(http2.ErrCodeProtocol)
	rc.C.Close()
	<-done
	if served.Load() != 0 {
		t.Fatal("a handler ran")
	}
}

func TestContentLengthShort(t *testing.T) {
	got := make(chan error, 1)
	rc := rawServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		got <- err
	}))
	rc.Headers(1, false, append(append([]string{}, h2test.Get...), "content-length", "10")...)
	rc.Fr.WriteData(1, true, []byte("abc"))
	if err := <-got; err == nil || !strings.Contains(err.Error(), "Content-Length of 10") {
		t.Fatalf("body error %v", err)
	}
}

// The body's last read returns its bytes and io.EOF together when the
// client's END_STREAM is in.
func TestBodyEOFWithLastBytes(t *testing.T) {
	type res struct {
		n   int
		err error
	}
	got := make(chan res, 1)
	rc := rawServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond) // the DATA and END_STREAM are in
		buf := make([]byte, 100)
		n, err := r.Body.Read(buf)
		got <- res{n, err}
	}))
	rc.Headers(1, false, append(append([]string{}, h2test.Get...), "content-type", "application/grpc")...)
	rc.Fr.WriteData(1, false, []byte("hello"))
	rc.Fr.WriteData(1, true, []byte(" world"))
	if r := <-got; r.n != 11 || r.err != io.EOF {
		t.Fatalf("Read = %d, %v; want 11, EOF", r.n, r.err)
	}
	rc.Response(1)
}

// SETTINGS_INITIAL_WINDOW_SIZE: a response waits for the client's
// window, and a change of the setting applies to the open stream.
func TestInitialWindowSizeChange(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 10)
	rc := rawServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }),
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	rc.Headers(1, true)
	var got []byte
	for len(got) < 10 {
		switch f := rc.Read().(type) {
		case *http2.DataFrame:
			got = append(got, f.Data()...)
		}
	}
	if len(got) != 10 {
		t.Fatalf("%d bytes sent over a window of 10", len(got))
	}
	rc.C.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if f, err := rc.Fr.ReadFrame(); err == nil {
		if d, ok := f.(*http2.DataFrame); ok && len(d.Data()) > 0 {
			t.Fatalf("DATA beyond the window: %v", f)
		}
	}
	rc.C.SetReadDeadline(time.Now().Add(testTimeout))
	rc.Fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
	for len(got) < 100 {
		switch f := rc.Read().(type) {
		case *http2.DataFrame:
			got = append(got, f.Data()...)
		}
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("%q", got)
	}
}

// The connection's send window: a response bigger than it waits for the
// client's WINDOW_UPDATE on stream 0.
func TestConnectionSendWindow(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 100000)
	rc := rawServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }),
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	rc.Headers(1, true)
	n := 0
	for n < 65535 {
		if d, ok := rc.Read().(*http2.DataFrame); ok {
			n += len(d.Data())
		}
	}
	if n != 65535 {
		t.Fatalf("%d bytes over a connection window of 65535", n)
	}
	rc.Fr.WriteWindowUpdate(0, 100000)
	r := rc.Response(1)
	if n+len(r.Body) != len(body) {
		t.Fatalf("%d bytes", n+len(r.Body))
	}
}

// The server's receive window is given back as the handler reads.
func TestReceiveWindowReplenished(t *testing.T) {
	const size = 1 << 20
	rc := rawServer(t, Config{MaxReceiveBufferPerStream: 65535, MaxReceiveBufferPerConnection: 65535}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		io.WriteString(w, strings.Repeat("y", int(n%7)))
	}))
	rc.Headers(1, false)
	connWin, streamWin := 65535, 65535
	sent := 0
	for sent < size {
		n := min(16384, connWin, streamWin, size-sent)
		if n == 0 {
			f := rc.Read()
			if wu, ok := f.(*http2.WindowUpdateFrame); ok {
				if wu.StreamID == 0 {
					connWin += int(wu.Increment)
				} else {
					streamWin += int(wu.Increment)
				}
			}
			continue
		}
		rc.Fr.WriteData(1, sent+n == size, make([]byte, n))
		sent += n
		connWin -= n
		streamWin -= n
	}
	if r := rc.Response(1); r.Status != "200" {
		t.Fatal(r.Status)
	}
}

// RST_STREAM from the client cancels the handler's context.
func TestResetCancelsHandler(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan struct{})
	rc := rawServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/next" {
			return
		}
		close(started)
		<-r.Context().Done()
		close(cancelled)
	}))
	rc.Headers(1, true)
	<-started
	rc.Fr.WriteRSTStream(1, http2.ErrCodeCancel)
	select {
	case <-cancelled:
	case <-time.After(testTimeout):
		t.Fatal("handler's context not cancelled")
	}
	// frames on the reset stream are ignored or refused, the rest served
	rc.Fr.WriteWindowUpdate(1, 10)
	rc.Headers(3, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/next")
	if r := rc.Response(3); r.Status != "200" {
		t.Fatal(r.Status)
	}
}

func TestClientGoAway(t *testing.T) {
	rc := rawServer(t, Config{}, nil)
	rc.Headers(1, true)
	rc.Response(1)
	rc.Fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	g := rc.ExpectGoAway(http2.ErrCodeNo)
	if g.LastStreamID != 1 {
		t.Fatalf("last stream %d", g.LastStreamID)
	}
}
