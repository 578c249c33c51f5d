package h1server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/internal/ctxwatch"
)

// serve starts s on a loopback listener; connections are served on the
// accepting goroutine's children, as the proxy does.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	if s.ErrorLog == nil {
		s.ErrorLog = log.New(io.Discard, "", 0)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); s.ServeConn(context.Background(), c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.Close(); wg.Wait() })
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func readResponse(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading a response body: %v", err)
	}
	return resp, string(b)
}

// A request pipelined while the handler before it runs past WatchDelay is
// read by the background read's one byte and then the rest: answered in
// order, whole.
func TestPipelinedDuringWatch(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(5 * WatchDelay)
		}
		io.WriteString(w, r.URL.Path)
	})})
	c := dial(t, addr)
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(2 * WatchDelay) // the background read is in flight
	io.WriteString(c, "GET /second HTTP/1.1\r\nHost: x\r\n\r\nGET /third HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []string{"/slow", "/second", "/third"} {
		if _, body := readResponse(t, br, "GET"); body != want {
			t.Fatalf("got %q, want %q", body, want)
		}
	}
}

// A handler waiting on its request's context learns of its client closing
// the connection: without a body, and after reading its body whole.
func TestClientGoneCancels(t *testing.T) {
	for _, raw := range []string{
		"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /wait HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"POST /wait HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	} {
		ended := make(chan error, 1)
		addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body)
			select {
			case <-r.Context().Done():
				ended <- r.Context().Err()
			case <-time.After(5 * time.Second):
				ended <- errors.New("not cancelled in 5s")
			}
		})})
		c := dial(t, addr)
		io.WriteString(c, raw)
		time.Sleep(3 * WatchDelay)
		start := time.Now()
		c.Close()
		if err := <-ended; !errors.Is(err, context.Canceled) {
			t.Errorf("%q: %v", raw, err)
		} else if d := time.Since(start); d > time.Second {
			t.Errorf("%q: cancelled %v after the close", raw, d)
		}
	}
}

// The close is noticed also when it comes before WatchDelay.
func TestClientGoneEarly(t *testing.T) {
	ended := make(chan error, 1)
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			ended <- nil
		case <-time.After(5 * time.Second):
			ended <- errors.New("not cancelled in 5s")
		}
	})})
	c := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.Close()
	if err := <-ended; err != nil {
		t.Error(err)
	}
}

// "100 Continue" goes out when the handler first reads the body, and only
// then does the client send it.
func TestExpectContinue(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/read" {
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		}
	})})
	c := dial(t, addr)
	br := bufio.NewReader(c)
	io.WriteString(c, "POST /read HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q, %v; want the 100", line, err)
	}
	if l, _ := br.ReadString('\n'); l != "\r\n" {
		t.Fatalf("after the 100: %q", l)
	}
	io.WriteString(c, "hello")
	resp, body := readResponse(t, br, "POST")
	if body != "hello" || resp.Close {
		t.Errorf("got %q (close %v), want the body echoed and the connection kept", body, resp.Close)
	}

	// Not read: no 100, and the connection is closed after the answer.
	c = dial(t, addr)
	br = bufio.NewReader(c)
	io.WriteString(c, "POST /ignore HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	resp, _ = readResponse(t, br, "POST")
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("got %d close %v, want 200 and Connection: close", resp.StatusCode, resp.Close)
	}
}

// A protocol switch hijacks the connection; bytes the client sent right
// behind the request are in the hijacker's reader.
func TestHijackUpgrade(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString("echo " + line)
			brw.Flush()
		}
	})})
	c := dial(t, addr)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nearly\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	io.WriteString(c, "late\n")
	for _, want := range []string{"echo early\n", "echo late\n"} {
		if got, err := br.ReadString('\n'); got != want {
			t.Fatalf("got %q (%v), want %q", got, err, want)
		}
	}
}

// Idle connections are closed after IdleTimeout; a head that does not
// arrive within ReadHeaderTimeout closes the connection, unanswered when
// it stopped at a line's end (TestDifferentialHeaderTimeout has the rest).
func TestTimeouts(t *testing.T) {
	addr := serve(t, &Server{IdleTimeout: 100 * time.Millisecond, ReadHeaderTimeout: 100 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })})
	c := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	readResponse(t, br, "GET")
	start := time.Now()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle: %v, want EOF", err)
	}
	if d := time.Since(start); d < 80*time.Millisecond || d > 2*time.Second {
		t.Errorf("idle connection closed after %v, want about 100ms", d)
	}

	c = dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n")
	start = time.Now()
	b, err := io.ReadAll(c)
	if len(b) != 0 || err != nil {
		t.Fatalf("trickled head: got %q, %v; want the connection closed unanswered", b, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("trickled head closed after %v, want about 100ms", d)
	}
}

// On a kept-alive connection the next request's header timeout runs from
// its first bytes, whether its head comes whole (no deadline is set for
// it: reading it cannot block) or trickles in (cut by ReadHeaderTimeout,
// not by the far longer IdleTimeout).
func TestKeepAliveHeaderTimeout(t *testing.T) {
	addr := serve(t, &Server{IdleTimeout: time.Minute, ReadHeaderTimeout: 100 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.Path) })})
	// cut sends rest and wants the connection closed unanswered within
	// the header timeout (not the minute of IdleTimeout).
	cut := func(what string, c net.Conn, br *bufio.Reader, rest string) {
		t.Helper()
		io.WriteString(c, rest)
		start := time.Now()
		b, err := io.ReadAll(br)
		if len(b) != 0 || err != nil {
			t.Fatalf("%s: got %q, %v; want the connection closed unanswered", what, b, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s: closed after %v, want about 100ms", what, d)
		}
	}
	c := dial(t, addr)
	br := bufio.NewReader(c)
	for _, path := range []string{"/1", "/2"} {
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, got := readResponse(t, br, "GET"); got != path {
			t.Fatalf("body %q, want %q", got, path)
		}
	}
	cut("trickled second head", c, br, "GET /3 HTTP/1.1\r\nHost: x\r\n")

	// After a POST the empty lines before a head are skipped (RFC 9112
	// 2.2): a CRLF CRLF among them is not a whole head.
	c = dial(t, addr)
	br = bufio.NewReader(c)
	io.WriteString(c, "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	if _, got := readResponse(t, br, "POST"); got != "/p" {
		t.Fatalf("body %q, want /p", got)
	}
	cut("empty lines, then a trickled head", c, br, "\r\n\r\nGET /4 HTTP/1.1\r\nHost: x\r\n")
}

// Shutdown closes an idle connection at once; a busy one finishes its
// request, told Connection: close, and is closed; a connection handed over
// after it is closed unserved.
func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/busy" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	})}
	addr := serve(t, s)
	idle := dial(t, addr)
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	ibr := bufio.NewReader(idle)
	readResponse(t, ibr, "GET")
	busy := dial(t, addr)
	io.WriteString(busy, "GET /busy HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if _, err := ibr.ReadByte(); err != io.EOF {
		t.Errorf("idle connection: %v, want EOF", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	bbr := bufio.NewReader(busy)
	resp, body := readResponse(t, bbr, "GET")
	if body != "done" || !resp.Close {
		t.Errorf("busy: %q close %v, want the answer with Connection: close", body, resp.Close)
	}
	if _, err := bbr.ReadByte(); err != io.EOF {
		t.Errorf("busy connection after its request: %v, want EOF", err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	late := dial(t, addr)
	if b, _ := io.ReadAll(late); len(b) != 0 {
		t.Errorf("a connection after Shutdown got %q", b)
	}
}

// A connection opening with the HTTP/2 preface goes to H2C, every byte
// replayed.
func TestH2CHandoff(t *testing.T) {
	got := make(chan string, 1)
	addr := serve(t, &Server{H2C: func(c net.Conn) {
		defer c.Close()
		b := make([]byte, len(h2Preface)+4)
		_, err := io.ReadFull(c, b)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b)
	}})
	c := dial(t, addr)
	io.WriteString(c, h2Preface+"\x00\x00\x00\x04")
	if s := <-got; s != h2Preface+"\x00\x00\x00\x04" {
		t.Errorf("H2C read %q", s)
	}
	// HTTP/1 on the same server is served as usual.
	c = dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := readResponse(t, bufio.NewReader(c), "GET"); resp.StatusCode != 404 {
		t.Errorf("HTTP/1 after H2C set: %d", resp.StatusCode)
	}
}

// AmbiguousFraming is true for the head with both Content-Length and
// Transfer-Encoding only: not a body that looks like one, not HTTP/1.0
// (whose Transfer-Encoding http.ReadRequest ignores), not a plain chunked
// request, whatever the read boundaries.
func TestAmbiguousFraming(t *testing.T) {
	var mu sync.Mutex
	var got []string
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.URL.Path+map[bool]string{true: "!", false: ""}[AmbiguousFraming(r)])
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
	})})
	stream := "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\nTRANSFER-ENCODING: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n" +
		"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 61\r\n\r\nPOST /d HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n" +
		"POST /d HTTP/1.0\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok"
	want := "/a /b! /c /d"
	for _, step := range []int{1, 7, 64, len(stream)} {
		got = nil
		c := dial(t, addr)
		for s := stream; len(s) > 0; {
			k := min(step, len(s))
			io.WriteString(c, s[:k])
			s = s[k:]
		}
		br := bufio.NewReader(c)
		for _, m := range []string{"OPTIONS", "POST", "POST", "POST", "POST"} {
			readResponse(t, br, m)
		}
		mu.Lock()
		if g := strings.Join(got, " "); g != want {
			t.Errorf("written %d bytes at a time: %s, want %s", step, g, want)
		}
		mu.Unlock()
	}
}

// Unlike net/http's (see diffCases), a full-duplex handler that leaves the
// body unread does not lose the request pipelined behind.
func TestFullDuplexPipelined(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		io.WriteString(w, r.URL.Path)
	})})
	c := dial(t, addr)
	io.WriteString(c, "POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []string{"/one", "/two"} {
		if _, body := readResponse(t, br, "GET"); body != want {
			t.Fatalf("got %q, want %q", body, want)
		}
	}
}

// The request body read after the response is over fails, as net/http's.
func TestBodyReadAfterResponse(t *testing.T) {
	bodies := make(chan io.Reader, 1)
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bodies <- r.Body
	})})
	c := dial(t, addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	readResponse(t, bufio.NewReader(c), "POST")
	if _, err := (<-bodies).Read(make([]byte, 1)); err != http.ErrBodyReadAfterClose {
		t.Errorf("read after the response: %v, want ErrBodyReadAfterClose", err)
	}
}

// http.ResponseController reaches every method; CloseAfterReply closes the
// connection after a response whose header is out already.
func TestResponseController(t *testing.T) {
	addr := serve(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		for _, err := range []error{
			rc.EnableFullDuplex(),
			rc.SetReadDeadline(time.Now().Add(time.Minute)),
			rc.SetWriteDeadline(time.Now().Add(time.Minute)),
			rc.Flush(),
		} {
			if err != nil {
				t.Error(err)
			}
		}
		w.(interface{ CloseAfterReply() }).CloseAfterReply()
		io.WriteString(w, "x")
	})})
	c := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	readResponse(t, br, "GET")
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after CloseAfterReply: %v, want EOF", err)
	}
}

// A panic is logged with its stack, http.ErrAbortHandler is not; both
// close the connection.
func TestPanicLog(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	addr := serve(t, &Server{ErrorLog: log.New(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
		panic("boom")
	})})
	for _, p := range []string{"/abort", "/boom"} {
		c := dial(t, addr)
		io.WriteString(c, "GET "+p+" HTTP/1.1\r\nHost: x\r\n\r\n")
		if b, _ := io.ReadAll(c); len(b) != 0 {
			t.Errorf("%s: got %q", p, b)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if s := buf.String(); strings.Count(s, "http: panic serving") != 1 || !strings.Contains(s, "boom") {
		t.Errorf("log: %q", s)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestRequestContextWatch: h1client's watch of a request's context
// (ctxwatch) runs when the handler ends, and when the client goes away
// while the handler runs; a context derived from it still ends with it
// without a goroutine of its own (its cancelCtx is found through reqCtx).
func TestRequestContextWatch(t *testing.T) {
	watched := make(chan string, 2)
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		_, _, ok := ctxwatch.Watch(ctx, func() { watched <- r.URL.Path })
		if !ok {
			t.Error("the request's context has no free watch")
		}
		derived, cancel := context.WithCancel(ctx)
		defer cancel()
		if _, _, ok := ctxwatch.Watch(derived, func() {}); ok {
			t.Error("a derived context took the watch")
		}
		if r.URL.Path == "/gone" {
			<-derived.Done() // the client goes away
			select {
			case p := <-watched:
				if p != "/gone" {
					t.Errorf("watch of %s ran", p)
				}
			case <-time.After(5 * time.Second):
				t.Error("the watch did not run when the client went away")
			}
			return
		}
		select {
		case <-watched:
			t.Error("the watch ran while the handler runs")
		default:
		}
	})}
	addr := serve(t, s)
	c := dial(t, addr)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /done HTTP/1.1\r\nHost: x\r\n\r\n")
	readResponse(t, br, "GET")
	select {
	case p := <-watched:
		if p != "/done" {
			t.Fatalf("watch of %s ran", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not run at the handler's end")
	}
	io.WriteString(c, "GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(2 * WatchDelay)
	c.Close()
	time.Sleep(100 * time.Millisecond) // the handler checks
}

// TestHeaderSnapshotReuse: the header snapshot a response takes at
// WriteHeader reuses the connection's previous one; nothing of a response's
// header reaches the next, and a change after WriteHeader still has no
// effect (net/http's rule).
func TestHeaderSnapshotReuse(t *testing.T) {
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		switch r.URL.Path {
		case "/1":
			h.Set("X-One", "1")
			h["X-Many"] = []string{"a", "b", "c"}
			w.WriteHeader(200)
			h.Set("X-Late", "late")
			h["X-Many"][0] = "changed"
		case "/2":
			h.Set("X-Two", "2")
			w.WriteHeader(201)
			h.Del("X-Two")
		case "/3":
			w.WriteHeader(202)
		}
		io.WriteString(w, "ok")
	})}
	addr := serve(t, s)
	want := map[string]http.Header{
		"/1": {"X-One": {"1"}, "X-Many": {"a", "b", "c"}},
		"/2": {"X-Two": {"2"}},
		"/3": {},
	}
	// Connections in parallel: the snapshots go through one pool.
	var wg sync.WaitGroup
	for range 4 {
		c := dial(t, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := bufio.NewReader(c)
			for range 20 {
				for _, p := range []string{"/1", "/2", "/3"} {
					io.WriteString(c, "GET "+p+" HTTP/1.1\r\nHost: x\r\n\r\n")
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					for _, k := range []string{"Date", "Content-Length", "Content-Type"} {
						resp.Header.Del(k)
					}
					if !reflect.DeepEqual(resp.Header, want[p]) {
						t.Errorf("%s: header %v, want %v", p, resp.Header, want[p])
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}
