package h1loop

import (
	"bufio"
	"context"
	"syscall"

	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// A POST the endpoint read whole and then reset (no response byte): not
// sent again, answered 502 (README: "Any other request is never sent
// twice: a failure after it was written is answered 502").
func TestPostResetAfterSentNotSentAgain(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.SetDeadline(time.Now().Add(wait))
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err == nil {
					b, _ := io.ReadAll(req.Body)
					got <- req.Method + " " + string(b)
				}
				c.(*net.TCPConn).SetLinger(0) // reset: no response byte
				c.Close()
			}()
		}
	}()
	ep := endpoint(t, ln.Addr().String())
	f := start(t, 1, func(*http.Request) Target { return to(ep) }, nil)
	c, br := f.dial(t)
	const req = "POST /p HTTP/1.1\r\nHost: web.test\r\nContent-Length: 4\r\n\r\nonce"
	io.WriteString(c, req)
	select {
	case s := <-got:
		t.Logf("the endpoint read %q", s)
	case <-time.After(wait):
		t.Fatal("the endpoint got no request")
	}
	resp := make(chan *http.Response, 1)
	go func() {
		r, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
		if err == nil {
			resp <- r
		}
	}()
	select {
	case r := <-resp:
		if r.StatusCode != http.StatusBadGateway {
			t.Errorf("%s, want 502", r.Status)
		}
	case fc := <-f.fallback:
		defer fc.Close()
		fc.SetDeadline(time.Now().Add(wait))
		b := make([]byte, len(req))
		n, _ := io.ReadFull(fc, b)
		t.Errorf("the POST the endpoint read was handed to Fallback, which sends it again: Fallback reads %q first", b[:n])
	case <-time.After(wait):
		t.Fatal("neither a response nor a hand-over")
	}
}

// HeaderTimeout bounds the wait for a head from its start (as h1server's
// ReadHeaderTimeout): a client sending its head a few bytes at a time,
// each within the timeout, is still closed once the timeout has passed.
func TestHeaderTimeoutNotExtendedByDrips(t *testing.T) {
	const timeout = 200 * time.Millisecond
	f := start(t, 1, func(*http.Request) Target { return Target{} }, func(s *Server) { s.HeaderTimeout = timeout })
	begin := time.Now()
	c, br := f.dial(t)
	io.WriteString(c, "GET /slow HTTP/1.1\r\n")
	closed := make(chan time.Duration, 1)
	go func() {
		br.ReadByte()
		closed <- time.Since(begin)
	}()
	tick := time.NewTicker(timeout / 2)
	defer tick.Stop()
	for i := 0; i < 20; i++ { // 2 s of drips: 10 header timeouts
		select {
		case d := <-closed:
			t.Logf("closed after %v", d)
			return
		case <-tick.C:
			io.WriteString(c, "X: y\r\n")
		}
	}
	t.Errorf("a head sent in drips every %v is still open after %v with HeaderTimeout %v", timeout/2, time.Since(begin).Round(time.Millisecond), timeout)
}

// A request with Expect: 100-continue is never the loop's: it goes to
// Fallback (which answers 100) at once, not after the body, which the
// client sends only once it has the 100 (or after its own wait).
func TestExpectContinueHandedOverBeforeBody(t *testing.T) {
	f := start(t, 1, func(*http.Request) Target { return Target{} }, func(s *Server) { s.HeaderTimeout = 5 * time.Second })
	c, _ := f.dial(t)
	const head = "POST /e HTTP/1.1\r\nHost: web.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
	begin := time.Now()
	io.WriteString(c, head)
	select {
	case fc := <-f.fallback:
		fc.Close()
		t.Logf("handed over after %v", time.Since(begin))
	case <-time.After(time.Second):
		t.Errorf("an Expect: 100-continue head without its body was not handed over within 1s (the client waits for 100 Continue)")
	}
}

// Drain closes a connection after its response: all of it, also the part
// still waiting for a slow client.
func TestDrainWritesResponseWhole(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", 200<<10/16) // 200 KiB: within maxPending, beyond the sockets' buffers
	be := startBackend(t, func(*http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body, false
	})
	ep := endpoint(t, be.addr)
	g, err := NewGroup(1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	s := &Server{Group: g, Router: routerFunc(func(*http.Request) Target { return to(ep) }), Metrics: metrics.New(), Fallback: func(c net.Conn, _ any) { c.Close() }}
	small := func(opt int) func(string, string, syscall.RawConn) error {
		return func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, 4096) })
		}
	}
	// Small socket buffers (the accepted socket's inherited from the
	// listener's): most of the response waits in the loop's queue.
	lc := net.ListenConfig{Control: small(syscall.SO_SNDBUF)}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := s.Listen(ln); err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{Control: small(syscall.SO_RCVBUF)}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: web.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Drain() // the response's head is out: the connection closes after its end
	b, err := io.ReadAll(resp.Body)
	if err != nil || len(b) != len(body) {
		t.Errorf("the drained connection gave %d of the body's %d bytes, then %v", len(b), len(body), err)
	}
}
