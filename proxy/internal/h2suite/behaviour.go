package h2suite

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/internal/h2test"
)

// RunBehaviour runs, as subtests, what a server does for an http.Handler:
// Go's HTTP/2 client where it suffices, raw frames (h2test) where a test
// reads the frames themselves.
func RunBehaviour(t *testing.T, start Start) {
	runAll(t, start, []test{
		{"GoClientGet", goClientGet},
		{"BodiesBothWays", bodiesBothWays},
		{"Trailers", trailers},
		{"ResponseFraming", responseFraming},
		{"OneWritePerResponse", oneWritePerResponse},
		{"Informational", informational},
		{"HandlerPanics", handlerPanics},
		{"ClientCancel", clientCancel},
		{"BodyReadAfterHandler", bodyReadAfterHandler},
		{"ResponseController", responseController},
		{"ShutdownDrains", shutdownDrains},
		{"ShutdownGoAwayLastStream", shutdownGoAwayLastStream},
		{"IdleTimeout", idleTimeout},
		{"ConcurrentStreams", concurrentStreams},
		{"StreamContext", streamContext},
		{"ResetBodyError", resetBodyError},
	})
}

// client is Go's HTTP/2 client, prior knowledge.
func client(t testing.TB) *http.Client {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: h2test.Timeout}
}

// okHandler reads the body and answers "ok".
func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
}

// await waits for ch (bounded), failing with what otherwise.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(h2test.Timeout):
		t.Fatal(what)
		panic("unreachable")
	}
}

func goClientGet(t *testing.T, start Start) {
	ts := start(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Proto", r.Proto)
		w.Header().Set("X-Host", r.Host) // the client's :authority
		w.Header().Set("X-Method", r.Method)
		io.WriteString(w, "hello "+r.URL.Path)
	}))
	c := client(t)
	for range 3 {
		resp, err := c.Get("http://" + ts.Addr + "/x")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// ContentLength: a handler that returns without flushing has its
		// length declared.
		if resp.ProtoMajor != 2 || string(b) != "hello /x" || resp.Header.Get("X-Method") != "GET" || resp.ContentLength != 8 ||
			resp.Header.Get("X-Proto") != "HTTP/2.0" || resp.Header.Get("X-Host") != ts.Addr {
			t.Fatalf("%s %q %v %d", resp.Proto, b, resp.Header, resp.ContentLength)
		}
	}
	resp, err := c.Post("http://"+ts.Addr+"/echo", "text/plain", strings.NewReader(strings.Repeat("a", 100000)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func bodiesBothWays(t *testing.T, start Start) {
	ts := start(t, h2server.Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 128 << 10}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read: %v", err)
		}
		if r.ContentLength >= 0 && int64(len(b)) != r.ContentLength {
			t.Errorf("%d bytes, ContentLength %d", len(b), r.ContentLength)
		}
		w.Write(b)
		w.Write(b) // twice: responses bigger than the client's windows
	}))
	c := client(t)
	var wg sync.WaitGroup
	for _, size := range []int{0, 1, 4095, 4096, 4097, 16384, 100000, 3 << 20} {
		for _, chunked := range []bool{false, true} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := make([]byte, size)
				rand.Read(body)
				var rd io.Reader = bytes.NewReader(body)
				if chunked {
					rd = io.MultiReader(rd) // unknown length
				}
				req, _ := http.NewRequest("POST", "http://"+ts.Addr+"/", rd)
				resp, err := c.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || !bytes.Equal(got, append(append([]byte{}, body...), body...)) {
					t.Errorf("size %d chunked %v: %d bytes back, %v", size, chunked, len(got), err)
				}
			}()
		}
	}
	wg.Wait()
}

func trailers(t *testing.T, start Start) {
	ts := start(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if got := r.Trailer.Get("X-Req-Trailer"); got != "rt" {
			t.Errorf("request trailer %q", got)
		}
		w.Header().Set("Trailer", "X-Declared")
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(200)
		io.WriteString(w, "body")
		w.Header().Set("X-Declared", "d")
		w.Header().Set(http.TrailerPrefix+"X-Late", "l")
	}))
	req, _ := http.NewRequest("POST", "http://"+ts.Addr+"/", io.MultiReader(strings.NewReader("abc")))
	req.Trailer = http.Header{"X-Req-Trailer": {"rt"}}
	resp, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "body" || resp.Trailer.Get("X-Declared") != "d" || resp.Trailer.Get("X-Late") != "l" {
		t.Fatalf("%q %v", b, resp.Trailer)
	}
}

// grpcUnaryHandler answers as a gRPC server does a unary call: HEADERS,
// one message, trailers with Grpc-Status.
func grpcUnaryHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Trailer", "Grpc-Status")
	w.Header().Set("Content-Type", "application/grpc")
	io.Copy(io.Discard, r.Body)
	w.Write([]byte{0, 0, 0, 0, 2, 8, 1})
	w.Header().Set("Grpc-Status", "0")
}

// A gRPC trailers-only response is one HEADERS frame with END_STREAM; a
// small response with trailers is HEADERS, DATA and trailers.
func responseFraming(t *testing.T, start Start) {
	ts := start(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/only" {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "5")
			return
		}
		grpcUnaryHandler(w, r)
	}))
	rc := h2test.Dial(t, ts.Addr)
	rc.Handshake()
	rc.Headers(1, true, h2test.Req("POST", "/only")...)
	r := rc.Response(1)
	if len(r.Frames) != 1 || fmt.Sprint(r.Header["grpc-status"]) != "[5]" {
		t.Fatalf("trailers-only: %d frames %v", len(r.Frames), r.Header)
	}
	rc.Headers(3, true, h2test.Req("POST", "/call")...)
	r = rc.Response(3)
	if len(r.Frames) != 3 || fmt.Sprint(r.Trailers["grpc-status"]) != "[0]" || len(r.Body) != 7 {
		t.Fatalf("unary: %d frames, trailers %v, body %d", len(r.Frames), r.Trailers, len(r.Body))
	}
}

// Each small response leaves in one write (HEADERS, DATA, trailers): one
// system call, one packet, where a write for each frame would be three.
func oneWritePerResponse(t *testing.T, start Start) {
	ts := start(t, h2server.Config{}, http.HandlerFunc(grpcUnaryHandler))
	c, writes := ts.DialCounting(t)
	rc := h2test.Frames(t, c)
	// The handshake reads everything the server writes before the first
	// request: what is counted after it is the responses' writes.
	rc.Handshake()
	for i := uint32(1); i < 20; i += 2 {
		before := writes()
		rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: i, BlockFragment: rc.Block(h2test.Req("POST", "/", "content-type", "application/grpc")...), EndHeaders: true})
		rc.Fr.WriteData(i, true, []byte{0, 0, 0, 0, 0})
		r := rc.Response(i)
		if len(r.Frames) != 3 {
			t.Fatalf("%d frames", len(r.Frames))
		}
		if n := writes() - before; n != 1 {
			t.Fatalf("response %d took %d writes", i, n)
		}
	}
}

func informational(t *testing.T, start Start) {
	ts := start(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		b, _ := io.ReadAll(r.Body) // 100-continue is sent here
		w.Write(b)
	}))
	c := client(t)
	c.Transport.(*http.Transport).ExpectContinueTimeout = 5 * time.Second
	var got []int
	var mu sync.Mutex
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		mu.Lock()
		got = append(got, code)
		mu.Unlock()
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "POST", "http://"+ts.Addr+"/", strings.NewReader("payload"))
	req.Header.Set("Expect", "100-continue")
	start0 := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// Well within ExpectContinueTimeout: the body went at the 100, not at
	// the client's timeout.
	if string(b) != "payload" || time.Since(start0) > 4*time.Second {
		t.Fatalf("%q after %v", b, time.Since(start0))
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != "[103]" && fmt.Sprint(got) != "[103 100]" {
		t.Fatalf("1xx: %v", got)
	}
}

// A handler that panics (or calls runtime.Goexit) after its headers went
// has its stream reset, the connection serving on; the panic is logged,
// http.ErrAbortHandler's is not.
func handlerPanics(t *testing.T, start Start) {
	ts := start(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X", "1")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		switch r.URL.Path {
		case "/abort":
			panic(http.ErrAbortHandler)
		case "/panic":
			panic("boom")
		case "/goexit":
			runtime.Goexit()
		}
	}))
	for _, p := range []string{"/abort", "/panic", "/goexit"} {
		rc := h2test.Dial(t, ts.Addr)
		rc.Handshake()
		rc.Headers(1, true, h2test.Req("GET", p)...)
		rc.ExpectRST(1, http2.ErrCodeInternal)
		rc.Headers(3, true)
		if r := rc.Response(3); r.Status != "200" {
			t.Fatal(r.Status)
		}
	}
	if s := ts.Log(); !strings.Contains(s, "boom") || strings.Contains(s, "abort") {
		t.Fatalf("log: %s", s)
	}
}

// The client's cancel (RST_STREAM) ends the request's context, and the
// body's reads fail.
func clientCancel(t *testing.T, start Start) {
	started, cancelled := make(chan struct{}), make(chan error, 1)
	ts := start(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
		_, err := r.Body.Read(make([]byte, 1))
		cancelled <- err
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("x"))
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+ts.Addr+"/", pr)
	resp, err := client(t).Do(req) // the handler flushed its headers
	if err != nil {
		t.Fatal(err)
	}
	await(t, started, "handler not started")
	cancel()
	resp.Body.Close()
	if err := await(t, cancelled, "handler not cancelled"); err == nil {
		t.Fatal("body read after reset: no error")
	}
}

// A request body read after the handler returned (a relaying goroutine
// still copying it) fails, without racing the server.
func bodyReadAfterHandler(t *testing.T, start Start) {
	got := make(chan error, 1)
	ts := start(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		go func() {
			time.Sleep(50 * time.Millisecond)
			_, err := io.ReadAll(r.Body)
			got <- err
		}()
		io.WriteString(w, "early")
	}))
	pr, pw := io.Pipe()
	go func() { pw.Write([]byte("abc")); time.Sleep(200 * time.Millisecond); pw.Close() }()
	resp, err := client(t).Post("http://"+ts.Addr+"/", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err := await(t, got, "the read after the handler did not end"); !errors.Is(err, ts.ErrHandlerComplete) {
		t.Fatalf("read after the handler: %v, want %v", err, ts.ErrHandlerComplete)
	}
}

func responseController(t *testing.T, start Start) {
	ts := start(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.EnableFullDuplex(); err != nil {
			t.Error(err)
		}
		switch r.URL.Path {
		case "/flush":
			io.WriteString(w, "first")
			if err := rc.Flush(); err != nil {
				t.Error(err)
			}
			time.Sleep(100 * time.Millisecond)
			io.WriteString(w, "second")
		case "/readdeadline":
			rc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			_, err := io.ReadAll(r.Body)
			fmt.Fprint(w, errors.Is(err, os.ErrDeadlineExceeded))
		case "/writedeadline":
			rc.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			w.WriteHeader(200)
			rc.Flush()
			time.Sleep(100 * time.Millisecond)
			_, err := w.Write(make([]byte, 10000))
			if err == nil {
				t.Error("write after the write deadline succeeded")
			}
		}
	}))
	c := client(t)
	resp, err := c.Get("http://" + ts.Addr + "/flush")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	start0 := time.Now()
	io.ReadFull(resp.Body, buf)
	// Before the handler's 100 ms sleep ends: the flush sent it.
	if string(buf) != "first" || time.Since(start0) > 90*time.Millisecond {
		t.Fatalf("flushed part %q after %v", buf, time.Since(start0))
	}
	rest, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(rest) != "second" {
		t.Fatalf("%q", rest)
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	resp, err = c.Post("http://"+ts.Addr+"/readdeadline", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "true" {
		t.Fatalf("read deadline: %q", b)
	}
	resp, err = c.Get("http://" + ts.Addr + "/writedeadline")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("no error from a stream reset at its write deadline")
	}
}

// Shutdown lets a request in flight finish, and returns only then.
func shutdownDrains(t *testing.T, start Start) {
	started, release := make(chan struct{}), make(chan struct{})
	ts := start(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	}))
	c := client(t)
	res := make(chan string, 1)
	go func() {
		resp, err := c.Get("http://" + ts.Addr + "/slow")
		if err != nil {
			res <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- string(b)
	}()
	await(t, started, "the request did not start")
	shut := make(chan struct{})
	go func() { ts.Shutdown(); close(shut) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case <-shut:
		close(release)
		t.Fatal("Shutdown returned with a request in flight")
	default:
	}
	close(release)
	if got := await(t, res, "the in-flight request did not end"); got != "done" {
		t.Fatalf("in-flight request: %s", got)
	}
	await(t, shut, "Shutdown did not return")
}

// Shutdown's GOAWAY names the last stream the server took: that one is
// served, one above it is not, and the connection closes after.
func shutdownGoAwayLastStream(t *testing.T, start Start) {
	started := make(chan struct{}, 1)
	ts := start(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "done")
	}))
	rc := h2test.Dial(t, ts.Addr)
	rc.Handshake()
	rc.Headers(1, false)
	await(t, started, "the request did not start")
	go ts.Shutdown()
	g := rc.ExpectGoAway(http2.ErrCodeNo)
	if g.LastStreamID != 1 {
		t.Fatalf("last stream %d", g.LastStreamID)
	}
	rc.Headers(3, true) // above the last: ignored
	rc.Fr.WriteData(1, true, []byte("end"))
	if r := rc.Response(1); string(r.Body) != "done" {
		t.Fatalf("%q", r.Body)
	}
	for {
		f, err := rc.Fr.ReadFrame()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("connection not closed after the drain")
		}
		if err != nil {
			break // closed
		}
		if f.Header().StreamID == 3 {
			t.Fatalf("stream 3 served after GOAWAY: %v", f)
		}
	}
}

// A connection without streams for IdleTimeout gets GOAWAY, then closes.
func idleTimeout(t *testing.T, start Start) {
	ts := start(t, h2server.Config{IdleTimeout: 100 * time.Millisecond}, okHandler())
	rc := h2test.Dial(t, ts.Addr)
	rc.Handshake()
	rc.Headers(1, true)
	rc.Response(1)
	start0 := time.Now()
	rc.ExpectGoAway(http2.ErrCodeNo)
	if d := time.Since(start0); d < 80*time.Millisecond {
		t.Fatalf("GOAWAY after %v", d)
	}
	rc.ExpectClosed()
}

// More requests than MaxConcurrentStreams at once: the client queues
// them, none is lost or mixed up.
func concurrentStreams(t *testing.T, start Start) {
	ts := start(t, h2server.Config{MaxConcurrentStreams: 50}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		time.Sleep(time.Millisecond)
		w.Write(b)
	}))
	c := client(t)
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := strings.Repeat(fmt.Sprint(i), 100)
			resp, err := c.Post("http://"+ts.Addr+"/", "text/plain", strings.NewReader(msg))
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != msg {
				t.Errorf("%d: %q", i, b)
			}
		}()
	}
	wg.Wait()
}

// A request's context, and those derived from it, end at the handler's
// end, at the client's RST_STREAM while the handler runs, and at the end
// of the context the server's requests derive from (Target.EndContext).
func streamContext(t *testing.T, start Start) {
	ended := make(chan string, 4)
	started, returned := make(chan struct{}, 4), make(chan struct{}, 4)
	ts := start(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		derived, cancel := context.WithCancel(ctx)
		defer cancel()
		if r.URL.Path == "/done" {
			context.AfterFunc(ctx, func() { ended <- r.URL.Path })
			return
		}
		defer func() { returned <- struct{}{} }()
		started <- struct{}{}
		select {
		case <-derived.Done():
			ended <- r.URL.Path
		case <-time.After(h2test.Timeout):
			t.Errorf("%s: the request's context did not end", r.URL.Path)
		}
	}))
	waitEnded := func(what string) {
		t.Helper()
		if p := await(t, ended, "the context of "+what+" did not end"); p != what {
			t.Fatalf("the context of %s ended, want %s", p, what)
		}
	}

	rc := h2test.Dial(t, ts.Addr)
	rc.Handshake()
	rc.Headers(1, true, h2test.Req("GET", "/done")...)
	if r := rc.Response(1); r.Status != "200" {
		t.Fatal(r.Status)
	}
	waitEnded("/done")
	rc.Headers(3, true, h2test.Req("GET", "/reset")...)
	await(t, started, "/reset: the handler did not start")
	rc.Fr.WriteRSTStream(3, http2.ErrCodeCancel)
	waitEnded("/reset")
	await(t, returned, "/reset: the handler did not return")

	rc.Headers(5, true, h2test.Req("GET", "/conn")...)
	await(t, started, "/conn: the handler did not start")
	ts.EndContext()
	waitEnded("/conn")
	await(t, returned, "/conn: the handler did not return")
}

// The client's RST_STREAM fails a body read with an http2.StreamError
// carrying the client's code (grpc-go's handler transport maps it to the
// call's status: CANCEL is codes.Canceled), and only once the request's
// context has ended (as Go's server: a handler that sees the read fail
// finds the context done).
func resetBodyError(t *testing.T, start Start) {
	type result struct {
		err    error
		ctxErr error
	}
	res := make(chan result, 1)
	started := make(chan struct{}, 1)
	ts := start(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		_, err := r.Body.Read(make([]byte, 10))
		res <- result{err, r.Context().Err()}
	}))
	rc := h2test.Dial(t, ts.Addr)
	rc.Handshake()
	var wrongType, ctxLate error
	for i := uint32(1); i < 200; i += 2 {
		rc.Headers(i, false)
		await(t, started, fmt.Sprintf("stream %d: the handler did not start", i))
		if i%4 == 1 {
			time.Sleep(100 * time.Microsecond) // the handler in its read, or not yet
		}
		if err := rc.Fr.WriteRSTStream(i, http2.ErrCodeCancel); err != nil {
			t.Fatal(err)
		}
		r := await(t, res, fmt.Sprintf("stream %d: the body read did not end at the reset", i))
		if r.err == nil {
			t.Fatalf("stream %d: the body read after the reset did not fail", i)
		}
		var se http2.StreamError
		if !errors.As(r.err, &se) || se.Code != http2.ErrCodeCancel {
			wrongType = r.err
		}
		if r.ctxErr == nil {
			ctxLate = r.err
		}
	}
	if wrongType != nil {
		t.Errorf("the body read after RST_STREAM CANCEL failed with %T %v, want http2.StreamError CANCEL", wrongType, wrongType)
	}
	if ctxLate != nil {
		t.Errorf("the body read failed (%v) before the request's context ended", ctxLate)
	}
}
