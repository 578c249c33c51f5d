package h2loop

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/sys/unix"

	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/internal/evloop"
	"github.com/meridian-mesh/meridian/proxy/internal/h2test"
)

// proxy/h2server's behaviour_test.go (and the part of its harness_test.go
// it needs), run against a Server serving a Bridge: Go's HTTP/2 client, or
// raw frames where h2server's test reads them. Names carry "br" so that
// they stay apart from the package's other tests.
//
// Not ported (h2loop does not offer what they test): TestShutdownDrains
// and TestShutdownGoAwayLastStream (no Server-wide Shutdown),
// TestStreamContextWatch's ctxwatch slot (the Bridge's request contexts
// are context.WithCancel's; TestBrStreamContext checks the rest of it).
// TestOneWritePerResponse counts the server's writes as packets of a
// SOCK_SEQPACKET socket pair (the loop's writes are its own system calls,
// not a net.Conn's to wrap).

// brTimeout bounds every wait of these tests.
const brTimeout = 10 * time.Second

// brServer is a Server serving a Bridge on a loop of its own, accepting on
// loopback.
type brServer struct {
	lp   *evloop.Loop
	srv  *Server
	addr string
	log  *brLog
}

// brLog keeps what the server and the Bridge log (a handler's goroutine
// may log after the test).
type brLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *brLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, format+"\n", args...)
}

func (l *brLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// brStart serves h through a Bridge with cfg on a new loop until the test
// ends: then the listener is closed, and the loop (which closes its
// connections).
func brStart(t testing.TB, cfg h2server.Config, h http.Handler) *brServer {
	t.Helper()
	return brStartBridge(t, cfg, &Bridge{Handler: h})
}

// brStartBridge is brStart with b (its Logf set to the server's log).
func brStartBridge(t testing.TB, cfg h2server.Config, b *Bridge) *brServer {
	t.Helper()
	lp, err := evloop.New()
	if err != nil {
		t.Fatal(err)
	}
	bs := &brServer{lp: lp, log: &brLog{}}
	b.Logf = bs.log.logf
	bs.srv = &Server{Config: cfg, Handler: b, Logf: bs.log.logf}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				errc <- fmt.Errorf("the loop panicked: %v\n%s", p, debug.Stack())
			}
		}()
		errc <- lp.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Error(err)
			}
		case <-time.After(brTimeout):
			t.Error("the loop did not end")
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bs.addr = ln.Addr().String()
	var lis *evloop.Listener
	var lerr error
	brOn(t, lp, func() {
		lis, lerr = lp.Listen(ln, func(fd int, sa unix.Sockaddr) {
			// As Go's net (h2server's connections) and h1loop's accept:
			// without it a response written after another small write
			// (a PING's or SETTINGS' ACK) waits for the client's
			// delayed ACK, 40 ms.
			unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
			if err := bs.srv.Serve(lp, fd, "client", nil); err != nil {
				t.Errorf("Serve: %v", err)
				unix.Close(fd)
			}
		})
	})
	if lerr != nil {
		ln.Close()
		t.Fatal(lerr)
	}
	t.Cleanup(func() {
		lp.Post(func() { lis.Close() })
		ln.Close()
	})
	return bs
}

// brOn runs f on lp and waits for it (bounded).
func brOn(t testing.TB, lp *evloop.Loop, f func()) {
	t.Helper()
	done := make(chan struct{})
	lp.Post(func() { f(); close(done) })
	select {
	case <-done:
	case <-time.After(brTimeout):
		t.Fatal("the loop did not run a posted function")
	}
}

// brClient is Go's HTTP/2 client, prior knowledge.
func brClient(t testing.TB) *http.Client {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: brTimeout}
}

// brOK is h2server's okHandler.
func brOK() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
}

func TestBrBodiesBothWays(t *testing.T) {
	ts := brStart(t, h2server.Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 128 << 10}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	c := brClient(t)
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

func TestBrTrailers(t *testing.T) {
	ts := brStart(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	c := brClient(t)
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
// small response with trailers is HEADERS, DATA and trailers.
func TestBrResponseFraming(t *testing.T) {
	ts := brStart(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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

// brPacketConn is the client's end of a SOCK_SEQPACKET socket pair: each
// of the server's writes arrives as one packet, which it counts.
type brPacketConn struct {
	net.Conn
	mu      sync.Mutex
	packets int
	buf     []byte
	rest    []byte
}

func (c *brPacketConn) Read(p []byte) (int, error) {
	if len(c.rest) == 0 {
		n, err := c.Conn.Read(c.buf)
		if n == 0 {
			return 0, err
		}
		c.mu.Lock()
		c.packets++
		c.mu.Unlock()
		c.rest = c.buf[:n]
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}

func (c *brPacketConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.packets
}

// brServePacket serves a connection over a SOCK_SEQPACKET socket pair (a
// write is a packet: the server's writes can be counted) and returns the
// client's end.
func brServePacket(t testing.TB, ts *brServer) *brPacketConn {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[1]), "client")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		unix.Close(fds[0])
		t.Fatal(err)
	}
	var serr error
	brOn(t, ts.lp, func() { serr = ts.srv.Serve(ts.lp, fds[0], "client", nil) })
	if serr != nil {
		unix.Close(fds[0])
		c.Close()
		t.Fatal(serr)
	}
	return &brPacketConn{Conn: c, buf: make([]byte, 1<<20)}
}

// Each small response leaves in one write (HEADERS, DATA, trailers).
func TestBrOneWritePerResponse(t *testing.T) {
	ts := brStart(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		w.Header().Set("Content-Type", "application/grpc")
		io.Copy(io.Discard, r.Body)
		w.Write([]byte{0, 0, 0, 0, 2, 8, 1})
		w.Header().Set("Grpc-Status", "0")
	}))
	cc := brServePacket(t, ts)
	rc := h2test.Frames(t, cc)
	rc.Handshake()
	for i := uint32(1); i < 20; i += 2 {
		before := cc.count()
		rc.Fr.WriteHeaders(http2.HeadersFrameParam{StreamID: i, BlockFragment: rc.Block(":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/", "content-type", "application/grpc"), EndHeaders: true})
		rc.Fr.WriteData(i, true, []byte{0, 0, 0, 0, 0})
		r := rc.Response(i)
		if len(r.Frames) != 3 {
			t.Fatalf("%d frames", len(r.Frames))
		}
		if n := cc.count() - before; n != 1 {
			t.Fatalf("response %d took %d writes", i, n)
		}
	}
}

func TestBrInformational(t *testing.T) {
	ts := brStart(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		b, _ := io.ReadAll(r.Body) // 100-continue is sent here
		w.Write(b)
	}))
	c := brClient(t)
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

func TestBrHandlerPanics(t *testing.T) {
	ts := brStart(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		rc := h2test.Dial(t, ts.addr)
		rc.Handshake()
		rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", p)
		rc.ExpectRST(1, http2.ErrCodeInternal)
		rc.Headers(3, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/")
		if r := rc.Response(3); r.Status != "200" {
			t.Fatal(r.Status)
		}
	}
	if s := ts.log.String(); !strings.Contains(s, "boom") || strings.Contains(s, "abort") {
		t.Fatalf("log: %s", s)
	}
}

func TestBrClientCancel(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan error, 1)
	ts := brStart(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+ts.addr+"/", pr)
	resp, err := brClient(t).Do(req) // the handler flushed its headers
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(brTimeout):
		t.Fatal("handler not started")
	}
	cancel()
	resp.Body.Close()
	select {
	case err := <-cancelled:
		if err == nil {
			t.Fatal("body read after reset: no error")
		}
	case <-time.After(brTimeout):
		t.Fatal("handler not cancelled")
	}
}

// A request body read after the handler returned (a relaying goroutine
// still copying it) fails, without racing the server.
func TestBrBodyReadAfterHandler(t *testing.T) {
	got := make(chan error, 1)
	ts := brStart(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		go func() {
			time.Sleep(50 * time.Millisecond)
			_, err := io.ReadAll(r.Body)
			got <- err
		}()
		io.WriteString(w, "early")
	}))
	pr, pw := io.Pipe()
	go func() { pw.Write([]byte("abc")); time.Sleep(200 * time.Millisecond); pw.Close() }()
	resp, err := brClient(t).Post("http://"+ts.addr+"/", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	select {
	case err := <-got:
		if !errors.Is(err, errHandlerComplete) {
			t.Fatalf("read after the handler: %v", err)
		}
	case <-time.After(brTimeout):
		t.Fatal("the read after the handler did not end")
	}
}

func TestBrResponseController(t *testing.T) {
	ts := brStart(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	c := brClient(t)
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

func TestBrIdleTimeout(t *testing.T) {
	ts := brStart(t, h2server.Config{IdleTimeout: 100 * time.Millisecond}, brOK())
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

func TestBrConcurrentStreams(t *testing.T) {
	ts := brStart(t, h2server.Config{MaxConcurrentStreams: 50}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		time.Sleep(time.Millisecond)
		w.Write(b)
	}))
	c := brClient(t)
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

// TestBrStreamContext is what h2server's TestStreamContextWatch checks
// without its ctxwatch slot (the Bridge does not offer one): a request's
// context, and those derived from it, end at the handler's end, at the
// client's RST_STREAM while the handler runs, and at the end of the
// context BaseContext gave.
func TestBrStreamContext(t *testing.T) {
	ended := make(chan string, 4)
	started, returned := make(chan struct{}, 4), make(chan struct{}, 4)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		case <-time.After(brTimeout):
			t.Errorf("%s: the request's context did not end", r.URL.Path)
		}
	})
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(brTimeout):
			t.Fatal(what)
		}
	}
	waitEnded := func(what string) {
		t.Helper()
		select {
		case p := <-ended:
			if p != what {
				t.Fatalf("the context of %s ended, want %s", p, what)
			}
		case <-time.After(brTimeout):
			t.Fatalf("the context of %s did not end", what)
		}
	}

	ts := brStart(t, h2server.Config{}, h)
	rc := h2test.Dial(t, ts.addr)
	rc.Handshake()
	rc.Headers(1, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/done")
	if r := rc.Response(1); r.Status != "200" {
		t.Fatal(r.Status)
	}
	waitEnded("/done")
	rc.Headers(3, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/reset")
	wait(started, "/reset: the handler did not start")
	rc.Fr.WriteRSTStream(3, http2.ErrCodeCancel)
	waitEnded("/reset")
	wait(returned, "/reset: the handler did not return")

	// The connection's context (BaseContext's) ends: its streams' end.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ts2 := brStartBridge(t, h2server.Config{}, &Bridge{Handler: h, BaseContext: func(*Stream) context.Context { return ctx }})
	rc2 := h2test.Dial(t, ts2.addr)
	rc2.Handshake()
	rc2.Headers(1, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/conn")
	wait(started, "/conn: the handler did not start")
	cancel()
	waitEnded("/conn")
	wait(returned, "/conn: the handler did not return")
}

// The client's RST_STREAM fails a body read the way h2server's does: with
// an http2.StreamError carrying the client's code (grpc-go's handler
// transport maps it to the call's status: CANCEL is codes.Canceled), and
// only once the request's context has ended (h2server and Go's server
// cancel it first, so a handler that sees the read fail finds the context
// done).
func TestBrResetBodyError(t *testing.T) {
	type result struct {
		err    error
		ctxErr error
	}
	res := make(chan result, 1)
	started := make(chan struct{}, 1)
	ts := brStart(t, h2server.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		_, err := r.Body.Read(make([]byte, 10))
		res <- result{err, r.Context().Err()}
	}))
	rc := h2test.Dial(t, ts.addr)
	rc.Handshake()
	var wrongType, ctxLate error
	for i := uint32(1); i < 200; i += 2 {
		rc.Headers(i, false)
		select {
		case <-started:
		case <-time.After(brTimeout):
			t.Fatalf("stream %d: the handler did not start", i)
		}
		if i%4 == 1 {
			time.Sleep(100 * time.Microsecond) // the handler in its read, or not yet
		}
		if err := rc.Fr.WriteRSTStream(i, http2.ErrCodeCancel); err != nil {
			t.Fatal(err)
		}
		var r result
		select {
		case r = <-res:
		case <-time.After(brTimeout):
			t.Fatalf("stream %d: the body read did not end at the reset", i)
		}
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
		t.Errorf("the body read after RST_STREAM CANCEL failed with %T %v, want http2.StreamError CANCEL (h2server's)", wrongType, wrongType)
	}
	if ctxLate != nil {
		t.Errorf("the body read failed (%v) before the request's context ended", ctxLate)
	}
}
