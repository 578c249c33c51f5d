package httpproxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/httpproxytest"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// writeCounter counts the writes made to the connections it accepts.
type writeCounter struct {
	net.Listener
	writes atomic.Int64
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{c, &l.writes}, nil
}

type countedConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// A small response of known length leaves the proxy in one write, its
// headers with its body (ReverseProxy flushed the headers on their own
// first: a write syscall more per response and hop); a response of unknown
// length still gets its headers at once, before a body that takes its time.
func TestResponseWrites(t *testing.T) {
	release := make(chan struct{})
	app := httpproxytest.App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/small":
			w.Header().Set("Content-Length", "2")
			io.WriteString(w, "ok")
		case "/stream":
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
			io.WriteString(w, "late")
		}
	}))
	m := metrics.New()
	h := httpproxytest.Routed("outbound", httpproxytest.Target(t, "web.test:80", nil, app))(
		httpproxy.New(httpproxy.Options{Direction: "outbound", Metrics: m, Log: httpproxytest.Log()}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wc := &writeCounter{Listener: ln}
	srv := &http.Server{Handler: h}
	go srv.Serve(wc)
	t.Cleanup(func() { srv.Close() })

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 3 {
		before := wc.writes.Load()
		io.WriteString(c, "GET /small HTTP/1.1\r\nHost: web.test\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "ok" {
			t.Fatalf("body %q", b)
		}
		// The server has written the whole response once the client read it.
		if n := wc.writes.Load() - before; n != 1 {
			t.Errorf("request %d: the response took %d writes, want 1", i, n)
		}
	}

	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: web.test\r\n\r\n")
	got := make(chan error, 1)
	go func() {
		resp, err := http.ReadResponse(br, nil)
		if err == nil && resp.StatusCode != 200 {
			err = io.ErrUnexpectedEOF
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a streamed response's headers were held back with its body")
	}
	close(release)
}
