package h2loop

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/internal/h2test"
)

// The RFC 9113 rules, one test each, as raw frames on a real socket: the
// table of proxy/h2server's conformance_test.go, abuse_test.go and the
// applicable ones of more_test.go, against h2loop with a loop-side
// handler (harness_linux_test.go) in place of an http.Handler.

// confRaw starts a server and a client that did the handshake.
func confRaw(t *testing.T, cfg h2server.Config, s ...http2.Setting) (*confServer, *h2test.Client) {
	t.Helper()
	cs := confStart(t, cfg)
	rc := cs.dial(t)
	rc.Handshake(s...)
	return cs, rc
}

func TestConfPrefaceAndSettings(t *testing.T) {
	_, rc := confRaw(t, h2server.Config{MaxConcurrentStreams: 7, MaxReadFrameSize: 32 << 10, MaxReceiveBufferPerStream: 100000, MaxDecoderHeaderTableSize: 2048})
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

func TestConfBadPreface(t *testing.T) {
	cs := confStart(t, h2server.Config{})
	rc := cs.dial(t)
	io.WriteString(rc.C, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	rc.Read() // the server's SETTINGS
	rc.ExpectGoAway(http2.ErrCodeProtocol)
}

func TestConfFirstFrameNotSettings(t *testing.T) {
	cs := confStart(t, h2server.Config{})
	rc := cs.dial(t)
	io.WriteString(rc.C, http2.ClientPreface)
	rc.Fr.WritePing(false, [8]byte{})
	rc.ExpectGoAway(http2.ErrCodeProtocol)
}

// Connection errors: each frame sequence ends in GOAWAY with the code,
// and the connection closes.
func TestConfConnectionErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  h2server.Config
		send func(rc *h2test.Client)
		code http2.ErrCode
	}{
		{"settings window too large", h2server.Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		}, http2.ErrCodeFlowControl},
		{"settings frame size too small", h2server.Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 100})
		}, http2.ErrCodeProtocol},
		{"settings enable push 2", h2server.Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 2})
		}, http2.ErrCodeProtocol},
		{"settings ack with payload", h2server.Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteRawFrame(http2.FrameSettings, http2.FlagSettingsAck, 0, make([]byte, 6))
		}, http2.ErrCodeFrameSize},
		{"settings ack never asked", h2server.Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteSettingsAck()
		}, http2.ErrCodeProtocol},
		{"settings on a stream", h2server.Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteRawFrame(http2.FrameSettings, 0, 1, nil)
		}, http2.ErrCodeProtocol},
		{"ping on a stream", h2server.Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteRawFrame(http2.FramePing, 0, 1, make([]byte, 8))
		}, http2.ErrCodeProtocol},
		{"ping of 7 bytes", h2server.Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteRawFrame(http2.FramePing, 0, 0, make([]byte, 7))
		}, http2.ErrCodeFrameSize},
		{"headers on an even stream", h2server.Config{}, func(rc *h2test.Client) { rc.Headers(2, true) }, http2.ErrCodeProtocol},
		{"stream id going down", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(5, true)
			rc.Headers(3, true)
		}, http2.ErrCodeProtocol},
		{"data on an idle stream", h2server.Config{}, func(rc *h2test.Client) { rc.Fr.WriteData(1, true, []byte("x")) }, http2.ErrCodeProtocol},
		{"data on stream 0", h2server.Config{}, func(rc *h2test.Client) { rc.Fr.WriteData(0, true, []byte("x")) }, http2.ErrCodeProtocol},
		{"rst_stream on an idle stream", h2server.Config{}, func(rc *h2test.Client) { rc.Fr.WriteRSTStream(1, http2.ErrCodeCancel) }, http2.ErrCodeProtocol},
		{"rst_stream on stream 0", h2server.Config{}, func(rc *h2test.Client) { rc.Fr.WriteRSTStream(0, http2.ErrCodeCancel) }, http2.ErrCodeProtocol},
		{"window_update on an idle stream", h2server.Config{}, func(rc *h2test.Client) { rc.Fr.WriteWindowUpdate(1, 10) }, http2.ErrCodeProtocol},
		{"window_update of 0 on the connection", h2server.Config{}, func(rc *h2test.Client) { rc.Fr.WriteWindowUpdate(0, 0) }, http2.ErrCodeProtocol},
		{"connection window overflow", h2server.Config{}, func(rc *h2test.Client) { rc.Fr.WriteWindowUpdate(0, 1<<31-1) }, http2.ErrCodeFlowControl},
		{"settings window change overflows an open stream", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WriteWindowUpdate(1, 1<<31-1-65535)
			rc.Fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65536})
		}, http2.ErrCodeFlowControl},
		{"continuation without headers", h2server.Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteContinuation(1, true, rc.Block(h2test.Get...))
		}, http2.ErrCodeProtocol},
		{"headers interrupted before end_headers", h2server.Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block(h2test.Get...), EndStream: true})
			rc.Fr.WritePing(false, [8]byte{})
		}, http2.ErrCodeProtocol},
		{"push_promise from a client", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: rc.Block(h2test.Get...), EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"frame over max frame size", h2server.Config{MaxReadFrameSize: 16 << 10}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WriteData(1, false, make([]byte, 16<<10+1))
		}, http2.ErrCodeFrameSize},
		{"data over the connection window", h2server.Config{MaxReceiveBufferPerConnection: 65535, MaxReceiveBufferPerStream: 1 << 20}, func(rc *h2test.Client) {
			rc.Headers(1, false, h2test.Req("POST", "/noread")...)
			for range 4 {
				rc.Fr.WriteData(1, false, make([]byte, 16384))
			}
		}, http2.ErrCodeFlowControl},
		{"hpack table size update over the advertised", h2server.Config{MaxDecoderHeaderTableSize: 4096}, func(rc *h2test.Client) {
			// 0x3f e1 3f: dynamic table size update to 8192 (RFC 7541 6.3).
			blk := append([]byte{0x3f, 0xe1, 0x3f}, rc.Block(h2test.Get...)...)
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk, EndStream: true, EndHeaders: true})
		}, http2.ErrCodeCompression},
		{"second trailers", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block("x-a", "1"), EndStream: false, EndHeaders: true})
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block("x-a", "1"), EndStream: true, EndHeaders: true})
		}, http2.ErrCodeProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs, rc := confRaw(t, tc.cfg)
			tc.send(rc)
			rc.ExpectGoAway(tc.code)
			rc.ExpectClosed()
			// The streams the handler held were ended, and it let go.
			cs.h.waitLetGo(t)
		})
	}
}

// Stream errors: RST_STREAM with the code, and the connection serves on.
func TestConfStreamErrors(t *testing.T) {
	with := func(extra ...string) []string { return append(append([]string{}, h2test.Get...), extra...) }
	for _, tc := range []struct {
		name string
		cfg  h2server.Config
		send func(rc *h2test.Client)
		id   uint32
		code http2.ErrCode
	}{
		{"uppercase field name", h2server.Config{}, func(rc *h2test.Client) { rc.Headers(1, true, with("X-Upper", "1")...) }, 1, http2.ErrCodeProtocol},
		{"pseudo after regular", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "GET", ":scheme", "http", "x-a", "1", ":path", "/", ":authority", "a")
		}, 1, http2.ErrCodeProtocol},
		{"pseudo twice", h2server.Config{}, func(rc *h2test.Client) { rc.Headers(1, true, with(":path", "/again")...) }, 1, http2.ErrCodeProtocol},
		{"unknown pseudo", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/", ":foo", "x")
		}, 1, http2.ErrCodeProtocol},
		{"response pseudo in request", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/", ":status", "200")
		}, 1, http2.ErrCodeProtocol},
		{"no method", h2server.Config{}, func(rc *h2test.Client) { rc.Headers(1, true, ":scheme", "http", ":path", "/", ":authority", "a") }, 1, http2.ErrCodeProtocol},
		{"no scheme", h2server.Config{}, func(rc *h2test.Client) { rc.Headers(1, true, ":method", "GET", ":path", "/", ":authority", "a") }, 1, http2.ErrCodeProtocol},
		{"no path", h2server.Config{}, func(rc *h2test.Client) { rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":authority", "a") }, 1, http2.ErrCodeProtocol},
		{"empty path", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":path", "", ":authority", "a")
		}, 1, http2.ErrCodeProtocol},
		{"relative path", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":path", "x", ":authority", "a")
		}, 1, http2.ErrCodeProtocol},
		{"connect with a path", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "CONNECT", ":authority", "a:443", ":path", "/")
		}, 1, http2.ErrCodeProtocol},
		{"connect without authority", h2server.Config{}, func(rc *h2test.Client) { rc.Headers(1, true, ":method", "CONNECT") }, 1, http2.ErrCodeProtocol},
		{"extended connect not offered", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/", ":authority", "a")
		}, 1, http2.ErrCodeProtocol},
		{"host and authority differ", h2server.Config{}, func(rc *h2test.Client) { rc.Headers(1, true, with("host", "other")...) }, 1, http2.ErrCodeProtocol},
		{"userinfo in authority", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/", ":authority", "u@a")
		}, 1, http2.ErrCodeProtocol},
		{"bad content-length", h2server.Config{}, func(rc *h2test.Client) { rc.Headers(1, false, with("content-length", "x")...) }, 1, http2.ErrCodeProtocol},
		{"content-length without data", h2server.Config{}, func(rc *h2test.Client) { rc.Headers(1, true, with("content-length", "3")...) }, 1, http2.ErrCodeProtocol},
		{"data over content-length", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false, with("content-length", "3")...)
			rc.Fr.WriteData(1, true, []byte("abcd"))
		}, 1, http2.ErrCodeProtocol},
		{"data after end_stream", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false, h2test.Req("POST", "/noread")...)
			rc.Fr.WriteData(1, true, []byte("ab"))
			rc.Fr.WriteData(1, true, []byte("cd"))
		}, 1, http2.ErrCodeStreamClosed},
		{"data on a closed stream", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, true)
			rc.Response(1)
			rc.Fr.WriteData(1, true, []byte("x"))
		}, 1, http2.ErrCodeStreamClosed},
		{"headers after end_stream", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false, h2test.Req("POST", "/noread")...)
			rc.Fr.WriteData(1, true, nil)
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block("x-a", "1"), EndStream: true, EndHeaders: true})
		}, 1, http2.ErrCodeStreamClosed},
		{"trailers without end_stream", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block("x-a", "1"), EndHeaders: true})
		}, 1, http2.ErrCodeProtocol},
		{"trailers with a pseudo field", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block(":path", "/"), EndStream: true, EndHeaders: true})
		}, 1, http2.ErrCodeProtocol},
		{"stream window overflow", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WriteWindowUpdate(1, 1<<31-1)
		}, 1, http2.ErrCodeFlowControl},
		{"stream window_update of 0", h2server.Config{}, func(rc *h2test.Client) {
			rc.Headers(1, false)
			rc.Fr.WriteWindowUpdate(1, 0)
		}, 1, http2.ErrCodeProtocol},
		{"data over the stream window", h2server.Config{MaxReceiveBufferPerStream: 16384}, func(rc *h2test.Client) {
			rc.Headers(1, false, h2test.Req("POST", "/noread")...)
			rc.Fr.WriteData(1, false, make([]byte, 16384))
			rc.Fr.WriteData(1, false, make([]byte, 1))
		}, 1, http2.ErrCodeFlowControl},
		{"depends on itself (headers)", h2server.Config{}, func(rc *h2test.Client) {
			rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block(h2test.Get...), EndStream: true, EndHeaders: true,
				Priority: http2.PriorityParam{StreamDep: 1, Weight: 1}})
		}, 1, http2.ErrCodeProtocol},
		{"depends on itself (priority)", h2server.Config{}, func(rc *h2test.Client) {
			rc.Fr.WritePriority(3, http2.PriorityParam{StreamDep: 3})
		}, 3, http2.ErrCodeProtocol},
		{"over max concurrent streams", h2server.Config{MaxConcurrentStreams: 2}, func(rc *h2test.Client) {
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
			cs, rc := confRaw(t, tc.cfg)
			tc.send(rc)
			if tc.code != http2.ErrCodeNo {
				rc.ExpectRST(tc.id, tc.code)
			}
			// The connection still serves.
			id := tc.id + 10
			rc.Headers(id, true)
			if r := rc.Response(id); r.Status != "200" || string(r.Body) != "ok" {
				t.Fatalf("next stream: %+v", r)
			}
			// And the handler let go of every stream it held.
			cs.h.waitLetGo(t)
		})
	}
}

// Malformed requests answered with 400 (connection-specific fields, RFC
// 9113 8.2.2), and oversized header lists with 431, without the handler.
func TestConfBadRequestResponses(t *testing.T) {
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
		cs, rc := confRaw(t, h2server.Config{MaxHeaderBytes: 1000})
		rc.Headers(1, true, tc.fields...)
		if r := rc.Response(1); r.Status != tc.status {
			t.Errorf("%q: status %s, want %s", tc.fields[len(tc.fields)-2], r.Status, tc.status)
		}
		// The connection serves on.
		rc.Headers(3, true)
		if r := rc.Response(3); r.Status != "200" {
			t.Errorf("%q: the next stream's status %s", tc.fields[len(tc.fields)-2], r.Status)
		}
		want := int32(2)
		if tc.status != "200" {
			want = 1 // the refused request never reached the handler
		}
		if n := cs.h.served.Load(); n != want {
			t.Errorf("%q: %d streams served, want %d", tc.fields[len(tc.fields)-2], n, want)
		}
	}
}

func TestConfPing(t *testing.T) {
	_, rc := confRaw(t, h2server.Config{})
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

func TestConfPriorityAndUnknownFramesIgnored(t *testing.T) {
	_, rc := confRaw(t, h2server.Config{})
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

func TestConfHeadersWithContinuation(t *testing.T) {
	_, rc := confRaw(t, h2server.Config{})
	long := strings.Repeat("v", 40000)
	blk := rc.Block(h2test.Req("GET", "/header?name=X-Long", "x-long", long)...)
	rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:10000], EndStream: true})
	rc.Fr.WriteContinuation(1, false, blk[10000:20000])
	rc.Fr.WriteContinuation(1, true, blk[20000:])
	if r := rc.Response(1); string(r.Body) != long {
		t.Fatalf("body of %d bytes", len(r.Body))
	}
}

// CVE-2023-45288: a header block that never ends is not buffered: the
// connection is closed once it passes the header list bound, and no
// stream reaches the handler.
func TestConfContinuationFlood(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{MaxHeaderBytes: 16 << 10})
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
	select {
	case <-done:
	case <-time.After(confTimeout):
		t.Fatal("the flood's writer did not stop")
	}
	if n := cs.h.served.Load(); n != 0 {
		t.Fatalf("%d streams reached the handler", n)
	}
}

// A body shorter than its content-length is malformed (RFC 9113 8.1.1):
// the handler hears of it (End with PROTOCOL_ERROR), the client gets
// RST_STREAM PROTOCOL_ERROR.
func TestConfContentLengthShort(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{})
	rc.Headers(1, false, h2test.Req("POST", "/hang", "content-length", "10")...)
	rc.Fr.WriteData(1, true, []byte("abc"))
	e := cs.h.next(t, 1, "end")
	var se http2.StreamError
	if !errors.Is(e.err, ErrStreamReset) || !errors.As(e.err, &se) || se.Code != http2.ErrCodeProtocol {
		t.Fatalf("End(%v), want ErrStreamReset with a PROTOCOL_ERROR stream error", e.err)
	}
	rc.ExpectRST(1, http2.ErrCodeProtocol)
	cs.h.waitLetGo(t)
}

// The analogue of h2server's body returning its last bytes and EOF
// together: DATA that came while the stream waited for a handler slot (a
// reset stream the handler has not let go of yet holds it) is given in one
// Data call once the stream starts, End(nil) right after.
func TestConfBodyWithEndWhenStarted(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{MaxConcurrentStreams: 1})
	// In one write, so that all is in before /slow lets go of stream 1.
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block(h2test.Req("GET", "/slow")...), EndStream: true, EndHeaders: true})
	fr.WriteRSTStream(1, http2.ErrCodeCancel)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: rc.Block(h2test.Req("POST", "/hang", "content-type", "application/grpc")...), EndHeaders: true})
	fr.WriteData(3, false, []byte("hello"))
	fr.WriteData(3, true, []byte(" world"))
	if _, err := rc.C.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) == 0 || got[len(got)-1] != "end" {
		select {
		case e := <-cs.h.events:
			switch {
			case e.id == 1 && e.kind == "end" && len(got) > 0:
				t.Fatalf("stream 3 started before stream 1's End: %q", got)
			case e.id != 3:
			case e.kind == "end":
				if e.err != nil {
					t.Fatalf("End(%v)", e.err)
				}
				got = append(got, "end")
			case e.kind == "data":
				got = append(got, string(e.data))
			default:
				got = append(got, e.kind)
			}
		case <-time.After(confTimeout):
			t.Fatalf("stream 3: %q, no end", got)
		}
	}
	if g := strings.Join(got, "|"); g != "serve|hello world|end" {
		t.Fatalf("stream 3 heard %s", g)
	}
}

// SETTINGS_INITIAL_WINDOW_SIZE: a response waits for the client's
// window, and a change of the setting applies to the open stream.
func TestConfInitialWindowSizeChange(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 10)
	_, rc := confRaw(t, h2server.Config{}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	rc.Headers(1, true, h2test.Req("GET", "/body?n=100")...)
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
	rc.C.SetReadDeadline(time.Now().Add(confTimeout))
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
func TestConfConnectionSendWindow(t *testing.T) {
	const size = 100000
	_, rc := confRaw(t, h2server.Config{}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	rc.Headers(1, true, h2test.Req("GET", "/body?n=100000")...)
	n := 0
	for n < 65535 {
		if d, ok := rc.Read().(*http2.DataFrame); ok {
			n += len(d.Data())
		}
	}
	if n != 65535 {
		t.Fatalf("%d bytes over a connection window of 65535", n)
	}
	rc.C.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if f, err := rc.Fr.ReadFrame(); err == nil {
		if d, ok := f.(*http2.DataFrame); ok && len(d.Data()) > 0 {
			t.Fatalf("DATA beyond the connection window: %v", f)
		}
	}
	rc.C.SetReadDeadline(time.Now().Add(confTimeout))
	rc.Fr.WriteWindowUpdate(0, 100000)
	r := rc.Response(1)
	if n+len(r.Body) != size {
		t.Fatalf("%d bytes", n+len(r.Body))
	}
}

// The server's receive window is given back as the handler consumes.
func TestConfReceiveWindowReplenished(t *testing.T) {
	const size = 1 << 20
	_, rc := confRaw(t, h2server.Config{MaxReceiveBufferPerStream: 65535, MaxReceiveBufferPerConnection: 65535})
	rc.Headers(1, false, h2test.Req("POST", "/count")...)
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
	if r := rc.Response(1); r.Status != "200" || string(r.Body) != strings.Repeat("y", size%7) {
		t.Fatal(r.Status, r.Body)
	}
}

// Both ways at once: a body echoed as it comes, each direction bounded by
// its windows (the server's receive window given back only as the echo is
// written, so it follows the client's reading).
func TestConfEchoFlowControl(t *testing.T) {
	const size = 1 << 20
	_, rc := confRaw(t, h2server.Config{MaxReceiveBufferPerStream: 65535, MaxReceiveBufferPerConnection: 65535},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
	rc.Headers(1, false, h2test.Req("POST", "/echo")...)
	in := make([]byte, size)
	for i := range in {
		in[i] = byte(i * 7)
	}
	errc := make(chan error, 1)
	winc := make(chan [2]int, 64) // WINDOW_UPDATEs read: stream 0, stream 1
	go func() {
		connWin, streamWin := 65535, 65535
		sent := 0
		for sent < size {
			n := min(16384, connWin, streamWin, size-sent)
			if n == 0 {
				select {
				case w := <-winc:
					connWin += w[0]
					streamWin += w[1]
				case <-time.After(confTimeout):
					errc <- errors.New("no WINDOW_UPDATE")
					return
				}
				continue
			}
			rc.WMu.Lock()
			err := rc.Fr.WriteData(1, sent+n == size, in[sent:sent+n])
			rc.WMu.Unlock()
			if err != nil {
				errc <- err
				return
			}
			sent += n
			connWin -= n
			streamWin -= n
		}
		errc <- nil
	}()
	var out []byte
	outWin := 65535 // the server's send window for stream 1 and the connection: given back as read
	for done := false; !done; {
		f := rc.Read()
		switch f := f.(type) {
		case *http2.WindowUpdateFrame:
			var w [2]int
			if f.StreamID == 0 {
				w[0] = int(f.Increment)
			} else {
				w[1] = int(f.Increment)
			}
			winc <- w
		case *http2.DataFrame:
			out = append(out, f.Data()...)
			if n := len(f.Data()); n > 0 {
				outWin -= n
				if outWin < 0 {
					t.Fatalf("the server sent %d bytes over its window", -outWin)
				}
				if outWin < 32<<10 {
					rc.WMu.Lock()
					rc.Fr.WriteWindowUpdate(0, uint32(65535-outWin))
					rc.Fr.WriteWindowUpdate(1, uint32(65535-outWin))
					rc.WMu.Unlock()
					outWin = 65535
				}
			}
			done = f.StreamEnded()
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			t.Fatalf("%v", f)
		}
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(confTimeout):
		t.Fatal("the writer did not end")
	}
	if !bytes.Equal(out, in) {
		t.Fatalf("echoed %d bytes, not the %d sent", len(out), len(in))
	}
}

// Trailers both ways: the request's come with End(nil), the response's
// after its body.
func TestConfTrailers(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{})
	rc.Headers(1, false, h2test.Req("POST", "/hang", "trailer", "x-req")...)
	rc.Fr.WriteData(1, false, []byte("abc"))
	rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.Block("x-req", "1"), EndStream: true, EndHeaders: true})
	e := cs.h.next(t, 1, "end")
	if e.err != nil || e.trailer.Get("X-Req") != "1" {
		t.Fatalf("End(%v), trailers %v", e.err, e.trailer)
	}
	rc.Fr.WriteRSTStream(1, http2.ErrCodeCancel)
	rc.Headers(3, true, h2test.Req("GET", "/trailers")...)
	r := rc.Response(3)
	if r.Status != "200" || string(r.Body) != "body" || len(r.Trailers["x-t"]) != 1 || r.Trailers["x-t"][0] != "v" {
		t.Fatalf("%+v", r)
	}
}

// RST_STREAM from the client ends the handler's stream (End with the
// code).
func TestConfResetEndsHandler(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{})
	rc.Headers(1, true, h2test.Req("GET", "/hang")...)
	cs.h.next(t, 1, "serve")
	if e := cs.h.next(t, 1, "end"); e.err != nil { // the request's END_STREAM
		t.Fatalf("End(%v), want End(nil) first", e.err)
	}
	rc.Fr.WriteRSTStream(1, http2.ErrCodeCancel)
	e := cs.h.next(t, 1, "end")
	var se StreamResetError
	if !errors.Is(e.err, ErrStreamReset) || !errors.As(e.err, &se) || se.Code != http2.ErrCodeCancel {
		t.Fatalf("End(%v), want the client's CANCEL", e.err)
	}
	// frames on the reset stream are ignored or refused, the rest served
	rc.Fr.WriteWindowUpdate(1, 10)
	rc.Headers(3, true, h2test.Req("GET", "/next")...)
	if r := rc.Response(3); r.Status != "200" {
		t.Fatal(r.Status)
	}
	cs.h.waitLetGo(t)
}

func TestConfClientGoAway(t *testing.T) {
	_, rc := confRaw(t, h2server.Config{})
	rc.Headers(1, true)
	rc.Response(1)
	rc.Fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	g := rc.ExpectGoAway(http2.ErrCodeNo)
	if g.LastStreamID != 1 {
		t.Fatalf("last stream %d", g.LastStreamID)
	}
}

// The client's GOAWAY with a stream open: the server's GOAWAY names it
// the last, a stream above it is not processed, the open one is served to
// its end, then the connection closes.
func TestConfClientGoAwayWithOpenStream(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{})
	rc.Headers(1, false)
	rc.Fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	g := rc.ExpectGoAway(http2.ErrCodeNo)
	if g.LastStreamID != 1 {
		t.Fatalf("last stream %d", g.LastStreamID)
	}
	rc.Headers(3, true)
	rc.Fr.WriteData(1, true, []byte("x"))
	if r := rc.Response(1); r.Status != "200" || string(r.Body) != "ok" {
		t.Fatalf("%+v", r)
	}
	rc.ExpectClosed()
	if n := cs.h.served.Load(); n != 1 {
		t.Fatalf("%d streams reached the handler, want 1", n)
	}
}

// more_test.go's applicable ones.

func TestConfPrefaceTimeout(t *testing.T) {
	cs := confStart(t, h2server.Config{PrefaceTimeout: 100 * time.Millisecond})
	rc := cs.dial(t)
	rc.Read() // SETTINGS
	start := time.Now()
	for {
		if _, err := rc.Fr.ReadFrame(); err != nil {
			break
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

// The client's SETTINGS_HEADER_TABLE_SIZE bounds the server's encoder:
// with 0, responses use no dynamic table (the client's decoder refuses it).
func TestConfClientHeaderTableSize(t *testing.T) {
	_, rc := confRaw(t, h2server.Config{}, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
	rc.Fr.ReadMetaHeaders.SetAllowedMaxDynamicTableSize(0)
	for id := uint32(1); id < 8; id += 2 {
		rc.Headers(id, true, h2test.Req("GET", "/repeated")...)
		if r := rc.Response(id); len(r.Header["x-repeated"]) != 1 || r.Header["x-repeated"][0] != "the same value every time" {
			t.Fatalf("%v", r.Header)
		}
	}
}

// Frames on a stream the client reset: DATA is refused with STREAM_CLOSED
// (its connection window given back), the rest ignored.
func TestConfFramesAfterClientReset(t *testing.T) {
	_, rc := confRaw(t, h2server.Config{MaxReceiveBufferPerConnection: 65535})
	rc.Headers(1, false, h2test.Req("POST", "/noread")...)
	rc.Fr.WriteRSTStream(1, http2.ErrCodeCancel)
	rc.Fr.WritePriority(1, http2.PriorityParam{StreamDep: 0, Weight: 1})
	rc.Fr.WriteWindowUpdate(1, 5)
	rc.Fr.WriteData(1, false, make([]byte, 60000))
	rc.ExpectRST(1, http2.ErrCodeStreamClosed)
	// the connection's window came back: a full window's worth goes through
	rc.Headers(3, false)
	rc.Fr.WriteData(3, true, make([]byte, 60000))
	if r := rc.Response(3); string(r.Body) != "ok" {
		t.Fatalf("%q", r.Body)
	}
}

// abuse_test.go's.

// Rapid reset (CVE-2023-44487): streams the handler holds at once stay
// within MaxConcurrentStreams, reset ones included (a handler slower than
// the attack lets go of them 50 ms after it took them); a client that
// queues more than four times that gets GOAWAY ENHANCE_YOUR_CALM, and the
// handler is let go of every stream once the client is gone (h2server's
// goroutines coming back down).
func TestConfRapidReset(t *testing.T) {
	const maxStreams = 20
	cs, rc := confRaw(t, h2server.Config{MaxConcurrentStreams: maxStreams})
	goaway := make(chan *http2.GoAwayFrame, 1)
	go func() {
		for {
			f, err := rc.Fr.ReadFrame()
			if err != nil {
				close(goaway)
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				goaway <- g
				return
			}
		}
	}()
	blk := rc.Block(h2test.Req("GET", "/slow")...)
	sent := 0
	for id := uint32(1); id < 2*10000; id += 2 {
		if rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndStream: true, EndHeaders: true}) != nil ||
			rc.Fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break
		}
		sent++
	}
	var g *http2.GoAwayFrame
	select {
	case g = <-goaway:
	case <-time.After(confTimeout):
		t.Fatalf("after %d reset streams: no GOAWAY", sent)
	}
	if g == nil || g.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("after %d reset streams: %v", sent, g)
	}
	if p := cs.h.peak.Load(); p > maxStreams {
		t.Fatalf("the handler held %d streams at once, over %d", p, maxStreams)
	}
	if n := cs.h.served.Load(); n > 6*maxStreams {
		t.Fatalf("%d streams reached the handler before GOAWAY", n)
	}
	rc.C.Close()
	cs.h.waitLetGo(t)
}

// A client that resets streams at a pace the handler keeps up with is
// served on (Go's server's behaviour): streams answered before their
// reset, and streams the handler holds until it (and lets go of at its
// End).
func TestConfResetsWithinBounds(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{MaxConcurrentStreams: 100})
	for id := uint32(1); id < 400; id += 2 {
		rc.Headers(id, true)
		rc.Fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}
	for id := uint32(401); id < 800; id += 2 {
		rc.Headers(id, true, h2test.Req("GET", "/hang")...)
		rc.Fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}
	rc.Headers(801, true)
	if r := rc.Response(801); r.Status != "200" {
		t.Fatal(r.Status)
	}
	cs.h.waitLetGo(t)
}

// A PING flood from a client that does not read: the server stops
// reading once its answers cannot be written (TCP backpressure), or tells
// it to calm down and closes, so nothing queues up without bound; the
// client's writes stall or fail.
func TestConfPingFloodWithoutReading(t *testing.T) {
	_, rc := confRaw(t, h2server.Config{})
	rc.C.SetWriteDeadline(time.Now().Add(3 * time.Second))
	var err error
	sent := 0
	for ; sent < 10000000 && err == nil; sent++ {
		err = rc.Fr.WritePing(false, [8]byte{byte(sent)})
	}
	if err == nil {
		t.Fatalf("%d PINGs taken without any answer read", sent)
	}
	t.Logf("the client's writes stalled after %d PINGs: %v", sent, err)
}

// Too many streams at once: REFUSED_STREAM beyond the limit, the others
// served.
func TestConfTooManyStreams(t *testing.T) {
	_, rc := confRaw(t, h2server.Config{MaxConcurrentStreams: 3})
	for id := uint32(1); id <= 9; id += 2 {
		rc.Headers(id, false)
	}
	rc.ExpectRST(7, http2.ErrCodeRefusedStream)
	rc.ExpectRST(9, http2.ErrCodeRefusedStream)
	for id := uint32(1); id <= 5; id += 2 {
		rc.Fr.WriteData(id, true, nil)
		if r := rc.Response(id); string(r.Body) != "ok" {
			t.Fatalf("%d: %q", id, r.Body)
		}
	}
}

// Extra checks in the same spirit (not in h2server's table).

// A client that ends its side in the middle of a frame is gone: the
// connection closes (h2server's Framer reads io.ErrUnexpectedEOF), also
// with a stream open, and the handler hears of it.
func TestConfEOFMidFrame(t *testing.T) {
	for _, open := range []bool{false, true} {
		cs, rc := confRaw(t, h2server.Config{})
		if open {
			rc.Headers(1, false, h2test.Req("POST", "/hang")...)
			cs.h.next(t, 1, "serve")
		}
		rc.C.Write([]byte{0, 0, 8, byte(http2.FramePing), 0}) // 5 of a PING's 17 bytes
		rc.C.(*net.TCPConn).CloseWrite()
		rc.ExpectClosed()
		if open {
			if e := cs.h.next(t, 1, "end"); !errors.Is(e.err, ErrClientGone) {
				t.Fatalf("End(%v) for a client gone mid-frame, want ErrClientGone", e.err)
			}
			cs.h.waitLetGo(t)
		}
	}
}

// The response's header block is split into HEADERS and CONTINUATION
// frames of at most the client's frame size.
func TestConfResponseContinuation(t *testing.T) {
	_, rc := confRaw(t, h2server.Config{})
	rc.Headers(1, true, h2test.Req("GET", "/bighead?n=40000")...)
	r := rc.Response(1)
	if r.Status != "200" || len(r.Header["x-big"]) != 1 || r.Header["x-big"][0] != strings.Repeat("b", 40000) || string(r.Body) != "ok" {
		t.Fatalf("status %s, %d x-big, body %q", r.Status, len(r.Header["x-big"]), r.Body)
	}
}

// DATA a handler never consumed is given back to the connection's window
// when the stream is reset: a full window's worth goes through on the
// next stream.
func TestConfResetGivesBackUnconsumed(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{MaxReceiveBufferPerConnection: 65535})
	rc.Headers(1, false, h2test.Req("POST", "/noread")...)
	rc.Fr.WriteData(1, false, make([]byte, 60000))
	for got := 0; got < 60000; {
		got += len(cs.h.next(t, 1, "data").data)
	}
	rc.Fr.WriteRSTStream(1, http2.ErrCodeCancel)
	rc.Headers(3, false)
	rc.Fr.WriteData(3, true, make([]byte, 60000))
	if r := rc.Response(3); string(r.Body) != "ok" {
		t.Fatalf("%q", r.Body)
	}
	cs.h.waitLetGo(t) // the /noread stream too, at its End
}

// Padding is flow-controlled but given back at once (RFC 9113 6.1): a
// client that respects the windows sends far more padding than they hold
// to a handler that consumes nothing.
func TestConfPaddingGivenBack(t *testing.T) {
	cs, rc := confRaw(t, h2server.Config{MaxReceiveBufferPerStream: 65535, MaxReceiveBufferPerConnection: 65535})
	rc.Headers(1, false, h2test.Req("POST", "/noread")...)
	connWin, streamWin := 65535, 65535
	data, pad := make([]byte, 100), make([]byte, 200)
	const frames = 300 // 90300 flow-controlled bytes, 30000 of them data
	for i := 0; i < frames; {
		if n := len(data) + len(pad) + 1; connWin < n || streamWin < n {
			switch f := rc.Read().(type) {
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					connWin += int(f.Increment)
				} else {
					streamWin += int(f.Increment)
				}
			case *http2.RSTStreamFrame, *http2.GoAwayFrame:
				t.Fatalf("after %d frames: %v", i, f)
			}
			continue
		}
		rc.Fr.WriteDataPadded(1, false, data, pad)
		connWin -= len(data) + len(pad) + 1
		streamWin -= len(data) + len(pad) + 1
		i++
	}
	rc.Fr.WritePing(false, [8]byte{7})
	for {
		switch f := rc.Read().(type) {
		case *http2.PingFrame:
			got := 0
			for len(cs.h.events) > 0 {
				if e := <-cs.h.events; e.kind == "data" {
					got += len(e.data)
				}
			}
			if got != frames*len(data) {
				t.Fatalf("the handler got %d bytes, want %d", got, frames*len(data))
			}
			return
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			t.Fatalf("%v", f)
		}
	}
}
