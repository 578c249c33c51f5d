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
)

// The RFC 9113 rules, one test each, as raw frames on a real socket (in
// the spirit of h2spec, which is neither packaged nor fetchable here).

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
}

func rawServer(t *testing.T, cfg Config, h http.Handler, s ...http2.Setting) *rawClient {
	t.Helper()
	if h == nil {
		h = okHandler()
	}
	ts := startServer(t, cfg, h)
	rc := dialRaw(t, ts.addr)
	rc.handshake(s...)
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
		if rc.settings[id] != v {
			t.Errorf("setting %v = %d, want %d", id, rc.settings[id], v)
		}
	}
	rc.headers(1, true)
	if r := rc.response(1); r.status != "200" || string(r.body) != "ok" {
		t.Fatalf("%+v", r)
	}
}

func TestBadPreface(t *testing.T) {
	ts := startServer(t, Config{}, okHandler())
	rc := dialRaw(t, ts.addr)
	io.WriteString(rc.c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	rc.read() // the server's SETTINGS
	rc.expectGoAway(http2.ErrCodeProtocol)
}

func TestFirstFrameNotSettings(t *testing.T) {
	ts := startServer(t, Config{}, okHandler())
	rc := dialRaw(t, ts.addr)
	io.WriteString(rc.c, http2.ClientPreface)
	rc.fr.WritePing(false, [8]byte{})
	rc.expectGoAway(http2.ErrCodeProtocol)
}

// Connection errors: each frame sequence ends in GOAWAY with the code.
func TestConnectionErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		send func(rc *rawClient)
		code http2.ErrCode
	}{
		{"settings window too large", Config{}, func(rc *rawClient) {
			rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		}, http2.ErrCodeFlowControl},
		{"settings frame size too small", Config{}, func(rc *rawClient) {
			rc.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 100})
		}, http2.ErrCodeProtocol},
		{"settings enable push 2", Config{}, func(rc *rawClient) {
			rc.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 2})
		}, http2.ErrCodeProtocol},
		{"settings ack with payload", Config{}, func(rc *rawClient) {
			rc.fr.WriteRawFrame(http2.FrameSettings, http2.FlagSettingsAck, 0, make([]byte, 6))
		}, http2.ErrCodeFrameSize},
		{"settings ack never asked", Config{}, func(rc *rawClient) {
			rc.fr.WriteSettingsAck()
		}, http2.ErrCodeProtocol},
		{"settings on a stream", Config{}, func(rc *rawClient) {
			rc.fr.WriteRawFrame(http2.FrameSettings, 0, 1, nil)
		}, http2.ErrCodeProtocol},
		{"ping on a stream", Config{}, func(rc *rawClient) {
			rc.fr.WriteRawFrame(http2.FramePing, 0, 1, make([]byte, 8))
		}, http2.ErrCodeProtocol},
		{"ping of 7 bytes", Config{}, func(rc *rawClient) {
			rc.fr.WriteRawFrame(http2.FramePing, 0, 0, make([]byte, 7))
		}, http2.ErrCodeFrameSize},
		{"headers on an even stream", Config{}, func(rc *rawClient) { rc.headers(2, true) }, http2.ErrCodeProtocol},
		{"stream id going down", Config{}, func(rc *rawClient) {
			rc.headers(5, true)
			rc.headers(3, true)
		}, http2.ErrCodeProtocol},
		{"data on an idle stream", Config{}, func(rc *rawClient) { rc.fr.WriteData(1, true, []byte("x")) }, http2.ErrCodeProtocol},
		{"data on stream 0", Config{}, func(rc *rawClient) { rc.fr.WriteData(0, true, []byte("x")) }, http2.ErrCodeProtocol},
		{"rst_stream on an idle stream", Config{}, func(rc *rawClient) { rc.fr.WriteRSTStream(1, http2.ErrCodeCancel) }, http2.ErrCodeProtocol},
		{"rst_stream on stream 0", Config{}, func(rc *rawClient) { rc.fr.WriteRSTStream(0, http2.ErrCodeCancel) }, http2.ErrCodeProtocol},
		{"window_update on an idle stream", Config{}, func(rc *rawClient) { rc.fr.WriteWindowUpdate(1, 10) }, http2.ErrCodeProtocol},
		{"window_update of 0 on the connection", Config{}, func(rc *rawClient) { rc.fr.WriteWindowUpdate(0, 0) }, http2.ErrCodeProtocol},
		{"connection window overflow", Config{}, func(rc *rawClient) { rc.fr.WriteWindowUpdate(0, 1<<31-1) }, http2.ErrCodeFlowControl},
		{"settings window change overflows an open stream", Config{}, func(rc *rawClient) {
			rc.headers(1, false)
			rc.fr.WriteWindowUpdate(1, 1<<31-1-65535)
			rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65536})
		}, http2.ErrCodeFlowControl},
		{"continuation without headers", Config{}, func(rc *rawClient) {
			rc.fr.WriteContinuation(1, true, rc.block(getFields...))
		}, http2.ErrCodeProtocol},
		{"headers interrupted before end_headers", Config{}, func(rc *rawClient) {
			rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.block(getFields...), EndStream: true})
			rc.fr.WritePing(false, [8]byte{})
		}, http2.ErrCodeProtocol},
		{"push_promise from a client", Config{}, func(rc *rawClient) {
			rc.headers(1, false)
			rc.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: rc.block(getFields...), EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"frame over max frame size", Config{MaxReadFrameSize: 16 << 10}, func(rc *rawClient) {
			rc.headers(1, false)
			rc.fr.WriteData(1, false, make([]byte, 16<<10+1))
		}, http2.ErrCodeFrameSize},
		{"data over the connection window", Config{MaxReceiveBufferPerConnection: 65535, MaxReceiveBufferPerStream: 1 << 20}, func(rc *rawClient) {
			rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/noread")
			for range 4 {
				rc.fr.WriteData(1, false, make([]byte, 16384))
			}
		}, http2.ErrCodeFlowControl},
		{"hpack table size update over the advertised", Config{MaxDecoderHeaderTableSize: 4096}, func(rc *rawClient) {
			// 0x3f e1 1f: dynamic table size update to 8192 (RFC 7541 6.3).
			blk := append([]byte{0x3f, 0xe1, 0x3f}, rc.block(getFields...)...)
			rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk, EndStream: true, EndHeaders: true})
		}, http2.ErrCodeCompression},
		{"second trailers", Config{}, func(rc *rawClient) {
			rc.headers(1, false)
			rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.block("x-a", "1"), EndStream: false, EndHeaders: true})
			rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.block("x-a", "1"), EndStream: true, EndHeaders: true})
		}, http2.ErrCodeProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := rawServer(t, tc.cfg, blockingHandler())
			tc.send(rc)
			rc.expectGoAway(tc.code)
			// and the connection closes
			rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				if _, err := rc.fr.ReadFrame(); err != nil {
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
	g := getFields
	with := func(extra ...string) []string { return append(append([]string{}, g...), extra...) }
	for _, tc := range []struct {
		name string
		cfg  Config
		send func(rc *rawClient)
		id   uint32
		code http2.ErrCode
	}{
		{"uppercase field name", Config{}, func(rc *rawClient) { rc.headers(1, true, with("X-Upper", "1")...) }, 1, http2.ErrCodeProtocol},
		{"pseudo after regular", Config{}, func(rc *rawClient) {
			rc.headers(1, true, ":method", "GET", ":scheme", "http", "x-a", "1", ":path", "/", ":authority", "a")
		}, 1, http2.ErrCodeProtocol},
		{"pseudo twice", Config{}, func(rc *rawClient) { rc.headers(1, true, with(":path", "/again")...) }, 1, http2.ErrCodeProtocol},
		{"unknown pseudo", Config{}, func(rc *rawClient) {
			rc.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/", ":foo", "x")
		}, 1, http2.ErrCodeProtocol},
		{"response pseudo in request", Config{}, func(rc *rawClient) {
			rc.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/", ":status", "200")
		}, 1, http2.ErrCodeProtocol},
		{"no method", Config{}, func(rc *rawClient) { rc.headers(1, true, ":scheme", "http", ":path", "/", ":authority", "a") }, 1, http2.ErrCodeProtocol},
		{"no scheme", Config{}, func(rc *rawClient) { rc.headers(1, true, ":method", "GET", ":path", "/", ":authority", "a") }, 1, http2.ErrCodeProtocol},
		{"no path", Config{}, func(rc *rawClient) { rc.headers(1, true, ":method", "GET", ":scheme", "http", ":authority", "a") }, 1, http2.ErrCodeProtocol},
		{"empty path", Config{}, func(rc *rawClient) {
			rc.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "", ":authority", "a")
		}, 1, http2.ErrCodeProtocol},
		{"relative path", Config{}, func(rc *rawClient) {
			rc.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "x", ":authority", "a")
		}, 1, http2.ErrCodeProtocol},
		{"connect with a path", Config{}, func(rc *rawClient) {
			rc.headers(1, true, ":method", "CONNECT", ":authority", "a:443", ":path", "/")
		}, 1, http2.ErrCodeProtocol},
		{"connect without authority", Config{}, func(rc *rawClient) { rc.headers(1, true, ":method", "CONNECT") }, 1, http2.ErrCodeProtocol},
		{"extended connect not offered", Config{}, func(rc *rawClient) {
			rc.headers(1, true, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/", ":authority", "a")
		}, 1, http2.ErrCodeProtocol},
		{"host and authority differ", Config{}, func(rc *rawClient) { rc.headers(1, true, with("host", "other")...) }, 1, http2.ErrCodeProtocol},
		{"userinfo in authority", Config{}, func(rc *rawClient) {
			rc.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/", ":authority", "u@a")
		}, 1, http2.ErrCodeProtocol},
		{"bad content-length", Config{}, func(rc *rawClient) { rc.headers(1, false, with("content-length", "x")...) }, 1, http2.ErrCodeProtocol},
		{"content-length without data", Config{}, func(rc *rawClient) { rc.headers(1, true, with("content-length", "3")...) }, 1, http2.ErrCodeProtocol},
		{"data over content-length", Config{}, func(rc *rawClient) {
			rc.headers(1, false, with("content-length", "3")...)
			rc.fr.WriteData(1, true, []byte("abcd"))
		}, 1, http2.ErrCodeProtocol},
		{"data after end_stream", Config{}, func(rc *rawClient) {
			rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/noread")
			rc.fr.WriteData(1, true, []byte("ab"))
			rc.fr.WriteData(1, true, []byte("cd"))
		}, 1, http2.ErrCodeStreamClosed},
		{"data on a closed stream", Config{}, func(rc *rawClient) {
			rc.headers(1, true)
			rc.response(1)
			rc.fr.WriteData(1, true, []byte("x"))
		}, 1, http2.ErrCodeStreamClosed},
		{"headers after end_stream", Config{}, func(rc *rawClient) {
			rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/noread")
			rc.fr.WriteData(1, true, nil)
			rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.block("x-a", "1"), EndStream: true, EndHeaders: true})
		}, 1, http2.ErrCodeStreamClosed},
		{"trailers without end_stream", Config{}, func(rc *rawClient) {
			rc.headers(1, false)
			rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.block("x-a", "1"), EndHeaders: true})
		}, 1, http2.ErrCodeProtocol},
		{"trailers with a pseudo field", Config{}, func(rc *rawClient) {
			rc.headers(1, false)
			rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.block(":path", "/"), EndStream: true, EndHeaders: true})
		}, 1, http2.ErrCodeProtocol},
		{"stream window overflow", Config{}, func(rc *rawClient) {
			rc.headers(1, false)
			rc.fr.WriteWindowUpdate(1, 1<<31-1)
		}, 1, http2.ErrCodeFlowControl},
		{"stream window_update of 0", Config{}, func(rc *rawClient) {
			rc.headers(1, false)
			rc.fr.WriteWindowUpdate(1, 0)
		}, 1, http2.ErrCodeProtocol},
		{"data over the stream window", Config{MaxReceiveBufferPerStream: 16384}, func(rc *rawClient) {
			rc.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/noread")
			rc.fr.WriteData(1, false, make([]byte, 16384))
			rc.fr.WriteData(1, false, make([]byte, 1))
		}, 1, http2.ErrCodeFlowControl},
		{"depends on itself (headers)", Config{}, func(rc *rawClient) {
			rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.block(getFields...), EndStream: true, EndHeaders: true,
				Priority: http2.PriorityParam{StreamDep: 1, Weight: 1}})
		}, 1, http2.ErrCodeProtocol},
		{"depends on itself (priority)", Config{}, func(rc *rawClient) {
			rc.fr.WritePriority(3, http2.PriorityParam{StreamDep: 3})
		}, 3, http2.ErrCodeProtocol},
		{"over max concurrent streams", Config{MaxConcurrentStreams: 2}, func(rc *rawClient) {
			rc.headers(1, false)
			rc.headers(3, false)
			rc.headers(5, false)
			rc.expectRST(5, http2.ErrCodeRefusedStream)
			rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			rc.fr.WriteRSTStream(3, http2.ErrCodeCancel)
			rc.headers(7, false)
			rc.fr.WriteRSTStream(7, http2.ErrCodeCancel)
		}, 7, http2.ErrCodeNo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := rawServer(t, tc.cfg, blockingHandler())
			tc.send(rc)
			if tc.code != http2.ErrCodeNo {
				rc.expectRST(tc.id, tc.code)
			}
			// The connection still serves.
			id := tc.id + 10
			rc.headers(id, true)
			if r := rc.response(id); r.status != "200" {
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
		{append(append([]string{}, getFields...), "connection", "keep-alive"), "400"},
		{append(append([]string{}, getFields...), "transfer-encoding", "chunked"), "400"},
		{append(append([]string{}, getFields...), "upgrade", "h2c"), "400"},
		{append(append([]string{}, getFields...), "te", "gzip"), "400"},
		{append(append([]string{}, getFields...), "te", "trailers"), "200"},
		{append(append([]string{}, getFields...), "x-big1", strings.Repeat("a", 500), "x-big2", strings.Repeat("a", 500), "x-big3", strings.Repeat("a", 500)), "431"},
	} {
		rc := rawServer(t, Config{MaxHeaderBytes: 1000}, okHandler())
		rc.headers(1, true, tc.fields...)
		if r := rc.response(1); r.status != tc.status {
			t.Errorf("%q: status %s, want %s", tc.fields[len(tc.fields)-2], r.status, tc.status)
		}
	}
}

func TestPing(t *testing.T) {
	rc := rawServer(t, Config{}, nil)
	data := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	rc.fr.WritePing(false, data)
	rc.fr.WritePing(true, [8]byte{9}) // an ACK: not answered
	p, ok := rc.read().(*http2.PingFrame)
	if !ok || !p.IsAck() || p.Data != data {
		t.Fatalf("%v", p)
	}
	rc.headers(1, true)
	if r := rc.response(1); r.status != "200" {
		t.Fatal(r.status)
	}
}

func TestPriorityAndUnknownFramesIgnored(t *testing.T) {
	rc := rawServer(t, Config{}, nil)
	rc.fr.WritePriority(5, http2.PriorityParam{StreamDep: 3, Weight: 10}) // on an idle stream: allowed
	rc.fr.WriteRawFrame(0xfa, 0, 0, []byte("extension"))
	rc.fr.WriteRawFrame(0xfa, 0, 1, []byte("extension"))
	rc.headers(7, true)
	if r := rc.response(7); r.status != "200" {
		t.Fatal(r.status)
	}
	rc.fr.WritePriority(7, http2.PriorityParam{StreamDep: 0, Weight: 10}) // on a closed stream
	rc.fr.WriteRSTStream(7, http2.ErrCodeCancel)                          // on a closed stream: ignored
	rc.fr.WriteWindowUpdate(7, 100)                                       // on a closed stream: allowed
	rc.headers(9, true)
	if r := rc.response(9); r.status != "200" {
		t.Fatal(r.status)
	}
}

func TestHeadersWithContinuation(t *testing.T) {
	rc := rawServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Long"))
	}))
	long := strings.Repeat("v", 40000)
	blk := rc.block(append(append([]string{}, getFields...), "x-long", long)...)
	rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:10000], EndStream: true})
	rc.fr.WriteContinuation(1, false, blk[10000:20000])
	rc.fr.WriteContinuation(1, true, blk[20000:])
	if r := rc.response(1); string(r.body) != long {
		t.Fatalf("body of %d bytes", len(r.body))
	}
}

// CVE-2023-45288: a header block that never ends is not buffered: the
// connection is closed once it passes the header list bound.
func TestContinuationFlood(t *testing.T) {
	var served atomic.Int32
	rc := rawServer(t, Config{MaxHeaderBytes: 16 << 10}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1) }))
	blk := rc.block(getFields...)
	rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk})
	one := rc.block("x-flood", strings.Repeat("f", 1000))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100000; i++ {
			if rc.fr.WriteContinuation(1, false, one) != nil {
				return
			}
		}
	}()
	rc.expectGoAway(http2.ErrCodeProtocol)
	rc.c.Close()
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
	rc.headers(1, false, append(append([]string{}, getFields...), "content-length", "10")...)
	rc.fr.WriteData(1, true, []byte("abc"))
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
	rc.headers(1, false, append(append([]string{}, getFields...), "content-type", "application/grpc")...)
	rc.fr.WriteData(1, false, []byte("hello"))
	rc.fr.WriteData(1, true, []byte(" world"))
	if r := <-got; r.n != 11 || r.err != io.EOF {
		t.Fatalf("Read = %d, %v; want 11, EOF", r.n, r.err)
	}
	rc.response(1)
}

// SETTINGS_INITIAL_WINDOW_SIZE: a response waits for the client's
// window, and a change of the setting applies to the open stream.
func TestInitialWindowSizeChange(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 10)
	rc := rawServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }),
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	rc.headers(1, true)
	var got []byte
	for len(got) < 10 {
		switch f := rc.read().(type) {
		case *http2.DataFrame:
			got = append(got, f.Data()...)
		}
	}
	if len(got) != 10 {
		t.Fatalf("%d bytes sent over a window of 10", len(got))
	}
	rc.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if f, err := rc.fr.ReadFrame(); err == nil {
		if d, ok := f.(*http2.DataFrame); ok && len(d.Data()) > 0 {
			t.Fatalf("DATA beyond the window: %v", f)
		}
	}
	rc.c.SetReadDeadline(time.Now().Add(testTimeout))
	rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
	for len(got) < 100 {
		switch f := rc.read().(type) {
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
	rc.headers(1, true)
	n := 0
	for n < 65535 {
		if d, ok := rc.read().(*http2.DataFrame); ok {
			n += len(d.Data())
		}
	}
	if n != 65535 {
		t.Fatalf("%d bytes over a connection window of 65535", n)
	}
	rc.fr.WriteWindowUpdate(0, 100000)
	r := rc.response(1)
	if n+len(r.body) != len(body) {
		t.Fatalf("%d bytes", n+len(r.body))
	}
}

// The server's receive window is given back as the handler reads.
func TestReceiveWindowReplenished(t *testing.T) {
	const size = 1 << 20
	rc := rawServer(t, Config{MaxReceiveBufferPerStream: 65535, MaxReceiveBufferPerConnection: 65535}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		io.WriteString(w, strings.Repeat("y", int(n%7)))
	}))
	rc.headers(1, false)
	connWin, streamWin := 65535, 65535
	sent := 0
	for sent < size {
		n := min(16384, connWin, streamWin, size-sent)
		if n == 0 {
			f := rc.read()
			if wu, ok := f.(*http2.WindowUpdateFrame); ok {
				if wu.StreamID == 0 {
					connWin += int(wu.Increment)
				} else {
					streamWin += int(wu.Increment)
				}
			}
			continue
		}
		rc.fr.WriteData(1, sent+n == size, make([]byte, n))
		sent += n
		connWin -= n
		streamWin -= n
	}
	if r := rc.response(1); r.status != "200" {
		t.Fatal(r.status)
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
	rc.headers(1, true)
	<-started
	rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	select {
	case <-cancelled:
	case <-time.After(testTimeout):
		t.Fatal("handler's context not cancelled")
	}
	// frames on the reset stream are ignored or refused, the rest served
	rc.fr.WriteWindowUpdate(1, 10)
	rc.headers(3, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/next")
	if r := rc.response(3); r.status != "200" {
		t.Fatal(r.status)
	}
}

func TestClientGoAway(t *testing.T) {
	rc := rawServer(t, Config{}, nil)
	rc.headers(1, true)
	rc.response(1)
	rc.fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	g := rc.expectGoAway(http2.ErrCodeNo)
	if g.LastStreamID != 1 {
		t.Fatalf("last stream %d", g.LastStreamID)
	}
}
