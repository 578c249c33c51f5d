package h2client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// echo answers with the request's method, path, a few headers and its
// body, and trailers (declared and not).
func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Trailer", "X-Declared")
	w.Header().Set("X-Method", r.Method)
	w.Header().Set("X-Path", r.URL.RequestURI())
	w.Header().Set("X-Host", r.Host)
	w.Header().Set("X-Ua", r.Header.Get("User-Agent"))
	w.Header().Set("X-Te", r.Header.Get("Te"))
	w.Header().Set("X-Cl", fmt.Sprint(r.ContentLength))
	w.Header().Set("X-Conn", r.Header.Get("Connection")+r.Header.Get("Keep-Alive"))
	w.Header().Set("X-Req-Trailer", r.Trailer.Get("X-Req"))
	w.Write(body)
	w.Header().Set("X-Declared", "d")
	w.Header().Set(http.TrailerPrefix+"X-Undeclared", "u")
}

func TestRoundTrip(t *testing.T) {
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			addr := s.serve(t, http.HandlerFunc(echo))
			c := newTestClient(t, addr, Options{})
			for _, tc := range []struct {
				name   string
				method string
				body   []byte
			}{
				{"get", "GET", nil},
				{"post", "POST", []byte("hello")},
				{"post-empty", "POST", []byte{}},
				{"post-large", "POST", bytes.Repeat([]byte("x"), 1<<20)},
			} {
				t.Run(tc.name, func(t *testing.T) {
					req := newRequest(t, tc.method, "http://example.com/p?q=1", tc.body)
					req.Header.Set("Te", "trailers")
					req.Header.Set("Connection", "keep-alive")
					req.Header.Set("Keep-Alive", "timeout=5")
					resp, err := c.RoundTrip(req)
					if err != nil {
						t.Fatal(err)
					}
					got, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, tc.body) {
						t.Errorf("body: %d bytes, want %d", len(got), len(tc.body))
					}
					h := resp.Header
					if h.Get("X-Method") != tc.method || h.Get("X-Path") != "/p?q=1" || h.Get("X-Host") != "example.com" {
						t.Errorf("request as the server saw it: %v", h)
					}
					if h.Get("X-Ua") != "" {
						t.Errorf("User-Agent %q: no default is sent", h.Get("X-Ua"))
					}
					if h.Get("X-Te") != "trailers" || h.Get("X-Conn") != "" {
						t.Errorf("TE %q, connection headers %q", h.Get("X-Te"), h.Get("X-Conn"))
					}
					if want := fmt.Sprint(len(tc.body)); tc.body != nil && h.Get("X-Cl") != want {
						t.Errorf("Content-Length seen %s, want %s", h.Get("X-Cl"), want)
					}
					if resp.Trailer.Get("X-Declared") != "d" || resp.Trailer.Get("X-Undeclared") != "u" {
						t.Errorf("trailers %v", resp.Trailer)
					}
					if resp.ProtoMajor != 2 || resp.Request != req {
						t.Errorf("proto %d, request %p", resp.ProtoMajor, resp.Request)
					}
				})
			}
			if n := c.dials.Load(); n != 1 {
				t.Errorf("%d dials, want 1 (one connection reused)", n)
			}
		})
	}
}

func TestDeclaredTrailersBeforeBody(t *testing.T) {
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			addr := s.serve(t, http.HandlerFunc(echo))
			c := newTestClient(t, addr, Options{})
			resp, err := c.RoundTrip(newRequest(t, "GET", "http://a/", nil))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if v, ok := resp.Trailer["X-Declared"]; !ok || v != nil {
				t.Errorf("declared trailer before the body's end: %v (want a key with no value)", resp.Trailer)
			}
			io.Copy(io.Discard, resp.Body)
			if resp.Trailer.Get("X-Declared") != "d" {
				t.Errorf("trailers at EOF: %v", resp.Trailer)
			}
		})
	}
}

// A request body that says it is whole leaves with its HEADERS in one
// write; the response whose DATA and trailers came with its HEADERS reads
// whole at once.
func TestOneWriteEachWay(t *testing.T) {
	addr := serveH2(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Write(b)
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
	}))
	c := newTestClient(t, addr, Options{})
	warm, err := c.RoundTrip(newRequest(t, "GET", "http://a/", nil))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, warm.Body)
	warm.Body.Close()
	time.Sleep(50 * time.Millisecond) // settings acknowledged, windows given back
	before := c.writes.Load()
	req := newRequest(t, "POST", "http://a/svc/Method", nil)
	req.Body = &bufferedBody{data: []byte("\x00\x00\x00\x00\x03abc")}
	req.ContentLength = -1
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if n := c.writes.Load() - before; n != 1 {
		t.Errorf("request written in %d writes, want 1", n)
	}
	n, eof := resp.Body.(Buffered).Buffered()
	if n != 8 || !eof {
		t.Errorf("Buffered() = %d, %v: want the whole response in (8, true)", n, eof)
	}
	p := make([]byte, 64)
	m, err := resp.Body.Read(p)
	if m != 8 || err != io.EOF {
		t.Errorf("Read = %d, %v: want 8, EOF together", m, err)
	}
	if resp.Trailer.Get("Grpc-Status") != "0" {
		t.Errorf("trailers %v", resp.Trailer)
	}
	resp.Body.Close()
}

// bufferedBody is a request body whose end is in (as h2server's).
type bufferedBody struct {
	data   []byte
	closed bool
}

func (b *bufferedBody) Read(p []byte) (int, error) {
	n := copy(p, b.data)
	b.data = b.data[n:]
	if len(b.data) == 0 {
		return n, io.EOF
	}
	return n, nil
}
func (b *bufferedBody) Buffered() (int, bool) { return len(b.data), true }
func (b *bufferedBody) Close() error          { b.closed = true; return nil }

// The proxy's own path: h2server's request body relayed by h2client.
func TestRelayH2ServerBody(t *testing.T) {
	backend := serveH2(t, http.HandlerFunc(echo))
	c := newTestClient(t, backend, Options{})
	front := serveH2(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := r.Clone(r.Context())
		out.URL.Scheme, out.URL.Host, out.RequestURI = "http", backend, ""
		resp, err := c.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		w.Header().Set("X-Got", string(b))
	}))
	fc := newTestClient(t, front, Options{})
	for _, body := range []string{"", "x", strings.Repeat("y", 100<<10)} {
		resp, err := fc.RoundTrip(newRequest(t, "POST", "http://a/", []byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("X-Got"); got != body {
			t.Errorf("relayed %d bytes, want %d (status %d)", len(got), len(body), resp.StatusCode)
		}
	}
}

func TestConcurrentStreams(t *testing.T) {
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			addr := s.serve(t, http.HandlerFunc(echo))
			c := newTestClient(t, addr, Options{StreamWindow: 64 << 10, ConnWindow: 256 << 10})
			var wg sync.WaitGroup
			errs := make(chan error, 50)
			for i := range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					body := bytes.Repeat([]byte{byte(i)}, (i%5)*50000)
					resp, err := c.RoundTrip(newRequest(t, "PUT", "http://a/", body))
					if err != nil {
						errs <- err
						return
					}
					defer resp.Body.Close()
					got, err := io.ReadAll(resp.Body)
					if err != nil {
						errs <- err
						return
					}
					if sha256.Sum256(got) != sha256.Sum256(body) {
						errs <- fmt.Errorf("stream %d: body of %d bytes, want %d", i, len(got), len(body))
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// A request body streamed while the response streams back (full duplex),
// and a cancellation mid-stream: RST_STREAM, the connection stays.
func TestFullDuplexAndCancel(t *testing.T) {
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			addr := s.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.NewResponseController(w).EnableFullDuplex()
				w.WriteHeader(200)
				w.(http.Flusher).Flush()
				buf := make([]byte, 100)
				for {
					n, err := r.Body.Read(buf)
					if n > 0 {
						w.Write(buf[:n])
						w.(http.Flusher).Flush()
					}
					if err != nil {
						return
					}
				}
			}))
			c := newTestClient(t, addr, Options{})
			ctx, cancel := context.WithCancel(context.Background())
			pr, pw := io.Pipe()
			req := newRequest(t, "POST", "http://a/", nil)
			req = req.WithContext(ctx)
			req.Body = pr
			resp, err := c.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 10)
			for _, m := range []string{"ping", "pong"} {
				pw.Write([]byte(m))
				n, err := io.ReadFull(resp.Body, buf[:len(m)])
				if err != nil || string(buf[:n]) != m {
					t.Fatalf("echoed %q, %v", buf[:n], err)
				}
			}
			cancel()
			if _, err := resp.Body.Read(buf); !errors.Is(err, context.Canceled) {
				t.Errorf("read after cancel: %v, want context.Canceled", err)
			}
			resp.Body.Close()
			resp2, err := c.RoundTrip(newRequest(t, "POST", "http://a/", []byte("again")))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp2.Body)
			resp2.Body.Close()
			if string(b) != "again" || c.dials.Load() != 1 {
				t.Errorf("after a cancel: %q, %d dials (want the same connection)", b, c.dials.Load())
			}
		})
	}
}

// Closing a response body early resets the stream; the connection stays,
// and the connection window given back lets the next streams through.
func TestCloseBodyEarly(t *testing.T) {
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			big := bytes.Repeat([]byte("z"), 1<<20)
			addr := s.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Write(big)
			}))
			c := newTestClient(t, addr, Options{StreamWindow: 64 << 10, ConnWindow: 128 << 10})
			for range 20 {
				resp, err := c.RoundTrip(newRequest(t, "GET", "http://a/", nil))
				if err != nil {
					t.Fatal(err)
				}
				b := make([]byte, 10)
				io.ReadFull(resp.Body, b)
				time.Sleep(time.Millisecond)
				resp.Body.Close()
			}
			resp, err := c.RoundTrip(newRequest(t, "GET", "http://a/", nil))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || len(got) != len(big) || c.dials.Load() != 1 {
				t.Errorf("after early closes: %d bytes, %v, %d dials", len(got), err, c.dials.Load())
			}
		})
	}
}

func TestContextBeforeResponse(t *testing.T) {
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			release := make(chan struct{})
			addr := s.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}))
			defer close(release)
			c := newTestClient(t, addr, Options{})
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			req := newRequest(t, "GET", "http://a/", nil).WithContext(ctx)
			_, err := c.RoundTrip(req)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err %v, want the deadline", err)
			}
		})
	}
}

func Test1xx(t *testing.T) {
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			addr := s.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Link", "</style.css>; rel=preload")
				w.WriteHeader(http.StatusEarlyHints)
				w.Header().Del("Link")
				io.ReadAll(r.Body) // sends 100 Continue
				w.Write([]byte("done"))
			}))
			c := newTestClient(t, addr, Options{})
			var got []int
			var links []string
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				got = append(got, code)
				links = append(links, h.Get("Link"))
				return nil
			}}
			req := newRequest(t, "POST", "http://a/", []byte("body"))
			req.Header.Set("Expect", "100-continue")
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
			resp, err := c.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "done" || len(got) < 1 || got[0] != 103 || links[0] == "" {
				t.Errorf("1xx %v %q, body %q", got, links, b)
			}
		})
	}
}

func TestRefusedRequests(t *testing.T) {
	addr := serveH2(t, http.HandlerFunc(echo))
	c := newTestClient(t, addr, Options{})
	for _, tc := range []struct {
		name string
		mod  func(*http.Request)
	}{
		{"header name", func(r *http.Request) { r.Header["Bad Name"] = []string{"x"} }},
		{"header value", func(r *http.Request) { r.Header.Set("X", "a\r\nb") }},
		{"upgrade", func(r *http.Request) { r.Header.Set("Upgrade", "websocket") }},
		{"connection", func(r *http.Request) { r.Header.Set("Connection", "upgrade") }},
		{"transfer-encoding", func(r *http.Request) { r.Header.Set("Transfer-Encoding", "gzip") }},
		{"host", func(r *http.Request) { r.Host = "a b" }},
		{"scheme", func(r *http.Request) { r.URL.Scheme = "ftp" }},
		{"method", func(r *http.Request) { r.Method = "GE T" }},
		{"trailer key", func(r *http.Request) { r.Trailer = http.Header{"Content-Length": nil} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := newRequest(t, "GET", "http://a/", nil)
			tc.mod(req)
			if _, err := c.RoundTrip(req); err == nil {
				t.Errorf("sent, want refused")
			}
		})
	}
	// The connection's HPACK state is intact.
	resp, err := c.RoundTrip(newRequest(t, "GET", "http://a/", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestRequestTrailers(t *testing.T) {
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			addr := s.serve(t, http.HandlerFunc(echo))
			c := newTestClient(t, addr, Options{})
			for _, buffered := range []bool{false, true} {
				req := newRequest(t, "POST", "http://a/", nil)
				if buffered {
					req.Body = &bufferedBody{data: []byte("abc")}
				} else {
					req.Body = io.NopCloser(strings.NewReader("abc"))
				}
				req.ContentLength = -1
				req.Trailer = http.Header{"X-Req": {"t"}}
				resp, err := c.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "abc" || resp.Header.Get("X-Req-Trailer") != "t" {
					t.Errorf("buffered %v: body %q, trailer seen %q", buffered, b, resp.Header.Get("X-Req-Trailer"))
				}
			}
		})
	}
}

func TestDialError(t *testing.T) {
	want := errors.New("no route")
	c := New(Options{Dial: func(context.Context) (net.Conn, error) { return nil, want }})
	_, err := c.RoundTrip(newRequest(t, "GET", "http://a/", nil))
	if err != want {
		t.Errorf("err %v, want the dial's as it is", err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("client went away")
	cancel(cause)
	_, err = c.RoundTrip(newRequest(t, "GET", "http://a/", nil).WithContext(ctx))
	if err != cause {
		t.Errorf("err %v, want the context's cause", err)
	}
}

func TestIdleTimeout(t *testing.T) {
	addr := serveH2(t, http.HandlerFunc(echo))
	c := newTestClient(t, addr, Options{IdleTimeout: 100 * time.Millisecond})
	for range 2 {
		resp, err := c.RoundTrip(newRequest(t, "GET", "http://a/", nil))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		time.Sleep(300 * time.Millisecond)
	}
	if n := c.dials.Load(); n != 2 {
		t.Errorf("%d dials, want 2 (the idle connection closed)", n)
	}
	c.mu.Lock()
	n := len(c.conns)
	c.mu.Unlock()
	time.Sleep(300 * time.Millisecond)
	c.mu.Lock()
	m := len(c.conns)
	c.mu.Unlock()
	if n > 1 || m != 0 {
		t.Errorf("pool %d then %d connections, want at most 1 then 0", n, m)
	}
}

func TestCloseIdleConnections(t *testing.T) {
	addr := serveH2(t, http.HandlerFunc(echo))
	c := newTestClient(t, addr, Options{})
	resp, err := c.RoundTrip(newRequest(t, "GET", "http://a/", nil))
	if err != nil {
		t.Fatal(err)
	}
	c.CloseIdleConnections() // a stream in flight: kept
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("body after CloseIdleConnections: %q %v", b, err)
	}
	c.CloseIdleConnections()
	resp, err = c.RoundTrip(newRequest(t, "GET", "http://a/", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if c.dials.Load() != 2 {
		t.Errorf("%d dials, want 2", c.dials.Load())
	}
}

// A request that says Connection: close is the connection's last (Go's
// transport); the next request dials.
func TestConnectionCloseRequest(t *testing.T) {
	addr := serveH2(t, http.HandlerFunc(echo))
	c := newTestClient(t, addr, Options{})
	for range 2 {
		req := newRequest(t, "GET", "http://a/", nil)
		req.Close = true
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := c.dials.Load(); n != 2 {
		t.Errorf("%d dials, want 2", n)
	}
}

func TestStatusLine(t *testing.T) {
	for _, status := range []string{"200", "404", "599", "100", "299", "+20", "020", "600", "999", "-99", "abc"} {
		code, err := strconv.Atoi(status)
		if err != nil {
			continue
		}
		if got, want := statusLine(status, code), status+" "+http.StatusText(code); got != want {
			t.Errorf("statusLine(%q) = %q, want %q", status, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { statusLine("200", 200) }); n != 0 {
		t.Errorf("statusLine allocates %v times", n)
	}
}
