package sidecar

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// loopApp answers by path: the response forms the loops pass on, and what
// the application was told (the caller's identity, the loop mark).
func loopApp() http.Handler {
	big := strings.Repeat("0123456789", 30000)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Client-Id", r.Header.Get(ClientIDHeader))
		w.Header().Set("X-Hop", r.Header.Get(HopHeader))
		w.Header().Set("X-Body", string(body))
		switch r.URL.Path {
		case "/chunked":
			io.WriteString(w, "hello")
			http.NewResponseController(w).Flush()
			io.WriteString(w, " world")
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/big":
			io.WriteString(w, big)
		case "/500":
			http.Error(w, "failed", http.StatusInternalServerError)
		case "/trailers":
			w.Header().Set("Trailer", "X-T")
			io.WriteString(w, strings.ToUpper(string(body)))
			w.Header().Set("X-T", "done")
		case "/grpc-fail":
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "5")
		default:
			w.Header().Set("X-A", "1")
			io.WriteString(w, "hello")
		}
	})
}

// loopPair is a client sidecar and a server sidecar in front of app, both
// with Config.EventLoop as loop, meshed (mTLS with identities of svc) or
// not; the client knows the server as emoji.test:80.
func loopPair(t *testing.T, svc *tlsidtest.Service, app string, loop bool) (client, server *testProxy) {
	t.Helper()
	scfg := Config{InboundForward: app, EventLoop: loop, EventLoopH2: loop, EventLoops: 2}
	ccfg := Config{EventLoop: loop, EventLoopH2: loop, EventLoops: 2}
	if svc != nil {
		scfg.Identity = svc.Identity(t, "emojivoto", "emoji")
		ccfg.Identity = svc.Identity(t, "emojivoto", "web")
	}
	server = startProxy(t, scfg)
	ep := discover.Endpoint{Addr: server.in}
	if svc != nil {
		ep.Identity = tlsidtest.ID("emojivoto", "emoji").String()
	}
	ccfg.Resolver = staticResolver(t, discover.Destination{Authority: "emoji.test:80", Endpoints: []discover.Endpoint{ep}})
	client = startProxy(t, ccfg)
	return client, server
}

type loopAnswer struct {
	Status int
	Header http.Header
	Body   string
}

func loopFetch(t *testing.T, c *http.Client, method, url, body string) loopAnswer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == "" {
		req.Body = http.NoBody
	}
	req.Header.Set(HopHeader, "made-up") // a loop mark the client sent: not the application's to see
	req.Header.Set(ClientIDHeader, "spiffe://made.up/ns/x/sa/y")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	resp.Header.Del("Date")
	return loopAnswer{resp.StatusCode, resp.Header, string(b)}
}

// loopReq is a request the loop pairs are compared on.
type loopReq struct{ method, path, body string }

// sameAnswers sends each request twice through the loops' pair (cl) and
// the goroutines' (cg) and says where the answers differ, and calls
// check, if not nil, with each of the loops' answers. streamed: a body
// streamed by the application may reach the client with a Content-Length
// on one path and not the other (whether a proxy read it whole before it
// wrote the head is timing), which is not compared.
func sameAnswers(t *testing.T, cl, cg *http.Client, reqs []loopReq, streamed bool, check func(q loopReq, a loopAnswer)) {
	t.Helper()
	for round := range 2 {
		for _, q := range reqs {
			a := loopFetch(t, cl, q.method, "http://emoji.test"+q.path, q.body)
			b := loopFetch(t, cg, q.method, "http://emoji.test"+q.path, q.body)
			if streamed && q.path == "/chunked" {
				a.Header.Del("Content-Length")
				b.Header.Del("Content-Length")
			}
			if !reflect.DeepEqual(a, b) {
				t.Errorf("round %d, %s %s:\n loops      %+v\n goroutines %+v", round, q.method, q.path, a, b)
			}
			if check != nil {
				check(q, a)
			}
		}
	}
}

// loopPairs starts loopApp and two client-server sidecar pairs to it,
// mTLS between the proxies when meshed: one on the loops (lc, ls), one
// without (gc, gs).
func loopPairs(t *testing.T, meshed bool) (lc, ls, gc, gs *testProxy) {
	t.Helper()
	var svc *tlsidtest.Service
	if meshed {
		svc = tlsidtest.Start(t, 0)
	}
	app := startHTTP(t, loopApp())
	lc, ls = loopPair(t, svc, app.addr, true)
	gc, gs = loopPair(t, svc, app.addr, false)
	return lc, ls, gc, gs
}

// The sidecars' HTTP/1.1 on the event loops: a meshed hop (mTLS) and a
// plaintext one, through a client sidecar and a server sidecar, answer
// each request as a pair without the loops does, byte for byte but the
// Date; both proxies of the pair served every request on their loops; and
// their golden metrics count the same series (but the endpoint's address)
// the same.
func TestEventLoopMatchesGoroutinePath(t *testing.T) {
	for _, meshed := range []bool{false, true} {
		t.Run(map[bool]string{false: "plaintext", true: "mtls"}[meshed], func(t *testing.T) {
			lc, ls, gc, gs := loopPairs(t, meshed)
			cl, _ := h1Client(t, lc.out)
			cg, _ := h1Client(t, gc.out)
			reqs := []loopReq{
				{"GET", "/cl", ""}, {"GET", "/chunked", ""}, {"GET", "/204", ""}, {"GET", "/big", ""},
				{"GET", "/500", ""}, {"POST", "/cl", "a body"}, {"PUT", "/cl", "put"}, {"DELETE", "/cl", ""},
			}
			sameAnswers(t, cl, cg, reqs, false, func(q loopReq, a loopAnswer) {
				if a.Header.Get("X-Hop") != "" {
					t.Errorf("%s %s: the application saw %s %q", q.method, q.path, HopHeader, a.Header.Get("X-Hop"))
				}
				want := ""
				if meshed {
					want = tlsidtest.ID("emojivoto", "web").String()
				}
				if got := a.Header.Get("X-Client-Id"); got != want {
					t.Errorf("%s %s: the application was told client %q, want %q", q.method, q.path, got, want)
				}
			})
			n := int64(2 * len(reqs))
			for _, p := range []*testProxy{lc, ls} {
				if got := p.loops.Served(); got != n {
					t.Errorf("the loops of %s served %d responses, want %d", p.admin, got, n)
				}
			}
			sameSeries(t, [2]*testProxy{lc, gc}, [2]*testProxy{ls, gs})
		})
	}
}

// The sidecars' HTTP/2 on the event loops (Config.EventLoopH2): an h2c
// client's streams, relayed on both proxies' loops to HTTP/2 connections
// of theirs (the next proxy, over mTLS by ALPN h2 when meshed; the
// application in h2c), answer as a pair without the loops does, and the
// golden metrics count the same series the same. The first streams to a
// destination go to the goroutine path while its resolution is awaited
// (the loops' routers do not wait for it on HTTP/2).
func TestEventLoopH2MatchesGoroutinePath(t *testing.T) {
	for _, meshed := range []bool{false, true} {
		t.Run(map[bool]string{false: "plaintext", true: "mtls"}[meshed], func(t *testing.T) {
			lc, ls, gc, gs := loopPairs(t, meshed)
			cl, _ := h2cClient(t, lc.out)
			cg, _ := h2cClient(t, gc.out)
			warm := 0
			for deadline := time.Now().Add(10 * time.Second); lc.loopServed() == 0 || ls.loopServed() == 0; warm++ {
				if time.Now().After(deadline) {
					t.Fatalf("the loops relayed nothing (served %d and %d)", lc.loopServed(), ls.loopServed())
				}
				loopFetch(t, cl, "GET", "http://emoji.test/cl", "")
				time.Sleep(5 * time.Millisecond)
			}
			for range warm {
				loopFetch(t, cg, "GET", "http://emoji.test/cl", "")
			}
			served := [2]int64{lc.loopServed(), ls.loopServed()}
			reqs := []loopReq{
				{"GET", "/cl", ""}, {"GET", "/chunked", ""}, {"GET", "/204", ""}, {"GET", "/big", ""},
				{"GET", "/500", ""}, {"POST", "/cl", "a body"}, {"PUT", "/cl", "put"}, {"DELETE", "/cl", ""},
				{"POST", "/trailers", "abc"}, {"POST", "/grpc-fail", "\x00\x00\x00\x00\x00"},
			}
			sameAnswers(t, cl, cg, reqs, true, func(q loopReq, a loopAnswer) {
				want := ""
				if meshed {
					want = tlsidtest.ID("emojivoto", "web").String()
				}
				if got := a.Header.Get("X-Client-Id"); got != want {
					t.Errorf("%s %s: the application was told client %q, want %q", q.method, q.path, got, want)
				}
			})
			n := int64(2 * len(reqs))
			for i, p := range []*testProxy{lc, ls} {
				if got := p.loopServed() - served[i]; got != n {
					t.Errorf("the loops of %s relayed %d responses, want %d", p.admin, got, n)
				}
			}
			sameSeries(t, [2]*testProxy{lc, gc}, [2]*testProxy{ls, gs})
		})
	}
}

// sameSeries says that each pair of proxies (with the loops, without)
// counted the same golden metrics series the same. A response is counted
// at its end, which may trail its client's read by a moment.
func sameSeries(t *testing.T, pairs ...[2]*testProxy) {
	t.Helper()
	for i, pair := range pairs {
		for _, name := range []string{"request_total", "response_total", "response_latency_ms"} {
			var a, b map[string]float64
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				a, b = loopSeries(t, pair[0], name), loopSeries(t, pair[1], name)
				if maps.Equal(a, b) || time.Now().After(deadline) {
					break
				}
			}
			if !maps.Equal(a, b) {
				t.Errorf("proxy %d, %s:\n loops      %v\n goroutines %v", i, name, sorted(a), sorted(b))
			}
		}
	}
}

// loopSeries is each series of name by its labels but target_addr (the
// endpoint's address, which differs between the pairs), and its value
// (a histogram's count).
func loopSeries(t *testing.T, p *testProxy, name string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	f := scrape(t, p.admin)[name]
	if f == nil {
		return out
	}
	for _, m := range f.GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			if l.GetName() != "target_addr" {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
		}
		v := m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		out[strings.Join(ls, ",")] += v
	}
	return out
}

func sorted(m map[string]float64) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "\n  %s %v", k, m[k])
	}
	return b.String()
}

// loopServed counts the responses p's event loops passed on.
func (p *Proxy) loopServed() int64 {
	if p.loops == nil {
		return 0
	}
	return p.loops.Served()
}

// The hop a cluster without identities runs: the client proxy's loops
// carry an HTTP/1.1 request to the server proxy over HTTP/2 (the endpoint
// hinted h2, OrigProtoHeader saying what the client spoke), and the
// server proxy's loops pass it to the application in HTTP/1.1 (on their
// HTTP/1.1 pools, a body read whole first), answering as a pair without
// the loops.
func TestEventLoopHintedHopMatchesGoroutinePath(t *testing.T) {
	app := startHTTP(t, loopApp())
	pair := func(loop bool) (client, server *testProxy) {
		server = startProxy(t, Config{InboundForward: app.addr, EventLoop: loop, EventLoopH2: loop, EventLoops: 2})
		res := staticResolver(t, discover.Destination{Authority: "emoji.test:80",
			Endpoints: []discover.Endpoint{{Addr: server.in, Protocol: discover.HintH2}}})
		client = startProxy(t, Config{Resolver: res, EventLoop: loop, EventLoopH2: loop, EventLoops: 2})
		return client, server
	}
	lc, ls := pair(true)
	gc, gs := pair(false)
	cl, _ := h1Client(t, lc.out)
	cg, _ := h1Client(t, gc.out)
	reqs := []loopReq{
		{"GET", "/cl", ""}, {"GET", "/chunked", ""}, {"GET", "/204", ""}, {"GET", "/big", ""},
		{"GET", "/500", ""}, {"POST", "/cl", "a body"}, {"PUT", "/cl", "put"}, {"DELETE", "/cl", ""},
	}
	sameAnswers(t, cl, cg, reqs, true, nil)
	// The client proxy's loops relayed every request.
	if n := lc.loopServed(); n != int64(2*len(reqs)) {
		t.Errorf("the client proxy's loops relayed %d requests, want %d", n, 2*len(reqs))
	}
	// The server proxy's loops carried every request, the bodies too.
	if n := ls.loopServed(); n != int64(2*len(reqs)) {
		t.Errorf("the server proxy's loops carried %d requests, want %d", n, 2*len(reqs))
	}
	sameSeries(t, [2]*testProxy{lc, gc}, [2]*testProxy{ls, gs})
}
