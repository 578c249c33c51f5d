package h2suite

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/internal/h2test"
)

// RunConformance runs the RFC 9113 rules, one subtest each, as raw frames
// on a real socket (in the spirit of h2spec, which is neither packaged nor
// fetchable here), against the servers start serves: the frame-level
// rules both of the proxy's HTTP/2 servers keep, with an http.Handler
// (handler) behind them.
func RunConformance(t *testing.T, start Start) {
	runAll(t, start, []test{
		{"PrefaceAndSettings", testPrefaceAndSettings},
		{"BadPreface", testBadPreface},
		{"FirstFrameNotSettings", testFirstFrameNotSettings},
		{"ConnectionErrors", testConnectionErrors},
		{"StreamErrors", testStreamErrors},
		{"BadRequestResponses", testBadRequestResponses},
		{"Ping", testPing},
		{"PriorityAndUnknownFramesIgnored", testPriorityAndUnknownFramesIgnored},
		{"HeadersWithContinuation", testHeadersWithContinuation},
		{"ContinuationFlood", testContinuationFlood},
		{"ContentLengthShort", testContentLengthShort},
		{"BodyEOFWithLastBytes", testBodyEOFWithLastBytes},
		{"InitialWindowSizeChange", testInitialWindowSizeChange},
		{"ConnectionSendWindow", testConnectionSendWindow},
		{"ReceiveWindowReplenished", testReceiveWindowReplenished},
		{"ResetCancelsHandler", testResetCancelsHandler},
		{"ClientGoAway", testClientGoAway},
		{"ClientGoAwayWithOpenStream", testClientGoAwayWithOpenStream},
		{"PrefaceTimeout", testPrefaceTimeout},
		{"ClientHeaderTableSize", testClientHeaderTableSize},
		{"HeadResponse", testHeadResponse},
		{"FramesAfterClientReset", testFramesAfterClientReset},
		{"RapidReset", testRapidReset},
		{"ResetsWithinBounds", testResetsWithinBounds},
		{"PingFloodWithoutReading", testPingFloodWithoutReading},
		{"TooManyStreams", testTooManyStreams},
		{"EOFMidFrame", testEOFMidFrame},
		{"ResponseContinuation", testResponseContinuation},
	})
}

// handler is the suite's http.Handler: the request's path chooses what it
// does.
//
//	/           the body read whole, then 200 "ok"
//	/noread     the body not read; waits for the request's context to end
//	/hang       the body read whole, never answered: waits for the
//	            request's context to end
//	/header?name=X  200 with the request header X's value as the body
//	/body?n=N   200 with N bytes of "0123456789..."
//	/count      the body read whole and counted: 200 with
//	            strings.Repeat("y", n%7)
//	/repeated   200 "ok" with x-repeated
//	/bighead?n=N  200 "ok" with a header x-big of N bytes
//	/twelve     200 "twelve bytes"
//	/slow       50 ms, context or not (a handler slower than an attack),
//	            then 200
//	/short      the body read whole: its error is reported (bodyErr)
//	/lastread   once the whole body is in (Buffered, as both servers'
//	            bodies have it), one Read: reported (lastRead)
//
// It counts the requests it served, and those running at once; started
// and cancelled report /noread's and /hang's (a flood's are not all kept).
type handler struct {
	served, running, peak atomic.Int32

	started   chan string // the path, as its handler starts
	cancelled chan string // the path, once its request's context ended
	bodyErr   chan error
	lastRead  chan readResult
}

type readResult struct {
	n   int
	err error
}

func newHandler() *handler {
	return &handler{
		started:   make(chan string, 1<<10),
		cancelled: make(chan string, 1<<10),
		bodyErr:   make(chan error, 1),
		lastRead:  make(chan readResult, 1),
	}
}

func note[T any](c chan T, v T) {
	select {
	case c <- v:
	default:
	}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.served.Add(1)
	n := h.running.Add(1)
	defer h.running.Add(-1)
	for p := h.peak.Load(); n > p && !h.peak.CompareAndSwap(p, n); p = h.peak.Load() {
	}
	q := r.URL.Query()
	switch r.URL.Path {
	case "/noread", "/hang":
		note(h.started, r.URL.Path)
		if r.URL.Path == "/hang" {
			io.Copy(io.Discard, r.Body)
		}
		<-r.Context().Done()
		note(h.cancelled, r.URL.Path)
	case "/header":
		io.WriteString(w, r.Header.Get(q.Get("name")))
	case "/body":
		n, _ := strconv.Atoi(q.Get("n"))
		w.Write(bytes.Repeat([]byte("0123456789"), n/10+1)[:n])
	case "/count":
		n, _ := io.Copy(io.Discard, r.Body)
		io.WriteString(w, strings.Repeat("y", int(n%7)))
	case "/repeated":
		w.Header().Set("X-Repeated", "the same value every time")
		io.WriteString(w, "ok")
	case "/bighead":
		n, _ := strconv.Atoi(q.Get("n"))
		w.Header().Set("X-Big", strings.Repeat("b", n))
		io.WriteString(w, "ok")
	case "/twelve":
		io.WriteString(w, "twelve bytes")
	case "/slow":
		time.Sleep(50 * time.Millisecond)
	case "/short":
		_, err := io.ReadAll(r.Body)
		note(h.bodyErr, err)
	case "/lastread":
		// Waiting for the body to be in (not a sleep): the Read then
		// tells apart a server that returns io.EOF with the last bytes
		// from one that returns it by itself on the next Read.
		b, ok := r.Body.(interface{ Buffered() (int, bool) })
		if !ok {
			note(h.lastRead, readResult{err: errors.New("the body has no Buffered method")})
			return
		}
		for deadline := time.Now().Add(h2test.Timeout); ; time.Sleep(time.Millisecond) {
			if n, end := b.Buffered(); n == 11 && end {
				break
			}
			if time.Now().After(deadline) {
				note(h.lastRead, readResult{err: errors.New("the body never was in whole")})
				return
			}
		}
		buf := make([]byte, 100)
		n, err := r.Body.Read(buf)
		note(h.lastRead, readResult{n, err})
	default:
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}
}

// wait waits for c's next value (bounded).
func wait[T any](t *testing.T, c chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(h2test.Timeout):
		t.Fatalf("no %s", what)
		var zero T
		return zero
	}
}

// waitReturned waits until every handler the server started returned:
// the streams a test ended (a reset, a connection error, the client gone)
// ended the handlers' requests.
func (h *handler) waitReturned(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(h2test.Timeout)
	for h.running.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d handlers still running", h.running.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// raw starts a server with cfg and the suite's handler, and a client that
// did the handshake (with settings s).
func raw(t *testing.T, start Start, cfg h2server.Config, s ...http2.Setting) (*handler, *h2test.Client) {
	t.Helper()
	h := newHandler()
	tg := start(t, cfg, h)
	rc := h2test.Dial(t, tg.Addr)
	rc.Handshake(s...)
	return h, rc
}

func testPrefaceAndSettings(t *testing.T, start Start) {
	_, rc := raw(t, start, h2server.Config{MaxConcurrentStreams: 7, MaxReadFrameSize: 32 << 10, MaxReceiveBufferPerStream: 100000, MaxDecoderHeaderTableSize: 2048})
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

func testBadPreface(t *testing.T, start Start) {
	tg := start(t, h2server.Config{}, newHandler())
	rc := h2test.Dial(t, tg.Addr)
	io.WriteString(rc.C, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	rc.Read() // the server's SETTINGS
	rc.ExpectGoAway(http2.ErrCodeProtocol)
}

func testFirstFrameNotSettings(t *testing.T, start Start) {
	tg := start(t, h2server.Config{}, newHandler())
	rc := h2test.Dial(t, tg.Addr)
	io.WriteString(rc.C, http2.ClientPreface)
	rc.Fr.WritePing(false, [8]byte{})
	rc.ExpectGoAway(http2.ErrCodeProtocol)
}

// Connection errors: each frame sequence ends in GOAWAY with the code,
// the connection closes, and the handlers it started return.
func testConnectionErrors(t *testing.T, start Start) {
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
			h, rc := raw(t, start, tc.cfg)
			tc.send(rc)
			rc.ExpectGoAway(tc.code)
			rc.ExpectClosed()
			h.waitReturned(t)
		})
	}
}

// Stream errors: RST_STREAM with the code, the connection serves on, and
// the handlers of the streams ended return.
func testStreamErrors(t *testing.T, start Start) {
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
			h, rc := raw(t, start, tc.cfg)
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
			h.waitReturned(t)
		})
	}
}

// Malformed requests answered with 400 without the handler (connection-
// specific fields, RFC 9113 8.2.2), oversized header lists with 431; the
// connection serves on.
func testBadRequestResponses(t *testing.T, start Start) {
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
		field := tc.fields[len(tc.fields)-2]
		h, rc := raw(t, start, h2server.Config{MaxHeaderBytes: 1000})
		rc.Headers(1, true, tc.fields...)
		if r := rc.Response(1); r.Status != tc.status {
			t.Errorf("%q: status %s, want %s", field, r.Status, tc.status)
		}
		rc.Headers(3, true)
		if r := rc.Response(3); r.Status != "200" {
			t.Errorf("%q: the next stream's status %s", field, r.Status)
		}
		want := int32(2)
		if tc.status != "200" {
			want = 1 // the refused request never reached the handler
		}
		if n := h.served.Load(); n != want {
			t.Errorf("%q: %d requests served, want %d", field, n, want)
		}
	}
}

func testPing(t *testing.T, start Start) {
	_, rc := raw(t, start, h2server.Config{})
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

func testPriorityAndUnknownFramesIgnored(t *testing.T, start Start) {
	_, rc := raw(t, start, h2server.Config{})
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

func testHeadersWithContinuation(t *testing.T, start Start) {
	_, rc := raw(t, start, h2server.Config{})
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
// request reaches the handler.
func testContinuationFlood(t *testing.T, start Start) {
	h, rc := raw(t, start, h2server.Config{MaxHeaderBytes: 16 << 10})
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
	wait(t, done, "end of the flood's writer")
	if n := h.served.Load(); n != 0 {
		t.Fatalf("%d requests reached the handler", n)
	}
}

// A body shorter than its content-length is malformed (RFC 9113 8.1.1):
// the stream is reset with PROTOCOL_ERROR, the handler's read fails (not
// io.EOF) naming the declared length, and the connection serves on.
func testContentLengthShort(t *testing.T, start Start) {
	h, rc := raw(t, start, h2server.Config{})
	rc.Headers(1, false, h2test.Req("POST", "/short", "content-length", "10")...)
	rc.Fr.WriteData(1, true, []byte("abc"))
	// RFC 9113 8.1.1: malformed, a stream error PROTOCOL_ERROR; the
	// handler's read fails.
	rc.ExpectRST(1, http2.ErrCodeProtocol)
	if err := wait(t, h.bodyErr, "body error"); err == nil || !strings.Contains(err.Error(), "declared a Content-Length") {
		t.Fatalf("body error %v", err)
	}
	rc.Headers(3, true)
	if r := rc.Response(3); r.Status != "200" {
		t.Fatal(r.Status)
	}
	h.waitReturned(t)
}

// The body's last read returns its bytes and io.EOF together when the
// client's END_STREAM is in (a gRPC server or a relaying transport ends
// its side on it).
func testBodyEOFWithLastBytes(t *testing.T, start Start) {
	h, rc := raw(t, start, h2server.Config{})
	rc.Headers(1, false, h2test.Req("POST", "/lastread", "content-type", "application/grpc")...)
	rc.Fr.WriteData(1, false, []byte("hello"))
	rc.Fr.WriteData(1, true, []byte(" world"))
	if r := wait(t, h.lastRead, "read"); r.n != 11 || r.err != io.EOF {
		t.Fatalf("Read = %d, %v; want 11, EOF", r.n, r.err)
	}
	rc.Response(1)
}

// SETTINGS_INITIAL_WINDOW_SIZE: a response waits for the client's
// window, and a change of the setting applies to the open stream.
func testInitialWindowSizeChange(t *testing.T, start Start) {
	body := bytes.Repeat([]byte("0123456789"), 10)
	_, rc := raw(t, start, h2server.Config{}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	rc.Headers(1, true, h2test.Req("GET", "/body?n=100")...)
	var got []byte
	for len(got) < 10 {
		if d, ok := rc.Read().(*http2.DataFrame); ok {
			got = append(got, d.Data()...)
		}
	}
	if len(got) != 10 {
		t.Fatalf("%d bytes sent over a window of 10", len(got))
	}
	noDataFor(t, rc, 100*time.Millisecond, "beyond the window")
	rc.Fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
	for len(got) < 100 {
		if d, ok := rc.Read().(*http2.DataFrame); ok {
			got = append(got, d.Data()...)
		}
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("%q", got)
	}
}

// noDataFor fails if a DATA frame with data comes within d (the next
// frame only: what a window holds back is all that would come).
func noDataFor(t *testing.T, rc *h2test.Client, d time.Duration, what string) {
	t.Helper()
	rc.C.SetReadDeadline(time.Now().Add(d))
	if f, err := rc.Fr.ReadFrame(); err == nil {
		if d, ok := f.(*http2.DataFrame); ok && len(d.Data()) > 0 {
			t.Fatalf("DATA %s: %v", what, f)
		}
	}
	rc.C.SetReadDeadline(time.Now().Add(h2test.Timeout))
}

// The connection's send window: a response bigger than it waits for the
// client's WINDOW_UPDATE on stream 0.
func testConnectionSendWindow(t *testing.T, start Start) {
	const size = 100000
	_, rc := raw(t, start, h2server.Config{}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	rc.Headers(1, true, h2test.Req("GET", "/body?n="+strconv.Itoa(size))...)
	n := 0
	for n < 65535 {
		if d, ok := rc.Read().(*http2.DataFrame); ok {
			n += len(d.Data())
		}
	}
	if n != 65535 {
		t.Fatalf("%d bytes over a connection window of 65535", n)
	}
	noDataFor(t, rc, 100*time.Millisecond, "beyond the connection window")
	rc.Fr.WriteWindowUpdate(0, size)
	if r := rc.Response(1); n+len(r.Body) != size {
		t.Fatalf("%d bytes", n+len(r.Body))
	}
}

// The server's receive window is given back as the handler reads.
func testReceiveWindowReplenished(t *testing.T, start Start) {
	const size = 1 << 20
	_, rc := raw(t, start, h2server.Config{MaxReceiveBufferPerStream: 65535, MaxReceiveBufferPerConnection: 65535})
	rc.Headers(1, false, h2test.Req("POST", "/count")...)
	connWin, streamWin := 65535, 65535
	sent := 0
	for sent < size {
		n := min(16384, connWin, streamWin, size-sent)
		if n == 0 {
			if wu, ok := rc.Read().(*http2.WindowUpdateFrame); ok {
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

// RST_STREAM from the client cancels the handler's request; frames on the
// reset stream are ignored or refused, the other streams served.
func testResetCancelsHandler(t *testing.T, start Start) {
	h, rc := raw(t, start, h2server.Config{})
	rc.Headers(1, true, h2test.Req("GET", "/hang")...)
	wait(t, h.started, "handler started")
	rc.Fr.WriteRSTStream(1, http2.ErrCodeCancel)
	wait(t, h.cancelled, "request's context cancelled")
	rc.Fr.WriteWindowUpdate(1, 10)
	rc.Headers(3, true, h2test.Req("GET", "/next")...)
	if r := rc.Response(3); r.Status != "200" {
		t.Fatal(r.Status)
	}
	h.waitReturned(t)
}

func testClientGoAway(t *testing.T, start Start) {
	_, rc := raw(t, start, h2server.Config{})
	rc.Headers(1, true)
	rc.Response(1)
	rc.Fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	if g := rc.ExpectGoAway(http2.ErrCodeNo); g.LastStreamID != 1 {
		t.Fatalf("last stream %d", g.LastStreamID)
	}
}

// The client's GOAWAY with a stream open: the server's GOAWAY names it
// the last, a stream above it is not processed, the open one is served to
// its end, then the connection closes.
func testClientGoAwayWithOpenStream(t *testing.T, start Start) {
	h, rc := raw(t, start, h2server.Config{})
	rc.Headers(1, false)
	rc.Fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	if g := rc.ExpectGoAway(http2.ErrCodeNo); g.LastStreamID != 1 {
		t.Fatalf("last stream %d", g.LastStreamID)
	}
	rc.Headers(3, true)
	rc.Fr.WriteData(1, true, []byte("x"))
	if r := rc.Response(1); r.Status != "200" || string(r.Body) != "ok" {
		t.Fatalf("%+v", r)
	}
	rc.ExpectClosed()
	if n := h.served.Load(); n != 1 {
		t.Fatalf("%d requests reached the handler, want 1", n)
	}
}

func testPrefaceTimeout(t *testing.T, start Start) {
	tg := start(t, h2server.Config{PrefaceTimeout: 100 * time.Millisecond}, newHandler())
	rc := h2test.Dial(t, tg.Addr)
	rc.Read() // SETTINGS
	began := time.Now()
	for {
		if _, err := rc.Fr.ReadFrame(); err != nil {
			break
		}
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

// The client's SETTINGS_HEADER_TABLE_SIZE bounds the server's encoder:
// with 0, responses use no dynamic table (the client's decoder refuses it).
func testClientHeaderTableSize(t *testing.T, start Start) {
	_, rc := raw(t, start, h2server.Config{}, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
	rc.Fr.ReadMetaHeaders.SetAllowedMaxDynamicTableSize(0)
	for id := uint32(1); id < 8; id += 2 {
		rc.Headers(id, true, h2test.Req("GET", "/repeated")...)
		if r := rc.Response(id); len(r.Header["x-repeated"]) != 1 || r.Header["x-repeated"][0] != "the same value every time" {
			t.Fatalf("%v", r.Header)
		}
	}
}

// A HEAD response is its HEADERS alone, with the length the body written
// would have had.
func testHeadResponse(t *testing.T, start Start) {
	_, rc := raw(t, start, h2server.Config{})
	rc.Headers(1, true, h2test.Req("HEAD", "/twelve")...)
	r := rc.Response(1)
	if len(r.Frames) != 1 || len(r.Body) != 0 || len(r.Header["content-length"]) != 1 || r.Header["content-length"][0] != "12" {
		t.Fatalf("%d frames, body %q, %v", len(r.Frames), r.Body, r.Header)
	}
}

// Frames on a stream the client reset: DATA is refused with STREAM_CLOSED
// (its connection window given back), the rest ignored.
func testFramesAfterClientReset(t *testing.T, start Start) {
	h, rc := raw(t, start, h2server.Config{MaxReceiveBufferPerConnection: 65535})
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
	h.waitReturned(t)
}

// Rapid reset (CVE-2023-44487): handlers running at once stay within
// MaxConcurrentStreams, reset ones included; a client that queues more
// than four times that gets GOAWAY ENHANCE_YOUR_CALM before many more
// reach the handler; once it is gone the handlers return and the
// server's goroutines come back down.
func testRapidReset(t *testing.T, start Start) {
	const maxStreams = 20
	h := newHandler()
	tg := start(t, h2server.Config{MaxConcurrentStreams: maxStreams}, h)
	before := runtime.NumGoroutine()
	rc := h2test.Dial(t, tg.Addr)
	rc.Handshake()
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
	if g := wait(t, goaway, "GOAWAY"); g == nil || g.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("after %d reset streams: %v", sent, g)
	}
	t.Logf("GOAWAY after %d reset streams: %d served, at most %d at once", sent, h.served.Load(), h.peak.Load())
	if p := h.peak.Load(); p > maxStreams {
		t.Fatalf("%d handlers at once, over %d", p, maxStreams)
	}
	if n := h.served.Load(); n > 6*maxStreams {
		t.Fatalf("%d requests reached the handler before GOAWAY", n)
	}
	rc.C.Close()
	h.waitReturned(t)
	deadline := time.Now().Add(h2test.Timeout)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		t.Fatalf("%d goroutines, %d before", n, before)
	}
}

// A client that resets streams at a pace the handlers keep up with is
// served on (Go's server's behaviour): streams answered before their
// reset, and streams whose handlers wait until it (and return then).
func testResetsWithinBounds(t *testing.T, start Start) {
	h, rc := raw(t, start, h2server.Config{MaxConcurrentStreams: 100})
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
	h.waitReturned(t)
}

// A PING flood from a client that does not read: the server stops
// reading once its answers cannot be written (TCP backpressure), or tells
// it to calm down and closes, so nothing queues up without bound; the
// client's writes stall or fail.
func testPingFloodWithoutReading(t *testing.T, start Start) {
	_, rc := raw(t, start, h2server.Config{})
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
func testTooManyStreams(t *testing.T, start Start) {
	_, rc := raw(t, start, h2server.Config{MaxConcurrentStreams: 3})
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

// A client that ends its side in the middle of a frame is gone: the
// connection closes (a Framer reads io.ErrUnexpectedEOF), also with a
// stream open, whose handler's request is cancelled.
func testEOFMidFrame(t *testing.T, start Start) {
	for _, open := range []bool{false, true} {
		h, rc := raw(t, start, h2server.Config{})
		if open {
			rc.Headers(1, false, h2test.Req("POST", "/hang")...)
			wait(t, h.started, "handler started")
		}
		rc.C.Write([]byte{0, 0, 8, byte(http2.FramePing), 0}) // 5 of a PING's 17 bytes
		rc.C.(*net.TCPConn).CloseWrite()
		rc.ExpectClosed()
		if open {
			wait(t, h.cancelled, "request's context cancelled")
			h.waitReturned(t)
		}
	}
}

// The response's header block is split into HEADERS and CONTINUATION
// frames of at most the client's frame size (the default: the client
// sends none).
func testResponseContinuation(t *testing.T, start Start) {
	_, rc := raw(t, start, h2server.Config{})
	rc.Fr.SetMaxReadFrameSize(16 << 10) // a bigger frame fails the read
	rc.Headers(1, true, h2test.Req("GET", "/bighead?n=40000")...)
	r := rc.Response(1)
	if r.Status != "200" || len(r.Header["x-big"]) != 1 || r.Header["x-big"][0] != strings.Repeat("b", 40000) || string(r.Body) != "ok" {
		t.Fatalf("status %s, %d x-big, body %q", r.Status, len(r.Header["x-big"]), r.Body)
	}
}
