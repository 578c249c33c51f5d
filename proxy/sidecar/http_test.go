package sidecar

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
)

// One HTTP/1.1 keep-alive connection from the application carries many
// requests; the proxy balances each request, not the connection.
func TestHTTP1KeepAliveBalancesRequests(t *testing.T) {
	ctx := testContext(t)
	names := []string{"web-0", "web-1", "web-2"}
	var apps []string
	for _, n := range names {
		apps = append(apps, startHTTP(t, named(n)).addr)
	}
	a := roundRobinProxy(t, dst("web.test:80", serverSidecars(t, apps...)...))
	client, dialer := h1Client(t, a.out)

	const total = 300
	var served tally
	reused := 0
	for i := range total {
		body := fmt.Sprintf("request %d %s", i, strings.Repeat("x", i))
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://web.test/echo", strings.NewReader(body))
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) {
				if info.Reused {
					reused++
				}
			},
		}))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("request %d: reading body: %v", i, err)
		}
		if resp.StatusCode != http.StatusOK || string(got) != body {
			t.Fatalf("request %d: %s, body %q, want 200 and %q", i, resp.Status, got, body)
		}
		served.add(resp.Header.Get("X-Server"))
	}
	if n := dialer.dials.Load(); n != 1 {
		t.Errorf("client opened %d connections, want 1", n)
	}
	if reused != total-1 {
		t.Errorf("%d requests reused the connection, want %d", reused, total-1)
	}
	assertEven(t, &served, total, names...)
	// The proxy keeps its own connections to the endpoints alive too: one
	// each, give or take a rare race inside net/http's transport (a
	// connection is not reused when the response outruns the goroutine
	// that wrote the request).
	if v, _ := metricSum(scrape(t, a.admin), "tcp_open_total", labels("direction", "outbound", "peer", "dst")); v > 2*float64(len(names)) {
		t.Errorf("the proxy opened %v connections to %d endpoints for %d sequential requests; want them kept alive", v, len(names), total)
	}
}

func TestHTTP1HeadersAndBodies(t *testing.T) {
	ctx := testContext(t)
	type seen struct {
		header http.Header
		host   string
		body   []byte
		te     []string
	}
	got := make(chan seen, 1)
	app := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{header: r.Header.Clone(), host: r.Host, body: b, te: r.TransferEncoding}
		// Hop-by-hop headers in the response must not reach the client either.
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End-To-End", "kept")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.WriteHeader(http.StatusCreated)
		w.Write(bytes.Repeat([]byte("response "), 10000))
	}))
	a := clientProxy(t, dst("web.test:80", serverSidecars(t, app.addr)...))
	client, _ := h1Client(t, a.out)

	// A body of unknown length goes out chunked (Transfer-Encoding).
	reqBody := bytes.Repeat([]byte("0123456789"), 50000)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://web.test/path?q=1&r=two",
		io.MultiReader(bytes.NewReader(reqBody)))
	req.Header.Set("Connection", "X-Hop, X-Forwarded-Host")
	req.Header.Set("X-Forwarded-Host", "named in Connection, so hop-by-hop")
	req.Header.Set("X-Hop", "must not pass")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Connection", "keep-alive")
	req.Header.Set("X-Forwarded-For", "192.0.2.7")
	req.Header.Add("X-Multi", "one")
	req.Header.Add("X-Multi", "two")
	req.Header.Set("User-Agent", "meridian-test")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	s := <-got

	if !bytes.Equal(s.body, reqBody) {
		t.Errorf("server got a %d-byte body, want the %d bytes sent", len(s.body), len(reqBody))
	}
	if s.host != "web.test" {
		t.Errorf("server saw Host %q, want web.test", s.host)
	}
	for _, h := range []string{"Connection", "X-Hop", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "X-Forwarded-Host"} {
		if v, ok := s.header[h]; ok {
			t.Errorf("hop-by-hop header %s reached the server: %q", h, v)
		}
	}
	if v := s.header.Get("X-Forwarded-For"); v != "192.0.2.7" {
		t.Errorf("X-Forwarded-For at the server = %q, want the client's 192.0.2.7", v)
	}
	if v := s.header.Values("X-Multi"); len(v) != 2 || v[0] != "one" || v[1] != "two" {
		t.Errorf("X-Multi at the server = %q, want [one two]", v)
	}
	if v := s.header.Get("User-Agent"); v != "meridian-test" {
		t.Errorf("User-Agent at the server = %q", v)
	}

	if resp.StatusCode != http.StatusCreated {
		t.Errorf("status %s, want 201", resp.Status)
	}
	if want := bytes.Repeat([]byte("response "), 10000); !bytes.Equal(respBody, want) {
		t.Errorf("client got a %d-byte body, want %d", len(respBody), len(want))
	}
	for _, h := range []string{"X-Resp-Hop", "Keep-Alive"} {
		if v, ok := resp.Header[h]; ok {
			t.Errorf("hop-by-hop response header %s reached the client: %q", h, v)
		}
	}
	if v := resp.Header.Get("Connection"); v != "" {
		t.Errorf("response Connection header %q reached the client", v)
	}
	if v := resp.Header.Get("X-End-To-End"); v != "kept" {
		t.Errorf("X-End-To-End = %q, want kept", v)
	}
	if v := resp.Header.Values("Set-Cookie"); len(v) != 2 {
		t.Errorf("Set-Cookie = %q, want both cookies", v)
	}
	if v := resp.Header.Get(httpproxy.ErrorHeader); v != "" {
		t.Errorf("a proxied application response carries %s: %q", httpproxy.ErrorHeader, v)
	}
}

// Meridian-Dst-Override routes by the header rather than Host, and is
// consumed by the proxy.
func TestDstOverride(t *testing.T) {
	ctx := testContext(t)
	web := startHTTP(t, named("web"))
	type seen struct {
		host     string
		override []string
	}
	got := make(chan seen, 1)
	canary := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Host, r.Header.Values(httpproxy.DstOverrideHeader)}
		w.Header().Set("X-Server", "canary")
	}))
	a := clientProxy(t,
		dst("web.test:80", serverSidecars(t, web.addr)...),
		dst("web-canary.test:8080", serverSidecars(t, canary.addr)...))
	for _, c := range []struct {
		name   string
		client func() *http.Client
	}{
		{"http1", func() *http.Client { c, _ := h1Client(t, a.out); return c }},
		{"h2c", func() *http.Client { c, _ := h2cClient(t, a.out); return c }},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://web.test/", nil)
			req.Header.Set(httpproxy.DstOverrideHeader, "WEB-CANARY.test:8080")
			resp, err := c.client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if s := resp.Header.Get("X-Server"); s != "canary" {
				t.Fatalf("served by %q (%s), want canary", s, resp.Status)
			}
			s := <-got
			if len(s.override) != 0 {
				t.Errorf("%s reached the server: %q", httpproxy.DstOverrideHeader, s.override)
			}
			if s.host != "web.test" {
				t.Errorf("server saw Host %q, want the client's web.test", s.host)
			}
		})
	}
}

// HTTP/2 with prior knowledge goes end to end as HTTP/2, and one client
// connection's streams are balanced.
func TestH2CPriorKnowledge(t *testing.T) {
	ctx := testContext(t)
	names := []string{"h2-0", "h2-1", "h2-2"}
	var apps []string
	for _, n := range names {
		apps = append(apps, startHTTP(t, named(n)).addr)
	}
	// The proxy's debug log is kept: a second connection is explained by
	// what the server logged (a connection error's GOAWAY makes Go's
	// client retry on a new connection, silently).
	var logs syncBuffer
	a := startProxy(t, Config{Resolver: staticResolver(t, dst("web.test:80", serverSidecars(t, apps...)...)), Balancer: balance.RoundRobin,
		Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	client, dialer := h2cClient(t, a.out)

	const total = 150
	var served tally
	var newConns []int
	for i := range total {
		body := fmt.Sprintf("stream %d", i)
		trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
			if !ci.Reused {
				newConns = append(newConns, i)
			}
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, "http://web.test/", strings.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 2 {
			t.Fatalf("client got %s from the proxy, want HTTP/2", resp.Proto)
		}
		if p := resp.Header.Get("X-Proto"); p != "HTTP/2.0" {
			t.Fatalf("server saw %q, want HTTP/2.0", p)
		}
		if string(got) != body {
			t.Fatalf("request %d: body %q, want %q", i, got, body)
		}
		served.add(resp.Header.Get("X-Server"))
	}
	if n := dialer.dials.Load(); n != 1 {
		t.Errorf("client opened %d connections, want 1 (new ones for requests %v)\n%sthe proxy's log:\n%s", n, newConns, dialer.story(), logs.String())
	}
	assertEven(t, &served, total, names...)
}

// A request addressed to a service's virtual IP (Host: 10.96.0.10:8080, as
// when an application dials a ClusterIP) is balanced over the service's
// endpoints, like a request that names the service.
func TestVirtualIPAuthority(t *testing.T) {
	ctx := testContext(t)
	names := []string{"vip-0", "vip-1", "vip-2"}
	var apps []string
	for _, n := range names {
		apps = append(apps, startHTTP(t, named(n)).addr)
	}
	d := dst("web.test:8080", serverSidecars(t, apps...)...)
	d.Addresses = []string{"127.0.0.253:8080"} // never dialled: nothing listens there
	a := roundRobinProxy(t, d)
	client, _ := h1Client(t, a.out)
	const total = 60
	var served tally
	for i := range total {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.253:8080/", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d to the virtual IP: %s (%s)", i, resp.Status, resp.Header.Get(httpproxy.ErrorHeader))
		}
		served.add(resp.Header.Get("X-Server"))
	}
	assertEven(t, &served, total, names...)
	fams := scrape(t, a.admin)
	if v, _ := metricSum(fams, "request_total", labels("authority", "web.test:8080")); v != total {
		t.Errorf("request_total{authority=web.test:8080} = %v, want %d", v, total)
	}
}

// Responses stream through both proxies write by write: the client gets
// each part while the server waits for it to, whether the length is
// unknown (chunked, server-sent events) or declared.
func TestResponsesStream(t *testing.T) {
	const parts = 5
	acked := make(chan struct{})
	app := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/known-length" {
			w.Header().Set("Content-Length", strconv.Itoa(parts*len("part N\n")))
		} else {
			w.Header().Set("Content-Type", "text/event-stream")
		}
		for i := range parts {
			fmt.Fprintf(w, "part %d\n", i)
			w.(http.Flusher).Flush()
			select { // the next part only once the client has this one
			case <-acked:
			case <-r.Context().Done():
				return
			}
		}
	}))
	a := clientProxy(t, dst("web.test:80", serverSidecars(t, app.addr)...))
	for _, c := range []struct {
		name   string
		client func() *http.Client
	}{
		{"http1", func() *http.Client { c, _ := h1Client(t, a.out); return c }},
		{"h2c", func() *http.Client { c, _ := h2cClient(t, a.out); return c }},
	} {
		for _, path := range []string{"/events", "/known-length"} {
			t.Run(c.name+path, func(t *testing.T) {
				ctx := testContext(t)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://web.test"+path, nil)
				resp, err := c.client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				r := bufio.NewReader(resp.Body)
				for i := range parts {
					line, err := r.ReadString('\n')
					if err != nil || line != fmt.Sprintf("part %d\n", i) {
						t.Fatalf("part %d: %q, %v", i, line, err)
					}
					select {
					case acked <- struct{}{}:
					case <-ctx.Done():
						t.Fatal("the server stopped waiting")
					}
				}
				if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
					t.Fatalf("after the last part: %q, %v", rest, err)
				}
			})
		}
	}
}
