package h2server

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meridian-mesh/meridian/proxy/internal/ctxwatch"
	"github.com/meridian-mesh/meridian/proxy/internal/h2test"
)

func TestBodiesBothWays(t *testing.T) {
	ts := startServer(t, Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 128 << 10}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	c := h2cClient(t)
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
				req, _ := http.NewRequest("POST", "http://"+ts.addr+"/", rd)
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

func TestTrailers(t *testing.T) {
	ts := startServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	c := h2cClient(t)
	req, _ := http.NewRequest("POST", "http://"+ts.addr+"/", io.MultiReader(strings.NewReader("abc")))
	req.Trailer = http.Header{"X-Req-Trailer": {"rt"}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "body" || resp.Trailer.Get("X-Declared") != "d" || resp.Trailer.Get("X-Late") != "l" {
		t.Fatalf("%q %v", b, resp.Trailer)
	}
}

// A gRPC trailers-only response is one HEADERS frame with END_STREAM; a
// small response with trailers is HEADERS, DATA and trailers in one write.
func TestResponseFraming(t *testing.T) {
	writes := make(chan int, 1)
	ts := startServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/only" {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "5")
			return
		}
		w.Header().Set("Trailer", "Grpc-Status")
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(200)
		w.Write([]byte{0, 0, 0, 0, 2, 8, 1})
		w.Header().Set("Grpc-Status", "0")
	}))
	_ = writes
	rc := h2test.Dial(t, ts.addr)
	rc.Handshake()
	rc.Headers(1, true, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/only")
	r := rc.Response(1)
	if len(r.Frames) != 1 || r.Header["grpc-status"][0] != "5" {
		t.Fatalf("trailers-only: %d frames %v", len(r.Frames), r.Header)
	}
	rc.Headers(3, true, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/call")
	r = rc.Response(3)
	if len(r.Frames) != 3 || r.Trailers["grpc-status"][0] != "0" || len(r.Body) != 7 {
		t.Fatalf("unary: %d frames, trailers %v, body %d", len(r.Frames), r.Trailers, len(r.Body))
	}
}

// countingConn counts the server's writes.
type countingConn struct {
	net.Conn
	writes atomic.Int32
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// Each small response leaves in one write (HEADERS, DATA, trailers).
func TestOneWritePerResponse(t *testing.T) {
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		w.Header().Set("Content-Type", "application/grpc")
		io.Copy(io.Discard, r.Body)
		w.Write([]byte{0, 0, 0, 0, 2, 8, 1})
		w.Header().Set("Grpc-Status", "0")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	counted := make(chan *countingConn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		cc := &countingConn{Conn: c}
		counted <- cc
		srv.ServeConn(context.Background(), cc)
	}()
	defer srv.Close()
	rc := h2test.Dial(t, ln.Addr().String())
	rc.Handshake()
	cc := <-counted
	time.Sleep(20 * time.Millisecond) // the SETTINGS ACK is out
	for i := uint32(1); i < 20; i += 2 {
		before := cc.writes.Load()
		rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: i, BlockFragment: rc.Block(":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/", "content-type", "application/grpc"), EndHeaders: true})
		rc.Fr.WriteData(i, true, []byte{0, 0, 0, 0, 0})
		r := rc.Response(i)
		if len(r.Frames) != 3 {
			t.Fatalf("%d frames", len(r.Frames))
		}
		if n := cc.writes.Load() - before; n != 1 {
			t.Fatalf("response %d took %d writes", i, n)
		}
	}
}

func TestInformational(t *testing.T) {
	ts := startServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		b, _ := io.ReadAll(r.Body) // 100-continue is sent here
		w.Write(b)
	}))
	c := h2cClient(t)
	c.Transport.(*http.Transport).ExpectContinueTimeout = 5 * time.Second
	var got []int
	var mu sync.Mutex
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		mu.Lock()
		got = append(got, code)
		mu.Unlock()
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "POST", "http://"+ts.addr+"/", strings.NewReader("payload"))
	req.Header.Set("Expect", "100-continue")
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "payload" || time.Since(start) > 4*time.Second {
		t.Fatalf("%q after %v", b, time.Since(start))
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != "[103]" && fmt.Sprint(got) != "[103 100]" {
		t.Fatalf("1xx: %v", got)
	}
}

func TestHandlerPanics(t *testing.T) {
	var logged bytes.Buffer
	var mu sync.Mutex
	ts := startServer(t, Config{ErrorLog: log.New(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logged.Write(p) }), "", 0)},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X", "1")
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			switch r.URL.Path {
			case "/abort":
				panic(http.ErrAbortHandler)
			case "/panic":
				panic("boom")
			case "/goexit":
				runtimeGoexit()
			}
		}))
	for _, p := range []string{"/abort", "/panic", "/goexit"} {
		rc := h2test.Dial(t, ts.addr)
		rc.Handshake()
		rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", p)
		rc.ExpectRST(1, http2.ErrCodeInternal)
		rc.Headers(3, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/")
		if r := rc.Response(3); r.Status != "200" {
			t.Fatal(r.Status)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if s := logged.String(); !strings.Contains(s, "boom") || strings.Contains(s, "abort") {
		t.Fatalf("log: %s", s)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestClientCancel(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan error, 1)
	ts := startServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
		_, err := r.Body.Read(make([]byte, 1))
		cancelled <- err
	}))
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("x"))
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+ts.addr+"/", pr)
	resp, err := h2cClient(t).Do(req) // the handler flushed its headers
	if err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	resp.Body.Close()
	select {
	case err := <-cancelled:
		if err == nil {
			t.Fatal("body read after reset: no error")
		}
	case <-time.After(testTimeout):
		t.Fatal("handler not cancelled")
	}
}

// A request body read after the handler returned (a relaying goroutine
// still copying it) fails, without racing the server.
func TestBodyReadAfterHandler(t *testing.T) {
	got := make(chan error, 1)
	ts := startServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		go func() {
			time.Sleep(50 * time.Millisecond)
			_, err := io.ReadAll(r.Body)
			got <- err
		}()
		io.WriteString(w, "early")
	}))
	pr, pw := io.Pipe()
	go func() { pw.Write([]byte("abc")); time.Sleep(200 * time.Millisecond); pw.Close() }()
	resp, err := h2cClient(t).Post("http://"+ts.addr+"/", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err := <-got; !errors.Is(err, errHandlerComplete) {
		t.Fatalf("read after the handler: %v", err)
	}
}

func TestResponseController(t *testing.T) {
	ts := startServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
			fmt.Fprint(w, errors.Is(err, errDeadlineExceeded()))
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
	c := h2cClient(t)
	resp, err := c.Get("http://" + ts.addr + "/flush")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	start := time.Now()
	io.ReadFull(resp.Body, buf)
	if string(buf) != "first" || time.Since(start) > 90*time.Millisecond {
		t.Fatalf("flushed part %q after %v", buf, time.Since(start))
	}
	rest, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(rest) != "second" {
		t.Fatalf("%q", rest)
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	resp, err = c.Post("http://"+ts.addr+"/readdeadline", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "true" {
		t.Fatalf("read deadline: %q", b)
	}
	resp, err = c.Get("http://" + ts.addr + "/writedeadline")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("no error from a stream reset at its write deadline")
	}
}

func TestShutdownDrains(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	ts := startServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	}))
	c := h2cClient(t)
	res := make(chan string, 1)
	go func() {
		resp, err := c.Get("http://" + ts.addr + "/slow")
		if err != nil {
			res <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- string(b)
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- ts.srv.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned with a request in flight: %v", err)
	default:
	}
	close(release)
	if got := <-res; got != "done" {
		t.Fatalf("in-flight request: %s", got)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Shutdown did not return")
	}
}

func TestShutdownGoAwayLastStream(t *testing.T) {
	started := make(chan struct{}, 1)
	ts := startServer(t, Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "done")
	}))
	rc := h2test.Dial(t, ts.addr)
	rc.Handshake()
	rc.Headers(1, false)
	<-started
	go ts.srv.Shutdown(context.Background())
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
		if err != nil {
			break // closed
		}
		if f.Header().StreamID == 3 {
			t.Fatalf("stream 3 served after GOAWAY: %v", f)
		}
	}
}

func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, Config{IdleTimeout: 100 * time.Millisecond}, okHandler())
	rc := h2test.Dial(t, ts.addr)
	rc.Handshake()
	rc.Headers(1, true)
	rc.Response(1)
	start := time.Now()
	rc.ExpectGoAway(http2.ErrCodeNo)
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Fatalf("GOAWAY after %v", d)
	}
	if _, err := rc.Fr.ReadFrame(); err == nil {
		t.Fatal("connection open after the idle GOAWAY")
	}
}

func TestConcurrentStreams(t *testing.T) {
	ts := startServer(t, Config{MaxConcurrentStreams: 50}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		time.Sleep(time.Millisecond)
		w.Write(b)
	}))
	c := h2cClient(t)
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := strings.Repeat(fmt.Sprint(i), 100)
			resp, err := c.Post("http://"+ts.addr+"/", "text/plain", strings.NewReader(msg))
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

// TestStreamContextWatch: h1client's watch of a request's context
// (ctxwatch) is taken on a stream's context, not on one derived from it,
// and runs at the handler's end, at the client's RST_STREAM while the
// handler runs, and at the end of the connection's context.
func TestStreamContextWatch(t *testing.T) {
	watched := make(chan string, 4)
	started, ended := make(chan struct{}, 4), make(chan struct{}, 4)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if _, _, ok := ctxwatch.Watch(ctx, func() { watched <- r.URL.Path }); !ok {
			t.Errorf("%s: the request's context has no free watch", r.URL.Path)
		}
		derived, cancel := context.WithCancel(ctx)
		defer cancel()
		if _, _, ok := ctxwatch.Watch(derived, func() {}); ok {
			t.Errorf("%s: a derived context took the watch", r.URL.Path)
		}
		if r.URL.Path == "/done" {
			return
		}
		defer func() { ended <- struct{}{} }()
		started <- struct{}{}
		<-derived.Done() // linked to the stream's without a goroutine
		select {
		case p := <-watched:
			if p != r.URL.Path {
				t.Errorf("watch of %s ran for %s", p, r.URL.Path)
			}
		case <-time.After(testTimeout):
			t.Errorf("%s: the context ended, its watch did not run", r.URL.Path)
		}
	})
	wait := func(what string) {
		t.Helper()
		select {
		case p := <-watched:
			if p != what {
				t.Fatalf("watch of %s ran, want %s", p, what)
			}
		case <-time.After(testTimeout):
			t.Fatalf("the watch of %s did not run", what)
		}
	}

	rc := rawServer(t, Config{}, h)
	rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/done")
	if r := rc.Response(1); r.Status != "200" {
		t.Fatal(r.Status)
	}
	wait("/done")
	rc.Headers(3, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/reset")
	<-started
	rc.Fr.WriteRSTStream(3, http2.ErrCodeCancel)
	<-ended

	// The connection's context ends: its streams' watches run.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := &Server{Handler: h}
	defer srv.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			srv.ServeConn(ctx, c)
		}
	}()
	rc2 := h2test.Dial(t, ln.Addr().String())
	rc2.Handshake()
	rc2.Headers(1, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/conn")
	<-started
	cancel()
	<-ended
}
