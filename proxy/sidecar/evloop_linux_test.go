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
	scfg := Config{InboundForward: app, EventLoop: loop, EventLoops: 2}
	ccfg := Config{EventLoop: loop, EventLoops: 2}
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

// The sidecars' HTTP/1.1 on the event loops: a meshed hop (mTLS) and a
// plaintext one, through a client sidecar and a server sidecar, answer
// each request as a pair without the loops does, byte for byte but the
// Date; both proxies of the pair served every request on their loops; and
// their golden metrics count the same series (but the endpoint's address)
// the same.
func TestEventLoopMatchesGoroutinePath(t *testing.T) {
	for _, meshed := range []bool{false, true} {
		t.Run(map[bool]string{false: "plaintext", true: "mtls"}[meshed], func(t *testing.T) {
			var svc *tlsidtest.Service
			if meshed {
				svc = tlsidtest.Start(t, 0)
			}
			app := startHTTP(t, loopApp())
			lc, ls := loopPair(t, svc, app.addr, true)
			gc, gs := loopPair(t, svc, app.addr, false)
			cl, _ := h1Client(t, lc.out)
			cg, _ := h1Client(t, gc.out)
			reqs := []struct{ method, path, body string }{
				{"GET", "/cl", ""}, {"GET", "/chunked", ""}, {"GET", "/204", ""}, {"GET", "/big", ""},
				{"GET", "/500", ""}, {"POST", "/cl", "a body"}, {"PUT", "/cl", "put"}, {"DELETE", "/cl", ""},
			}
			for round := range 2 {
				for _, q := range reqs {
					a := loopFetch(t, cl, q.method, "http://emoji.test"+q.path, q.body)
					b := loopFetch(t, cg, q.method, "http://emoji.test"+q.path, q.body)
					if !reflect.DeepEqual(a, b) {
						t.Errorf("round %d, %s %s:\n loops      %+v\n goroutines %+v", round, q.method, q.path, a, b)
					}
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
				}
			}
			n := int64(2 * len(reqs))
			for _, p := range []*testProxy{lc, ls} {
				if got := p.loops.Served(); got != n {
					t.Errorf("the loops of %s served %d responses, want %d", p.admin, got, n)
				}
			}
			for i, pair := range [][2]*testProxy{{lc, gc}, {ls, gs}} {
				for _, name := range []string{"request_total", "response_total", "response_latency_ms"} {
					a, b := loopSeries(t, pair[0], name), loopSeries(t, pair[1], name)
					if !maps.Equal(a, b) {
						t.Errorf("proxy %d, %s:\n loops      %v\n goroutines %v", i, name, sorted(a), sorted(b))
					}
				}
			}
		})
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
