package sidecar

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// BenchmarkMeshedRequest is one small request through the meshed hop, the
// forwarding path of issue 13:
//
//	client → outbound proxy → inbound proxy → application
//
// on loopback, for each protocol the client speaks and with the hop
// between the proxies in plaintext or mTLS (the outbound proxy originating
// it with certificates from the project's CA, as in the mesh, where
// HTTP/1 requests cross that hop over HTTP/2). Every
// connection is open before the timer starts (one request outside it) and
// reused. allocs/op, B/op and cpu-ns/op (CPU time, user and system, per
// request) count the whole process: client, both proxies and application.
// On a shared machine cpu-ns/op moves less than ns/op, which also counts
// the time spent waiting for a CPU. `make bench` turns the output into one
// RESULT line (bench/cmd/microbench).
//
//	proto=http1-get       GET / over HTTP/1.1, answered "ok" (what bench/cmd/meshhop sends), on goroutines
//	proto=http1-post      POST of 5 bytes over HTTP/1.1, on goroutines
//	proto=http1-get-loop  the GET with both proxies on one event loop each (meridian-proxy's default)
//	proto=http1-post-loop the POST on the event loops
//	proto=h2c             the same POST over HTTP/2 with prior knowledge
//	proto=grpc            grpc.health.v1.Health/Check, grpc-go client and server
//	proto=h2c-loop        the h2c POST on the event loops (relayed there to an HTTP/2 endpoint)
//	proto=grpc-loop       the gRPC call on the event loops
//
// The -loop cases fail unless the loops passed on every timed response.
func BenchmarkMeshedRequest(b *testing.B) {
	// Registered first, so it runs last: after every proxy, server and
	// client below has stopped.
	before := goleak.IgnoreCurrent()
	b.Cleanup(func() { goleak.VerifyNone(b, before) })

	svc := tlsidtest.Start(b, time.Hour)
	meshes := map[string]benchMesh{
		"plain": startBenchMesh(b, nil, false), "mtls": startBenchMesh(b, svc, false),
		"plain-loop": startBenchMesh(b, nil, true), "mtls-loop": startBenchMesh(b, svc, true),
	}
	for _, c := range []struct {
		proto string
		loop  bool
		call  func(b *testing.B, out string) func() error
	}{
		{"http1-get", false, httpCall(false, http.MethodGet)},
		{"http1-post", false, httpCall(false, http.MethodPost)},
		{"http1-get-loop", true, httpCall(false, http.MethodGet)},
		{"http1-post-loop", true, httpCall(false, http.MethodPost)},
		{"h2c", false, httpCall(true, http.MethodPost)},
		{"grpc", false, grpcCall},
		{"h2c-loop", true, httpCall(true, http.MethodPost)},
		{"grpc-loop", true, grpcCall},
	} {
		b.Run("proto="+c.proto, func(b *testing.B) {
			for _, mode := range []string{"plain", "mtls"} {
				b.Run("tls="+mode, func(b *testing.B) {
					if c.loop && runtime.GOOS != "linux" {
						b.Skip("the event loops are Linux only")
					}
					m := meshes[mode]
					if c.loop {
						m = meshes[mode+"-loop"]
					}
					call := c.call(b, m.out)
					if err := call(); err != nil { // opens every connection on the way
						b.Fatal(err)
					}
					if c.loop {
						// The first HTTP/2 stream to a destination the loops
						// have not resolved yet goes to the goroutine path
						// (h2loop's Bridge); the loops dial on the next.
						if err := call(); err != nil {
							b.Fatal(err)
						}
					}
					opened := m.opened(b)
					served := m.loopServed()
					b.ReportAllocs()
					cpu0, cpuOK := processCPU()
					b.ResetTimer()
					for range b.N {
						if err := call(); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					if cpu1, ok := processCPU(); ok && cpuOK {
						b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
					}
					if n := m.opened(b) - opened; n != 0 {
						b.Fatalf("the outbound proxy opened %v connections during the timed requests, want 0: the figures are of reused connections", n)
					}
					if n := m.loopServed() - served; c.loop && n != int64(2*b.N) {
						b.Fatalf("the proxies' event loops passed on %v of the %v timed responses, want all: the figures are of the loops", n, 2*b.N)
					}
					m.checkTLS(b)
				})
			}
		})
	}
}

// benchMesh is an outbound proxy that knows web.test:80 (an HTTP/1 and h2c
// application) and grpc.test:80 (a gRPC health server), each behind its own
// inbound proxy.
type benchMesh struct {
	out, admin string // the outbound proxy's listener and admin port
	mtls       bool
	proxies    []*Proxy // the outbound proxy and the inbound ones
}

// loopServed counts the responses the mesh's event loops passed on.
func (m benchMesh) loopServed() int64 {
	var n int64
	for _, p := range m.proxies {
		n += p.loopServed()
	}
	return n
}

// opened is how many connections the outbound proxy has accepted and
// dialed so far.
func (m benchMesh) opened(b *testing.B) float64 {
	n, _ := metricSum(scrape(b, m.admin), "tcp_open_total", labels("direction", "outbound"))
	return n
}

// checkTLS fails the benchmark unless every response the outbound proxy
// has forwarded crossed the hop in mTLS when the mesh has identities, and
// none did otherwise: the figures are those of the mode they are named for.
func (m benchMesh) checkTLS(b *testing.B) {
	fams := scrape(b, m.admin)
	all, _ := metricSum(fams, "response_total", labels("direction", "outbound"))
	mtls, _ := metricSum(fams, "response_total", labels("direction", "outbound", "tls", "true"))
	if want := map[bool]float64{true: all, false: 0}[m.mtls]; all == 0 || mtls != want {
		b.Fatalf("outbound response_total: %v of %v over mTLS, want %v", mtls, all, want)
	}
}

// startBenchMesh starts a benchMesh whose proxies speak mTLS to each other
// with identities from svc, or plaintext when svc is nil, on one event loop
// each when loop is set (goroutines only otherwise, whatever the
// environment says). It stops when the benchmark ends.
func startBenchMesh(b *testing.B, svc *tlsidtest.Service, loop bool) benchMesh {
	b.Helper()
	var proxies []*Proxy
	start := func(cfg Config) *testProxy {
		// EventLoops set: startProxy's environment does not apply.
		cfg.EventLoop, cfg.EventLoops, cfg.EventLoopH2 = loop, 1, loop
		p := startProxy(b, cfg)
		proxies = append(proxies, p.Proxy)
		return p
	}
	web := benchServe(b, func(ln net.Listener) func() {
		protos := new(http.Protocols)
		protos.SetHTTP1(true)
		protos.SetUnencryptedHTTP2(true)
		srv := &http.Server{Protocols: protos, ReadHeaderTimeout: 10 * time.Second,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Write([]byte("ok"))
			})}
		go srv.Serve(ln)
		return func() { srv.Close() }
	})
	grpcApp := benchServe(b, func(ln net.Listener) func() {
		g := grpc.NewServer()
		healthpb.RegisterHealthServer(g, health.NewServer()) // SERVING for ""
		go g.Serve(ln)
		return g.Stop
	})
	inbound := func(app, sa string) discover.Destination {
		cfg := Config{InboundForward: app}
		var announced string
		if svc != nil {
			cfg.Identity = svc.Identity(b, "bench", sa)
			announced = tlsidtest.ID("bench", sa).String()
		}
		in := start(cfg).in
		return discover.Destination{Authority: sa + ".test:80", Endpoints: []discover.Endpoint{{Addr: in, Identity: announced}}}
	}
	r, err := discover.NewStatic([]discover.Destination{inbound(web, "web"), inbound(grpcApp, "grpc")})
	if err != nil {
		b.Fatal(err)
	}
	cfg := Config{Resolver: r}
	if svc != nil {
		cfg.Identity = svc.Identity(b, "bench", "client")
	}
	out := start(cfg)
	return benchMesh{out: out.out, admin: out.admin, mtls: svc != nil, proxies: proxies}
}

// benchServe opens a loopback listener, serves it with serve (which returns
// how to stop), and stops when the benchmark ends. It returns the address.
func benchServe(b *testing.B, serve func(net.Listener) (stop func())) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(serve(ln))
	return ln.Addr().String()
}

// httpCall returns a client of web.test through the outbound proxy at out
// (HTTP/1.1, or h2c with prior knowledge), sending method with a 5-byte
// body for POST; like meshhop's client it asks for no compression. Its
// connections close when the benchmark ends.
func httpCall(h2c bool, method string) func(b *testing.B, out string) func() error {
	return func(b *testing.B, out string) func() error {
		protos := new(http.Protocols)
		if h2c {
			protos.SetUnencryptedHTTP2(true)
		} else {
			protos.SetHTTP1(true)
		}
		tr := &http.Transport{Protocols: protos, DisableCompression: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", out)
			}}
		b.Cleanup(tr.CloseIdleConnections)
		var got bytes.Buffer // reused: the client's allocations are not the proxies'
		return func() error {
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader("hello")
			}
			req, err := http.NewRequest(method, "http://web.test/", body)
			if err != nil {
				return err
			}
			resp, err := tr.RoundTrip(req)
			if err != nil {
				return err
			}
			got.Reset()
			_, err = got.ReadFrom(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK || !bytes.Equal(got.Bytes(), []byte("ok")) {
				return &benchError{what: method + " http://web.test/", status: resp.Status, detail: resp.Header.Get("Meridian-Proxy-Error")}
			}
			return nil
		}
	}
}

// grpcCall returns a grpc-go client of grpc.test through the outbound
// proxy at out, calling Health/Check. It closes when the benchmark ends.
func grpcCall(b *testing.B, out string) func() error {
	cc, err := grpc.NewClient("passthrough:///"+out,
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc.test:80"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	client := healthpb.NewHealthClient(cc)
	req := &healthpb.HealthCheckRequest{}
	return func() error {
		resp, err := client.Check(context.Background(), req)
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return &benchError{what: "grpc.test Health/Check", status: resp.GetStatus().String()}
		}
		return nil
	}
}

// benchError is an unexpected answer in a benchmark.
type benchError struct{ what, status, detail string }

func (e *benchError) Error() string {
	s := e.what + ": got " + e.status + ", want 200 OK / SERVING"
	if e.detail != "" {
		s += " (Meridian-Proxy-Error: " + e.detail + ")"
	}
	return s
}

// meshedHop runs an application (HTTP/1 and h2c) behind an inbound proxy,
// and an outbound proxy that knows authority as that inbound proxy; it
// returns the outbound proxy's address. All stop when the benchmark ends.
func meshedHop(b *testing.B, authority string, app http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: protos, Handler: app}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	in := startProxy(b, Config{InboundForward: ln.Addr().String()})
	r, err := discover.NewStatic([]discover.Destination{dst(authority, in.in)})
	if err != nil {
		b.Fatal(err)
	}
	return startProxy(b, Config{Resolver: r}).out
}
