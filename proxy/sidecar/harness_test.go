package sidecar

// A small harness for the integration tests: in-process proxies on
// 127.0.0.1:0, HTTP/gRPC backends, clients that dial a proxy the way an
// iptables redirect would, and a /metrics scraper.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// testTimeout bounds every test's context; nothing in these tests should
// come anywhere near it.
const testTimeout = 30 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// testLogger discards the proxies' logs unless MERIDIAN_TEST_LOG is set
// (t.Log cannot be used: proxy goroutines may log after a test returns).
func testLogger() *slog.Logger {
	if os.Getenv("MERIDIAN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testProxy is a running sidecar.
type testProxy struct {
	*Proxy
	out, in, admin string // bound addresses
	cancel         context.CancelFunc
	done           chan error // receives Run's result
}

// loopEnv puts the event loops under the tests (startProxy).
var loopEnv = os.Getenv("MERIDIAN_SIDECAR_EVENT_LOOP")

// startProxy builds and runs a sidecar on ephemeral loopback ports. Zero
// fields of cfg get test-friendly defaults. The proxy is stopped (and
// waited for) when the test ends.
func startProxy(t testing.TB, cfg Config) *testProxy {
	t.Helper()
	if cfg.OutboundAddr == "" {
		cfg.OutboundAddr = "127.0.0.1:0"
	}
	if cfg.InboundAddr == "" {
		cfg.InboundAddr = "127.0.0.1:0"
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = "127.0.0.1:0"
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	if cfg.Resolver == nil {
		r, err := discover.NewStatic(nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Resolver = r
	}
	if cfg.OrigDst == nil {
		cfg.OrigDst = notRedirected
	}
	if cfg.Log == nil {
		cfg.Log = testLogger()
	}
	if cfg.EventLoops == 0 && (loopEnv == "1" || loopEnv == "hold") {
		// The event loops under every test that does not choose (README.md,
		// Event loops): "1", or "hold" for one loop with a processor of its
		// own while busy, taken and given back every 2 ms of idleness.
		cfg.EventLoop, cfg.EventLoopH2 = true, true
		if loopEnv == "hold" {
			cfg.EventLoops, cfg.EventLoopHold = 1, 2*time.Millisecond
		}
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("sidecar.New: %v", err)
	}
	out, in, admin := p.Addrs()
	tp := &testProxy{Proxy: p, out: out.String(), in: in.String(), admin: admin.String(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	tp.cancel = cancel
	go func() { tp.done <- p.Run(ctx) }()
	t.Cleanup(func() { tp.stop(t) })
	return tp
}

// stop cancels Run and waits for it to return. It is safe to call twice.
func (tp *testProxy) stop(t testing.TB) {
	t.Helper()
	tp.cancel()
	select {
	case err, ok := <-tp.done:
		if ok {
			close(tp.done)
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	case <-time.After(testTimeout):
		t.Errorf("proxy did not stop within %v", testTimeout)
	}
}

func notRedirected(net.Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("not redirected")
}

// fixedOrigDst simulates an iptables redirect of every connection to dst.
func fixedOrigDst(dst string) func(net.Conn) (netip.AddrPort, error) {
	ap := netip.MustParseAddrPort(dst)
	return func(net.Conn) (netip.AddrPort, error) { return ap, nil }
}

func staticResolver(t *testing.T, dests ...discover.Destination) *discover.Static {
	t.Helper()
	r, err := discover.NewStatic(dests)
	if err != nil {
		t.Fatalf("NewStatic: %v", err)
	}
	return r
}

func dst(authority string, addrs ...string) discover.Destination {
	d := discover.Destination{Authority: authority, Endpoints: []discover.Endpoint{}}
	for _, a := range addrs {
		d.Endpoints = append(d.Endpoints, discover.Endpoint{Addr: a})
	}
	return d
}

// serverSidecars puts an inbound sidecar in front of each application
// address and returns the sidecars' inbound addresses: the endpoints a
// client-side proxy sees.
func serverSidecars(t *testing.T, apps ...string) []string {
	t.Helper()
	var eps []string
	for _, app := range apps {
		eps = append(eps, startProxy(t, Config{InboundForward: app}).in)
	}
	return eps
}

// clientProxy is the client's sidecar, knowing dests.
func clientProxy(t *testing.T, dests ...discover.Destination) *testProxy {
	t.Helper()
	return startProxy(t, Config{Resolver: staticResolver(t, dests...)})
}

// roundRobinProxy is a client sidecar that balances round-robin. The tests
// that check that each request (not each connection) is balanced use it:
// their shares are then exact. The default, P2C over peak-EWMA latency, is
// uneven in a short burst from a cold start (an endpoint's first sample,
// taken with connection setup, outweighs many later ones), and is tested
// in proxy/balance.
func roundRobinProxy(t *testing.T, dests ...discover.Destination) *testProxy {
	t.Helper()
	return startProxy(t, Config{Resolver: staticResolver(t, dests...), Balancer: balance.RoundRobin})
}

// loopbackListener opens a loopback listener closed at the end of the test.
func loopbackListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// httpBackend serves h over HTTP/1 and h2c until the test ends.
type httpBackend struct {
	addr string
	ln   net.Listener
	srv  *http.Server
}

func startHTTP(t *testing.T, h http.Handler) *httpBackend {
	t.Helper()
	ln := loopbackListener(t)
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: protos, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(testLogger().Handler(), slog.LevelDebug)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &httpBackend{addr: ln.Addr().String(), ln: ln, srv: srv}
}

// kill drops the listener and every connection, as if the process died.
func (b *httpBackend) kill() { b.srv.Close() }

// named answers with the backend's name in X-Server, echoing what it got.
func named(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Server", name)
		w.Header().Set("X-Proto", r.Proto)
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Write(body)
	})
}

// countingDialer dials addr whatever the request's URL says, as an iptables
// redirect to the proxy would, and counts connections.
type countingDialer struct {
	addr  string
	dials atomic.Int32
	tap   bool // follow the HTTP/2 frames the client reads (story)
	// silence keeps each new connection quiet this long before the
	// client may use it, as a pool's spare connection is.
	silence time.Duration

	mu    sync.Mutex
	conns []*tappedConn // every connection, for an explanation when more were dialled than wanted
}

func (d *countingDialer) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	d.dials.Add(1)
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", d.addr)
	if err == nil && d.silence > 0 {
		time.Sleep(d.silence)
	}
	if err != nil || !d.tap {
		return c, err
	}
	tc := &tappedConn{Conn: c}
	d.mu.Lock()
	d.conns = append(d.conns, tc)
	d.mu.Unlock()
	return tc, nil
}

// story says, for each connection, the last HTTP/2 frames the client read
// on it, how its reads ended and whether the client closed it.
func (d *countingDialer) story() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var b strings.Builder
	for i, c := range d.conns {
		c.mu.Lock()
		fmt.Fprintf(&b, "connection %d: read error %v, closed by the client %v, last frames read %v\n", i, c.rerr, c.closed, c.frames)
		c.mu.Unlock()
	}
	return b.String()
}

// tappedConn follows the HTTP/2 frames a client reads (after the server's
// preface-less start: frames from the first byte), keeping the last 8.
type tappedConn struct {
	net.Conn
	mu     sync.Mutex
	buf    []byte
	frames []string
	rerr   error
	closed bool
	gaveUp bool
}

func (c *tappedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil && c.rerr == nil {
		c.rerr = err
	}
	if c.gaveUp {
		return n, err
	}
	c.buf = append(c.buf, p[:n]...)
	for len(c.buf) >= 9 {
		size := int(c.buf[0])<<16 | int(c.buf[1])<<8 | int(c.buf[2])
		if size > 1<<20 {
			c.gaveUp, c.buf, c.frames = true, nil, append(c.frames, "(a frame too large to follow: not followed further)")
			break
		}
		if len(c.buf) < 9+size {
			break
		}
		typ, flags := http2.FrameType(c.buf[3]), c.buf[4]
		id := binary.BigEndian.Uint32(c.buf[5:9]) & (1<<31 - 1)
		f := fmt.Sprintf("%v/%d/flags=%#x/len=%d", typ, id, flags, size)
		if typ == http2.FrameGoAway && size >= 8 {
			f += fmt.Sprintf("/last=%d/code=%v", binary.BigEndian.Uint32(c.buf[9:13])&(1<<31-1), http2.ErrCode(binary.BigEndian.Uint32(c.buf[13:17])))
		}
		if typ == http2.FrameRSTStream && size >= 4 {
			f += fmt.Sprintf("/code=%v", http2.ErrCode(binary.BigEndian.Uint32(c.buf[9:13])))
		}
		c.frames = append(c.frames, f)
		if len(c.frames) > 8 {
			c.frames = c.frames[1:]
		}
		c.buf = c.buf[9+size:]
	}
	return n, err
}

func (c *tappedConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return c.Conn.Close()
}

// h1Client sends HTTP/1.1 over at most one keep-alive connection to proxy.
func h1Client(t *testing.T, proxy string) (*http.Client, *countingDialer) {
	t.Helper()
	d := &countingDialer{addr: proxy}
	tr := &http.Transport{DialContext: d.DialContext, MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1,
		DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}, d
}

// h2cClient speaks HTTP/2 with prior knowledge to proxy.
func h2cClient(t *testing.T, proxy string) (*http.Client, *countingDialer) {
	t.Helper()
	d := &countingDialer{addr: proxy, tap: true}
	protos := new(http.Protocols)
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{DialContext: d.DialContext, Protocols: protos, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}, d
}

// grpcBackend is a grpc_testing.TestService server whose behaviour tests plug in.
type grpcBackend struct {
	testgrpc.UnimplementedTestServiceServer
	name string
	addr string
	srv  *grpc.Server

	// unary, when set, replaces UnaryCall's default (echo the payload, name the server).
	unary func(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error)
	// fullDuplex, when set, replaces FullDuplexCall's default (echo).
	fullDuplex func(grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error
	// streamDone receives each FullDuplexCall's context error when it ends.
	streamDone chan error
}

func startGRPC(t *testing.T, name string) *grpcBackend {
	t.Helper()
	ln := loopbackListener(t)
	b := &grpcBackend{name: name, addr: ln.Addr().String(), srv: grpc.NewServer(), streamDone: make(chan error, 16)}
	testgrpc.RegisterTestServiceServer(b.srv, b)
	go b.srv.Serve(ln)
	t.Cleanup(b.srv.Stop)
	return b
}

func (b *grpcBackend) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if b.unary != nil {
		return b.unary(ctx, req)
	}
	grpc.SetHeader(ctx, metadata.Pairs("x-server", b.name))
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "from-"+b.name))
	return &testgrpc.SimpleResponse{ServerId: b.name, Payload: req.GetPayload()}, nil
}

// FullDuplexCall echoes every message (tagged with the server's name) until
// the client half-closes, then reports how its context ended.
func (b *grpcBackend) FullDuplexCall(stream grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	if b.fullDuplex != nil {
		return b.fullDuplex(stream)
	}
	defer func() {
		select {
		case b.streamDone <- stream.Context().Err():
		default:
		}
	}()
	stream.SetTrailer(metadata.Pairs("x-trailer", "stream-"+b.name))
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			// Wait for the cancellation to reach the context too, so the
			// test sees how the stream ended (bounded: the transport
			// cancels the context when the stream is reset).
			select {
			case <-stream.Context().Done():
			case <-time.After(testTimeout):
			}
			return err
		}
		body := append([]byte(b.name+":"), req.GetPayload().GetBody()...)
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: body}}); err != nil {
			return err
		}
	}
}

// grpcClient dials proxy (as a redirect would) and names authority in :authority.
func grpcClient(t *testing.T, proxy, authority string) (testgrpc.TestServiceClient, *grpc.ClientConn) {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+proxy,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc), cc
}

// scrape fetches and parses a proxy's /metrics.
func scrape(t testing.TB, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	get, url := http.Get, "http://"+admin+"/metrics"
	if c, ok := adminScrapers.Load(admin); ok { // the admin port follows an authenticated policy
		get, url = c.(*http.Client).Get, "https://"+admin+"/metrics"
	}
	resp, err := get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// adminScrapers are the mTLS clients scrape uses, by admin address, for
// proxies whose admin port refuses plaintext clients.
var adminScrapers sync.Map

// meshedScraper makes scrape read p's admin port over mTLS as a meshed
// client (ns/sa of svc's mesh), which an authenticated policy admits.
func meshedScraper(t *testing.T, svc *tlsidtest.Service, p *testProxy, ns, sa string) *http.Client {
	t.Helper()
	cfg := svc.Identity(t, ns, sa).ClientConfig(p.cfg.Identity.ID(), "http/1.1")
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	adminScrapers.Store(p.admin, c)
	t.Cleanup(func() { adminScrapers.Delete(p.admin); c.CloseIdleConnections() })
	return c
}

// metricSum adds the values of every series of name whose labels include
// want. Counters and gauges add their value, histograms their sample count.
// The second result is how many series matched.
func metricSum(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, int) {
	f, ok := fams[name]
	if !ok {
		return 0, 0
	}
	var sum float64
	n := 0
series:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue series
			}
		}
		n++
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum, n
}

func labels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// eventually polls cond every 10ms until it holds or the deadline passes.
// It is for state that settles asynchronously (a connection's close being
// counted); it never measures time.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still false after %d polls", what, i)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tally counts string occurrences concurrently.
type tally struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *tally) add(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[k]++
}

func (c *tally) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

func (c *tally) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprint(c.m)
}

// assertEven checks that names shared total picks equally, which is what a
// round-robin balancer does when every request (or connection) is balanced
// on its own.
func assertEven(t *testing.T, c *tally, total int, names ...string) {
	t.Helper()
	for _, n := range names {
		if got, want := c.get(n), total/len(names); got != want {
			t.Errorf("%s served %d of %d, want %d; distribution %v", n, got, total, want, c)
		}
	}
}

// tcpBackend runs serve for each accepted connection until the test ends.
type tcpBackend struct {
	addr string
	ln   net.Listener
	mu   sync.Mutex
	cs   map[net.Conn]struct{}
	wg   sync.WaitGroup
}

func startTCP(t *testing.T, serve func(net.Conn)) *tcpBackend {
	t.Helper()
	ln := loopbackListener(t)
	b := &tcpBackend{addr: ln.Addr().String(), ln: ln, cs: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.cs[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
	t.Cleanup(b.close)
	return b
}

func (b *tcpBackend) close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.cs {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// dialTCP connects to addr with a deadline covering the whole exchange.
func dialTCP(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func sleepPoll() { time.Sleep(10 * time.Millisecond) }

// syncBuffer is a bytes.Buffer that a proxy's logger and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
