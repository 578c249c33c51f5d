package sidecar

// HTTP semantics at the edges of the protocol (RFC 9110, 9112): malformed
// and ambiguous request framing, responses that must have no content, and
// Expect: 100-continue, checked on the wire with raw sockets, on the plain
// HTTP/1 hop (client → outbound proxy → application) and on the meshed
// HTTP/2 hop (client → outbound proxy → inbound proxy → application).

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
)

// topology is one way from a client to an application.
type topology struct {
	name string
	// start puts proxies in front of app and returns the client's proxy,
	// which knows the application as app.test:80.
	start func(t *testing.T, app string) *testProxy
	// proxies returns the client's proxy and the server's, if any.
	proxies func(t *testing.T, app string) []*testProxy
}

var topologies = []topology{
	{name: "h1", proxies: func(t *testing.T, app string) []*testProxy {
		return []*testProxy{clientProxy(t, dst("app.test:80", app))}
	}},
	{name: "h2hop", proxies: func(t *testing.T, app string) []*testProxy {
		in := startProxy(t, Config{InboundForward: app})
		return []*testProxy{clientProxy(t, discover.Destination{Authority: "app.test:80",
			Endpoints: []discover.Endpoint{{Addr: in.in, Protocol: discover.HintH2}}}), in}
	}},
}

func init() {
	for i := range topologies {
		proxies := topologies[i].proxies
		topologies[i].start = func(t *testing.T, app string) *testProxy { return proxies(t, app)[0] }
	}
}

// wireResponse is one response read off a raw connection, body included.
type wireResponse struct {
	status int
	header http.Header
	body   string
	close  bool // Connection: close
}

// readResponses reads responses from br until the connection ends (EOF,
// reset) or max responses were read, and reports whether it ended.
func readResponses(t *testing.T, br *bufio.Reader, method string, max int) (rs []wireResponse, closed bool) {
	t.Helper()
	for len(rs) < max {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return rs, true
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		rs = append(rs, wireResponse{resp.StatusCode, resp.Header, string(body), resp.Close})
		if err != nil {
			return rs, true
		}
	}
	return rs, false
}

func statuses(rs []wireResponse) []int {
	var s []int
	for _, r := range rs {
		s = append(s, r.status)
	}
	return s
}

// settled waits until every request p sent has its outcome counted.
func settled(t *testing.T, p *testProxy) {
	t.Helper()
	eventually(t, "every request's outcome is counted", func() bool {
		fams := scrape(t, p.admin)
		sent, _ := metricSum(fams, "request_total", nil)
		done, _ := metricSum(fams, "response_total", nil)
		client, _ := metricSum(fams, "request_client_error_total", nil)
		return done+client >= sent
	})
}

// countingApp echoes request bodies and counts the requests it served.
func countingApp(n *atomic.Int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("X-Path", r.URL.Path)
		w.Header().Set("X-Content-Length", r.Header.Get("Content-Length"))
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Write(body)
	})
}

// A malformed chunked body is the client's fault: it gets one 400, the
// connection is closed (what follows on it cannot be parsed), and the
// request is counted as a client error, not against the application.
func TestMalformedChunkedBody(t *testing.T) {
	bodies := map[string]string{
		"bad_size":     "zz\r\nhello\r\n0\r\n\r\n",
		"missing_crlf": "5\r\nhelloXX0\r\n\r\n",
	}
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			var served atomic.Int32
			app := startHTTP(t, countingApp(&served))
			ps := topo.proxies(t, app.addr)
			a := ps[0]
			for name, body := range bodies {
				c := dialTCP(t, a.out)
				// A request the proxy reads but must not answer follows the bad one.
				io.WriteString(c, "POST /bad HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"+body+
					"GET /next HTTP/1.1\r\nHost: app.test\r\n\r\n")
				rs, closed := readResponses(t, bufio.NewReader(c), http.MethodPost, 3)
				if len(rs) != 1 || rs[0].status != http.StatusBadRequest || !rs[0].close || !closed {
					t.Fatalf("%s: responses %v (closed %v), want one 400 and the connection closed", name, statuses(rs), closed)
				}
				if got := rs[0].header.Get(httpproxy.ErrorHeader); got != "bad_request" {
					t.Errorf("%s: %s: %q, want bad_request", name, httpproxy.ErrorHeader, got)
				}
			}
			// Neither the client's proxy nor the server's (which sees the
			// request cancelled) counts a failure of the application.
			for _, p := range ps {
				settled(t, p)
				fams := scrape(t, p.admin)
				if v, _ := metricSum(fams, "response_total", labels("classification", "failure")); v != 0 {
					t.Errorf("response_total{classification=failure} = %v, want 0:\n%s", v, dumpFamily(fams, "response_total"))
				}
			}
			fams := scrape(t, a.admin)
			if v, _ := metricSum(fams, "request_client_error_total", labels("direction", "outbound", "authority", "app.test:80", "reason", "bad_request")); v != float64(len(bodies)) {
				t.Errorf("request_client_error_total{reason=bad_request} = %v, want %d", v, len(bodies))
			}
			if n := served.Load(); n > int32(len(bodies)) {
				t.Errorf("the application served %d requests: a request pipelined after a malformed one was forwarded", n)
			}
		})
	}
}

// rawApp answers every request on a connection with resp, as a
// misbehaving application would, whatever net/http would allow.
func rawApp(t *testing.T, resp string) *tcpBackend {
	return startTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	})
}

// A 204 or 304 has no content (RFC 9110 §15.3.5, §15.4.5, §6.4.1): the
// body a misbehaving application sends with it is dropped, on every path,
// and so is a 204's Content-Length (§8.6); the connection stays usable.
func TestNoContentResponseNormalised(t *testing.T) {
	for _, status := range []int{http.StatusNoContent, http.StatusNotModified} {
		for _, topo := range topologies {
			t.Run(strconv.Itoa(status)+"/"+topo.name, func(t *testing.T) {
				app := rawApp(t, "HTTP/1.1 "+strconv.Itoa(status)+" "+http.StatusText(status)+"\r\nContent-Length: 5\r\nX-App: yes\r\n\r\nhello")
				a := topo.start(t, app.addr)
				c := dialTCP(t, a.out)
				br := bufio.NewReader(c)
				for i := range 3 {
					io.WriteString(c, "GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
					rs, _ := readResponses(t, br, http.MethodGet, 1)
					if len(rs) != 1 || rs[0].status != status || rs[0].header.Get("X-App") != "yes" || rs[0].body != "" {
						t.Fatalf("request %d: responses %v, want the application's %d without content", i, statuses(rs), status)
					}
					if cl := rs[0].header.Get("Content-Length"); status == http.StatusNoContent && cl != "" && cl != "0" {
						t.Errorf("request %d: 204 with Content-Length %q", i, cl)
					}
				}
			})
		}
	}
}

// expectClient sends a request with Expect: 100-continue, X-Mode: mode and
// a body, and sends the body only once it got 100 Continue (after calling
// onContinue, if set). It returns the responses received up to and
// including the final one, and checks that nothing else follows.
func expectClient(t *testing.T, addr, mode, body string, onContinue func()) []wireResponse {
	t.Helper()
	c := dialTCP(t, addr)
	br := bufio.NewReader(c)
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: app.test\r\nX-Mode: "+mode+"\r\nExpect: 100-continue\r\nContent-Length: "+
		strconv.Itoa(len(body))+"\r\n\r\n")
	var rs []wireResponse
	for len(rs) < 5 {
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
		if err != nil {
			t.Fatalf("%s: after %v: %v", mode, statuses(rs), err)
		}
		b, _ := io.ReadAll(resp.Body)
		rs = append(rs, wireResponse{resp.StatusCode, resp.Header, string(b), resp.Close})
		if resp.StatusCode == http.StatusContinue && len(rs) == 1 {
			if onContinue != nil {
				onContinue()
			}
			io.WriteString(c, body)
		}
		if resp.StatusCode >= 200 {
			break
		}
	}
	// Nothing else may follow the final response: ask again on the same
	// connection (if it is still open) and expect that answer next.
	if _, err := io.WriteString(c, "GET /after HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"); err == nil {
		if more, _ := readResponses(t, br, http.MethodGet, 3); len(more) > 0 && more[0].header.Get("X-Path") != "/after" {
			t.Errorf("%s: after the final response: unsolicited %v", mode, statuses(more))
		}
	}
	return rs
}

// Expect: 100-continue reaches the application, whose decision the client
// gets exactly once: 100 Continue then the final answer when it reads the
// body, the final answer alone (e.g. 417) when it does not. An application
// slower to decide than the proxy waits for its 100 (the transport's
// ExpectContinueTimeout) still makes only one 100 reach the client.
func TestExpectContinue(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			release := make(chan struct{})
			app := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Path", r.URL.Path)
				if r.URL.Path != "/upload" {
					return
				}
				if r.Header.Get("Expect") != "100-continue" {
					http.Error(w, "no expectation arrived", http.StatusTeapot)
					return
				}
				switch r.Header.Get("X-Mode") {
				case "refuse":
					w.WriteHeader(http.StatusExpectationFailed)
					return
				case "slow":
					// Decide only after the proxy, tired of waiting, asked
					// the client for its body.
					select {
					case <-release:
					case <-r.Context().Done():
						return
					}
				}
				b, _ := io.ReadAll(r.Body)
				w.Write(b)
			}))
			a := topo.start(t, app.addr)

			for _, mode := range []string{"accept", "slow"} {
				var onContinue func()
				if mode == "slow" {
					onContinue = func() { close(release) }
				}
				rs := expectClient(t, a.out, mode, "hello", onContinue)
				if got := statuses(rs); len(got) != 2 || got[0] != 100 || got[1] != 200 || rs[1].body != "hello" {
					t.Errorf("%s: responses %v (body %q), want [100 200] and \"hello\"", mode, got, rs[len(rs)-1].body)
				}
			}
			rs := expectClient(t, a.out, "refuse", "hello", nil)
			if got := statuses(rs); len(got) != 1 || got[0] != http.StatusExpectationFailed {
				t.Errorf("refuse: responses %v, want [417]", got)
			}
		})
	}
}

// A client that goes away while its destination is being resolved is
// counted as a cancellation under the canonical authority, not as the
// destination being unavailable.
func TestCancelWhileResolving(t *testing.T) {
	r := &blockingResolver{started: make(chan struct{}, 1)}
	a := startProxy(t, Config{Resolver: r})
	ctx, cancel := context.WithCancel(testContext(t))
	client, _ := h1Client(t, a.out)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://app.test/", nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-r.started:
	case <-time.After(testTimeout):
		t.Fatal("the proxy never resolved the destination")
	}
	cancel()
	<-errc
	eventually(t, "the cancellation is counted", func() bool {
		v, _ := metricSum(scrape(t, a.admin), "request_client_error_total", labels("direction", "outbound", "authority", "app.test:80", "reason", "canceled"))
		return v == 1
	})
	fams := scrape(t, a.admin)
	if v, n := metricSum(fams, "endpoint_unavailable_total", nil); v != 0 {
		t.Errorf("endpoint_unavailable_total = %v over %d series, want 0:\n%s", v, n, dumpFamily(fams, "endpoint_unavailable_total"))
	}
}

// blockingResolver never answers a watch, so a request waits in resolution.
type blockingResolver struct{ started chan struct{} }

func (r *blockingResolver) Resolve(ctx context.Context, authority string) (discover.Watch, error) {
	select {
	case r.started <- struct{}{}:
	default:
	}
	return &blockingWatch{updates: make(chan []discover.Endpoint)}, nil
}

func (r *blockingResolver) LookupAddr(netip.AddrPort) (string, bool) { return "", false }

type blockingWatch struct {
	updates chan []discover.Endpoint
	once    sync.Once
}

func (w *blockingWatch) Updates() <-chan []discover.Endpoint { return w.updates }
func (w *blockingWatch) Close()                              { w.once.Do(func() { close(w.updates) }) }

// A client whose body breaks after the application has answered (an
// application that answers before reading all of it) still gets no
// second response: the connection is closed after the first.
func TestMalformedChunkedBodyAfterResponse(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			app := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.NewResponseController(w).EnableFullDuplex()
				w.Header().Set("X-Path", r.URL.Path)
				b := make([]byte, 5)
				if _, err := io.ReadFull(r.Body, b); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				w.Write(b)
			}))
			a := topo.start(t, app.addr)
			c := dialTCP(t, a.out)
			br := bufio.NewReader(c)
			io.WriteString(c, "POST /early HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
			rs, _ := readResponses(t, br, http.MethodPost, 1)
			if len(rs) != 1 || rs[0].status != http.StatusOK || rs[0].body != "hello" {
				t.Fatalf("responses %v, want the application's 200", statuses(rs))
			}
			io.WriteString(c, "zz\r\nGET /next HTTP/1.1\r\nHost: app.test\r\n\r\n")
			if more, closed := readResponses(t, br, http.MethodGet, 2); len(more) != 0 || !closed {
				t.Errorf("after the response, the broken body got responses %v (closed %v), want none and the connection closed", statuses(more), closed)
			}
		})
	}
}

// A client that goes away in the middle of a response is a cancellation,
// counted as the client's, never as a failure of the application, by the
// client's proxy and the server's.
func TestCancelMidResponse(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			app := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Write([]byte("first part"))
				http.NewResponseController(w).Flush()
				<-r.Context().Done() // the rest never comes: the client leaves first
			}))
			ps := topo.proxies(t, app.addr)
			c := dialTCP(t, ps[0].out)
			io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: app.test\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(resp.Body, make([]byte, len("first part"))); err != nil {
				t.Fatalf("first part: %v", err)
			}
			c.Close()
			for _, p := range ps {
				eventually(t, "the cancellation is counted", func() bool {
					v, _ := metricSum(scrape(t, p.admin), "request_client_error_total", labels("reason", "canceled"))
					return v == 1
				})
				fams := scrape(t, p.admin)
				if v, _ := metricSum(fams, "response_total", nil); v != 0 {
					t.Errorf("response_total = %v, want 0:\n%s", v, dumpFamily(fams, "response_total"))
				}
			}
		})
	}
}
