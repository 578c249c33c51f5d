package h1client_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/httpproxy/h1client"
	"github.com/meridian-mesh/meridian/proxy/internal/rawconn"
)

// countingListener counts the connections a server accepted.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// server is an httptest server running h on loopback, its accepts counted.
func server(t *testing.T, h http.Handler) (*httptest.Server, *countingListener) {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	cl := &countingListener{Listener: s.Listener}
	s.Listener = cl
	s.Start()
	t.Cleanup(s.Close)
	return s, cl
}

// rawServer serves each accepted connection with serve, on loopback, and
// counts them.
func rawServer(t *testing.T, serve func(i int, c net.Conn, br *bufio.Reader)) (addr string, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int32)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			i := int(accepted.Add(1)) - 1
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(i, c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String(), accepted
}

func client(t *testing.T, addr string, o h1client.Options) *h1client.Client {
	return clientVia(t, addr, o, nil)
}

// dialers are the connections a client is tested over: net's, and the
// proxy's (rawconn, whose WriteRead carries a request without a body and
// its response's first read).
var dialers = []struct {
	name string
	wrap func(net.Conn) net.Conn
}{{"net", nil}, {"rawconn", rawconn.Wrap}}

// clientVia is client over connections that wrap (nil: none) makes.
func clientVia(t *testing.T, addr string, o h1client.Options, wrap func(net.Conn) net.Conn) *h1client.Client {
	t.Helper()
	o.Dial = func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err == nil && wrap != nil {
			nc = wrap(nc)
		}
		return nc, err
	}
	c := h1client.New(o)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func request(t *testing.T, ctx context.Context, method, addr string, body io.Reader) *http.Request {
	t.Helper()
	r, err := http.NewRequestWithContext(ctx, method, "http://"+addr+"/x", body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// do sends a request and reads its body whole.
func do(t *testing.T, c *h1client.Client, r *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.RoundTrip(r)
	if err != nil {
		t.Fatalf("%s %s: %v", r.Method, r.URL, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", r.Method, r.URL, err)
	}
	resp.Body.Close()
	return resp, string(b)
}

func addrOf(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting until %s", what)
}

func TestKeepAliveReuse(t *testing.T) {
	s, ln := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.Method, b)
	}))
	c := client(t, addrOf(s), h1client.Options{})
	for i := range 10 {
		var body io.Reader
		method, want := http.MethodGet, "GET "
		if i%2 == 1 {
			method, body, want = http.MethodPost, strings.NewReader("hello"), "POST hello"
		}
		resp, got := do(t, c, request(t, context.Background(), method, addrOf(s), body))
		if resp.StatusCode != 200 || got != want {
			t.Fatalf("request %d: %d %q, want 200 %q", i, resp.StatusCode, got, want)
		}
	}
	if n := ln.n.Load(); n != 1 {
		t.Errorf("%d connections for 10 sequential requests, want 1", n)
	}
}

// The request head is what net/http's Transport (DisableCompression) would
// send for a ReverseProxy's request: no User-Agent when it is set empty, no
// Accept-Encoding, the Host of the request.
func TestRequestHead(t *testing.T) {
	heads := make(chan string, 1)
	addr, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		var head strings.Builder
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(l)
			if l == "\r\n" {
				break
			}
		}
		heads <- head.String()
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	})
	c := client(t, addr, h1client.Options{})
	r := request(t, context.Background(), http.MethodGet, addr, nil)
	r.Host = "app.test"
	r.Header.Set("User-Agent", "")
	r.Header.Set("X-A", "1")
	do(t, c, r)
	want := "GET /x HTTP/1.1\r\nHost: app.test\r\nX-A: 1\r\n\r\n"
	if got := <-heads; got != want {
		t.Errorf("request head %q, want %q", got, want)
	}
}

func TestRefused(t *testing.T) {
	c := client(t, "127.0.0.1:1", h1client.Options{})
	for name, set := range map[string]func(*http.Request){
		"expect":  func(r *http.Request) { r.Header.Set("Expect", "100-continue") },
		"upgrade": func(r *http.Request) { r.Header.Set("Connection", "Upgrade"); r.Header.Set("Upgrade", "websocket") },
	} {
		r := request(t, context.Background(), http.MethodPost, "127.0.0.1:1", strings.NewReader("x"))
		set(r)
		if _, err := c.RoundTrip(r); !errors.Is(err, h1client.ErrUnsupported) {
			t.Errorf("%s: %v, want ErrUnsupported", name, err)
		}
	}
	r := request(t, context.Background(), http.MethodGet, "127.0.0.1:1", nil)
	r.Header["X-Bad"] = []string{"a\r\nInjected: 1"}
	if _, err := c.RoundTrip(r); err == nil || !strings.Contains(err.Error(), "invalid header field value") {
		t.Errorf("a header value with CRLF: %v, want an invalid header error", err)
	}
}

func TestDialError(t *testing.T) {
	boom := errors.New("boom")
	c := h1client.New(h1client.Options{Dial: func(context.Context) (net.Conn, error) { return nil, boom }})
	if _, err := c.RoundTrip(request(t, context.Background(), http.MethodGet, "x.test", nil)); err != boom {
		t.Errorf("dial failure: %v, want the dial's own error", err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(boom)
	c = h1client.New(h1client.Options{Dial: func(context.Context) (net.Conn, error) {
		t.Error("dialled for a cancelled request")
		return nil, io.EOF
	}})
	if _, err := c.RoundTrip(request(t, ctx, http.MethodGet, "x.test", nil)); err != boom {
		t.Errorf("cancelled request: %v, want its context's cause", err)
	}
}

// halfClosingServer answers one request per connection without
// Connection: close, then closes its side for writing, and reports what
// else arrived on the connection.
func halfClosingServer(t *testing.T, closed chan<- struct{}, extra chan<- string) (string, *atomic.Int32) {
	return rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		c.(*net.TCPConn).CloseWrite()
		closed <- struct{}{}
		rest, _ := io.ReadAll(br)
		extra <- string(rest)
	})
}

// A reused connection the server closed while it was idle: a GET is sent
// again on a new connection; a POST is never sent on it (the pool looks
// at the socket first).
func TestStaleIdleConnection(t *testing.T) {
	for _, x := range []struct{ method, body string }{{http.MethodGet, ""}, {http.MethodPost, ""}, {http.MethodPost, "small"}} {
		for _, d := range dialers {
			method := x.method
			t.Run(method+x.body+"/"+d.name, func(t *testing.T) {
				closed, extra := make(chan struct{}, 2), make(chan string, 2)
				addr, accepted := halfClosingServer(t, closed, extra)
				c := clientVia(t, addr, h1client.Options{}, d.wrap)
				do(t, c, request(t, context.Background(), http.MethodGet, addr, nil))
				<-closed
				// The FIN is on its way: wait until the client's kernel has it.
				time.Sleep(20 * time.Millisecond)
				var reqBody io.Reader
				if x.body != "" {
					reqBody = strings.NewReader(x.body)
				}
				resp, body := do(t, c, request(t, context.Background(), method, addr, reqBody))
				if resp.StatusCode != 200 || body != "ok" {
					t.Fatalf("%s after a close: %d %q", method, resp.StatusCode, body)
				}
				if n := accepted.Load(); n != 2 {
					t.Errorf("%d connections, want 2", n)
				}
				select {
				case rest := <-extra:
					if method == http.MethodPost && rest != "" {
						t.Errorf("the POST was sent on the closed connection: %q", rest)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("the first connection was not closed")
				}
			})
		}
	}
}

// A server that closes a reused connection on receiving the request: a GET
// is sent again once, a POST fails and is not sent again.
func TestClosedOnRequest(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		for _, d := range dialers {
			t.Run(method+"/"+d.name, func(t *testing.T) {
				var mu sync.Mutex
				var seen []string
				addr, accepted := rawServer(t, func(i int, c net.Conn, br *bufio.Reader) {
					for n := 0; ; n++ {
						req, err := http.ReadRequest(br)
						if err != nil {
							return
						}
						io.Copy(io.Discard, req.Body)
						mu.Lock()
						seen = append(seen, fmt.Sprintf("%d:%s", i, req.Method))
						mu.Unlock()
						if i == 0 && n == 1 {
							return // closes without answering
						}
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					}
				})
				c := clientVia(t, addr, h1client.Options{}, d.wrap)
				do(t, c, request(t, context.Background(), http.MethodGet, addr, nil))
				resp, err := c.RoundTrip(request(t, context.Background(), method, addr, nil))
				mu.Lock()
				defer mu.Unlock()
				switch method {
				case http.MethodGet:
					if err != nil {
						t.Fatalf("GET: %v, want it sent again", err)
					}
					resp.Body.Close()
					if got := strings.Join(seen, " "); got != "0:GET 0:GET 1:GET" || accepted.Load() != 2 {
						t.Errorf("requests seen %q, want the GET once more on a new connection", got)
					}
				case http.MethodPost:
					if err == nil {
						t.Fatalf("POST: %d, want an error", resp.StatusCode)
					}
					if got := strings.Join(seen, " "); got != "0:GET 0:POST" {
						t.Errorf("requests seen %q, want the POST once", got)
					}
				}
			})
		}
	}
}

// The server answers before reading the body, which never ends: the
// response comes through, and the connection and the request body are
// closed after it.
func TestEarlyResponse(t *testing.T) {
	s, ln := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.Header().Set("Connection", "close")
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		io.WriteString(w, "ok")
	}))
	c := client(t, addrOf(s), h1client.Options{})
	pr, pw := io.Pipe()
	go pw.Write([]byte("the start of a body that never ends"))
	r := request(t, context.Background(), http.MethodPost, addrOf(s), pr)
	resp, body := do(t, c, r)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "too large") {
		t.Fatalf("%d %q, want 413", resp.StatusCode, body)
	}
	// The request body was closed: the writer gave up on it.
	done := make(chan error, 1)
	go func() { _, err := pw.Write([]byte("more")); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("writing the rest of the body: %v, want ErrClosedPipe", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request body was not closed")
	}
	do(t, c, request(t, context.Background(), http.MethodGet, addrOf(s), nil))
	if n := ln.n.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the first not reused)", n)
	}
}

// Cancelling a request in the middle of its response's body aborts the
// read and closes the connection.
func TestCancelMidResponse(t *testing.T) {
	gone := make(chan struct{})
	addr, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
		io.Copy(io.Discard, br) // until the client closes
		close(gone)
	})
	c := client(t, addr, h1client.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := c.RoundTrip(request(t, ctx, http.MethodGet, addr, nil))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "part" {
		t.Fatalf("first bytes %q, %v", buf, err)
	}
	go func() { time.Sleep(10 * time.Millisecond); cancel() }()
	if _, err := resp.Body.Read(make([]byte, 10)); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v, want context.Canceled", err)
	}
	resp.Body.Close()
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection was not closed")
	}
}

// Cancelling a request waiting for its response's head fails it with the
// context's cause.
func TestCancelBeforeResponse(t *testing.T) {
	addr, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		http.ReadRequest(br)
		io.Copy(io.Discard, br)
	})
	for _, d := range dialers {
		c := clientVia(t, addr, h1client.Options{}, d.wrap)
		timeout := errors.New("route timeout")
		ctx, cancel := context.WithCancelCause(context.Background())
		time.AfterFunc(10*time.Millisecond, func() { cancel(timeout) })
		if _, err := c.RoundTrip(request(t, ctx, http.MethodGet, addr, nil)); err != timeout {
			t.Errorf("%s: %v, want the context's cause", d.name, err)
		}
	}
}

// countingWR counts the WriteRead calls h1client makes on the connection.
type countingWR struct {
	*rawconn.Conn
	n *atomic.Int32
}

func (c countingWR) WriteRead(w, r []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.WriteRead(w, r)
}

// A connection with WriteRead carries each request without a body and its
// response's first read in one call, the request's bytes whole; requests
// with a body go as before. Many in a row on one connection, answered at
// once: none waits for an answer that came before the wait.
func TestWriteRead(t *testing.T) {
	s, ln := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.Header.Get("X-N"), b)
	}))
	var calls atomic.Int32
	c := clientVia(t, addrOf(s), h1client.Options{}, func(nc net.Conn) net.Conn {
		rc, ok := rawconn.Wrap(nc).(*rawconn.Conn)
		if !ok {
			t.Skip("no raw connections here")
		}
		return countingWR{rc, &calls}
	})
	const n = 2000
	gets := 0
	for i := range n {
		method, body, want := http.MethodGet, io.Reader(nil), fmt.Sprintf("GET %d ", i)
		if i%10 == 9 {
			method, body, want = http.MethodPost, strings.NewReader("hello"), fmt.Sprintf("POST %d hello", i)
		} else {
			gets++
		}
		r := request(t, context.Background(), method, addrOf(s), body)
		r.Header.Set("X-N", fmt.Sprint(i))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, got := do(t, c, r.WithContext(ctx))
		cancel()
		if resp.StatusCode != 200 || got != want {
			t.Fatalf("request %d: %d %q, want 200 %q", i, resp.StatusCode, got, want)
		}
	}
	// A body past the write buffer goes through bufio.Writer's ReadFrom to
	// the connection's.
	big := strings.Repeat("b", 100<<10)
	resp, got := do(t, c, request(t, context.Background(), http.MethodPost, addrOf(s), strings.NewReader(big)))
	if resp.StatusCode != 200 || got != "POST  "+big {
		t.Fatalf("a 100 KiB POST: %d, %d bytes back", resp.StatusCode, len(got))
	}
	if got := ln.n.Load(); got != 1 {
		t.Errorf("%d connections for %d sequential requests, want 1", got, n+1)
	}
	if got := calls.Load(); int(got) != gets {
		t.Errorf("%d WriteRead calls for %d requests without a body, want one each", got, gets)
	}
}

func TestConnectionClose(t *testing.T) {
	s, ln := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("close") != "" {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, "ok")
	}))
	c := client(t, addrOf(s), h1client.Options{})
	// The server's Connection: close.
	r, _ := http.NewRequest(http.MethodGet, s.URL+"/?close=1", nil)
	if resp, _ := do(t, c, r); !resp.Close {
		t.Fatal("response without Close")
	}
	do(t, c, request(t, context.Background(), http.MethodGet, addrOf(s), nil))
	if n := ln.n.Load(); n != 2 {
		t.Errorf("after a response's Connection: close: %d connections, want 2", n)
	}
	// The request's.
	r = request(t, context.Background(), http.MethodGet, addrOf(s), nil)
	r.Close = true
	do(t, c, r)
	do(t, c, request(t, context.Background(), http.MethodGet, addrOf(s), nil))
	if n := ln.n.Load(); n != 3 {
		t.Errorf("after a request's Connection: close: %d connections, want 3", n)
	}
}

func TestChunkedTrailers(t *testing.T) {
	s, ln := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "one ")
		w.(http.Flusher).Flush()
		io.WriteString(w, "two")
		w.Header().Set("X-Sum", "2")
	}))
	c := client(t, addrOf(s), h1client.Options{})
	for range 2 {
		resp, body := do(t, c, request(t, context.Background(), http.MethodGet, addrOf(s), nil))
		if body != "one two" || len(resp.TransferEncoding) != 1 || resp.Trailer.Get("X-Sum") != "2" {
			t.Fatalf("body %q, Transfer-Encoding %v, trailer %v", body, resp.TransferEncoding, resp.Trailer)
		}
	}
	if n := ln.n.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestNoContent(t *testing.T) {
	s, ln := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		}
	}))
	c := client(t, addrOf(s), h1client.Options{})
	for _, x := range []struct{ method, path string }{{"HEAD", "/"}, {"GET", "/204"}, {"GET", "/304"}, {"GET", "/"}} {
		r, _ := http.NewRequest(x.method, s.URL+x.path, nil)
		resp, body := do(t, c, r)
		if x.path == "/" && x.method == "GET" {
			if body != "hello" {
				t.Errorf("GET /: %q", body)
			}
			continue
		}
		if body != "" || resp.Body != http.NoBody {
			t.Errorf("%s %s: body %q (%T), want none", x.method, x.path, body, resp.Body)
		}
		if x.method == "HEAD" && resp.ContentLength != 5 {
			t.Errorf("HEAD: Content-Length %d, want 5", resp.ContentLength)
		}
	}
	if n := ln.n.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// A 204 that says it has content: what follows is not read as the next
// response; the connection is not reused.
func TestNoContentClaimingContent(t *testing.T) {
	addr, accepted := rawServer(t, func(i int, c net.Conn, br *bufio.Reader) {
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if i == 0 {
				io.WriteString(c, "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHTTP/")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	c := client(t, addr, h1client.Options{})
	do(t, c, request(t, context.Background(), http.MethodGet, addr, nil))
	if resp, body := do(t, c, request(t, context.Background(), http.MethodGet, addr, nil)); resp.StatusCode != 200 || body != "ok" {
		t.Errorf("the next response: %d %q", resp.StatusCode, body)
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// 1xx responses but 101 go to the trace and are skipped.
func TestInformational(t *testing.T) {
	addr, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	c := client(t, addr, h1client.Options{})
	var got []string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			got = append(got, fmt.Sprint(code, " ", h.Get("Link")))
			return nil
		},
	})
	resp, body := do(t, c, request(t, ctx, http.MethodGet, addr, nil))
	if resp.StatusCode != 200 || body != "ok" || strings.Join(got, ",") != "103 </s.css>" {
		t.Errorf("%d %q, 1xx %q", resp.StatusCode, body, got)
	}
}

func TestResponseHeaderLimit(t *testing.T) {
	addr, _ := rawServer(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 4000)+"\r\nContent-Length: 0\r\n\r\n")
	})
	c := client(t, addr, h1client.Options{MaxResponseHeaderBytes: 1000})
	if _, err := c.RoundTrip(request(t, context.Background(), http.MethodGet, addr, nil)); err == nil || !strings.Contains(err.Error(), "exceeded 1000 bytes") {
		t.Errorf("%v, want the header limit", err)
	}
}

// An idle connection is closed after IdleTimeout, by the pool's timer.
func TestIdleTimeout(t *testing.T) {
	var mu sync.Mutex
	states := map[net.Conn]http.ConnState{}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	s.Config.ConnState = func(c net.Conn, st http.ConnState) {
		mu.Lock()
		states[c] = st
		mu.Unlock()
	}
	s.Start()
	t.Cleanup(s.Close)
	c := client(t, addrOf(s), h1client.Options{IdleTimeout: 50 * time.Millisecond})
	do(t, c, request(t, context.Background(), http.MethodGet, addrOf(s), nil))
	do(t, c, request(t, context.Background(), http.MethodGet, addrOf(s), nil))
	eventually(t, "the idle connection is closed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, st := range states {
			if st != http.StateClosed {
				return false
			}
		}
		return len(states) > 0 // one, or more on a machine slower than the timeout
	})
}

func TestCloseIdleConnections(t *testing.T) {
	s, ln := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	c := client(t, addrOf(s), h1client.Options{})
	do(t, c, request(t, context.Background(), http.MethodGet, addrOf(s), nil))
	c.CloseIdleConnections()
	do(t, c, request(t, context.Background(), http.MethodGet, addrOf(s), nil))
	if n := ln.n.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// The pool keeps at most MaxIdle connections.
func TestMaxIdle(t *testing.T) {
	release := make(chan struct{})
	var started sync.WaitGroup
	s, ln := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			started.Done()
			<-release
		}
		io.WriteString(w, "ok")
	}))
	c := client(t, addrOf(s), h1client.Options{MaxIdle: 2})
	started.Add(4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, _ := http.NewRequest(http.MethodGet, s.URL+"/wait", nil)
			resp, err := c.RoundTrip(r)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	started.Wait()
	close(release)
	wg.Wait()
	for range 4 {
		do(t, c, request(t, context.Background(), http.MethodGet, addrOf(s), nil))
	}
	if n := ln.n.Load(); n != 4 {
		t.Errorf("%d connections, want 4 (two kept idle, then reused)", n)
	}
}

// Concurrent requests, with and without bodies, over one pool.
func TestConcurrent(t *testing.T) {
	s, _ := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	c := client(t, addrOf(s), h1client.Options{MaxIdle: 4})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				want := ""
				var body io.Reader
				method := http.MethodGet
				if (g+i)%2 == 0 {
					want = fmt.Sprintf("body %d %d", g, i)
					method, body = http.MethodPost, strings.NewReader(want)
				}
				r, _ := http.NewRequest(method, s.URL, body)
				resp, err := c.RoundTrip(r)
				if err != nil {
					t.Error(err)
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(got) != want {
					t.Errorf("%q, %v, want %q", got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// writeCounter counts the writes on a client's connections.
type writeCounter struct {
	net.Conn
	n *atomic.Int32
}

func (c writeCounter) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

// A request without a body, or with a small one of known length, leaves in
// one write; a large body streams and comes whole.
func TestWrites(t *testing.T) {
	s, ln := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprint(w, len(b))
	}))
	var writes atomic.Int32
	c := h1client.New(h1client.Options{Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", addrOf(s))
		return writeCounter{nc, &writes}, err
	}})
	t.Cleanup(c.CloseIdleConnections)
	for _, x := range []struct {
		size      int
		maxWrites int32
	}{{0, 1}, {5, 1}, {1 << 10, 1}, {4 << 10, 2}, {64 << 10, 100}} {
		writes.Store(0)
		var body io.Reader
		method := http.MethodGet
		if x.size > 0 {
			method, body = http.MethodPost, strings.NewReader(strings.Repeat("a", x.size))
		}
		resp, got := do(t, c, request(t, context.Background(), method, addrOf(s), body))
		if resp.StatusCode != 200 || got != fmt.Sprint(x.size) {
			t.Fatalf("%d bytes: %d, the server read %s", x.size, resp.StatusCode, got)
		}
		if n := writes.Load(); n > x.maxWrites {
			t.Errorf("%d bytes: %d writes, want at most %d", x.size, n, x.maxWrites)
		}
	}
	if n := ln.n.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// A small body shorter than its Content-Length fails the request with
// that cause; the next request is served.
func TestShortSmallBody(t *testing.T) {
	s, ln := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	c := client(t, addrOf(s), h1client.Options{})
	do(t, c, request(t, context.Background(), http.MethodGet, addrOf(s), nil))
	r := request(t, context.Background(), http.MethodPost, addrOf(s), strings.NewReader("hello"))
	r.ContentLength = 10
	if _, err := c.RoundTrip(r); err == nil || !strings.Contains(err.Error(), "ContentLength=10") {
		t.Fatalf("%v, want a short body error", err)
	}
	if resp, body := do(t, c, request(t, context.Background(), http.MethodPost, addrOf(s), strings.NewReader("next"))); body != "next" {
		t.Fatalf("next request: %d %q", resp.StatusCode, body)
	}
	// The body is read while the response is awaited (so that a timeout
	// is not held up by a client trickling it in): its failure closes the
	// connection, as net/http's Transport does.
	if n := ln.n.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// wrapped hides the socket as a metered connection does, and gives it
// back with NetConn.
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

// The socket under a wrapped connection is found for the probe: a POST is
// not sent on a connection the server closed.
func TestStaleWrappedConnection(t *testing.T) {
	closed, extra := make(chan struct{}, 2), make(chan string, 2)
	addr, accepted := halfClosingServer(t, closed, extra)
	c := h1client.New(h1client.Options{Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", addr)
		return wrapped{nc}, err
	}})
	t.Cleanup(c.CloseIdleConnections)
	do(t, c, request(t, context.Background(), http.MethodGet, addr, nil))
	<-closed
	time.Sleep(20 * time.Millisecond)
	if resp, body := do(t, c, request(t, context.Background(), http.MethodPost, addr, strings.NewReader("x"))); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("POST after a close: %d %q", resp.StatusCode, body)
	}
	if rest := <-extra; rest != "" || accepted.Load() != 2 {
		t.Errorf("the POST was sent on the closed connection (%q), %d connections", rest, accepted.Load())
	}
}

// A request whose client is still sending its small body ends when its
// context does (a route timeout), not when the body arrives.
func TestCancelWhileBodyTrickles(t *testing.T) {
	s, _ := server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
	}))
	c := client(t, addrOf(s), h1client.Options{})
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r := request(t, ctx, http.MethodPost, addrOf(s), pr)
	r.ContentLength = 5
	done := make(chan error, 1)
	go func() {
		_, err := c.RoundTrip(r)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("RoundTrip: %v, want the context's deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RoundTrip still waits for the body 10s after its context ended")
	}
}
