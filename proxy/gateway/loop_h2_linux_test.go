package gateway

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/discover"
)

// HTTP/2 on the loops (Config.EventLoopH2) answers as the goroutine path
// does (h2server and the port's handler), as an HTTP/2 client sees it:
// every kind of response an HTTP/1.1 endpoint gives (the loop carries a
// request without a body), and the requests it hands to the handler (a
// body, HEAD, an endpoint's failure before a response byte); h2c on a
// plaintext port and h2 by ALPN on an HTTPS one, and with mTLS to a
// meshed endpoint. The endpoint gets the same requests from both.
func TestEventLoopH2MatchesGoroutinePath(t *testing.T) {
	t.Run("h2c", func(t *testing.T) { testEventLoopH2Matches(t, false, false) })
	t.Run("https", func(t *testing.T) { testEventLoopH2Matches(t, true, false) })
	t.Run("mtls", func(t *testing.T) { testEventLoopH2Matches(t, false, true) })
}

func testEventLoopH2Matches(t *testing.T, https, meshed bool) {
	big := strings.Repeat("0123456789", 30000)
	backend, requests := rawBackend(t, map[string]string{
		"/cl":         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
		"/chunked":    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: done\r\n\r\n",
		"/close!":     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close",
		"/204":        "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
		"/204ct":      "HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n",
		"/304":        "HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\nContent-Length: 10\r\n\r\n",
		"/103":        "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
		"/http10!":    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc",
		"/conn-close": "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
		"/keep-alive": "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nok",
		"/big":        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 300000\r\n\r\n" + big,
		"/empty":      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n",
		"/badchunk!":  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
		"/nothing!":   "",
		"/malformed!": "HTTP/1.1 abc\r\n\r\n",
	})
	withLoop, cl, loopURL, cg, goURL := h2Pair(t, backend, gatewaypb.Backend_PROTOCOL_UNSPECIFIED, https, meshed)
	paths := []string{"/cl", "/chunked", "/close!", "/204", "/204ct", "/304", "/103", "/http10!", "/conn-close", "/keep-alive", "/big", "/empty", "/badchunk!", "/nothing!", "/malformed!", "/unknown"}
	for round := range 2 {
		for _, p := range paths {
			a, b := fetch(cl, loopURL+p), fetch(cg, goURL+p)
			if a.Error && b.Error {
				a.Body, b.Body = "", "" // where a broken body broke may differ
			}
			if a.Status == http.StatusBadGateway && b.Status == http.StatusBadGateway {
				a.Body, b.Body = "", "" // the proxy's text names the parse error its way
				a.Header.Del("Content-Length")
				b.Header.Del("Content-Length")
			}
			if !reflect.DeepEqual(a, b) {
				t.Errorf("round %d, %s:\n loop       %+v\n goroutines %+v", round, p, a, b)
			}
		}
	}
	if withLoop.loopServed() == 0 {
		t.Error("the loop carried none of the requests")
	}
	// Handed to the port's handler: bodies, HEAD, and a POST without a
	// body whose endpoint answers nothing (502, not sent again).
	bodies := []struct{ method, path, body string }{
		{"POST", "/cl", "a body"}, {"PUT", "/cl", "put"}, {"POST", "/chunked", "x"}, {"HEAD", "/cl", ""},
		{"DELETE", "/cl", ""}, {"POST", "/nothing!", ""},
	}
	for _, q := range bodies {
		a, b := send(cl, q.method, loopURL+q.path, q.body), send(cg, q.method, goURL+q.path, q.body)
		if a.Status == http.StatusBadGateway && b.Status == http.StatusBadGateway {
			a.Body, b.Body = "", ""
			a.Header.Del("Content-Length")
			b.Header.Del("Content-Length")
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s %s:\n loop       %+v\n goroutines %+v", q.method, q.path, a, b)
		}
	}
	// The endpoint got the same requests from both, in turn.
	for _, p := range []string{"/cl", "/chunked", "/204", "/big"} {
		got := requests(p)
		for i := 0; i+1 < len(got); i += 2 {
			if got[i] != got[i+1] {
				t.Errorf("%s, request %d to the endpoint:\n loop       %q\n goroutines %q", p, i/2, got[i], got[i+1])
			}
		}
	}
}

// An HTTP/2 backend's (H2C) HTTP/2 requests are relayed on the loops
// (h1loop's relay) and answered as the goroutine path answers them, as an
// HTTP/2 client sees it: bodies both ways, trailers, gRPC's trailers and
// trailers-only statuses, a 503, a large response, a stream the backend
// resets before its response (a GET tried again, a POST answered 502);
// h2c on a plaintext port, h2 by ALPN on an HTTPS one, and mTLS (ALPN
// h2) to a meshed endpoint's proxy.
func TestEventLoopH2RelayMatchesGoroutinePath(t *testing.T) {
	t.Run("h2c", func(t *testing.T) { testEventLoopH2RelayMatches(t, false, false, false) })
	t.Run("https", func(t *testing.T) { testEventLoopH2RelayMatches(t, true, false, false) })
	t.Run("mtls", func(t *testing.T) { testEventLoopH2RelayMatches(t, false, true, false) })
}

// An HTTP/2 backend's HTTP/1.1 requests likewise: relayed on the loops
// (h1loop's HTTP/1.1 relay), each on a connection of its own (a request
// handed to the goroutine path takes its connection with it), answered as
// the goroutine path answers them, as an HTTP/1.1 client sees it; the
// gRPC ones, HTTP/2's alone, and the GET the backend resets (tried again)
// go to the goroutine path.
func TestEventLoopH1ToH2RelayMatchesGoroutinePath(t *testing.T) {
	t.Run("http", func(t *testing.T) { testEventLoopH2RelayMatches(t, false, false, true) })
	t.Run("https", func(t *testing.T) { testEventLoopH2RelayMatches(t, true, false, true) })
	t.Run("mtls", func(t *testing.T) { testEventLoopH2RelayMatches(t, false, true, true) })
}

func testEventLoopH2RelayMatches(t *testing.T, https, meshed, h1 bool) {
	big := strings.Repeat("0123456789", 30000)
	backend := h2cBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("Trailer", "X-Len")
			w.Header().Set("X-Method", r.Method)
			w.Write(bytes.ToUpper(body))
			w.Header().Set("X-Len", strconv.Itoa(len(body)))
		case "/503":
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "down")
		case "/grpc-ok":
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status")
			w.Write([]byte{0, 0, 0, 0, 1, 'x'})
			w.Header().Set("Grpc-Status", "0")
		case "/grpc-fail":
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "5")
			w.Header().Set("Grpc-Message", "nope")
		case "/big":
			io.WriteString(w, big)
		case "/reset":
			panic(http.ErrAbortHandler)
		default:
			http.NotFound(w, r)
		}
	}))
	withLoop, cl, loopURL, cg, goURL := h2Pair(t, backend, gatewaypb.Backend_H2C, https, meshed, h1)
	// The first requests go to the port's handler while the backend's
	// destination is resolved: until the loop relays.
	deadline := time.Now().Add(10 * time.Second)
	for served := withLoop.loopServed(); withLoop.loopServed() == served; {
		if time.Now().After(deadline) {
			t.Fatal("the loop relayed no request")
		}
		fetch(cl, loopURL+"/echo")
		time.Sleep(5 * time.Millisecond)
	}
	served := withLoop.loopServed()
	cases := []struct{ method, path, body string }{
		{"POST", "/echo", "a body"}, {"PUT", "/echo", big}, {"GET", "/echo", ""}, {"DELETE", "/echo", ""},
		{"GET", "/503", ""}, {"POST", "/grpc-ok", "\x00\x00\x00\x00\x00"}, {"POST", "/grpc-fail", "\x00\x00\x00\x00\x00"},
		{"GET", "/big", ""}, {"GET", "/missing", ""}, {"GET", "/reset", ""}, {"POST", "/reset", "x"},
	}
	for round := range 2 {
		for _, q := range cases {
			if h1 {
				cl.CloseIdleConnections()
			}
			a, b := send(cl, q.method, loopURL+q.path, q.body), send(cg, q.method, goURL+q.path, q.body)
			if a.Error && b.Error {
				a.Body, b.Body = "", ""
			}
			if a.Status == http.StatusBadGateway && b.Status == http.StatusBadGateway {
				a.Body, b.Body = "", "" // the proxy's text says what failed its way
				a.Header.Del("Content-Length")
				b.Header.Del("Content-Length")
			}
			if !reflect.DeepEqual(a, b) {
				t.Errorf("round %d, %s %s:\n loop       %+v\n goroutines %+v", round, q.method, q.path, a, b)
			}
		}
	}
	// Every request but the GET of /reset (tried again by the handler)
	// and the POST of /reset (answered 502 by the loop itself, no final
	// response of the backend's) passed on by the loop: its final
	// responses counted there; over HTTP/1.1, but the PUT of a body
	// larger than the loop's buffer too.
	handled := 2
	if h1 {
		handled = 3
	}
	if n, want := withLoop.loopServed()-served, int64(2*(len(cases)-handled)); n < want {
		t.Errorf("the loop passed on %d final responses of %d requests, want at least %d", n, 2*len(cases), want)
	}
}

// h2cBackend is Go's HTTP/2 server with prior knowledge on loopback.
func h2cBackend(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// h2Pair starts two gateways routing every path of web.test to backend
// (protocol: the backend's; meshed: behind a sidecar of its own, mTLS by
// ALPN h2), one with HTTP/2 on the loops and one without, on h2c or HTTPS,
// and an HTTP/2 client and base URL for each.
func h2Pair(t *testing.T, backend string, protocol gatewaypb.Backend_Protocol, https, meshed bool, h1 ...bool) (withLoop *Gateway, cl *http.Client, loopURL string, cg *http.Client, goURL string) {
	t.Helper()
	res, id := webDsts(t, backend, meshed, discover.HintH2)
	snapshot := webSnapshot(t, https, &gatewaypb.Backend{Authority: "web.svc:80", Weight: 1, Name: "ns/web:80", Protocol: protocol})
	withLoop = startGatewayWith(t, res, snapshot(), func(c *Config) { c.EventLoop, c.EventLoopH2, c.Identity = true, true, id })
	without := startGatewayWith(t, res, snapshot(), func(c *Config) { c.EventLoop, c.EventLoopH2, c.Identity = false, false, id })
	clientFor := func(g *Gateway) (*http.Client, string) {
		var addr string
		for _, a := range g.Ports() {
			addr = a.String()
		}
		tr := &http.Transport{DisableCompression: true}
		tr.Protocols = new(http.Protocols)
		t.Cleanup(tr.CloseIdleConnections)
		if len(h1) > 0 && h1[0] {
			tr.Protocols.SetHTTP1(true)
			tr.TLSClientConfig = &tls.Config{ServerName: "web.test", InsecureSkipVerify: true}
			if https {
				return &http.Client{Transport: tr}, "https://" + addr
			}
			return &http.Client{Transport: tr}, "http://" + addr
		}
		if !https {
			tr.Protocols.SetUnencryptedHTTP2(true)
			return &http.Client{Transport: tr}, "http://" + addr
		}
		tr.Protocols.SetHTTP2(true)
		tr.TLSClientConfig = &tls.Config{ServerName: "web.test", InsecureSkipVerify: true}
		return &http.Client{Transport: tr}, "https://" + addr
	}
	cl, loopURL = clientFor(withLoop)
	cg, goURL = clientFor(without)
	return withLoop, cl, loopURL, cg, goURL
}

// A port a snapshot removes ends, once drained, the goroutines its HTTP/2
// on the loops kept warm for the streams it handed to the port's handler
// (h2loop's Bridge), instead of leaving them for their idle time (5 s).
func TestRemovedPortEndsLoopH2Workers(t *testing.T) {
	backend, _ := rawBackend(t, map[string]string{"/cl": "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"})
	res, id := webDsts(t, backend, false, discover.HintH2)
	snapshot := webSnapshot(t, false, &gatewaypb.Backend{Authority: "web.svc:80", Weight: 1, Name: "ns/web:80"})
	g := startGatewayWith(t, res, snapshot(), func(c *Config) { c.EventLoop, c.EventLoopH2, c.Identity = true, true, id })
	var addr string
	for _, a := range g.Ports() {
		addr = a.String()
	}
	before := h2Workers()
	tr := &http.Transport{DisableCompression: true, Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	cl := &http.Client{Transport: tr}
	// GETs, the loop relays the second itself (the first, to a destination
	// it has not resolved yet, goes to the handler): the connection is the
	// loop's. Then requests with a body, which go to the port's handler on
	// a worker.
	for range 2 {
		if r := fetch(cl, "http://"+addr+"/cl"); r.Status != http.StatusOK || r.Body != "hello" {
			t.Fatalf("GET: %+v", r)
		}
	}
	if g.loopServed() == 0 {
		t.Fatal("the loop carried none of the streams")
	}
	for range 3 {
		if r := send(cl, http.MethodPost, "http://"+addr+"/cl", "a body"); r.Status != http.StatusOK || r.Body != "hello" {
			t.Fatalf("POST: %+v", r)
		}
	}
	ours := map[int]bool{}
	for id := range h2Workers() {
		if !before[id] {
			ours[id] = true
		}
	}
	if len(ours) == 0 {
		t.Fatal("no handler goroutine kept warm after the streams: nothing to end")
	}
	tr.CloseIdleConnections()
	next := snapshot() // another port: this one is removed
	next.Version = "v2"
	if err := g.Apply(next); err != nil {
		t.Fatal(err)
	}
	g.drains.Wait()
	deadline := time.Now().Add(time.Second)
	for {
		left := 0
		for id := range h2Workers() {
			if ours[id] {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the port's %d warm handler goroutines still there a second after its drain", left, len(ours))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// h2Workers are the goroutines h2server keeps for handlers (its workers),
// by goroutine id.
func h2Workers() map[int]bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	ids := map[int]bool{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "h2server.(*workers).work") {
			continue
		}
		var id int
		if _, err := fmt.Sscanf(g, "goroutine %d ", &id); err == nil {
			ids[id] = true
		}
	}
	return ids
}
