package h1loop

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// wait bounds every wait of these tests: a connection's deadline, a hook
// that must be called. Nothing here takes near that long when it works.
const wait = 10 * time.Second

// seen is a request a backend read.
type seen struct {
	req  *http.Request
	body string
}

// backend is a loopback HTTP/1.1 server writing exact bytes.
type backend struct {
	addr     string
	accepted atomic.Int64
	reqs     chan seen // every request read, in order
}

// startBackend answers each request on kept-alive connections with the
// bytes respond gives, and closes the connection after them when it says
// so (a close-delimited body).
func startBackend(t *testing.T, respond func(*http.Request) (resp string, closeAfter bool)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	b := &backend{addr: ln.Addr().String(), reqs: make(chan seen, 64)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(wait))
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body, err := io.ReadAll(req.Body)
					if err != nil {
						return
					}
					b.reqs <- seen{req, string(body)}
					resp, closeAfter := respond(req)
					if _, err := io.WriteString(c, resp); err != nil || closeAfter {
						return
					}
				}
			}()
		}
	}()
	return b
}

// next is the next request the backend read.
func (b *backend) next(t *testing.T) seen {
	t.Helper()
	select {
	case s := <-b.reqs:
		return s
	case <-time.After(wait):
		t.Fatal("the backend got no request")
		return seen{}
	}
}

// startCloser is an endpoint that accepts each connection and closes it at
// once, without a byte: it fails every request before a response.
func startCloser(t *testing.T) (addr string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().String(), accepted
}

// endpoint is addr's endpoint from a balancer of one, as a Router picks
// it.
func endpoint(t *testing.T, addr string) *balance.Endpoint[*httpproxy.Upstream] {
	t.Helper()
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	b := balance.New(balance.Options[*httpproxy.Upstream]{
		Strategy: balance.RoundRobin,
		New:      func(s balance.Spec) *httpproxy.Upstream { return httpproxy.NewUpstream(s.Addr, false, dial) },
	})
	t.Cleanup(b.Close)
	b.Update([]balance.Spec{{Addr: addr}})
	ep, err := b.Pick()
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

// labels are the metrics labels the tests' Routers give ep's requests.
func labels(ep *balance.Endpoint[*httpproxy.Upstream]) metrics.Request {
	return metrics.Request{Direction: "outbound", Authority: "web.test:80", Target: ep.Addr(), TLS: metrics.TLSNotProvidedByServiceDiscovery}
}

// to routes to ep.
func to(ep *balance.Endpoint[*httpproxy.Upstream]) Target {
	return Target{Endpoint: ep, Labels: labels(ep)}
}

type routerFunc func(*http.Request) Target

func (f routerFunc) Route(r *http.Request, _ any) Target { return f(r) }

// hook counts a hook's calls and signals each (without blocking the loop
// it is called on).
type hook struct {
	n  atomic.Int64
	ch chan struct{}
}

func newHook() *hook { return &hook{ch: make(chan struct{}, 64)} }

func (h *hook) call() {
	h.n.Add(1)
	select {
	case h.ch <- struct{}{}:
	default:
	}
}

// called waits for the next call.
func (h *hook) called(t *testing.T, what string) {
	t.Helper()
	select {
	case <-h.ch:
	case <-time.After(wait):
		t.Fatalf("%s was not called", what)
	}
}

// fixture is a Server listening on loopback on a Group of its own.
type fixture struct {
	g        *Group
	s        *Server
	m        *metrics.Registry
	addr     string
	routed   atomic.Int64  // Route's calls
	fallback chan net.Conn // the connections handed to Fallback
	closed   *hook         // Closed
}

// start serves route on loops loops; tweak, if not nil, sets the Server's
// other fields before Listen.
func start(t *testing.T, loops int, route func(*http.Request) Target, tweak func(*Server)) *fixture {
	t.Helper()
	g, err := NewGroup(loops, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	f := &fixture{g: g, m: metrics.New(), fallback: make(chan net.Conn, 8), closed: newHook()}
	f.s = &Server{
		Group: g,
		Router: routerFunc(func(r *http.Request) Target {
			f.routed.Add(1)
			return route(r)
		}),
		Metrics:    f.m,
		ConnLabels: metrics.ConnLabels{Direction: "outbound", Peer: metrics.PeerSrc, TLS: metrics.TLSLoopback},
		Closed:     f.closed.call,
		Fallback: func(c net.Conn, _ any) {
			select {
			case f.fallback <- c:
			default:
				c.Close()
			}
		},
	}
	if tweak != nil {
		tweak(f.s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := f.s.Listen(ln); err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	t.Cleanup(func() {
		for {
			select {
			case c := <-f.fallback:
				c.Close()
			default:
				return
			}
		}
	})
	return f
}

// dial is a client connection to the fixture.
func (f *fixture) dial(t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(wait))
	return c, bufio.NewReader(c)
}

// handedOver is the next connection given to Fallback, read until it has
// given want's length: those bytes are returned.
func (f *fixture) handedOver(t *testing.T, want string) (net.Conn, string) {
	t.Helper()
	var c net.Conn
	select {
	case c = <-f.fallback:
	case <-time.After(wait):
		t.Fatal("no connection was handed to Fallback")
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(wait))
	b := make([]byte, len(want))
	n, err := io.ReadFull(c, b)
	if err != nil {
		t.Errorf("Fallback read %q, then %v", b[:n], err)
	}
	return c, string(b[:n])
}

// noFallback says no connection went to Fallback.
func (f *fixture) noFallback(t *testing.T) {
	t.Helper()
	select {
	case c := <-f.fallback:
		c.Close()
		t.Error("a connection was handed to Fallback")
	default:
	}
}

// settle waits until every loop is done with what it was doing: a
// response is counted (metrics, the balancer, InFlight) after its last
// byte is written, on the loop, in the same callback.
func (f *fixture) settle() { f.g.each(func(*Loop) {}) }

// count sums the counters of family whose labels include match.
func (f *fixture) count(t *testing.T, family string, match map[string]string) float64 {
	t.Helper()
	fams, err := f.m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, fam := range fams {
		if fam.GetName() != family {
			continue
		}
	series:
		for _, m := range fam.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range match {
				if have[k] != v {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// get sends a GET of path and reads its response whole.
func get(t *testing.T, c net.Conn, br *bufio.Reader, path string) (*http.Response, string) {
	t.Helper()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: web.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return read(t, br, http.MethodGet)
}

// read reads a response whole.
func read(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the response's body: %v", err)
	}
	return resp, string(b)
}

// readRaw reads a response with a Content-Length body as its bytes, its
// Date field's value (checked) replaced with "<date>".
func readRaw(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	length := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the head: %q, then %v", b.String()+line, err)
		}
		name, value, _ := strings.Cut(strings.TrimSuffix(line, "\r\n"), ": ")
		switch name {
		case "Date":
			if _, err := http.ParseTime(value); err != nil {
				t.Errorf("Date %q: %v", value, err)
			}
			line = "Date: <date>\r\n"
		case "Content-Length":
			length, _ = strconv.Atoi(value)
		}
		b.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return b.String() + string(body)
}

// A GET is forwarded and its answer passed on: the endpoint gets it
// without the client's hop-by-hop fields, the client gets the endpoint's
// response with a Date and without the endpoint's hop-by-hop fields
// (which the in-place parser takes), its fields sorted. The loop that
// served it counts it, and the golden metrics do. A second request on the
// same client connection goes on the same, kept-alive, endpoint
// connection.
func TestForwardGet(t *testing.T) {
	be := startBackend(t, func(*http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nX-B: 1\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nhello", false
	})
	ep := endpoint(t, be.addr)
	f := start(t, 2, func(*http.Request) Target { return to(ep) }, nil)
	c, br := f.dial(t)
	const want = "HTTP/1.1 200 OK\r\nDate: <date>\r\nContent-Length: 5\r\nContent-Type: text/plain\r\nX-B: 1\r\n\r\nhello"
	for i := range 2 {
		io.WriteString(c, "GET /a?q=1 HTTP/1.1\r\nHost: web.test\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nUser-Agent: t\r\nX-Keep: yes\r\n\r\n")
		if got := readRaw(t, br); got != want {
			t.Errorf("response %d:\n got %q\nwant %q", i, got, want)
		}
		s := be.next(t)
		if s.req.Method != http.MethodGet || s.req.RequestURI != "/a?q=1" || s.req.Host != "web.test" || s.body != "" {
			t.Errorf("request %d: the endpoint got %s %s Host %q, body %q", i, s.req.Method, s.req.RequestURI, s.req.Host, s.body)
		}
		if want := (http.Header{"User-Agent": {"t"}, "X-Keep": {"yes"}}); !reflect.DeepEqual(s.req.Header, want) {
			t.Errorf("request %d: the endpoint got the fields %v, want %v", i, s.req.Header, want)
		}
	}
	if n := be.accepted.Load(); n != 1 {
		t.Errorf("the endpoint accepted %d connections for two requests on one client connection, want 1", n)
	}
	if n := f.g.Served(); n != 2 {
		t.Errorf("the group served %d, want 2", n)
	}
	// Both on the one loop the connection is on.
	var per []int64
	for _, lp := range f.g.Loops() {
		per = append(per, lp.Served())
	}
	if !reflect.DeepEqual(per, []int64{0, 2}) && !reflect.DeepEqual(per, []int64{2, 0}) {
		t.Errorf("the loops served %v, want 2 on one of them", per)
	}
	f.settle()
	l := map[string]string{"authority": "web.test:80", "target_addr": be.addr}
	if n := f.count(t, "request_total", l); n != 2 {
		t.Errorf("request_total %v, want 2", n)
	}
	l["status_code"] = "200"
	if n := f.count(t, "response_total", l); n != 2 {
		t.Errorf("response_total{status_code=200} %v, want 2", n)
	}
	if n := f.routed.Load(); n != 2 {
		t.Errorf("Route called %d times, want 2", n)
	}
	if n := f.s.inFlight().Load(); n != 0 {
		t.Errorf("%d in flight after the responses, want 0", n)
	}
	f.noFallback(t)
}

// A chunked response is passed on as it came, and a close-delimited one
// (no length: the endpoint closes after its body) is passed on chunked,
// the client's connection kept; the endpoint connection that closed is
// not used again.
func TestForwardChunkedAndCloseDelimited(t *testing.T) {
	be := startBackend(t, func(r *http.Request) (string, bool) {
		if r.URL.Path == "/close" {
			return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close", true
		}
		return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", false
	})
	ep := endpoint(t, be.addr)
	f := start(t, 1, func(*http.Request) Target { return to(ep) }, nil)
	c, br := f.dial(t)
	for _, tc := range []struct{ path, body string }{
		{"/chunked", "hello world"}, {"/close", "until the close"}, {"/chunked", "hello world"},
	} {
		resp, body := get(t, c, br, tc.path)
		if resp.StatusCode != http.StatusOK || body != tc.body {
			t.Errorf("%s: %s %q, want 200 %q", tc.path, resp.Status, body, tc.body)
		}
		if !reflect.DeepEqual(resp.TransferEncoding, []string{"chunked"}) || resp.Close {
			t.Errorf("%s: Transfer-Encoding %q, close %v; want chunked, kept alive", tc.path, resp.TransferEncoding, resp.Close)
		}
	}
	// The first connection carried /chunked and /close, then closed.
	if n := be.accepted.Load(); n != 2 {
		t.Errorf("the endpoint accepted %d connections, want 2", n)
	}
	if n := f.g.Served(); n != 3 {
		t.Errorf("the loop served %d, want 3", n)
	}
	f.noFallback(t)
}

// A POST whose small body comes with its head reaches the endpoint whole,
// once, from the loop.
func TestForwardPostBody(t *testing.T) {
	be := startBackend(t, func(*http.Request) (string, bool) {
		return "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", false
	})
	ep := endpoint(t, be.addr)
	f := start(t, 1, func(*http.Request) Target { return to(ep) }, nil)
	c, br := f.dial(t)
	const body = "a body of a few bytes"
	io.WriteString(c, "POST /p HTTP/1.1\r\nHost: web.test\r\nContent-Type: text/plain\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	resp, got := read(t, br, http.MethodPost)
	if resp.StatusCode != http.StatusCreated || got != "ok" {
		t.Errorf("%s %q, want 201 \"ok\"", resp.Status, got)
	}
	s := be.next(t)
	if s.req.Method != http.MethodPost || s.req.ContentLength != int64(len(body)) || s.body != body {
		t.Errorf("the endpoint got %s, Content-Length %d, body %q", s.req.Method, s.req.ContentLength, s.body)
	}
	if n := be.accepted.Load(); n != 1 || len(be.reqs) != 0 {
		t.Errorf("the endpoint accepted %d connections and has %d more requests, want 1 and none", n, len(be.reqs))
	}
	if n := f.g.Served(); n != 1 {
		t.Errorf("the loop served %d, want 1", n)
	}
	f.noFallback(t)
}

// What the loop does not serve goes to Fallback with every byte the
// client sent, in order: a request the Router declines (with what was
// pipelined after it), one with Expect: 100-continue or Connection: close
// (the Router is not asked). The connection is Fallback's: what it writes
// reaches the client, and Closed is not told of it.
func TestHandOver(t *testing.T) {
	for _, tc := range []struct {
		name   string
		send   string
		routed int64
	}{
		{"declined", "GET /a HTTP/1.1\r\nHost: web.test\r\n\r\nGET /b HTTP/1.1\r\nHost: web.test\r\n\r\nPOST /c HTTP/1.1\r\nHost: web.test\r\nContent-Le", 1},
		{"expect", "POST /e HTTP/1.1\r\nHost: web.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody", 0},
		{"close", "GET /c HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t, 2, func(*http.Request) Target { return Target{} }, nil)
			c, br := f.dial(t)
			io.WriteString(c, tc.send)
			fc, got := f.handedOver(t, tc.send)
			if got != tc.send {
				t.Errorf("Fallback read\n %q\nwant\n %q", got, tc.send)
			}
			io.WriteString(fc, "HTTP/1.1 204 No Content\r\n\r\n")
			if resp, _ := read(t, br, http.MethodGet); resp.StatusCode != http.StatusNoContent {
				t.Errorf("the client got %s from Fallback, want 204", resp.Status)
			}
			if n := f.routed.Load(); n != tc.routed {
				t.Errorf("Route called %d times, want %d", n, tc.routed)
			}
			if n := f.closed.n.Load(); n != 0 {
				t.Errorf("Closed called %d times for a connection handed over, want 0", n)
			}
			if n := f.g.Served(); n != 0 {
				t.Errorf("the loops served %d, want 0", n)
			}
		})
	}
}

// A request whose destination is not known yet (Target.Await) waits for
// Await on a goroutine, then is routed again, once: served on the loop
// when the Router then has an endpoint, handed over when it says to wait
// again (no second wait).
func TestAwait(t *testing.T) {
	for _, again := range []bool{false, true} {
		t.Run(map[bool]string{false: "known", true: "still-unknown"}[again], func(t *testing.T) {
			be := startBackend(t, func(*http.Request) (string, bool) {
				return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
			})
			ep := endpoint(t, be.addr)
			var awaits atomic.Int64
			started, release := make(chan struct{}), make(chan struct{})
			await := func() {
				if awaits.Add(1) == 1 {
					close(started)
				}
				<-release
			}
			var calls int // Route's own count: called on the loop only
			f := start(t, 1, func(*http.Request) Target {
				if calls++; calls == 1 || again {
					return Target{Await: await}
				}
				return to(ep)
			}, nil)
			c, br := f.dial(t)
			const req = "GET /w HTTP/1.1\r\nHost: web.test\r\n\r\n"
			io.WriteString(c, req)
			select {
			case <-started:
			case <-time.After(wait):
				t.Fatal("Await was not called")
			}
			// While Await blocks, the request is neither routed again nor
			// sent nor handed over.
			f.settle()
			if n := f.routed.Load(); n != 1 {
				t.Errorf("Route called %d times while Await blocks, want 1", n)
			}
			if len(be.reqs) != 0 || len(f.fallback) != 0 {
				t.Error("the request went on while Await blocked")
			}
			close(release)
			if !again {
				if resp, body := read(t, br, http.MethodGet); resp.StatusCode != http.StatusOK || body != "ok" {
					t.Errorf("%s %q, want 200 \"ok\"", resp.Status, body)
				}
				if n := f.g.Served(); n != 1 {
					t.Errorf("the loop served %d, want 1", n)
				}
				f.noFallback(t)
			} else {
				if _, got := f.handedOver(t, req); got != req {
					t.Errorf("Fallback read %q, want %q", got, req)
				}
				if n := f.g.Served(); n != 0 || len(be.reqs) != 0 {
					t.Errorf("the loop served %d, the endpoint got %d requests; want none", n, len(be.reqs))
				}
			}
			if n := f.routed.Load(); n != 2 {
				t.Errorf("Route called %d times, want 2", n)
			}
			if n := awaits.Load(); n != 1 {
				t.Errorf("Await called %d times, want 1", n)
			}
		})
	}
}

// At MaxInFlight (counted in the shared InFlight) a request goes to the
// goroutine path, which sheds it, without asking the Router; below it, it
// is served, counted in InFlight while it is out.
func TestMaxInFlight(t *testing.T) {
	var inFlight, atBackend atomic.Int64
	be := startBackend(t, func(*http.Request) (string, bool) {
		atBackend.Store(inFlight.Load())
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	ep := endpoint(t, be.addr)
	f := start(t, 1, func(*http.Request) Target { return to(ep) }, func(s *Server) {
		s.InFlight, s.MaxInFlight = &inFlight, 1
	})
	inFlight.Store(1) // the goroutine path's
	c, _ := f.dial(t)
	const req = "GET /x HTTP/1.1\r\nHost: web.test\r\n\r\n"
	io.WriteString(c, req)
	if _, got := f.handedOver(t, req); got != req {
		t.Errorf("Fallback read %q, want %q", got, req)
	}
	if n := f.routed.Load(); n != 0 {
		t.Errorf("Route called %d times at the bound, want 0", n)
	}
	inFlight.Store(0)
	c, br := f.dial(t)
	if resp, _ := get(t, c, br, "/x"); resp.StatusCode != http.StatusOK {
		t.Errorf("below the bound: %s, want 200", resp.Status)
	}
	if n := atBackend.Load(); n != 1 {
		t.Errorf("%d in flight while the request was at the endpoint, want 1", n)
	}
	f.settle()
	if n := inFlight.Load(); n != 0 {
		t.Errorf("%d in flight after the response, want 0", n)
	}
	if n := f.routed.Load(); n != 1 {
		t.Errorf("Route called %d times, want 1", n)
	}
}

// An endpoint that fails a request before a response byte: an idempotent
// GET (to an endpoint that accepts and closes at once) goes to the
// goroutine path, which tries again, with the request in front, and is not
// counted; a POST with a body (to one that reads it and closes) is not
// sent again but answered 502 with the proxy's error header, counted, and
// the client's connection serves the next request.
func TestEndpointFailure(t *testing.T) {
	t.Run("get", func(t *testing.T) {
		closer, accepted := startCloser(t)
		bad := endpoint(t, closer)
		f := start(t, 1, func(*http.Request) Target { return to(bad) }, nil)
		c, br := f.dial(t)
		const req = "GET /g HTTP/1.1\r\nHost: web.test\r\nX-A: 1\r\n\r\n"
		io.WriteString(c, req)
		fc, got := f.handedOver(t, req)
		if got != req {
			t.Errorf("Fallback read\n %q\nwant\n %q", got, req)
		}
		io.WriteString(fc, "HTTP/1.1 204 No Content\r\n\r\n")
		if resp, _ := read(t, br, http.MethodGet); resp.StatusCode != http.StatusNoContent {
			t.Errorf("the client got %s from Fallback, want 204", resp.Status)
		}
		if n := accepted.Load(); n != 1 {
			t.Errorf("the endpoint accepted %d connections, want 1", n)
		}
		f.settle()
		if n := f.count(t, "request_total", nil) + f.count(t, "response_total", nil); n != 0 || f.g.Served() != 0 {
			t.Errorf("the failed attempt was counted: %v request_total and response_total, %d served", n, f.g.Served())
		}
		if n := f.s.inFlight().Load(); n != 0 {
			t.Errorf("%d in flight, want 0", n)
		}
		if n := f.closed.n.Load(); n != 0 {
			t.Errorf("Closed called %d times for a connection handed over, want 0", n)
		}
	})
	t.Run("post", func(t *testing.T) {
		failing := startBackend(t, func(*http.Request) (string, bool) { return "", true })
		be := startBackend(t, func(*http.Request) (string, bool) {
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
		})
		bad, good := endpoint(t, failing.addr), endpoint(t, be.addr)
		f := start(t, 1, func(r *http.Request) Target {
			if r.URL.Path == "/good" {
				return to(good)
			}
			return to(bad)
		}, nil)
		c, br := f.dial(t)
		io.WriteString(c, "POST /p HTTP/1.1\r\nHost: web.test\r\nContent-Length: 4\r\n\r\nonce")
		resp, body := read(t, br, http.MethodPost)
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(httpproxy.ErrorHeader) != "upstream" || body == "" {
			t.Errorf("%s, %s %q, body %q; want 502, upstream", resp.Status, httpproxy.ErrorHeader, resp.Header.Get(httpproxy.ErrorHeader), body)
		}
		if resp, body := get(t, c, br, "/good"); resp.StatusCode != http.StatusOK || body != "ok" {
			t.Errorf("the next request on the connection: %s %q, want 200 \"ok\"", resp.Status, body)
		}
		if s := failing.next(t); s.body != "once" {
			t.Errorf("the failing endpoint got the body %q", s.body)
		}
		if n := failing.accepted.Load(); n != 1 || len(failing.reqs) != 0 {
			t.Errorf("the failing endpoint accepted %d connections, got %d more requests; want the POST once", n, len(failing.reqs))
		}
		f.settle()
		if n := f.count(t, "response_total", map[string]string{"target_addr": failing.addr, "error": "upstream"}); n != 1 {
			t.Errorf("response_total{error=upstream} %v, want 1", n)
		}
		if n := f.count(t, "request_total", map[string]string{"target_addr": failing.addr}); n != 1 {
			t.Errorf("request_total of the failed POST %v, want 1", n)
		}
		if n := f.g.Served(); n != 1 {
			t.Errorf("the loop served %d (the loop's own 502 is not one), want 1", n)
		}
		if n := f.s.inFlight().Load(); n != 0 {
			t.Errorf("%d in flight, want 0", n)
		}
		f.noFallback(t)
	})
}

// Drain closes an idle connection at once (Closed is told) and one with a
// request out after its response; a connection Admit refuses is closed at
// once, and neither routed nor counted closed.
func TestDrainAndAdmit(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		be := startBackend(t, func(*http.Request) (string, bool) {
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
		})
		ep := endpoint(t, be.addr)
		f := start(t, 2, func(*http.Request) Target { return to(ep) }, nil)
		c, br := f.dial(t)
		if resp, _ := get(t, c, br, "/x"); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s, want 200", resp.Status)
		}
		f.s.Drain()
		f.closed.called(t, "Closed")
		if n, err := br.ReadByte(); err != io.EOF {
			t.Errorf("after Drain the idle connection read %q, %v; want EOF", n, err)
		}
		if n := f.closed.n.Load(); n != 1 {
			t.Errorf("Closed called %d times, want 1", n)
		}
		f.noFallback(t)
	})
	t.Run("busy", func(t *testing.T) {
		respond := make(chan struct{})
		be := startBackend(t, func(*http.Request) (string, bool) {
			<-respond
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
		})
		ep := endpoint(t, be.addr)
		f := start(t, 1, func(*http.Request) Target { return to(ep) }, nil)
		c, br := f.dial(t)
		io.WriteString(c, "GET /x HTTP/1.1\r\nHost: web.test\r\n\r\n")
		be.next(t) // out: Drain must let its response through
		f.s.Drain()
		if n := f.closed.n.Load(); n != 0 {
			t.Errorf("Drain closed a connection with a request out")
		}
		close(respond)
		if resp, body := read(t, br, http.MethodGet); resp.StatusCode != http.StatusOK || body != "ok" {
			t.Errorf("%s %q, want 200 \"ok\"", resp.Status, body)
		}
		if n, err := br.ReadByte(); err != io.EOF {
			t.Errorf("after its response the drained connection read %q, %v; want EOF", n, err)
		}
		f.closed.called(t, "Closed")
	})
	t.Run("refused", func(t *testing.T) {
		admit := newHook()
		f := start(t, 2, func(*http.Request) Target { return Target{} }, func(s *Server) {
			s.Admit = func() bool { admit.call(); return false }
		})
		_, br := f.dial(t)
		admit.called(t, "Admit")
		if n, err := br.ReadByte(); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("a refused connection read %q, %v; want its end", n, err)
		}
		if f.closed.n.Load() != 0 || f.routed.Load() != 0 || admit.n.Load() != 1 {
			t.Errorf("Closed %d, Route %d, Admit %d times; want 0, 0, 1", f.closed.n.Load(), f.routed.Load(), admit.n.Load())
		}
		f.noFallback(t)
	})
}

// A client that sends half a head and stops is closed after HeaderTimeout,
// not before, and not handed over.
func TestHeaderTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	f := start(t, 2, func(*http.Request) Target { return Target{} }, func(s *Server) { s.HeaderTimeout = timeout })
	begin := time.Now()
	c, br := f.dial(t)
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: web.te")
	if n, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("read %q, %v; want EOF", n, err)
	}
	if d := time.Since(begin); d < timeout {
		t.Errorf("closed after %v, before the header timeout %v", d, timeout)
	}
	f.closed.called(t, "Closed")
	if f.routed.Load() != 0 {
		t.Error("half a head was routed")
	}
	f.noFallback(t)
}
