package h1loop

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
)

// HTTP/1.1 clients' requests relayed to HTTP/2 endpoints
// (h1relay_linux.go): raw HTTP/1.1 on the client's side, where the bytes
// matter; Go's HTTP/2 server (h2c), or raw frames where what comes in one
// read matters, as the endpoint.

// h1seen is what the endpoint got.
type h1seen struct {
	proto, method, uri, host, body, origProto, length string
}

// h1Relayed is an h2c endpoint recording its requests and answering by
// path.
func h1Relayed(t *testing.T) (addr string, seen chan h1seen) {
	seen = make(chan h1seen, 16)
	addr, _ = h2Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen <- h1seen{r.Proto, r.Method, r.RequestURI, r.Host, string(body), r.Header.Get(httpproxy.OrigProtoHeader), r.Header.Get("Content-Length")}
		switch r.URL.Path {
		case "/cl":
			w.Header().Set("X-B", "1")
			io.WriteString(w, "hello")
		case "/echo":
			w.WriteHeader(http.StatusCreated)
			w.Write(bytes.ToUpper(body))
		case "/stream":
			// Flushed before its end: no length, trailers after it.
			w.Header().Set("Trailer", "X-T")
			io.WriteString(w, "ab")
			w.(http.Flusher).Flush()
			io.WriteString(w, "cd")
			w.Header().Set("X-T", "done")
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/103":
			w.Header().Set("Link", "</s.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			io.WriteString(w, "ok")
		}
	}))
	return addr, seen
}

// send writes raw on c.
func send(t *testing.T, c net.Conn, raw string) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
}

// Each form of response an HTTP/2 endpoint gives, relayed to an HTTP/1.1
// client: the endpoint's length, or the chunks and trailers of a response
// it flushed before its end, a 204 without body fields, a 1xx before the
// final response; a body sent with its length; two pipelined requests
// answered in turn on one connection. The endpoint gets HTTP/2 requests,
// marked as HTTP/1.1's when the Target says so; each is counted once.
func TestH1RelayForms(t *testing.T) {
	addr, seen := h1Relayed(t)
	ep := endpoint(t, addr)
	var orig atomic.Bool
	hf := startH2(t, 1, func(*http.Request) Target {
		tg := toH2(to(ep))
		tg.OrigProto = orig.Load()
		return tg
	}, nil)
	c, br := hf.dial(t)

	send(t, c, "GET /cl?q=1 HTTP/1.1\r\nHost: web.test\r\nConnection: X-Gone\r\nX-Gone: 1\r\n\r\n")
	if got, want := readRaw(t, br), "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain; charset=utf-8\r\nDate: <date>\r\nX-B: 1\r\n\r\nhello"; got != want {
		t.Errorf("GET /cl:\n got %q\nwant %q", got, want)
	}
	if s := <-seen; s != (h1seen{"HTTP/2.0", "GET", "/cl?q=1", "web.test", "", "", ""}) {
		t.Errorf("the endpoint got %+v", s)
	}

	orig.Store(true)
	send(t, c, "POST /echo HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5\r\n\r\nhello")
	resp, body := read(t, br, "POST")
	if resp.StatusCode != http.StatusCreated || body != "HELLO" || resp.ContentLength != 5 {
		t.Errorf("POST /echo: %s %q (length %d)", resp.Status, body, resp.ContentLength)
	}
	if s := <-seen; s != (h1seen{"HTTP/2.0", "POST", "/echo", "web.test", "hello", "HTTP/1.1", "5"}) {
		t.Errorf("the endpoint got %+v", s)
	}
	orig.Store(false)

	send(t, c, "GET /stream HTTP/1.1\r\nHost: web.test\r\n\r\n")
	resp, body = read(t, br, "GET")
	if body != "abcd" || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || resp.Trailer.Get("X-T") != "done" {
		t.Errorf("GET /stream: %q, transfer-encoding %v, trailers %v; want abcd chunked, X-T: done", body, resp.TransferEncoding, resp.Trailer)
	}
	<-seen

	send(t, c, "GET /204 HTTP/1.1\r\nHost: web.test\r\n\r\n")
	if got, want := readRaw(t, br), "HTTP/1.1 204 No Content\r\nDate: <date>\r\n\r\n"; got != want {
		t.Errorf("GET /204:\n got %q\nwant %q", got, want)
	}
	<-seen

	send(t, c, "GET /103 HTTP/1.1\r\nHost: web.test\r\n\r\n")
	if got, want := readRaw(t, br), "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"; got != want {
		t.Errorf("GET /103, the interim response:\n got %q\nwant %q", got, want)
	}
	if resp, body := read(t, br, "GET"); resp.StatusCode != 200 || body != "ok" {
		t.Errorf("GET /103: %s %q", resp.Status, body)
	}
	<-seen

	send(t, c, "GET /cl HTTP/1.1\r\nHost: web.test\r\n\r\nPOST /echo HTTP/1.1\r\nHost: web.test\r\nContent-Length: 3\r\n\r\nabc")
	if resp, body := read(t, br, "GET"); resp.StatusCode != 200 || body != "hello" {
		t.Errorf("pipelined GET /cl: %s %q", resp.Status, body)
	}
	if resp, body := read(t, br, "POST"); resp.StatusCode != 201 || body != "ABC" {
		t.Errorf("pipelined POST /echo: %s %q", resp.Status, body)
	}
	<-seen
	<-seen

	hf.settle()
	l := epLabels(addr)
	if n := hf.count(t, "request_total", l); n != 7 {
		t.Errorf("request_total %v, want 7", n)
	}
	if n := hf.count(t, "response_total", with(l, "status_code", "201", "classification", "success")); n != 2 {
		t.Errorf("response_total{status_code=201} %v, want 2", n)
	}
	if n := hf.s.inFlight().Load(); n != 0 {
		t.Errorf("%d in flight after the responses, want 0", n)
	}
	if n := hf.g.Served(); n != 7 {
		t.Errorf("the loops passed on %d final responses, want 7", n)
	}
	hf.noFallback(t)
	hf.noFb(t)
}

// rawH2Endpoint answers every stream with HEADERS without a length, one
// DATA and the stream's end, all in one write: a response whole in the
// read that brings its head, as a peer proxy relays a small chunked one.
func rawH2Endpoint(t *testing.T, body string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := io.ReadFull(br, make([]byte, len(http2.ClientPreface))); err != nil {
					return
				}
				var out bytes.Buffer
				fr := http2.NewFramer(&out, br)
				fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				fr.WriteSettings()
				c.Write(out.Bytes())
				out.Reset()
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					h, ok := f.(*http2.MetaHeadersFrame)
					if !ok {
						if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
							fr.WriteSettingsAck()
							c.Write(out.Bytes())
							out.Reset()
						}
						continue
					}
					var hb bytes.Buffer
					enc := hpack.NewEncoder(&hb)
					enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
					enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "text/plain"})
					fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: hb.Bytes(), EndHeaders: true})
					fr.WriteData(h.StreamID, true, []byte(body))
					if _, err := c.Write(out.Bytes()); err != nil {
						return
					}
					out.Reset()
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// A response whose length the endpoint did not declare but that came
// whole with its head gets its length, as net/http's server gives a
// handler's response that ends before its first flush: one write of head
// and body.
func TestH1RelayLengthOfWholeResponse(t *testing.T) {
	ep := endpoint(t, rawH2Endpoint(t, "whole"))
	hf := startH2(t, 1, func(*http.Request) Target { return toH2(to(ep)) }, nil)
	c, br := hf.dial(t)
	for range 2 {
		send(t, c, "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
		if got, want := readRaw(t, br), "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\nDate: <date>\r\n\r\nwhole"; got != want {
			t.Errorf("\n got %q\nwant %q", got, want)
		}
	}
	hf.noFallback(t)
}

// The endpoint fails a request before its response: a GET, which the
// goroutine path would send again, goes there with its connection, the
// request in front of what follows it; a POST whose body went out is
// answered 502, its connection kept; a response broken after its head
// ends the connection after what came of it; a refused dial hands the
// request over. Each counted as the goroutine path counts it.
func TestH1RelayFailures(t *testing.T) {
	addr, _ := h2Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/ok":
			io.WriteString(w, "ok")
		case "/cut":
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "part")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		default:
			panic(http.ErrAbortHandler) // RST_STREAM, no response
		}
	}))
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	ep, refused := endpoint(t, addr), endpoint(t, closedAddr)
	hf := startH2(t, 1, func(r *http.Request) Target {
		if r.URL.Path == "/refused" {
			return toH2(to(refused))
		}
		return toH2(to(ep))
	}, nil)

	c, br := hf.dial(t)
	send(t, c, "POST /reset HTTP/1.1\r\nHost: web.test\r\nContent-Length: 1\r\n\r\nx")
	resp, body := read(t, br, "POST")
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(httpproxy.ErrorHeader) != "upstream" || !strings.Contains(body, "without a response") {
		t.Errorf("POST /reset: %s %q %v, want the loop's 502", resp.Status, body, resp.Header)
	}
	send(t, c, "GET /ok HTTP/1.1\r\nHost: web.test\r\n\r\n")
	if resp, body := read(t, br, "GET"); resp.StatusCode != 200 || body != "ok" {
		t.Errorf("GET /ok after the 502: %s %q", resp.Status, body)
	}

	const get = "GET /reset HTTP/1.1\r\nHost: web.test\r\n\r\n"
	send(t, c, get+"GET /next HTTP/1.1\r\nHost: web.test\r\n\r\n")
	if _, got := hf.handedOver(t, get+"GET /next"); got != get+"GET /next" {
		t.Errorf("the goroutine path read %q, want the GET in front of the next request", got)
	}

	c, br = hf.dial(t)
	send(t, c, "GET /cut HTTP/1.1\r\nHost: web.test\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if string(b) != "part" || err == nil {
		t.Errorf("the cut response's body: %q, %v; want \"part\", then an error", b, err)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("the connection outlived the cut response")
	}

	c, _ = hf.dial(t)
	const refusedGet = "GET /refused HTTP/1.1\r\nHost: web.test\r\n\r\n"
	send(t, c, refusedGet)
	if _, got := hf.handedOver(t, refusedGet); got != refusedGet {
		t.Errorf("the goroutine path read %q after the refused dial", got)
	}

	hf.settle()
	l := epLabels(addr)
	if n := hf.count(t, "response_total", with(l, "error", "upstream")); n != 1 {
		t.Errorf("response_total{error=upstream} %v, want 1 (the POST)", n)
	}
	eventually(t, "the cut counted", func() bool { return hf.count(t, "response_total", with(l, "error", "stream")) == 1 })
	if n := hf.count(t, "request_total", l); n != 3 {
		t.Errorf("request_total %v, want 3 (the POST, /ok, /cut; not the GET handed over)", n)
	}
	eventually(t, "nothing in flight", func() bool { return hf.s.inFlight().Load() == 0 })
	hf.noFb(t)
}

// A client that leaves while its request is out: once the request has run
// for h1server's WatchDelay the endpoint's stream is reset (its handler's
// context ends), counted as a client's cancellation.
func TestH1RelayClientGone(t *testing.T) {
	started, ended := make(chan struct{}, 1), make(chan struct{}, 1)
	addr, _ := h2Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
		ended <- struct{}{}
	}))
	ep := endpoint(t, addr)
	hf := startH2(t, 1, func(*http.Request) Target { return toH2(to(ep)) }, nil)
	c, _ := hf.dial(t)
	send(t, c, "GET /hang HTTP/1.1\r\nHost: web.test\r\n\r\n")
	select {
	case <-started:
	case <-time.After(wait):
		t.Fatal("the endpoint got no request")
	}
	c.(*net.TCPConn).CloseWrite()
	select {
	case <-ended:
	case <-time.After(wait):
		t.Fatal("the endpoint's stream was not reset")
	}
	hf.settle()
	if n := hf.count(t, "request_client_error_total", map[string]string{"direction": "outbound", "authority": "web.test:80", "reason": "canceled"}); n != 1 {
		t.Errorf("request_client_error_total{reason=canceled} %v, want 1", n)
	}
	if n := hf.s.inFlight().Load(); n != 0 {
		t.Errorf("%d in flight, want 0", n)
	}
	hf.closed.called(t, "the client's connection closed")
}

// A response larger than what the proxy holds for a slow client: the
// endpoint is held by its windows while the client reads nothing, and the
// client gets the body whole once it reads.
func TestH1RelayFlowControl(t *testing.T) {
	const n = 32 << 20 // beyond the windows, the proxy's bound and loopback's socket buffers together
	var written atomic.Int64
	addr, _ := h2Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(n))
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for written.Load() < n {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			written.Add(int64(len(chunk)))
		}
	}))
	ep := endpoint(t, addr)
	hf := startH2(t, 1, func(*http.Request) Target { return toH2(to(ep)) }, nil)
	c, br := hf.dial(t)
	send(t, c, "GET /big HTTP/1.1\r\nHost: web.test\r\n\r\n")
	// The endpoint stops where the windows shut: its count holds still.
	last := int64(-1)
	for deadline := time.Now().Add(wait); ; time.Sleep(100 * time.Millisecond) {
		w := written.Load()
		if w == last && w > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the endpoint wrote on: %d bytes", w)
		}
		last = w
	}
	if last >= n {
		t.Fatalf("the endpoint wrote its whole %d bytes to a client reading nothing", n)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.Copy(io.Discard, resp.Body)
	if err != nil || got != n {
		t.Errorf("read %d bytes, %v; want %d", got, err, n)
	}
	hf.noFallback(t)
}

// A Server without HTTP2 leaves HTTP/2 to the goroutine path: an HTTP/1.1
// request for an HTTP/2 endpoint is handed over as it came.
func TestH1RelayNeedsHTTP2(t *testing.T) {
	addr, _ := h1Relayed(t)
	ep := endpoint(t, addr)
	f := start(t, 1, func(*http.Request) Target { return toH2(to(ep)) }, nil)
	c, _ := f.dial(t)
	const get = "GET /cl HTTP/1.1\r\nHost: web.test\r\n\r\n"
	send(t, c, get)
	if _, got := f.handedOver(t, get); got != get {
		t.Errorf("the goroutine path read %q", got)
	}
}

// Drain closes a connection whose request is relayed once its response
// is out.
func TestH1RelayDrain(t *testing.T) {
	release := make(chan struct{})
	addr, _ := h2Backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "late")
	}))
	ep := endpoint(t, addr)
	hf := startH2(t, 1, func(*http.Request) Target { return toH2(to(ep)) }, nil)
	c, br := hf.dial(t)
	send(t, c, "GET /slow HTTP/1.1\r\nHost: web.test\r\n\r\n")
	eventually(t, "the request out", func() bool { return hf.s.inFlight().Load() == 1 })
	hf.s.Drain()
	close(release)
	if resp, body := read(t, br, "GET"); resp.StatusCode != 200 || body != "late" {
		t.Errorf("the response in flight at the drain: %s %q", resp.Status, body)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the response: %v, want the connection closed", err)
	}
}
