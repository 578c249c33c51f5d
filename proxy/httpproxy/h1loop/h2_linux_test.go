package h1loop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h2loop"
	"github.com/meridian-mesh/meridian/proxy/metrics"
)

// HTTP/2 on the loops (h2_linux.go): Go's HTTP/2 client with prior
// knowledge (h2c), and raw frames where the frames themselves matter,
// against a Server whose HTTP2 falls back to a Bridge whose handler marks
// its responses (X-Fallback), so that a test tells which path answered.

// fbSeen is a request the fallback served.
type fbSeen struct{ method, uri, host, body string }

// h2fixture is a fixture whose Server serves HTTP/2 too.
type h2fixture struct {
	*fixture
	fb    chan fbSeen   // the requests the fallback served
	began chan struct{} // a request the fallback began to serve (before its body)
}

// startH2 is start with Server.HTTP2 set: its Handler a Bridge whose
// handler answers 200 with X-Fallback: 1 and "fallback METHOD URI BODY".
func startH2(t *testing.T, loops int, route func(*http.Request) Target, tweak func(*Server)) *h2fixture {
	t.Helper()
	hf := &h2fixture{fb: make(chan fbSeen, 256), began: make(chan struct{}, 256)}
	fallback := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case hf.began <- struct{}{}:
		default:
		}
		body, _ := io.ReadAll(r.Body)
		select {
		case hf.fb <- fbSeen{r.Method, r.RequestURI, r.Host, string(body)}:
		default:
		}
		w.Header().Set("X-Fallback", "1")
		io.WriteString(w, "fallback "+r.Method+" "+r.RequestURI+" "+string(body))
	})
	hf.fixture = start(t, loops, route, func(s *Server) {
		s.HTTP2 = &h2loop.Server{Handler: &h2loop.Bridge{Handler: fallback}, Logf: func(string, ...any) {}}
		if tweak != nil {
			tweak(s)
		}
	})
	return hf
}

// client is Go's HTTP/2 client with prior knowledge; conf, if not nil,
// is its HTTP/2 settings.
func (hf *h2fixture) client(t *testing.T, conf *http.HTTP2Config) *http.Client {
	t.Helper()
	tr := &http.Transport{HTTP2: conf}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: wait}
}

// req is a request to the fixture for path, with Host web.test.
func (hf *h2fixture) req(t *testing.T, ctx context.Context, method, path string, body io.Reader) *http.Request {
	t.Helper()
	r, err := http.NewRequestWithContext(ctx, method, "http://"+hf.addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	r.Host = "web.test"
	return r
}

// do sends r and reads its response whole, over HTTP/2.
func h2do(t *testing.T, cl *http.Client, r *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := cl.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", r.Method, r.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", r.Method, r.URL.Path, err)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("%s %s: answered over %s, want HTTP/2", r.Method, r.URL.Path, resp.Proto)
	}
	return resp, string(b)
}

// get is a GET of path over HTTP/2, read whole.
func (hf *h2fixture) get(t *testing.T, cl *http.Client, path string) (*http.Response, string) {
	t.Helper()
	return h2do(t, cl, hf.req(t, context.Background(), http.MethodGet, path, nil))
}

// noFb says the fallback served no request.
func (hf *h2fixture) noFb(t *testing.T) {
	t.Helper()
	select {
	case s := <-hf.fb:
		t.Errorf("the fallback served %s %s", s.method, s.uri)
	default:
	}
}

// nextFb is the next request the fallback served.
func (hf *h2fixture) nextFb(t *testing.T) fbSeen {
	t.Helper()
	select {
	case s := <-hf.fb:
		return s
	case <-time.After(wait):
		t.Fatal("the fallback served no request")
		return fbSeen{}
	}
}

// eventually waits, within wait, for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, wait)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// epLabels are the metrics labels of the tests' Routers for addr.
func epLabels(addr string) map[string]string {
	return map[string]string{"direction": "outbound", "authority": "web.test:80", "target_addr": addr, "tls": metrics.TLSNotProvidedByServiceDiscovery}
}

func with(m map[string]string, kv ...string) map[string]string {
	o := map[string]string{}
	for k, v := range m {
		o[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		o[kv[i]] = kv[i+1]
	}
	return o
}

// Each form of response an endpoint may send is carried on the loop and
// passed back as frames: a Content-Length body, a chunked one (its
// framing and extensions taken off, its trailer as HTTP/2 trailers), one
// delimited by the endpoint's close, a 204, an Early Hints before the
// final response, hop-by-hop fields removed, Date added when there is
// none. The endpoint gets an HTTP/1.1 request with the client's method,
// path, query and Host; request_total and response_total count each
// request once with the Router's labels.
func TestH2CarriedForms(t *testing.T) {
	const backendDate = "Mon, 02 Jan 2006 15:04:05 GMT"
	for _, tc := range []struct {
		name       string
		resp       string
		closeAfter bool
		status     int
		body       string
		check      func(t *testing.T, resp *http.Response, interim []textproto.MIMEHeader)
	}{
		{
			name:   "length",
			resp:   "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nDate: " + backendDate + "\r\nX-B: 1\r\n\r\nhello",
			status: 200, body: "hello",
			check: func(t *testing.T, resp *http.Response, _ []textproto.MIMEHeader) {
				if resp.ContentLength != 5 || resp.Header.Get("Content-Length") != "5" {
					t.Errorf("Content-Length %d (%q), want 5", resp.ContentLength, resp.Header.Get("Content-Length"))
				}
				if got := resp.Header.Get("Date"); got != backendDate {
					t.Errorf("Date %q, want the endpoint's %q", got, backendDate)
				}
				if resp.Header.Get("X-B") != "1" || resp.Header.Get("Content-Type") != "text/plain" {
					t.Errorf("the endpoint's fields were not passed on: %v", resp.Header)
				}
			},
		},
		{
			name: "chunked",
			resp: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"5;ext=1\r\nhello\r\n6;a=\"b\";c\r\n world\r\n0\r\nX-T: tv\r\n\r\n",
			status: 200, body: "hello world",
			check: func(t *testing.T, resp *http.Response, _ []textproto.MIMEHeader) {
				if got := resp.Trailer.Get("X-T"); got != "tv" {
					t.Errorf("trailer X-T %q (trailers %v), want \"tv\"", got, resp.Trailer)
				}
				if resp.Header.Get("Transfer-Encoding") != "" || len(resp.TransferEncoding) != 0 || resp.Header.Get("Content-Length") != "" {
					t.Errorf("HTTP/1.1 framing fields passed on: %v", resp.Header)
				}
			},
		},
		{
			name: "close", resp: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close", closeAfter: true,
			status: 200, body: "until the close",
		},
		{
			name: "204", resp: "HTTP/1.1 204 No Content\r\nX-B: 1\r\n\r\n",
			status: 204, body: "",
			check: func(t *testing.T, resp *http.Response, _ []textproto.MIMEHeader) {
				if resp.Header.Get("X-B") != "1" || resp.Header.Get("Content-Length") != "" || resp.Header.Get("Content-Type") != "" {
					t.Errorf("204's fields %v, want X-B and no body fields", resp.Header)
				}
			},
		},
		{
			name: "empty", resp: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
			status: 200, body: "",
		},
		{
			name:   "early-hints",
			resp:   "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
			status: 200, body: "ok",
			check: func(t *testing.T, _ *http.Response, interim []textproto.MIMEHeader) {
				if len(interim) != 1 || interim[0].Get("Link") != "</s.css>; rel=preload" {
					t.Errorf("interim responses %v, want one 103 with the Link", interim)
				}
			},
		},
		{
			name:   "hop-by-hop",
			resp:   "HTTP/1.1 200 OK\r\nConnection: x-foo, keep-alive\r\nX-Foo: 1\r\nKeep-Alive: timeout=5\r\nX-Keep: yes\r\nContent-Length: 2\r\n\r\nok",
			status: 200, body: "ok",
			check: func(t *testing.T, resp *http.Response, _ []textproto.MIMEHeader) {
				for _, k := range []string{"Connection", "X-Foo", "Keep-Alive"} {
					if v, ok := resp.Header[k]; ok {
						t.Errorf("hop-by-hop %s: %q passed on", k, v)
					}
				}
				if resp.Header.Get("X-Keep") != "yes" {
					t.Errorf("X-Keep lost: %v", resp.Header)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := startBackend(t, func(*http.Request) (string, bool) { return tc.resp, tc.closeAfter })
			ep := endpoint(t, be.addr)
			hf := startH2(t, 2, func(*http.Request) Target { return to(ep) }, nil)
			cl := hf.client(t, nil)
			var mu sync.Mutex
			var interim []textproto.MIMEHeader
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
					mu.Lock()
					defer mu.Unlock()
					if code == http.StatusEarlyHints {
						interim = append(interim, h)
					}
					return nil
				},
			})
			r := hf.req(t, ctx, http.MethodGet, "/form?q=1&r=two", nil)
			r.Header.Set("X-Req", "v")
			resp, body := h2do(t, cl, r)
			if resp.StatusCode != tc.status || body != tc.body {
				t.Errorf("%s %q, want %d %q", resp.Status, body, tc.status, tc.body)
			}
			if resp.Header.Get("X-Fallback") != "" {
				t.Error("answered by the fallback, want the loop")
			}
			if _, err := http.ParseTime(resp.Header.Get("Date")); err != nil {
				t.Errorf("Date %q: %v", resp.Header.Get("Date"), err)
			}
			if tc.check != nil {
				mu.Lock()
				tc.check(t, resp, interim)
				mu.Unlock()
			}
			s := be.next(t)
			if s.req.Proto != "HTTP/1.1" || s.req.Method != http.MethodGet || s.req.RequestURI != "/form?q=1&r=two" || s.req.Host != "web.test" || s.body != "" {
				t.Errorf("the endpoint got %s %s %s Host %q, body %q; want GET /form?q=1&r=two HTTP/1.1, Host web.test", s.req.Method, s.req.RequestURI, s.req.Proto, s.req.Host, s.body)
			}
			if s.req.Header.Get("X-Req") != "v" {
				t.Errorf("the endpoint got the fields %v, want X-Req", s.req.Header)
			}
			hf.settle()
			l := epLabels(be.addr)
			if n := hf.count(t, "request_total", l); n != 1 {
				t.Errorf("request_total %v, want 1", n)
			}
			if n := hf.count(t, "response_total", l); n != 1 {
				t.Errorf("response_total %v, want 1", n)
			}
			if n := hf.count(t, "response_total", with(l, "status_code", strconv.Itoa(tc.status))); n != 1 {
				t.Errorf("response_total{status_code=%d} %v, want 1", tc.status, n)
			}
			if n := hf.g.Served(); n != 1 {
				t.Errorf("the loops served %d, want 1", n)
			}
			if n := hf.s.inFlight().Load(); n != 0 {
				t.Errorf("%d in flight after the response, want 0", n)
			}
			if n := hf.routed.Load(); n != 1 {
				t.Errorf("Route called %d times, want 1", n)
			}
			hf.noFb(t)
			hf.noFallback(t)
		})
	}
}

// A chunked response's declared trailers are announced in its HEADERS, as
// the goroutine path (httpproxy's Forwarder) announces them ("Trailer"
// with the keys the endpoint declared): a client sees resp.Trailer's keys
// before the body.
func TestH2CarriedTrailerAnnounced(t *testing.T) {
	be := startBackend(t, func(*http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: tv\r\n\r\n", false
	})
	ep := endpoint(t, be.addr)
	hf := startH2(t, 1, func(*http.Request) Target { return to(ep) }, nil)
	cl := hf.client(t, nil)
	resp, err := cl.Do(hf.req(t, context.Background(), http.MethodGet, "/t", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, ok := resp.Trailer["X-T"]; !ok {
		t.Errorf("before the body, resp.Trailer %v: X-T not announced (the goroutine path announces it)", resp.Trailer)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != "ok" || resp.Trailer.Get("X-T") != "tv" {
		t.Errorf("body %q, %v, trailers %v", b, err, resp.Trailer)
	}
}

// Many streams at once on one connection are all carried and answered,
// each with its own response.
func TestH2ManyStreams(t *testing.T) {
	be := startBackend(t, func(r *http.Request) (string, bool) {
		body := "answer to " + r.URL.Path
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body, false
	})
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() { // the backend's requests, read so that it does not wait
		for {
			select {
			case <-be.reqs:
			case <-done:
				return
			}
		}
	}()
	ep := endpoint(t, be.addr)
	hf := startH2(t, 2, func(*http.Request) Target { return to(ep) }, nil)
	cl := hf.client(t, &http.HTTP2Config{StrictMaxConcurrentRequests: true})
	if resp, body := hf.get(t, cl, "/first"); resp.StatusCode != 200 || body != "answer to /first" {
		t.Fatalf("%s %q", resp.Status, body)
	}
	const n = 200
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			path := "/s/" + strconv.Itoa(i)
			resp, err := cl.Do(hf.req(t, context.Background(), http.MethodGet, path, nil))
			if err != nil {
				errs <- err
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case err != nil:
				errs <- fmt.Errorf("%s: %v", path, err)
			case resp.StatusCode != 200 || string(b) != "answer to "+path || resp.Header.Get("X-Fallback") != "":
				errs <- fmt.Errorf("%s: %s %q %v", path, resp.Status, b, resp.Header)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	hf.settle()
	if got := hf.count(t, "request_total", epLabels(be.addr)); got != n+1 {
		t.Errorf("request_total %v, want %d", got, n+1)
	}
	if got := hf.count(t, "response_total", with(epLabels(be.addr), "status_code", "200")); got != n+1 {
		t.Errorf("response_total %v, want %d", got, n+1)
	}
	if got := hf.g.Served(); got != n+1 {
		t.Errorf("the loops served %d, want %d", got, n+1)
	}
	if got := hf.s.inFlight().Load(); got != 0 {
		t.Errorf("%d in flight, want 0", got)
	}
	hf.noFb(t)
}

// bigBody is n deterministic bytes.
func bigBody(n int) []byte {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// chunked frames body in chunks of varied sizes, some with extensions,
// and ends it with the trailer X-Len.
func chunked(body []byte) string {
	var b strings.Builder
	sizes := []int{1, 100, 4096, 16384, 30000, 65536, 7, 200000, 3}
	for i, rest := 0, body; len(rest) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(rest))
		b.WriteString(strconv.FormatInt(int64(n), 16))
		if i%3 == 0 {
			b.WriteString(";ext=" + strconv.Itoa(i))
		}
		b.WriteString("\r\n")
		b.Write(rest[:n])
		b.WriteString("\r\n")
		rest = rest[n:]
	}
	b.WriteString("0\r\nX-Len: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	return b.String()
}

// Large responses, by Content-Length and chunked, reach the client whole
// and byte for byte, past the stream's and the connection's windows (the
// client's defaults, and 64 KiB ones), one at a time and several at once
// on one connection.
func TestH2LargeResponses(t *testing.T) {
	huge := bigBody(4 << 20)
	mid := bigBody(1 << 20)
	lengthResp := "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(huge)) + "\r\n\r\n" + string(huge)
	chunkedResp := "HTTP/1.1 200 OK\r\nTrailer: X-Len\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(huge)
	midLength := "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(mid)) + "\r\n\r\n" + string(mid)
	midChunked := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(mid)
	midClose := "HTTP/1.1 200 OK\r\n\r\n" + string(mid)
	be := startBackend(t, func(r *http.Request) (string, bool) {
		switch r.URL.Path {
		case "/length":
			return lengthResp, false
		case "/chunked":
			return chunkedResp, false
		case "/mid-length":
			return midLength, false
		case "/mid-chunked":
			return midChunked, false
		}
		return midClose, true
	})
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-be.reqs:
			case <-done:
				return
			}
		}
	}()
	ep := endpoint(t, be.addr)
	for _, win := range []struct {
		name string
		conf *http.HTTP2Config
	}{
		{"default-windows", nil},
		{"small-windows", &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10}},
	} {
		t.Run(win.name, func(t *testing.T) {
			hf := startH2(t, 1, func(*http.Request) Target { return to(ep) }, nil)
			cl := hf.client(t, win.conf)
			check := func(path string, want []byte, trailer bool) error {
				resp, err := cl.Do(hf.req(t, context.Background(), http.MethodGet, path, nil))
				if err != nil {
					return fmt.Errorf("%s: %v", path, err)
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					return fmt.Errorf("%s: after %d bytes: %v", path, len(b), err)
				}
				if resp.StatusCode != 200 || !bytes.Equal(b, want) {
					return fmt.Errorf("%s: %s, %d bytes (equal %v), want 200 and %d bytes", path, resp.Status, len(b), bytes.Equal(b, want), len(want))
				}
				if trailer && resp.Trailer.Get("X-Len") != strconv.Itoa(len(want)) {
					return fmt.Errorf("%s: trailers %v, want X-Len %d", path, resp.Trailer, len(want))
				}
				return nil
			}
			if err := check("/length", huge, false); err != nil {
				t.Error(err)
			}
			if err := check("/chunked", huge, true); err != nil {
				t.Error(err)
			}
			// Several at once: the connection's window shared.
			var wg sync.WaitGroup
			errs := make(chan error, 6)
			for _, p := range []string{"/mid-length", "/mid-chunked", "/mid-close", "/mid-length", "/mid-chunked", "/mid-close"} {
				wg.Go(func() {
					if err := check(p, mid, p == "/mid-chunked"); err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			hf.settle()
			if n := hf.count(t, "response_total", with(epLabels(be.addr), "status_code", "200")); n != 8 {
				t.Errorf("response_total{status_code=200} %v, want 8", n)
			}
			if n := hf.s.inFlight().Load(); n != 0 {
				t.Errorf("%d in flight, want 0", n)
			}
			hf.noFb(t)
		})
	}
}

// What the loop does not carry is served by HTTP2's Handler: a request
// the Router declines or has no destination for yet, one with a body, a
// HEAD; and a GET whose endpoint refuses the connection goes there whole
// (the goroutine path connects again), not counted by the loop.
func TestH2Fallback(t *testing.T) {
	t.Run("declined", func(t *testing.T) {
		hf := startH2(t, 1, func(*http.Request) Target { return Target{} }, nil)
		cl := hf.client(t, nil)
		resp, body := hf.get(t, cl, "/d?x=1")
		if resp.StatusCode != 200 || resp.Header.Get("X-Fallback") != "1" || body != "fallback GET /d?x=1 " {
			t.Errorf("%s %q %v, want the fallback's", resp.Status, body, resp.Header)
		}
		if s := hf.nextFb(t); s.host != "web.test" {
			t.Errorf("the fallback got Host %q", s.host)
		}
		if n := hf.routed.Load(); n != 1 {
			t.Errorf("Route called %d times, want 1", n)
		}
	})
	t.Run("await", func(t *testing.T) {
		hf := startH2(t, 1, func(*http.Request) Target { return Target{Await: func() {}} }, nil)
		cl := hf.client(t, nil)
		if resp, body := hf.get(t, cl, "/a"); resp.Header.Get("X-Fallback") != "1" || body != "fallback GET /a " {
			t.Errorf("%s %q, want the fallback's", resp.Status, body)
		}
	})
	for _, tc := range []struct {
		name, method, body, want string
		routed                   int64 // a body is routed: an HTTP/2 endpoint takes it (relay)
	}{
		// A body larger than the loop reads whole before it sends.
		{"post-body", http.MethodPost, bigBodyText, "fallback POST /p " + bigBodyText, 1},
		{"head", http.MethodHead, "", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := startBackend(t, func(*http.Request) (string, bool) {
				return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
			})
			ep := endpoint(t, be.addr)
			hf := startH2(t, 1, func(*http.Request) Target { return to(ep) }, nil)
			cl := hf.client(t, nil)
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			resp, got := h2do(t, cl, hf.req(t, context.Background(), tc.method, "/p", body))
			if resp.StatusCode != 200 || resp.Header.Get("X-Fallback") != "1" || got != tc.want {
				t.Errorf("%s %q %v, want the fallback's %q", resp.Status, got, resp.Header, tc.want)
			}
			if s := hf.nextFb(t); s.method != tc.method || s.body != tc.body {
				t.Errorf("the fallback got %s %q, want %s %q", s.method, s.body, tc.method, tc.body)
			}
			if n := hf.routed.Load(); n != tc.routed {
				t.Errorf("Route called %d times, want %d", n, tc.routed)
			}
			if n := be.accepted.Load(); n != 0 {
				t.Errorf("the endpoint accepted %d connections, want 0", n)
			}
		})
	}
	t.Run("options-star", func(t *testing.T) {
		be := startBackend(t, func(*http.Request) (string, bool) {
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
		})
		ep := endpoint(t, be.addr)
		hf := startH2(t, 1, func(*http.Request) Target { return to(ep) }, nil)
		r := dialRaw(t, hf.addr)
		r.write([]byte(http2.ClientPreface))
		r.settings()
		r.hbuf.Reset()
		for _, f := range [][2]string{{":method", "OPTIONS"}, {":scheme", "http"}, {":authority", "web.test"}, {":path", "*"}} {
			r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		if status, h, body := r.fullResponse(1); status != "200" || h.Get("X-Fallback") != "1" || body != "fallback OPTIONS * " {
			t.Errorf("%s %v %q, want the fallback's", status, h, body)
		}
		if n := hf.routed.Load(); n != 0 {
			t.Errorf("Route called %d times, want 0", n)
		}
	})
	t.Run("max-in-flight", func(t *testing.T) {
		var inFlight atomic.Int64
		inFlight.Store(1) // the goroutine path's
		hf := startH2(t, 1, func(*http.Request) Target { return Target{} }, func(s *Server) {
			s.InFlight, s.MaxInFlight = &inFlight, 1
		})
		cl := hf.client(t, nil)
		if resp, body := hf.get(t, cl, "/m"); resp.Header.Get("X-Fallback") != "1" || body != "fallback GET /m " {
			t.Errorf("%s %q, want the fallback's", resp.Status, body)
		}
		if n := hf.routed.Load(); n != 0 {
			t.Errorf("Route called %d times at the bound, want 0", n)
		}
	})
	// An idempotent request whose endpoint ends the connection before a
	// response byte (accepts and closes), or answers with a meshed peer
	// proxy's own failure, goes to the fallback (which tries again),
	// uncounted; a POST is not sent again: the peer's answer is passed
	// on as it is.
	t.Run("reset-get", func(t *testing.T) {
		closer, accepted := startCloser(t)
		bad := endpoint(t, closer)
		hf := startH2(t, 1, func(*http.Request) Target { return to(bad) }, nil)
		cl := hf.client(t, nil)
		for i := range 2 {
			path := "/g" + strconv.Itoa(i)
			if resp, body := hf.get(t, cl, path); resp.StatusCode != 200 || resp.Header.Get("X-Fallback") != "1" || body != "fallback GET "+path+" " {
				t.Errorf("%s: %s %q, want the fallback's", path, resp.Status, body)
			}
			if s := hf.nextFb(t); s.uri != path {
				t.Errorf("the fallback got %s, want %s", s.uri, path)
			}
		}
		if n := accepted.Load(); n != 2 {
			t.Errorf("the endpoint accepted %d connections, want 2 (one attempt each)", n)
		}
		hf.settle()
		if n := hf.count(t, "request_total", nil) + hf.count(t, "response_total", nil); n != 0 {
			t.Errorf("the failed attempts were counted: %v", n)
		}
		if n := hf.s.inFlight().Load(); n != 0 {
			t.Errorf("%d in flight, want 0", n)
		}
	})
	t.Run("peer-failed", func(t *testing.T) {
		be := startBackend(t, func(*http.Request) (string, bool) {
			return "HTTP/1.1 502 Bad Gateway\r\n" + httpproxy.ErrorHeader + ": upstream\r\nContent-Length: 4\r\n\r\npeer", false
		})
		ep := endpoint(t, be.addr)
		hf := startH2(t, 1, func(*http.Request) Target { return to(ep) }, nil)
		cl := hf.client(t, nil)
		if resp, body := hf.get(t, cl, "/pf"); resp.StatusCode != 200 || resp.Header.Get("X-Fallback") != "1" || body != "fallback GET /pf " {
			t.Errorf("GET: %s %q, want the fallback's", resp.Status, body)
		}
		hf.nextFb(t)
		hf.settle()
		if n := hf.count(t, "request_total", nil) + hf.count(t, "response_total", nil); n != 0 {
			t.Errorf("the GET's failed attempt was counted: %v", n)
		}
		resp, body := h2do(t, cl, hf.req(t, context.Background(), http.MethodPost, "/pf", http.NoBody))
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(httpproxy.ErrorHeader) != "upstream" || body != "peer" || resp.Header.Get("X-Fallback") != "" {
			t.Errorf("POST: %s %q %v, want the peer's 502 passed on", resp.Status, body, resp.Header)
		}
		hf.settle()
		if n := hf.count(t, "response_total", with(epLabels(be.addr), "status_code", "502")); n != 1 {
			t.Errorf("response_total{status_code=502} %v, want 1 (the POST)", n)
		}
		if n := hf.count(t, "request_total", epLabels(be.addr)); n != 1 {
			t.Errorf("request_total %v, want 1 (the POST)", n)
		}
		hf.noFb(t)
	})
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closedAddr := ln.Addr().String()
		ln.Close()
		bad := endpoint(t, closedAddr)
		hf := startH2(t, 1, func(*http.Request) Target { return to(bad) }, nil)
		cl := hf.client(t, nil)
		for i := range 3 { // the connection serves on
			path := "/r" + strconv.Itoa(i)
			resp, body := hf.get(t, cl, path)
			if resp.StatusCode != 200 || resp.Header.Get("X-Fallback") != "1" || body != "fallback GET "+path+" " {
				t.Errorf("%s: %s %q, want the fallback's", path, resp.Status, body)
			}
			if s := hf.nextFb(t); s.method != http.MethodGet || s.uri != path || s.host != "web.test" {
				t.Errorf("the fallback got %s %s Host %q, want GET %s web.test", s.method, s.uri, s.host, path)
			}
		}
		hf.settle()
		if n := hf.count(t, "request_total", nil) + hf.count(t, "response_total", nil); n != 0 {
			t.Errorf("the failed connects were counted: %v", n)
		}
		if n := hf.g.Served(); n != 0 {
			t.Errorf("the loops served %d, want 0", n)
		}
		if n := hf.s.inFlight().Load(); n != 0 {
			t.Errorf("%d in flight, want 0", n)
		}
	})
}

// A POST without a body is not sent twice: its endpoint accepting and
// closing without an answer gets it a 502 from the loop, with the proxy's
// error header; the connection serves on.
func TestH2PostFailed502(t *testing.T) {
	closer, accepted := startCloser(t)
	bad := endpoint(t, closer)
	be := startBackend(t, func(*http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	good := endpoint(t, be.addr)
	hf := startH2(t, 1, func(r *http.Request) Target {
		if r.URL.Path == "/good" {
			return to(good)
		}
		return to(bad)
	}, nil)
	cl := hf.client(t, nil)
	resp, body := h2do(t, cl, hf.req(t, context.Background(), http.MethodPost, "/p", http.NoBody))
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(httpproxy.ErrorHeader) != "upstream" || body == "" {
		t.Errorf("%s, %s %q, body %q; want 502, upstream", resp.Status, httpproxy.ErrorHeader, resp.Header.Get(httpproxy.ErrorHeader), body)
	}
	if resp.Header.Get("X-Fallback") != "" {
		t.Error("answered by the fallback, want the loop")
	}
	if resp, body := hf.get(t, cl, "/good"); resp.StatusCode != 200 || body != "ok" {
		t.Errorf("the next request: %s %q, want 200 \"ok\"", resp.Status, body)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("the failing endpoint accepted %d connections, want 1 (the POST once)", n)
	}
	hf.settle()
	if n := hf.count(t, "response_total", with(epLabels(closer), "error", "upstream")); n != 1 {
		t.Errorf("response_total{error=upstream} %v, want 1", n)
	}
	if n := hf.count(t, "request_total", epLabels(closer)); n != 1 {
		t.Errorf("request_total of the POST %v, want 1", n)
	}
	if n := hf.s.inFlight().Load(); n != 0 {
		t.Errorf("%d in flight, want 0", n)
	}
	hf.noFb(t)
}

// A response cut short after its head (half its Content-Length, or a
// chunked body ended mid-chunk, then the endpoint's close) or whose
// chunked framing is malformed resets the stream (INTERNAL_ERROR: the
// client's read fails) and is counted as a stream error; the connection
// serves the next request.
func TestH2CutMidBody(t *testing.T) {
	for _, tc := range []struct{ name, resp string }{
		{"half-length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"},
		{"chunked-closed", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhello"},
		{"bad-chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cut := startBackend(t, func(*http.Request) (string, bool) { return tc.resp, true })
			be := startBackend(t, func(*http.Request) (string, bool) {
				return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
			})
			cutEp, good := endpoint(t, cut.addr), endpoint(t, be.addr)
			hf := startH2(t, 1, func(r *http.Request) Target {
				if r.URL.Path == "/cut" {
					return to(cutEp)
				}
				return to(good)
			}, nil)
			cl := hf.client(t, nil)
			resp, err := cl.Do(hf.req(t, context.Background(), http.MethodGet, "/cut", nil))
			if err == nil {
				var b []byte
				b, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					t.Errorf("the cut response read whole: %s %q", resp.Status, b)
				}
			}
			if err != nil && !strings.Contains(err.Error(), "INTERNAL_ERROR") {
				t.Errorf("the cut response failed with %v, want a reset with INTERNAL_ERROR", err)
			}
			if resp, body := hf.get(t, cl, "/ok"); resp.StatusCode != 200 || body != "ok" {
				t.Errorf("the next request: %s %q, want 200 \"ok\"", resp.Status, body)
			}
			hf.settle()
			if n := hf.count(t, "response_total", with(epLabels(cut.addr), "status_code", "200", "error", "stream")); n != 1 {
				t.Errorf("response_total{error=stream} %v, want 1", n)
			}
			if n := hf.count(t, "request_total", epLabels(cut.addr)); n != 1 {
				t.Errorf("request_total %v, want 1", n)
			}
			if n := hf.s.inFlight().Load(); n != 0 {
				t.Errorf("%d in flight, want 0", n)
			}
			hf.noFb(t)
		})
	}
}

// hangBackend reads each request and never answers; it tells of each
// request read and of each connection's end (nil: the peer closed it).
type hangBackend struct {
	addr  string
	got   chan string
	ended chan error
}

func startHang(t *testing.T) *hangBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	hb := &hangBackend{addr: ln.Addr().String(), got: make(chan string, 8), ended: make(chan error, 8)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(wait))
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					hb.ended <- err
					return
				}
				hb.got <- req.Method + " " + req.RequestURI
				_, err = io.Copy(io.Discard, br)
				hb.ended <- err
			}()
		}
	}()
	return hb
}

// A client that resets a stream whose endpoint has not answered cancels
// it: the endpoint's connection is closed, the request counted as the
// goroutine path counts a client gone (request_total, and
// request_client_error_total{reason=canceled}, no response), and the
// connection serves on.
func TestH2ClientCancel(t *testing.T) {
	hb := startHang(t)
	be := startBackend(t, func(*http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	hang, good := endpoint(t, hb.addr), endpoint(t, be.addr)
	hf := startH2(t, 1, func(r *http.Request) Target {
		if r.URL.Path == "/hang" {
			return to(hang)
		}
		return to(good)
	}, nil)
	cl := hf.client(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		resp, err := cl.Do(hf.req(t, ctx, http.MethodGet, "/hang", nil))
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case s := <-hb.got:
		if s != "GET /hang" {
			t.Errorf("the endpoint got %q", s)
		}
	case <-time.After(wait):
		t.Fatal("the endpoint got no request")
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the canceled request returned %v", err)
		}
	case <-time.After(wait):
		t.Fatal("the canceled request did not return")
	}
	select {
	case err := <-hb.ended:
		if err != nil {
			t.Errorf("the endpoint's connection ended with %v, want closed by the proxy", err)
		}
	case <-time.After(wait):
		t.Fatal("the endpoint's connection was not closed")
	}
	if resp, body := hf.get(t, cl, "/ok"); resp.StatusCode != 200 || body != "ok" {
		t.Errorf("the next request: %s %q, want 200 \"ok\"", resp.Status, body)
	}
	hf.settle()
	if n := hf.count(t, "request_client_error_total", map[string]string{"direction": "outbound", "authority": "web.test:80", "reason": "canceled"}); n != 1 {
		t.Errorf("request_client_error_total{reason=canceled} %v, want 1", n)
	}
	if n := hf.count(t, "request_total", epLabels(hb.addr)); n != 1 {
		t.Errorf("request_total of the canceled request %v, want 1", n)
	}
	if n := hf.count(t, "response_total", epLabels(hb.addr)); n != 0 {
		t.Errorf("response_total of the canceled request %v, want 0", n)
	}
	if n := hf.s.inFlight().Load(); n != 0 {
		t.Errorf("%d in flight, want 0", n)
	}
	hf.noFb(t)
}

// rawH2 is a client speaking raw frames.
type rawH2 struct {
	t    *testing.T
	c    net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
}

// dialRaw connects to addr; nothing is written.
func dialRaw(t *testing.T, addr string) *rawH2 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(wait))
	r := &rawH2{t: t, c: c, fr: http2.NewFramer(c, c)}
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.enc = hpack.NewEncoder(&r.hbuf)
	return r
}

func (r *rawH2) write(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// settings writes the client's SETTINGS (after the preface).
func (r *rawH2) settings() {
	r.t.Helper()
	if err := r.fr.WriteSettings(); err != nil {
		r.t.Fatal(err)
	}
}

// get writes a GET of path on stream id, ending the stream.
func (r *rawH2) get(id uint32, path string) {
	r.t.Helper()
	r.hbuf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "web.test"}, {":path", path}} {
		r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
}

// next reads the next frame other than SETTINGS (acknowledged), PING and
// WINDOW_UPDATE; nil and the error at the connection's end.
func (r *rawH2) next() (http2.Frame, error) {
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				r.fr.WriteSettingsAck()
			}
			continue
		case *http2.PingFrame, *http2.WindowUpdateFrame:
			continue
		}
		return f, nil
	}
}

// response reads stream id's response: its status and body; any other
// frame (a GOAWAY, a reset, another stream's) fails.
func (r *rawH2) response(id uint32) (status string, body string) {
	r.t.Helper()
	status, _, body = r.fullResponse(id)
	return status, body
}

// fullResponse is response with the final response's fields.
func (r *rawH2) fullResponse(id uint32) (status string, h http.Header, body string) {
	r.t.Helper()
	var b []byte
	h = http.Header{}
	for {
		f, err := r.next()
		if err != nil {
			r.t.Fatalf("reading stream %d's response: %v", id, err)
		}
		if f.Header().StreamID != id {
			r.t.Fatalf("%v while reading stream %d's response", f, id)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s != "" {
				status = s
				h = http.Header{}
				for _, hf := range f.RegularFields() {
					h.Add(hf.Name, hf.Value)
				}
			}
			if f.StreamEnded() {
				return status, h, string(b)
			}
		case *http2.DataFrame:
			b = append(b, f.Data()...)
			if f.StreamEnded() {
				return status, h, string(b)
			}
		default:
			r.t.Fatalf("%v while reading stream %d's response", f, id)
		}
	}
}

// Drain sends an HTTP/2 connection GOAWAY (NO_ERROR, its last stream the
// one in flight); that stream still completes, then the connection ends
// (Closed is told).
func TestH2Drain(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	be := startBackend(t, func(*http.Request) (string, bool) {
		<-release
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	ep := endpoint(t, be.addr)
	hf := startH2(t, 2, func(*http.Request) Target { return to(ep) }, nil)
	r := dialRaw(t, hf.addr)
	r.write([]byte(http2.ClientPreface))
	r.settings()
	r.get(1, "/slow")
	be.next(t) // in flight: Drain must let its response through
	hf.s.Drain()
	f, err := r.next()
	if err != nil {
		t.Fatalf("after Drain: %v, want GOAWAY", err)
	}
	if g, ok := f.(*http2.GoAwayFrame); !ok || g.ErrCode != http2.ErrCodeNo || g.LastStreamID != 1 {
		t.Fatalf("after Drain: %v, want GOAWAY NO_ERROR, last stream 1", f)
	}
	if n := hf.closed.n.Load(); n != 0 {
		t.Error("Drain closed a connection with a stream in flight")
	}
	free()
	if status, body := r.response(1); status != "200" || body != "ok" {
		t.Errorf("the stream in flight: %s %q, want 200 \"ok\"", status, body)
	}
	if f, err := r.next(); err == nil {
		t.Errorf("after the last stream: %v, want the connection's end", f)
	}
	r.c.Close()
	hf.closed.called(t, "Closed")
	hf.settle()
	if n := hf.count(t, "response_total", with(epLabels(be.addr), "status_code", "200")); n != 1 {
		t.Errorf("response_total %v, want 1", n)
	}
	hf.noFb(t)
	hf.noFallback(t)
}

// The h2c preface arriving in pieces is still HTTP/2's (the loop waits for
// the rest); a request that starts like it and is not (a POST's first
// byte alone) and a plain HTTP/1.1 request are served as HTTP/1.1, on the
// same port.
func TestH2PrefaceSplit(t *testing.T) {
	be := startBackend(t, func(r *http.Request) (string, bool) {
		body := "to " + r.Method + " " + r.URL.Path
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body, false
	})
	ep := endpoint(t, be.addr)
	hf := startH2(t, 2, func(*http.Request) Target { return to(ep) }, nil)
	for _, split := range []int{1, 3, 10, len(http2.ClientPreface) - 1} {
		t.Run("h2-"+strconv.Itoa(split), func(t *testing.T) {
			r := dialRaw(t, hf.addr)
			r.write([]byte(http2.ClientPreface[:split]))
			time.Sleep(20 * time.Millisecond) // the loop reads the first piece alone
			r.write([]byte(http2.ClientPreface[split:]))
			r.settings()
			r.get(1, "/a")
			if status, body := r.response(1); status != "200" || body != "to GET /a" {
				t.Errorf("%s %q, want 200 \"to GET /a\"", status, body)
			}
			r.get(3, "/b")
			if status, body := r.response(3); status != "200" || body != "to GET /b" {
				t.Errorf("%s %q, want 200 \"to GET /b\"", status, body)
			}
		})
	}
	t.Run("http1", func(t *testing.T) {
		c, br := hf.dial(t)
		resp, body := get(t, c, br, "/h1")
		if resp.ProtoMajor != 1 || resp.StatusCode != 200 || body != "to GET /h1" {
			t.Errorf("%s %s %q, want HTTP/1.1 200 \"to GET /h1\"", resp.Proto, resp.Status, body)
		}
	})
	t.Run("http1-P", func(t *testing.T) {
		c, br := hf.dial(t)
		io.WriteString(c, "P")
		time.Sleep(20 * time.Millisecond)
		io.WriteString(c, "OST /p HTTP/1.1\r\nHost: web.test\r\nContent-Length: 4\r\n\r\nbody")
		resp, body := read(t, br, http.MethodPost)
		if resp.ProtoMajor != 1 || resp.StatusCode != 200 || body != "to POST /p" {
			t.Errorf("%s %s %q, want HTTP/1.1 200 \"to POST /p\"", resp.Proto, resp.Status, body)
		}
	})
	hf.settle()
	if n, want := hf.g.Served(), int64(2*4+2); n != want {
		t.Errorf("the loops served %d, want %d", n, want)
	}
	hf.noFb(t)
	hf.noFallback(t)
}

// A client that resets a stream mid-body (its windows holding the rest of
// a large response) cancels it as well: counted as a client gone, the
// endpoint's connection not kept (the next request dials again), the
// connection serving on.
func TestH2ClientCancelMidBody(t *testing.T) {
	huge := bigBody(4 << 20)
	be := startBackend(t, func(r *http.Request) (string, bool) {
		if r.URL.Path == "/big" {
			return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(huge)) + "\r\n\r\n" + string(huge), false
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	ep := endpoint(t, be.addr)
	hf := startH2(t, 1, func(*http.Request) Target { return to(ep) }, nil)
	cl := hf.client(t, &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10})
	resp, err := cl.Do(hf.req(t, context.Background(), http.MethodGet, "/big", nil))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 100<<10)
	if _, err := io.ReadFull(resp.Body, b); err != nil || !bytes.Equal(b, huge[:len(b)]) {
		t.Fatalf("the body's start: %v", err)
	}
	resp.Body.Close() // RST_STREAM CANCEL
	// The reset reaches the loop in its own time (Go's client writes it
	// from the stream's goroutine).
	eventually(t, "the cancellation counted", func() bool {
		return hf.count(t, "request_client_error_total", map[string]string{"reason": "canceled"}) == 1
	})
	if resp, body := hf.get(t, cl, "/ok"); resp.StatusCode != 200 || body != "ok" {
		t.Errorf("the next request: %s %q, want 200 \"ok\"", resp.Status, body)
	}
	if n := be.accepted.Load(); n != 2 {
		t.Errorf("the endpoint accepted %d connections, want 2 (the canceled one not kept)", n)
	}
	hf.settle()
	if n := hf.count(t, "request_client_error_total", map[string]string{"reason": "canceled"}); n != 1 {
		t.Errorf("request_client_error_total{reason=canceled} %v, want 1", n)
	}
	if n := hf.count(t, "request_total", epLabels(be.addr)); n != 2 {
		t.Errorf("request_total %v, want 2", n)
	}
	if n := hf.count(t, "response_total", epLabels(be.addr)); n != 1 {
		t.Errorf("response_total %v, want 1 (the second request's)", n)
	}
	if n := hf.s.inFlight().Load(); n != 0 {
		t.Errorf("%d in flight, want 0", n)
	}
}

// A client that closes its connection with streams in flight cancels
// them all: each endpoint connection is closed, each request counted as a
// client gone, and Closed is told once.
func TestH2ClientGone(t *testing.T) {
	hb := startHang(t)
	ep := endpoint(t, hb.addr)
	hf := startH2(t, 1, func(*http.Request) Target { return to(ep) }, nil)
	r := dialRaw(t, hf.addr)
	r.write([]byte(http2.ClientPreface))
	r.settings()
	const n = 3
	for i := range n {
		r.get(uint32(2*i+1), "/h"+strconv.Itoa(i))
	}
	for range n {
		select {
		case <-hb.got:
		case <-time.After(wait):
			t.Fatal("the endpoint did not get every request")
		}
	}
	r.c.Close()
	for range n {
		select {
		case err := <-hb.ended:
			if err != nil {
				t.Errorf("an endpoint connection ended with %v, want closed by the proxy", err)
			}
		case <-time.After(wait):
			t.Fatal("an endpoint connection was not closed")
		}
	}
	hf.closed.called(t, "Closed")
	hf.settle()
	if got := hf.closed.n.Load(); got != 1 {
		t.Errorf("Closed called %d times, want 1", got)
	}
	if got := hf.count(t, "request_client_error_total", map[string]string{"direction": "outbound", "authority": "web.test:80", "reason": "canceled"}); got != n {
		t.Errorf("request_client_error_total{reason=canceled} %v, want %d", got, n)
	}
	if got := hf.count(t, "request_total", epLabels(hb.addr)); got != n {
		t.Errorf("request_total %v, want %d", got, n)
	}
	if got := hf.count(t, "response_total", nil); got != 0 {
		t.Errorf("response_total %v, want 0", got)
	}
	if got := hf.s.inFlight().Load(); got != 0 {
		t.Errorf("%d in flight, want 0", got)
	}
}

// Drain ends an idle HTTP/2 connection: GOAWAY NO_ERROR with the last
// stream it served, then its end.
func TestH2DrainIdle(t *testing.T) {
	be := startBackend(t, func(*http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	ep := endpoint(t, be.addr)
	hf := startH2(t, 2, func(*http.Request) Target { return to(ep) }, nil)
	r := dialRaw(t, hf.addr)
	r.write([]byte(http2.ClientPreface))
	r.settings()
	r.get(1, "/a")
	if status, body := r.response(1); status != "200" || body != "ok" {
		t.Fatalf("%s %q, want 200 \"ok\"", status, body)
	}
	hf.s.Drain()
	f, err := r.next()
	if err != nil {
		t.Fatalf("after Drain: %v, want GOAWAY", err)
	}
	if g, ok := f.(*http2.GoAwayFrame); !ok || g.ErrCode != http2.ErrCodeNo || g.LastStreamID != 1 {
		t.Fatalf("after Drain: %v, want GOAWAY NO_ERROR, last stream 1", f)
	}
	if f, err := r.next(); err == nil {
		t.Errorf("after GOAWAY: %v, want the connection's end", f)
	}
	r.c.Close()
	hf.closed.called(t, "Closed")
}

// rawBackend answers every request 200 "ok" and tells of each request's
// head as it came, byte for byte.
func rawBackend(t *testing.T) (addr string, heads chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	heads = make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(wait))
				br := bufio.NewReader(c)
				for {
					var head strings.Builder
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						head.WriteString(line)
						if line == "\r\n" {
							break
						}
					}
					heads <- head.String()
					if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), heads
}

// A carried request is sent as an HTTP/1.1 client's: Host from
// :authority, the client's cookie fields joined in one (RFC 9113 8.2.3),
// "TE: trailers" kept (as the goroutine path keeps it), a POST without a
// body with one Content-Length: 0, and the fields the Router set. The
// Router sees the client's address.
func TestH2RequestAsHTTP1(t *testing.T) {
	addr, heads := rawBackend(t)
	ep := endpoint(t, addr)
	remotes := make(chan string, 4)
	hf := startH2(t, 1, func(r *http.Request) Target {
		remotes <- r.RemoteAddr
		r.Header.Set("X-Routed", "1")
		return to(ep)
	}, nil)
	r := dialRaw(t, hf.addr)
	r.write([]byte(http2.ClientPreface))
	r.settings()
	send := func(id uint32, fields ...string) {
		t.Helper()
		r.hbuf.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			r.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	next := func() string {
		t.Helper()
		select {
		case h := <-heads:
			return h
		case <-time.After(wait):
			t.Fatal("the endpoint got no request")
			return ""
		}
	}
	send(1, ":method", "GET", ":scheme", "http", ":authority", "web.test", ":path", "/c?x=1",
		"cookie", "a=1", "cookie", "b=2", "te", "trailers", "x-a", "1")
	if status, body := r.response(1); status != "200" || body != "ok" {
		t.Errorf("GET: %s %q", status, body)
	}
	head := next()
	if !strings.HasPrefix(head, "GET /c?x=1 HTTP/1.1\r\n") || !strings.Contains(head, "\r\nHost: web.test\r\n") ||
		strings.Count(head, "Cookie:") != 1 || !strings.Contains(head, "\r\nCookie: a=1; b=2\r\n") ||
		!strings.Contains(head, "\r\nTe: trailers\r\n") || !strings.Contains(head, "\r\nX-A: 1\r\n") ||
		!strings.Contains(head, "\r\nX-Routed: 1\r\n") {
		t.Errorf("the endpoint got\n%s", head)
	}
	if got := <-remotes; got != r.c.LocalAddr().String() {
		t.Errorf("the Router saw RemoteAddr %q, want the client's %q", got, r.c.LocalAddr())
	}
	send(3, ":method", "POST", ":scheme", "http", ":authority", "web.test", ":path", "/p", "content-length", "0")
	if status, body := r.response(3); status != "200" || body != "ok" {
		t.Errorf("POST: %s %q", status, body)
	}
	head = next()
	if !strings.HasPrefix(head, "POST /p HTTP/1.1\r\n") || strings.Count(head, "Content-Length:") != 1 || !strings.Contains(head, "\r\nContent-Length: 0\r\n") {
		t.Errorf("the endpoint got\n%s", head)
	}
	hf.noFb(t)
}

// testCert is a self-signed certificate for web.test.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "web.test"},
		DNSNames:              []string{"web.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// A TLS connection whose ALPN settled h2, given to ServeTLS, is served as
// HTTP/2 on the loop through its TLS layer: streams carried (large
// responses byte for byte, many at once), a request with a body served by
// the fallback; its end told to Closed.
func TestH2TLS(t *testing.T) {
	large := bigBody(1 << 20)
	be := startBackend(t, func(r *http.Request) (string, bool) {
		switch r.URL.Path {
		case "/large":
			return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(large)) + "\r\n\r\n" + string(large), false
		case "/large-chunked":
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(large), false
		}
		body := "tls " + r.URL.Path
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body, false
	})
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-be.reqs:
			case <-done:
				return
			}
		}
	}()
	ep := endpoint(t, be.addr)
	hf := startH2(t, 2, func(*http.Request) Target { return to(ep) }, nil)
	cert, pool := testCert(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	serveErr := make(chan error, 8)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mc := hf.m.Conn(nc, hf.s.ConnLabels)
			tc := tls.Server(mc, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
			tc.SetDeadline(time.Now().Add(wait))
			if err := tc.Handshake(); err != nil {
				serveErr <- err
				tc.Close()
				continue
			}
			tc.SetDeadline(time.Time{})
			st := tc.ConnectionState()
			if st.NegotiatedProtocol != "h2" {
				serveErr <- fmt.Errorf("ALPN settled %q", st.NegotiatedProtocol)
			}
			if !hf.s.ServeTLS(tc, st, nil, time.Time{}) {
				serveErr <- errors.New("ServeTLS did not take the connection")
				tc.Close()
			}
		}
	}()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "web.test"},
		HTTP2:           &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10},
	}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	cl := &http.Client{Transport: tr, Timeout: wait}
	req := func(method, path string, body io.Reader) *http.Request {
		r, err := http.NewRequest(method, "https://"+ln.Addr().String()+path, body)
		if err != nil {
			t.Fatal(err)
		}
		r.Host = "web.test"
		return r
	}
	resp, body := h2do(t, cl, req(http.MethodGet, "/a", nil))
	if resp.StatusCode != 200 || body != "tls /a" || resp.Header.Get("X-Fallback") != "" || resp.TLS == nil {
		t.Errorf("%s %q %v, want 200 \"tls /a\" from the loop over TLS", resp.Status, body, resp.Header)
	}
	for _, p := range []string{"/large", "/large-chunked"} {
		if _, body := h2do(t, cl, req(http.MethodGet, p, nil)); body != string(large) {
			t.Errorf("%s: %d bytes (equal %v), want %d", p, len(body), body == string(large), len(large))
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			path := "/c" + strconv.Itoa(i)
			resp, err := cl.Do(req(http.MethodGet, path, nil))
			if err != nil {
				errs <- err
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != "tls "+path {
				errs <- fmt.Errorf("%s: %q, %v", path, b, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// A POST is carried when its DATA follows its HEADERS within
	// maxBodyWait (as it does but on a stalled machine), else the
	// fallback's: either way answered whole.
	resp, body = h2do(t, cl, req(http.MethodPost, "/p", strings.NewReader("a body")))
	carried := resp.Header.Get("X-Fallback") == ""
	if !carried && body != "fallback POST /p a body" || carried && body != "tls /p" {
		t.Errorf("POST: %s %q, want the endpoint's or the fallback's", resp.Status, body)
	}
	select {
	case err := <-serveErr:
		t.Error(err)
	default:
	}
	hf.settle()
	want := 23.0
	if carried {
		want = 24
	}
	if n := hf.count(t, "response_total", with(epLabels(be.addr), "status_code", "200")); n != want {
		t.Errorf("response_total %v, want %v", n, want)
	}
	tr.CloseIdleConnections()
	hf.closed.called(t, "Closed")
	hf.noFallback(t)
}

// Cut ends an HTTP/2 connection at once: its stream in flight is
// canceled (the endpoint's connection closed, counted as a client gone),
// the client's connection closed, Closed told once.
func TestH2Cut(t *testing.T) {
	hb := startHang(t)
	ep := endpoint(t, hb.addr)
	hf := startH2(t, 1, func(*http.Request) Target { return to(ep) }, nil)
	r := dialRaw(t, hf.addr)
	r.write([]byte(http2.ClientPreface))
	r.settings()
	r.get(1, "/h")
	select {
	case <-hb.got:
	case <-time.After(wait):
		t.Fatal("the endpoint got no request")
	}
	hf.s.Cut()
	for {
		f, err := r.next()
		if err != nil {
			break // the connection's end
		}
		if _, ok := f.(*http2.GoAwayFrame); !ok {
			t.Errorf("after Cut: %v, want the connection's end", f)
		}
	}
	select {
	case err := <-hb.ended:
		if err != nil {
			t.Errorf("the endpoint's connection ended with %v, want closed by the proxy", err)
		}
	case <-time.After(wait):
		t.Fatal("the endpoint's connection was not closed")
	}
	hf.closed.called(t, "Closed")
	hf.settle()
	if n := hf.closed.n.Load(); n != 1 {
		t.Errorf("Closed called %d times, want 1", n)
	}
	if n := hf.count(t, "request_client_error_total", map[string]string{"reason": "canceled"}); n != 1 {
		t.Errorf("request_client_error_total{reason=canceled} %v, want 1", n)
	}
	if n := hf.s.inFlight().Load(); n != 0 {
		t.Errorf("%d in flight, want 0", n)
	}
}

// bigBodyText is a request body larger than the loop reads whole.
var bigBodyText = strings.Repeat("b", maxCarriedBody+1)

// request writes, in one write, stream id's HEADERS for method and path,
// then a DATA frame for each of data, the last ending the stream (or, with
// trailer, a HEADERS of it).
func (r *rawH2) request(id uint32, method, path string, trailer []hpack.HeaderField, data ...string) {
	r.t.Helper()
	b, fr := r.open(id, method, path, len(data) == 0 && trailer == nil)
	for i, d := range data {
		fr.WriteData(id, i == len(data)-1 && trailer == nil, []byte(d))
	}
	if trailer != nil {
		r.hbuf.Reset()
		for _, f := range trailer {
			r.enc.WriteField(f)
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndHeaders: true, EndStream: true})
	}
	r.write(b.Bytes())
}

// open is stream id's HEADERS for method and path (end: with END_STREAM)
// in a buffer, and a framer for the frames that follow it there, all
// written at once by the caller.
func (r *rawH2) open(id uint32, method, path string, end bool) (*bytes.Buffer, *http2.Framer) {
	b := new(bytes.Buffer)
	fr := http2.NewFramer(b, nil)
	r.hbuf.Reset()
	for _, f := range [][2]string{{":method", method}, {":scheme", "http"}, {":authority", "web.test"}, {":path", path}} {
		r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndHeaders: true, EndStream: end})
	return b, fr
}

// An HTTP/2 request with a body for an HTTP/1.1 endpoint: read whole,
// then sent on the loop's pools with its length, the endpoint's answer
// passed back (counted once). The fallback's, with the whole body: one
// whose end does not come within maxBodyWait (the endpoint may answer
// before it, and the client wait for that), one with trailers, one larger
// than the loop reads whole, one waiting for 100 Continue.
func TestH2CarriedBody(t *testing.T) {
	be := startBackend(t, func(r *http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	ep := endpoint(t, be.addr)
	hf := startH2(t, 1, func(*http.Request) Target { return to(ep) }, nil)
	r := dialRaw(t, hf.addr)
	r.write([]byte(http2.ClientPreface))
	r.settings()

	big := strings.Repeat("c", 12<<10)
	for i, q := range []struct{ method, path, body string }{
		{"POST", "/up?q=1", "a body"}, {"POST", "/big", big}, {"PUT", "/empty", ""},
	} {
		id := uint32(2*i + 1)
		if q.body == "" {
			r.request(id, q.method, q.path, nil, "")
		} else {
			r.request(id, q.method, q.path, nil, q.body[:3], q.body[3:])
		}
		if status, h, body := r.fullResponse(id); status != "200" || body != "ok" || h.Get("X-Fallback") != "" {
			t.Errorf("%s %s: %s %q %v, want the endpoint's", q.method, q.path, status, body, h)
		}
		s := be.next(t)
		if s.req.Method != q.method || s.req.RequestURI != q.path || s.body != q.body || s.req.ContentLength != int64(len(q.body)) || s.req.ProtoMajor != 1 {
			t.Errorf("the endpoint got %s %s %s, length %d, a body of %d bytes; want %s %s HTTP/1.1 with %d bytes and their length",
				s.req.Method, s.req.RequestURI, s.req.Proto, s.req.ContentLength, len(s.body), q.method, q.path, len(q.body))
		}
	}
	hf.noFb(t)
	hf.settle()
	if n := hf.count(t, "request_total", epLabels(be.addr)); n != 3 {
		t.Errorf("request_total %v, want 3", n)
	}

	// The body's end after maxBodyWait.
	b, fr := r.open(7, "POST", "/split", false)
	fr.WriteData(7, false, []byte("par"))
	for len(hf.began) > 0 {
		<-hf.began
	}
	r.write(b.Bytes())
	select {
	case <-hf.began: // handed over once maxBodyWait passed
	case <-time.After(wait):
		t.Fatal("a body whose end did not come was not handed over")
	}
	b.Reset()
	fr.WriteData(7, true, []byte("t"))
	r.write(b.Bytes())
	if status, h, body := r.fullResponse(7); status != "200" || h.Get("X-Fallback") != "1" || body != "fallback POST /split part" {
		t.Errorf("POST with its end later: %s %q, want the fallback's with the whole body", status, body)
	}
	hf.nextFb(t)
	// Trailers.
	r.request(9, "POST", "/t", []hpack.HeaderField{{Name: "x-t", Value: "1"}}, "with trailers")
	if status, h, body := r.fullResponse(9); status != "200" || h.Get("X-Fallback") != "1" || body != "fallback POST /t with trailers" {
		t.Errorf("POST with trailers: %s %q, want the fallback's", status, body)
	}
	hf.nextFb(t)

	cl := hf.client(t, nil)
	if resp, got := h2do(t, cl, hf.req(t, context.Background(), http.MethodPost, "/huge", strings.NewReader(bigBodyText))); resp.Header.Get("X-Fallback") != "1" || got != "fallback POST /huge "+bigBodyText {
		t.Errorf("POST of %d bytes: %s, a body of %d bytes, want the fallback's", len(bigBodyText), resp.Status, len(got))
	}
	hf.nextFb(t)
	rq := hf.req(t, context.Background(), http.MethodPost, "/expect", strings.NewReader("e"))
	rq.Header.Set("Expect", "100-continue")
	if resp, got := h2do(t, cl, rq); resp.Header.Get("X-Fallback") != "1" || got != "fallback POST /expect e" {
		t.Errorf("POST with Expect: %s %q, want the fallback's", resp.Status, got)
	}
	hf.nextFb(t)
	if n := be.accepted.Load(); n != 1 {
		t.Errorf("the endpoint accepted %d connections, want the loop's one", n)
	}
	select {
	case s := <-be.reqs:
		t.Errorf("the endpoint got %s %s from the loop, want nothing more", s.req.Method, s.req.RequestURI)
	default:
	}
	eventually(t, "nothing in flight", func() bool { return hf.s.inFlight().Load() == 0 })
}

// A carried request's endpoint refuses the connect: the stream goes to
// the fallback with its whole body (the loop had read it, and given the
// window back). A client that resets its stream in the read that brought
// its HEADERS, before the body's end, is counted as gone; nothing
// reaches the endpoint.
func TestH2CarriedBodyFailures(t *testing.T) {
	be := startBackend(t, func(r *http.Request) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	good, refused := endpoint(t, be.addr), endpoint(t, closedAddr)
	hf := startH2(t, 1, func(r *http.Request) Target {
		if r.URL.Path == "/refused" {
			return to(refused)
		}
		return to(good)
	}, nil)
	cl := hf.client(t, nil)
	resp, got := h2do(t, cl, hf.req(t, context.Background(), http.MethodPost, "/refused", strings.NewReader("a body")))
	if resp.Header.Get("X-Fallback") != "1" || got != "fallback POST /refused a body" {
		t.Errorf("POST to a refusing endpoint: %s %q, want the fallback's with the body", resp.Status, got)
	}
	hf.nextFb(t)

	// HEADERS, part of the body and the reset in one read.
	r := dialRaw(t, hf.addr)
	r.write([]byte(http2.ClientPreface))
	r.settings()
	b, fr := r.open(1, "POST", "/gone", false)
	fr.WriteData(1, false, []byte("part"))
	fr.WriteRSTStream(1, http2.ErrCodeCancel)
	r.write(b.Bytes())
	eventually(t, "the client's cancellation counted", func() bool {
		return hf.count(t, "request_client_error_total", map[string]string{"direction": "outbound", "authority": "web.test:80", "reason": "canceled"}) == 1
	})
	if n := hf.count(t, "request_total", epLabels(be.addr)); n != 0 {
		t.Errorf("request_total %v, want 0", n)
	}
	if n := be.accepted.Load(); n != 0 {
		t.Errorf("the endpoint accepted %d connections, want none", n)
	}
	hf.noFb(t)
	if n := hf.s.inFlight().Load(); n != 0 {
		t.Errorf("%d in flight, want 0", n)
	}
}
