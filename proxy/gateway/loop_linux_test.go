package gateway

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h1loop"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// rawBackend answers each request by its path with the bytes of
// responses[path] (a response, or several: 1xx first), on kept-alive
// connections; a response without a length ends its connection, as does
// one whose path ends in "!".
func rawBackend(t *testing.T, responses map[string]string) (addr string, requests func(path string) []string) {
	t.Helper()
	var mu sync.Mutex
	seen := map[string][]string{}
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
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					// What came, the gateway's own id and address aside
					// (each has its own).
					req.Header.Set("Meridian-Hop", "<id>")
					req.Host = "<gateway>"
					if req.Header.Get("X-Forwarded-Host") != "" {
						req.Header.Set("X-Forwarded-Host", "<gateway>")
					}
					body, err := io.ReadAll(req.Body)
					if err != nil {
						return
					}
					var b strings.Builder
					b.WriteString(req.Method + " " + req.RequestURI + " " + req.Proto + " Host=" + req.Host + "\n")
					req.Header.Write(&b)
					b.WriteString("body=" + string(body))
					mu.Lock()
					seen[req.URL.Path] = append(seen[req.URL.Path], b.String())
					mu.Unlock()
					resp, ok := responses[req.URL.Path]
					if !ok {
						resp = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
					}
					if _, err := io.WriteString(c, resp); err != nil || strings.HasSuffix(req.URL.Path, "!") {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func(path string) []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen[path])
	}
}

// exchangeResult is what a client makes of a response.
type exchangeResult struct {
	Interim []int
	Status  int
	Header  http.Header
	Body    string
	Trailer http.Header
	Error   bool
}

func fetch(c *http.Client, url string) exchangeResult {
	return send(c, http.MethodGet, url, "")
}

// send is fetch with a method and a body (with a Content-Length; "" for
// none, or an empty one for POST, PUT and PATCH).
func send(c *http.Client, method, url, body string) exchangeResult {
	var r exchangeResult
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
		r.Interim = append(r.Interim, code)
		return nil
	}}
	var rd io.Reader
	if body != "" || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := c.Do(req)
	if err != nil {
		r.Error = true
		return r
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	r.Status, r.Body, r.Trailer = resp.StatusCode, string(b), resp.Trailer
	r.Error = err != nil
	r.Header = resp.Header.Clone()
	delete(r.Header, "Date")
	return r
}

// The event loop answers every kind of response as the goroutine path
// does (the same requests through a gateway with the loop and one
// without, compared as a client sees them): Content-Length, chunked with
// extensions and trailers, close-delimited, 204 and 304 (no body fields),
// 103 before the final response, HTTP/1.0, Connection: close or
// keep-alive, a body of
// 300 kB, a malformed chunked body, an upstream that closes without a
// response, a head that does not parse, a meshed endpoint's proxy's
// answer that its application is unreachable (tried again), an unknown
// path; each twice on
// one client connection (a new one for an answer the loop hands over); on
// a plaintext port, on an HTTPS one, and with mTLS to a meshed endpoint (a
// sidecar's inbound side in front of it), with and without the h2 hint a
// cluster's destination API gives every meshed endpoint (HTTP/1.1 over
// mTLS either way: outbound.Dest's rule for an endpoint with an identity).
func TestEventLoopMatchesGoroutinePath(t *testing.T) {
	t.Run("http", func(t *testing.T) { testEventLoopMatches(t, false, false, "") })
	t.Run("https", func(t *testing.T) { testEventLoopMatches(t, true, false, "") })
	t.Run("mtls", func(t *testing.T) { testEventLoopMatches(t, false, true, "") })
	t.Run("mtls-h2-hint", func(t *testing.T) { testEventLoopMatches(t, false, true, discover.HintH2) })
}

// webDsts is web.svc:80's destinations: backend, or (meshed) a sidecar's
// inbound side of its own in front of it, identity web-ns/web, with hint;
// and the gateway's identity then.
func webDsts(t *testing.T, backend string, meshed bool, hint string) (discover.Resolver, *tlsid.Identity) {
	t.Helper()
	if !meshed {
		return dsts(t, map[string][]string{"web.svc:80": {backend}}), nil
	}
	ids := tlsidtest.Start(t, time.Hour)
	in := startSidecarInbound(t, backend, ids.Identity(t, "web-ns", "web"))
	res, err := discover.NewStatic([]discover.Destination{{Authority: "web.svc:80",
		Endpoints: []discover.Endpoint{{Addr: in, Protocol: hint, Identity: tlsidtest.ID("web-ns", "web").String()}}}})
	if err != nil {
		t.Fatal(err)
	}
	return res, ids.Identity(t, "gw-ns", "gateway")
}

// webSnapshot makes snapshots routing every path of web.test to backend,
// on a fresh port each: plain HTTP, or HTTPS with web.test's certificate.
func webSnapshot(t *testing.T, https bool, backend *gatewaypb.Backend) func() *gatewaypb.Snapshot {
	chain, key := certPEM(t, "web.test")
	return func() *gatewaypb.Snapshot {
		host := hostOf("", ruleTo("web", prefix("/"), backend))
		if !https {
			return snap("v1", httpPort(freePort(t), httpListener("http", "", host)))
		}
		s := snap("v1", tlsPort(freePort(t), &gatewaypb.Listener{Name: "https", Mode: gatewaypb.Listener_HTTPS, Certificates: []string{"ns/web"},
			Hosts: []*gatewaypb.Host{host}}))
		s.Certificates = []*gatewaypb.Certificate{{Name: "ns/web", CertChain: chain, PrivateKey: key}}
		return s
	}
}

func testEventLoopMatches(t *testing.T, https, meshed bool, hint string) {
	big := strings.Repeat("0123456789", 30000)
	backend, requests := rawBackend(t, map[string]string{
		"/cl":         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
		"/chunked":    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: done\r\n\r\n",
		"/close!":     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close",
		"/204":        "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
		"/304":        "HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\nContent-Length: 10\r\n\r\n",
		"/103":        "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
		"/http10!":    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc",
		"/conn-close": "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
		// What nginx and Node.js send: parsed in place, the two fields
		// removed.
		"/keep-alive": "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nok",
		"/big":        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 300000\r\n\r\n" + big,
		"/badchunk!":  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
		"/nothing!":   "",
		"/malformed!": "HTTP/1.1 abc\r\n\r\n",
		// A meshed endpoint's proxy that could not reach its
		// application: tried again after 100 and 200 ms.
		"/peer-unavailable": "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nMeridian-Proxy-Error: unavailable\r\nContent-Length: 4\r\n\r\nnope",
	})
	res, id := webDsts(t, backend, meshed, hint)
	snapshot := webSnapshot(t, https, to("web.svc:80", 1))
	withLoop := startGatewayWith(t, res, snapshot(), func(c *Config) { c.EventLoop, c.Identity = true, id })
	without := startGatewayWith(t, res, snapshot(), func(c *Config) { c.EventLoop, c.Identity = false, id })
	paths := []string{"/cl", "/chunked", "/close!", "/204", "/304", "/103", "/http10!", "/conn-close", "/keep-alive", "/big", "/badchunk!", "/nothing!", "/malformed!", "/peer-unavailable", "/unknown"}
	// Asked on a new connection: an earlier answer handed the kept one
	// over to the goroutine path for good.
	fresh := map[string]bool{"/peer-unavailable": true}
	clientFor := func(g *Gateway) (*http.Client, string) {
		var addr string
		for _, a := range g.Ports() {
			addr = a.String()
		}
		tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1}
		if !https {
			return &http.Client{Transport: tr}, "http://" + addr
		}
		// HTTP/1.1 by ALPN: the loop's (h2 stays on the goroutines).
		tr.TLSClientConfig = &tls.Config{ServerName: "web.test", InsecureSkipVerify: true}
		return &http.Client{Transport: tr}, "https://" + addr
	}
	cl, loopURL := clientFor(withLoop)
	cg, goURL := clientFor(without)
	for round := range 2 {
		for _, p := range paths {
			ca, cb := cl, cg
			if fresh[p] {
				ca, _ = clientFor(withLoop)
				cb, _ = clientFor(without)
			}
			a, b := fetch(ca, loopURL+p), fetch(cb, goURL+p)
			if a.Error && b.Error {
				// A broken response: where it broke may differ (the
				// goroutine path buffers the body's first bytes).
				a.Body, b.Body = "", ""
			}
			if a.Status == http.StatusBadGateway && b.Status == http.StatusBadGateway {
				// The proxy's own text names the parse error its way.
				a.Body, b.Body = "", ""
				a.Header.Del("Content-Length")
				b.Header.Del("Content-Length")
			}
			if !reflect.DeepEqual(a, b) {
				t.Errorf("round %d, %s:\n loop       %+v\n goroutines %+v", round, p, a, b)
			}
		}
	}
	// Requests with a body (Content-Length) and those not idempotent, on
	// the loop when the body fits its buffer: answered alike, each sent
	// once, a failure without a response not sent again (502) and a
	// meshed endpoint's proxy's 503 passed on as it is, not tried again.
	large := strings.Repeat("b", 20000) // over the loop's buffer: handed over
	bodies := []struct{ method, path, body string }{
		{"POST", "/cl", "a body"}, {"PUT", "/cl", "put"}, {"PATCH", "/cl", ""}, {"POST", "/cl", ""}, {"DELETE", "/cl", ""},
		{"POST", "/chunked", "x"}, {"POST", "/nothing!", "once"}, {"POST", "/malformed!", "once"},
		{"POST", "/peer-unavailable", "once"}, {"POST", "/big", large},
	}
	for _, q := range bodies {
		before := withLoop.loopServed()
		ca, _ := clientFor(withLoop)
		cb, _ := clientFor(without)
		a, b := send(ca, q.method, loopURL+q.path, q.body), send(cb, q.method, goURL+q.path, q.body)
		if a.Status == http.StatusBadGateway && b.Status == http.StatusBadGateway {
			a.Body, b.Body = "", ""
			a.Header.Del("Content-Length")
			b.Header.Del("Content-Length")
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s %s:\n loop       %+v\n goroutines %+v", q.method, q.path, a, b)
		}
		got := requests(q.path)
		if len(got) < 2 || got[len(got)-1] != got[len(got)-2] || !strings.HasSuffix(got[len(got)-1], "body="+q.body) {
			t.Errorf("%s %s: the endpoint's last two requests are not the same, with the body: %q", q.method, q.path, got)
		}
		served := withLoop.loopServed() - before
		// The loop's own 502 is not a response passed on; a meshed
		// endpoint's proxy's is.
		if want := map[bool]int64{true: 1}[len(q.body) < 16000 && (meshed || a.Status != http.StatusBadGateway)]; served != want {
			t.Errorf("%s %s: the loop served %d, want %d", q.method, q.path, served, want)
		}
	}
	for _, p := range []string{"/nothing!", "/malformed!", "/peer-unavailable"} {
		var posts int
		for _, r := range requests(p) {
			if strings.HasPrefix(r, "POST ") {
				posts++
			}
		}
		if posts != 2 {
			t.Errorf("POST %s reached the endpoint %d times, want once from each gateway", p, posts)
		}
	}
	// The endpoint got the same requests from both (the loop's and the
	// goroutines' in turn), with a query parameter that does not parse
	// dropped, hop-by-hop fields and those Connection names removed, a
	// client's forwarding and mesh headers replaced.
	hdr := http.Header{"Connection": {"X-Hop, Keep-Alive"}, "X-Hop": {"1"}, "Keep-Alive": {"timeout=5"}, "Te": {"trailers, deflate"},
		"X-Forwarded-For": {"203.0.113.9"}, "L5d-Dst-Override": {"evil:80"}, "Meridian-Dst-Override": {"evil:80"}, "Proxy-Authorization": {"x"}}
	for _, u := range []string{loopURL, goURL} {
		req, _ := http.NewRequest(http.MethodGet, u+"/cl?a=1&b=%zz&c=3", nil)
		maps.Copy(req.Header, hdr)
		if resp, err := cl.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	got := requests("/cl")
	for i := 0; i+1 < len(got); i += 2 {
		if got[i] != got[i+1] {
			t.Errorf("request %d to the endpoint:\n loop       %q\n goroutines %q", i/2, got[i], got[i+1])
		}
	}
	// A request the loop does not serve (one with a chunked body) takes
	// the connection to the goroutine path with what the loop read after
	// it (for HTTPS, decrypted): GET, POST with a length, POST chunked
	// and GET pipelined in one write, four answers in order, the first
	// two the loop's.
	const pipelined = "GET /cl HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody" +
		"POST /cl HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nchunk\r\n0\r\n\r\n" +
		"GET /cl?after HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, g := range []*Gateway{withLoop, without} {
		var addr string
		for _, a := range g.Ports() {
			addr = a.String()
		}
		var conn net.Conn
		var err error
		if https {
			conn, err = tls.Dial("tcp", addr, &tls.Config{ServerName: "web.test", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		} else {
			conn, err = net.Dial("tcp", addr)
		}
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		before := withLoop.loopServed()
		io.WriteString(conn, pipelined)
		br := bufio.NewReader(conn)
		for i := range 4 {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("pipelined, answer %d: %v", i, err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || string(b) != "hello" {
				t.Errorf("pipelined, answer %d: %s %q", i, resp.Status, b)
			}
		}
		conn.Close()
		if want := int64(map[bool]int{true: 2}[g == withLoop]); withLoop.loopServed()-before != want {
			t.Errorf("pipelined: the loop served %d, want %d", withLoop.loopServed()-before, want)
		}
	}
	if got := requests("/cl"); len(got) >= 8 {
		got = got[len(got)-8:]
		for i := range 4 {
			if got[i] != got[i+4] {
				t.Errorf("pipelined request %d to the endpoint:\n loop       %q\n goroutines %q", i, got[i], got[i+4])
			}
		}
		if !strings.HasSuffix(got[1], "body=body") || !strings.HasSuffix(got[2], "body=chunk") {
			t.Errorf("the POSTs' bodies did not reach the endpoint: %q, %q", got[1], got[2])
		}
	} else {
		t.Errorf("the endpoint got %d requests for /cl", len(got))
	}
	// And the golden metrics count them alike (each response counted at
	// its end on the gateway's side, maybe after its client read it).
	a, b := series(t, withLoop, "request_total", "response_total"), series(t, without, "request_total", "response_total")
	for deadline := time.Now().Add(5 * time.Second); !reflect.DeepEqual(a, b) && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		a, b = series(t, withLoop, "request_total", "response_total"), series(t, without, "request_total", "response_total")
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("metrics:\n loop       %v\n goroutines %v", a, b)
	}
	// Each response form is served by the loop itself, not handed to the
	// goroutines (on a new connection: a request the loop hands over
	// takes its connection with it).
	for _, p := range []string{"/cl", "/chunked", "/close!", "/204", "/304", "/103", "/http10!", "/conn-close", "/big"} {
		before := withLoop.loopServed()
		c, _ := clientFor(withLoop)
		fetch(c, loopURL+p)
		if withLoop.loopServed() != before+1 {
			t.Errorf("%s: not served by the loop", p)
		}
	}
}

// series are the named families' series of g's registry: labels → value.
func series(t *testing.T, g *Gateway, names ...string) map[string]float64 {
	t.Helper()
	fams, err := g.Metrics().Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if !slices.Contains(names, f.GetName()) {
			continue
		}
		for _, m := range f.GetMetric() {
			var k []string
			for _, l := range m.GetLabel() {
				k = append(k, l.GetName()+"="+l.GetValue())
			}
			out[f.GetName()+"{"+strings.Join(k, ",")+"}"] = m.GetCounter().GetValue()
		}
	}
	return out
}

// With several loops, each new connection, plaintext or HTTPS, is served
// by the next loop in turn: six connections of two requests each on three
// loops are four responses on each.
func TestEventLoopsTakeConnectionsInTurn(t *testing.T) {
	backend, _ := rawBackend(t, map[string]string{"/cl": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"})
	res := dsts(t, map[string][]string{"web.svc:80": {backend}})
	chain, key := certPEM(t, "web.test")
	host := hostOf("", ruleTo("web", prefix("/"), to("web.svc:80", 1)))
	httpPn, tlsPn := freePort(t), freePort(t)
	s := snap("v1", httpPort(httpPn, httpListener("http", "", host)),
		tlsPort(tlsPn, &gatewaypb.Listener{Name: "https", Mode: gatewaypb.Listener_HTTPS, Certificates: []string{"ns/web"}, Hosts: []*gatewaypb.Host{host}}))
	s.Certificates = []*gatewaypb.Certificate{{Name: "ns/web", CertChain: chain, PrivateKey: key}}
	g := startGatewayWith(t, res, s, func(c *Config) { c.EventLoop, c.EventLoops = true, 3 })
	ports := g.Ports()
	for i := range 6 {
		var conn net.Conn
		var err error
		if i%2 == 0 {
			conn, err = net.Dial("tcp", ports[httpPn].String())
		} else {
			conn, err = tls.Dial("tcp", ports[tlsPn].String(), &tls.Config{ServerName: "web.test", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		}
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		for range 2 {
			io.WriteString(conn, "GET /cl HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("connection %d: %s", i, resp.Status)
			}
		}
		conn.Close()
	}
	if len(g.loops.Loops()) != 3 {
		t.Fatalf("%d loops, want 3", len(g.loops.Loops()))
	}
	for i, lp := range g.loops.Loops() {
		if n := lp.Served(); n != 4 {
			t.Errorf("loop %d served %d responses, want 4", i, n)
		}
	}
}

// The loop tells the balancer each response's outcome, as the Forwarder
// does: of two endpoints, one answering 500 to everything is ejected
// after failure accrual's 5 consecutive failures, and the rest of 40
// requests go to the other, on the loop as on the goroutine path.
func TestEventLoopFailureAccrual(t *testing.T) {
	good, _ := rawBackend(t, map[string]string{"/x": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"})
	bad, _ := rawBackend(t, map[string]string{"/x": "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 3\r\n\r\nbad"})
	for _, loop := range []bool{true, false} {
		res := dsts(t, map[string][]string{"web.svc:80": {good, bad}})
		host := hostOf("", ruleTo("web", prefix("/"), to("web.svc:80", 1)))
		g := startGatewayWith(t, res, snap("v1", httpPort(freePort(t), httpListener("http", "", host))),
			func(c *Config) { c.EventLoop = loop })
		var addr string
		for _, a := range g.Ports() {
			addr = a.String()
		}
		before := g.loopServed()
		c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		failures := 0
		for range 40 {
			r := fetch(c, "http://"+addr+"/x")
			if r.Error {
				t.Fatalf("loop %v: the request failed", loop)
			}
			if r.Status != http.StatusOK {
				failures++
			}
		}
		if served := g.loopServed() - before; loop != (served == 40) {
			t.Errorf("loop %v: the loop served %d of 40", loop, served)
		}
		if failures < 5 || failures > 8 {
			t.Errorf("loop %v: %d of 40 requests went to the endpoint answering 500, want 5 (ejected after 5 consecutive failures) to 8", loop, failures)
		}
	}
}

// unanswering is a loopback address whose connects hang (a listener whose
// accept queue is full drops their SYNs), as an endpoint behind a
// firewall that drops them.
func unanswering(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	for range 8 { // fill the queue until a connect hangs
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("every connect to the full listener was accepted")
	return ""
}

// A connect the endpoint never answers is given up at the gateway's
// connect timeout on the loop too (it waited for the kernel's, two
// minutes): the request goes to the goroutine path, whose own attempt
// fails the same way, and is answered.
func TestEventLoopConnectTimeout(t *testing.T) {
	res := dsts(t, map[string][]string{"web.svc:80": {unanswering(t)}})
	host := hostOf("", ruleTo("web", prefix("/"), to("web.svc:80", 1)))
	g := startGatewayWith(t, res, snap("v1", httpPort(freePort(t), httpListener("http", "", host))),
		func(c *Config) { c.EventLoop, c.ConnectTimeout = true, 200*time.Millisecond })
	var addr string
	for _, a := range g.Ports() {
		addr = a.String()
	}
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get("http://" + addr + "/x")
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("%s, want 502 or 503", resp.Status)
	}
}

// A body that comes after its head is waited for: sent whole by the loop
// when the rest comes within the header timeout, else the connection goes
// to the goroutine path, which reads the rest. Either way the endpoint
// gets the whole body once.
func TestEventLoopBodyInParts(t *testing.T) {
	backend, requests := rawBackend(t, map[string]string{"/p": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"})
	res := dsts(t, map[string][]string{"web.svc:80": {backend}})
	host := hostOf("", ruleTo("web", prefix("/"), to("web.svc:80", 1)))
	g := startGatewayWith(t, res, snap("v1", httpPort(freePort(t), httpListener("http", "", host))),
		func(c *Config) { c.EventLoop, c.HeaderTimeout = true, 300*time.Millisecond })
	var addr string
	for _, a := range g.Ports() {
		addr = a.String()
	}
	for _, tc := range []struct {
		pause  time.Duration
		onLoop bool
	}{{20 * time.Millisecond, true}, {600 * time.Millisecond, false}} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		before := g.loopServed()
		io.WriteString(conn, "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nfirst")
		time.Sleep(tc.pause)
		io.WriteString(conn, " half")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("pause %v: %v", tc.pause, err)
		}
		io.Copy(io.Discard, resp.Body)
		conn.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("pause %v: %s", tc.pause, resp.Status)
		}
		if got := g.loopServed() - before; (got == 1) != tc.onLoop {
			t.Errorf("pause %v: the loop served %d, on the loop: want %v", tc.pause, got, tc.onLoop)
		}
		got := requests("/p")
		if len(got) == 0 || !strings.HasSuffix(got[len(got)-1], "body=first half") {
			t.Errorf("pause %v: the endpoint got %q", tc.pause, got)
		}
	}
	if n := len(requests("/p")); n != 2 {
		t.Errorf("the endpoint got %d requests, want 2", n)
	}
}

// slowRelay forwards each connection to target after delay, counting
// them (conns) and the most at once in their delay (peak); refuse(n)
// closes the n-th (from 1) instead. A meshed endpoint whose handshake
// takes delay.
func slowRelay(t *testing.T, target string, delay time.Duration, refuse func(n int64) bool) (addr string, conns, peak func() int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n, now, most atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			i := n.Add(1)
			for k := now.Add(1); ; {
				m := most.Load()
				if k <= m || most.CompareAndSwap(m, k) {
					break
				}
			}
			go func() {
				defer c.Close()
				time.Sleep(delay)
				now.Add(-1)
				if refuse(i) {
					return
				}
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, u)
			}()
		}
	}()
	return ln.Addr().String(), n.Load, most.Load
}

// meshedBehindRelay starts a loop gateway (one loop) in front of a
// meshed endpoint reached through relay, and returns its port's address.
func meshedBehindRelay(t *testing.T, delay time.Duration, refuse func(int64) bool) (g *Gateway, gw string, conns, peak func() int64) {
	t.Helper()
	backend, _ := rawBackend(t, map[string]string{"/x": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"})
	ids := tlsidtest.Start(t, time.Hour)
	in := startSidecarInbound(t, backend, ids.Identity(t, "web-ns", "web"))
	relay, conns, peak := slowRelay(t, in, delay, refuse)
	res, err := discover.NewStatic([]discover.Destination{{Authority: "web.svc:80",
		Endpoints: []discover.Endpoint{{Addr: relay, Identity: tlsidtest.ID("web-ns", "web").String()}}}})
	if err != nil {
		t.Fatal(err)
	}
	host := hostOf("", ruleTo("web", prefix("/"), to("web.svc:80", 1)))
	g = startGatewayWith(t, res, snap("v1", httpPort(freePort(t), httpListener("http", "", host))), func(c *Config) {
		c.EventLoop, c.EventLoops, c.Identity = true, 1, ids.Identity(t, "gw-ns", "gateway")
	})
	for _, a := range g.Ports() {
		gw = a.String()
	}
	return g, gw, conns, peak
}

// burst sends n requests at once, each on a connection of its own, and
// returns their statuses (0: failed).
func burst(t *testing.T, addr string, n int) []int {
	t.Helper()
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// A client of its own (a connection of its own), kept
			// alive: the loop hands "Connection: close" over.
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			c := &http.Client{Timeout: 10 * time.Second, Transport: tr}
			resp, err := c.Get("http://" + addr + "/x")
			if err != nil {
				t.Logf("request %d: %v", i, err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wg.Wait()
	return statuses
}

// A burst of requests to a meshed endpoint with no idle connection has at
// most h1loop.MaxDialing mTLS dials in progress from the loop; the rest wait
// for a connection given back or a dial let go, and are served on the
// loop, on fewer connections than requests.
func TestEventLoopMTLSDialBound(t *testing.T) {
	g, gw, conns, peak := meshedBehindRelay(t, 200*time.Millisecond, func(int64) bool { return false })
	before := g.loopServed()
	const n = 24
	for i, s := range burst(t, gw, n) {
		if s != http.StatusOK {
			t.Errorf("request %d: status %d", i, s)
		}
	}
	if got := peak(); got > h1loop.MaxDialing {
		t.Errorf("%d dials at once for %d requests at once, want at most %d", got, n, h1loop.MaxDialing)
	}
	if got := conns(); got >= n {
		t.Errorf("%d connections for %d requests, want fewer", got, n)
	}
	if served := g.loopServed() - before; served != n {
		t.Errorf("the loop served %d of %d", served, n)
	}
}

// When a dial fails, the requests waiting fail with it at once: handed to
// the goroutine path, which tries again, and each is answered. None waits
// for a dial of its own to the endpoint that just failed one (against one
// that does not answer, a connect timeout each, h1loop.MaxDialing at a time).
func TestEventLoopMTLSDialFailureFailsWaiters(t *testing.T) {
	g, gw, _, _ := meshedBehindRelay(t, 500*time.Millisecond, func(n int64) bool { return n <= h1loop.MaxDialing })
	before := g.loopServed()
	for i, s := range burst(t, gw, 24) {
		if s != http.StatusOK {
			t.Errorf("request %d: status %d", i, s)
		}
	}
	if served := g.loopServed() - before; served != 0 {
		t.Errorf("the loop served %d of the requests that waited for the failed dials, want none (each fails with them)", served)
	}
}
