package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/h1server"
)

// httpsSnapshot is one TLS port with an HTTPS listener for a.test and an
// HTTP port, both routing everything to backend.
func httpsSnapshot(t *testing.T, version string, tlsPn, httpPn uint32, backend string) *gatewaypb.Snapshot {
	chain, key := certPEM(t, "a.test")
	var ports []*gatewaypb.Port
	if tlsPn != 0 {
		ports = append(ports, tlsPort(tlsPn, &gatewaypb.Listener{Name: "a", Hostname: "a.test", Mode: gatewaypb.Listener_HTTPS, Certificates: []string{"ns/a"},
			Hosts: []*gatewaypb.Host{hostOf("", ruleTo("a", nil, to(backend, 1)))}}))
	}
	if httpPn != 0 {
		ports = append(ports, httpPort(httpPn, httpListener("l", "", hostOf("", ruleTo("a", nil, to(backend, 1))))))
	}
	s := snap(version, ports...)
	s.Certificates = []*gatewaypb.Certificate{{Name: "ns/a", CertChain: chain, PrivateKey: key}}
	return s
}

// dialH2 opens an HTTP/2 connection to the gateway's port: h2c with prior
// knowledge, or TLS with ALPN h2 for a.test.
func dialH2(t *testing.T, port uint32, overTLS bool) net.Conn {
	t.Helper()
	addr := "127.0.0.1:" + itoa(port)
	var c net.Conn
	var err error
	if overTLS {
		var tc *tls.Conn
		tc, err = tls.Dial("tcp", addr, &tls.Config{ServerName: "a.test", NextProtos: []string{"h2"}, InsecureSkipVerify: true})
		if err == nil && tc.ConnectionState().NegotiatedProtocol != "h2" {
			t.Fatalf("ALPN %q, want h2", tc.ConnectionState().NegotiatedProtocol)
		}
		c = tc
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// h2Get writes the client preface, SETTINGS and a GET of path for host on
// stream 1, and returns the framer to read the server's frames with.
func h2Get(t *testing.T, c net.Conn, host, path string) *http2.Framer {
	t.Helper()
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	scheme := "http"
	if _, ok := c.(*tls.Conn); ok {
		scheme = "https"
	}
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", scheme}, {":authority", host}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	return fr
}

// A port a snapshot removes drains its HTTP/2 connections, h2c and TLS
// alike, as net/http's Shutdown did: GOAWAY NO_ERROR naming the stream in
// flight, that stream answered to its end, then the connection closed.
func TestRemovedPortDrainsHTTP2(t *testing.T) {
	for _, overTLS := range []bool{false, true} {
		name := "h2c"
		if overTLS {
			name = "h2"
		}
		t.Run(name, func(t *testing.T) {
			started := make(chan struct{}, 1)
			slow := startEcho(t, "slow", func(w http.ResponseWriter, r *http.Request) {
				started <- struct{}{}
				time.Sleep(300 * time.Millisecond)
				io.WriteString(w, "done")
			})
			tlsPn, httpPn, other := freePort(t), freePort(t), freePort(t)
			g := startGateway(t, dsts(t, map[string][]string{"slow.svc:80": {slow.addr}}), httpsSnapshot(t, "v1", tlsPn, httpPn, "slow.svc:80"))
			pn := httpPn
			if overTLS {
				pn = tlsPn
			}
			c := dialH2(t, pn, overTLS)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fr := h2Get(t, c, "a.test", "/")
			<-started
			if err := g.Apply(httpsSnapshot(t, "v2", 0, other, "slow.svc:80")); err != nil {
				t.Fatal(err)
			}
			var goAway *http2.GoAwayFrame
			var status, body string
			ended := false
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					if !ended {
						t.Fatalf("connection ended before the stream in flight: %v", err)
					}
					break // the connection closed after the stream
				}
				switch f := f.(type) {
				case *http2.GoAwayFrame:
					if ended {
						t.Error("GOAWAY after the stream in flight ended: the drain waited for it instead of announcing itself")
					}
					goAway = f
				case *http2.MetaHeadersFrame:
					status = f.PseudoValue("status")
					ended = ended || f.StreamEnded()
				case *http2.DataFrame:
					body += string(f.Data())
					ended = ended || f.StreamEnded()
				case *http2.SettingsFrame:
					if !f.IsAck() {
						fr.WriteSettingsAck()
					}
				case *http2.RSTStreamFrame:
					t.Fatalf("stream reset: %v", f.ErrCode)
				}
			}
			if goAway == nil || goAway.ErrCode != http2.ErrCodeNo || goAway.LastStreamID != 1 {
				t.Errorf("GOAWAY %+v, want NO_ERROR with last stream 1", goAway)
			}
			if status != "200" || body != "done" {
				t.Errorf("the stream in flight: %s %q, want 200 \"done\"", status, body)
			}
			if c, err := net.DialTimeout("tcp", "127.0.0.1:"+itoa(pn), time.Second); err == nil {
				c.Close()
				t.Error("the removed port still accepts")
			}
		})
	}
}

// seen is what the gateway's handler saw of a request's context.
type seen struct {
	server, localAddr any
	port              uint32
	tls               bool
}

// Requests carry the context values net/http's would, over HTTP/1, h2c and
// h2 alike: the port (portKey), http.ServerContextKey (the forwarder tells
// a server's requests from its own copies by it) and
// http.LocalAddrContextKey; HTTPS requests their TLS state; "OPTIONS *" is
// answered by the server, not routed; the connections are counted open
// while they are.
func TestRequestContextHTTP2(t *testing.T) {
	be := startEcho(t, "a", nil)
	tlsPn, httpPn := freePort(t), freePort(t)
	// The goroutine path's contexts: the event loop (when a run forces it
	// on) serves HTTP/1.1 without them.
	g := startGatewayWith(t, dsts(t, map[string][]string{"a.svc:80": {be.addr}}), nil, func(c *Config) { c.EventLoop = false })
	var mu sync.Mutex
	var got []seen
	route := g.handler
	g.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		mu.Lock()
		got = append(got, seen{ctx.Value(http.ServerContextKey), ctx.Value(http.LocalAddrContextKey), portOf(ctx), r.TLS != nil})
		mu.Unlock()
		route.ServeHTTP(w, r)
	})
	if err := g.Apply(httpsSnapshot(t, "v1", tlsPn, httpPn, "a.svc:80")); err != nil {
		t.Fatal(err)
	}
	tlsCfg := &tls.Config{ServerName: "a.test", InsecureSkipVerify: true}
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 10 * time.Second}
	h2c := h2cClient()
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	for _, c := range []struct {
		name   string
		client *http.Client
		url    string
		proto  int
		server any // the type of server in the context
		port   uint32
	}{
		{"http/1.1", h1, "http://127.0.0.1:" + itoa(httpPn) + "/x", 1, &h1server.Server{}, httpPn},
		{"h2c", h2c, "http://127.0.0.1:" + itoa(httpPn) + "/x", 2, &h2server.Server{}, httpPn},
		{"https/1.1", h1, "https://127.0.0.1:" + itoa(tlsPn) + "/x", 1, &h1server.Server{}, tlsPn},
		{"h2", h2, "https://127.0.0.1:" + itoa(tlsPn) + "/x", 2, &h2server.Server{}, tlsPn},
	} {
		mu.Lock()
		got = nil
		mu.Unlock()
		req, _ := http.NewRequest("GET", c.url, nil)
		req.Host = "a.test"
		resp, err := c.client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != c.proto || resp.Header.Get("X-Backend") != "a" {
			t.Fatalf("%s: %s answered by %q", c.name, resp.Proto, resp.Header.Get("X-Backend"))
		}
		mu.Lock()
		if len(got) != 1 {
			t.Fatalf("%s: the handler saw %d requests", c.name, len(got))
		}
		s := got[0]
		mu.Unlock()
		if s.port != c.port {
			t.Errorf("%s: port %d, want %d", c.name, s.port, c.port)
		}
		if s.server == nil || !sameType(s.server, c.server) {
			t.Errorf("%s: http.ServerContextKey %T, want %T", c.name, s.server, c.server)
		}
		if a, ok := s.localAddr.(net.Addr); !ok || !strings.HasSuffix(a.String(), ":"+itoa(c.port)) {
			t.Errorf("%s: http.LocalAddrContextKey %v, want the port's address", c.name, s.localAddr)
		}
		if s.tls != strings.HasPrefix(c.url, "https") {
			t.Errorf("%s: Request.TLS set %v", c.name, s.tls)
		}

		// OPTIONS * is the server's: an empty 200, the handler not called.
		req, _ = http.NewRequest("OPTIONS", c.url, nil)
		req.URL.Path, req.URL.Opaque = "", "*"
		req.Host = "a.test"
		resp, err = c.client.Do(req)
		if err != nil {
			t.Fatalf("%s: OPTIONS *: %v", c.name, err)
		}
		resp.Body.Close()
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if resp.StatusCode != http.StatusOK || resp.ContentLength != 0 || n != 1 {
			t.Errorf("%s: OPTIONS *: %s (length %d), handler called %d times, want an empty 200 from the server", c.name, resp.Status, resp.ContentLength, n-1)
		}
	}

	// Closed connections are no longer counted open.
	for _, c := range []*http.Client{h1, h2c, h2} {
		c.CloseIdleConnections()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		open := g.openConns()
		if open[tlsPn] == 0 && open[httpPn] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("open connections after the clients closed theirs: %v", open)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sameType(a, b any) bool {
	switch a.(type) {
	case *h1server.Server:
		_, ok := b.(*h1server.Server)
		return ok
	case *h2server.Server:
		_, ok := b.(*h2server.Server)
		return ok
	}
	return false
}

// A backend that breaks its response off mid-body: the client is told
// (the stream reset, the HTTP/1 connection closed before the chunked
// body's end) over every protocol, not handed a short body as if it were
// complete. The forwarder aborts only a server's request (one with
// http.ServerContextKey), so this holds only if HTTP/2 requests carry it.
func TestBackendDiesMidResponse(t *testing.T) {
	be := startEcho(t, "dying", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	})
	tlsPn, httpPn := freePort(t), freePort(t)
	startGateway(t, dsts(t, map[string][]string{"dying.svc:80": {be.addr}}), httpsSnapshot(t, "v1", tlsPn, httpPn, "dying.svc:80"))
	tlsCfg := &tls.Config{ServerName: "a.test", InsecureSkipVerify: true}
	for _, c := range []struct {
		name   string
		client *http.Client
		url    string
	}{
		{"http/1.1", http.DefaultClient, "http://127.0.0.1:" + itoa(httpPn) + "/"},
		{"h2c", h2cClient(), "http://127.0.0.1:" + itoa(httpPn) + "/"},
		{"h2", &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}, "https://127.0.0.1:" + itoa(tlsPn) + "/"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", c.url, nil)
		req.Host = "a.test"
		resp, err := c.client.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("%s: %v", c.name, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: body %q read to a clean end (%v), want an error: the response was broken off", c.name, b, err)
		}
	}
}

// A stream that outlasts DrainTimeout does not hold a removed port open:
// at the deadline its HTTP/2 connection is closed and the drain ends.
func TestDrainDeadlineClosesHTTP2(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	stuck := startEcho(t, "stuck", func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) }) // before the backend's Close, which waits for it
	pn, other := freePort(t), freePort(t)
	g := startGateway(t, dsts(t, map[string][]string{"stuck.svc:80": {stuck.addr}}), httpsSnapshot(t, "v1", 0, pn, "stuck.svc:80"))
	c := dialH2(t, pn, false)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fr := h2Get(t, c, "a.test", "/")
	<-started
	applied := time.Now()
	if err := g.Apply(httpsSnapshot(t, "v2", 0, other, "stuck.svc:80")); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break // closed at the drain deadline
		}
		if f, ok := f.(*http2.MetaHeadersFrame); ok && f.StreamEnded() {
			t.Fatal("the stuck stream was answered")
		}
	}
	drained := make(chan struct{})
	go func() { g.drains.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		t.Fatal("the drain did not end after its deadline")
	}
	// DrainTimeout is 2 s in startGateway.
	if d := time.Since(applied); d < 2*time.Second || d > 5*time.Second {
		t.Errorf("drained after %v, want about DrainTimeout (2s)", d)
	}
}
