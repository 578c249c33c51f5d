package sidecar

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
)

// loopWait bounds each looping request: a proxy that forwards a request to
// itself never answers (it runs out of file descriptors first), and the
// test must fail rather than hang.
const loopWait = 5 * time.Second

// openFDs counts the test process's open file descriptors: the proxies run
// in it, so a request that loops shows as a pile of connections.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// fdsSettle waits until the open descriptors are back near before: the
// refused requests' connections are closed, and nothing else was opened.
func fdsSettle(t *testing.T, before int) {
	t.Helper()
	const slack = 16 // the runtime's own (netpoll, a scrape's connection in TIME_WAIT is no fd)
	eventually(t, "open file descriptors back to where they were", func() bool { return openFDs(t) <= before+slack })
}

// expectLoop checks an HTTP answer to a looping request: 508, marked as the
// proxy's own.
func expectLoop(t *testing.T, resp *http.Response, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("a request to the proxy itself: %v, want 508 at once", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusLoopDetected || resp.Header.Get(httpproxy.ErrorHeader) != "loop" {
		t.Fatalf("a request to the proxy itself: %s %s=%q %q, want 508 loop", resp.Status, httpproxy.ErrorHeader, resp.Header.Get(httpproxy.ErrorHeader), body)
	}
}

func shortClient(c *http.Client) *http.Client { c.Timeout = loopWait; return c }

// A request whose target is the outbound proxy's own listener (Host,
// :authority, absolute-form URI, Meridian-Dst-Override; a gRPC client
// dialled at the proxy without an authority, as grpc-go's ORCA stream is)
// is answered 508 (gRPC FAILED_PRECONDITION) at once and counted, instead
// of being forwarded to the proxy again until its descriptors run out.
func TestLoopToOwnListenerRefused(t *testing.T) {
	ctx := testContext(t)
	p := startProxy(t, Config{})
	before := openFDs(t)

	for _, target := range []string{p.out, p.in, p.admin} {
		c, _ := h1Client(t, p.out)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+target+"/", nil)
		resp, err := shortClient(c).Do(req)
		expectLoop(t, resp, err)
	}

	t.Run("h2c", func(t *testing.T) {
		c, _ := h2cClient(t, p.out)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.out+"/", strings.NewReader("body"))
		resp, err := shortClient(c).Do(req)
		expectLoop(t, resp, err)
	})
	t.Run("dst-override", func(t *testing.T) {
		c, _ := h1Client(t, p.out)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://elsewhere.test/", nil)
		req.Header.Set(httpproxy.DstOverrideHeader, p.out)
		resp, err := shortClient(c).Do(req)
		expectLoop(t, resp, err)
	})
	t.Run("absolute-form", func(t *testing.T) {
		c := dialTCP(t, p.out)
		c.SetDeadline(time.Now().Add(loopWait))
		if _, err := io.WriteString(c, "GET http://"+p.out+"/x HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		expectLoop(t, resp, err)
		c.Close()
	})
	t.Run("grpc-authority", func(t *testing.T) {
		cc, err := grpc.NewClient("passthrough:///"+p.out, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		callCtx, cancel := context.WithTimeout(ctx, loopWait)
		defer cancel()
		_, err = testgrpc.NewTestServiceClient(cc).UnaryCall(callCtx, &testgrpc.SimpleRequest{})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "loop") {
			t.Fatalf("gRPC call with the proxy as authority: %v, want FAILED_PRECONDITION loop", err)
		}
	})
	expectMetric(t, p.admin, "endpoint_unavailable_total", labels("direction", "outbound", "reason", "loop"), 7)
	fdsSettle(t, before)
}

// A connection whose original destination is the listener it arrived on
// (a client dialling the proxy's port itself: conntrack then gives the
// listener's own address) is refused on both sides, as HTTP (508) and as
// an opaque stream (closed at once), instead of being forwarded to itself.
func TestLoopToOrigDstRefused(t *testing.T) {
	ctx := testContext(t)
	own := func(c net.Conn) (netip.AddrPort, error) { return netip.ParseAddrPort(c.LocalAddr().String()) }
	p := startProxy(t, Config{OrigDst: own})
	before := openFDs(t)
	for _, addr := range []string{p.out, p.in} {
		c, _ := h1Client(t, addr)
		// A name nobody knows: the original destination decides.
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://unknown.test/", nil)
		resp, err := shortClient(c).Do(req)
		expectLoop(t, resp, err)

		// Not HTTP: detected as opaque, and closed at once.
		tc := dialTCP(t, addr)
		tc.SetDeadline(time.Now().Add(loopWait))
		if _, err := io.WriteString(tc, "\x00\x01 not http\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if n, err := tc.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("%s: an opaque connection to the proxy itself: read %d, %v; want it closed at once", addr, n, err)
		}
		tc.Close()
	}
	expectMetric(t, p.admin, "endpoint_unavailable_total", labels("reason", "loop"), 4)
	fdsSettle(t, before)
}

// A loop the address check cannot see (a name whose endpoint is the proxy's
// own outbound listener) comes back marked with the proxy's instance ID
// (Meridian-Hop) and is refused on its second pass.
func TestLoopSecondPassRefused(t *testing.T) {
	ctx := testContext(t)
	r := staticResolver(t)
	p := startProxy(t, Config{Resolver: r})
	if err := r.Set([]discover.Destination{dst("loop.test:80", p.out)}); err != nil {
		t.Fatal(err)
	}
	before := openFDs(t)
	for _, mk := range []func(*testing.T, string) (*http.Client, *countingDialer){h1Client, h2cClient} {
		c, _ := mk(t, p.out)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://loop.test/", nil)
		resp, err := shortClient(c).Do(req)
		expectLoop(t, resp, err)
	}
	expectMetric(t, p.admin, "endpoint_unavailable_total", labels("direction", "outbound", "authority", "loop.test:80", "reason", "loop"), 2)
	fdsSettle(t, before)
}

// The hop mark never reaches an application: one that copies its request's
// headers onto its own calls (A→B→A) would otherwise be refused as a loop.
func TestHopHeaderStrippedInbound(t *testing.T) {
	ctx := testContext(t)
	seen := make(chan []string, 1)
	app := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Values(HopHeader)
	}))
	a := clientProxy(t, dst("web.test:80", serverSidecars(t, app.addr)...))
	c, _ := h1Client(t, a.out)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://web.test/", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	if h := <-seen; len(h) != 0 {
		t.Fatalf("the application saw %s: %q", HopHeader, h)
	}
}

// Nor does it reach this pod's own application when the outbound side
// sends it there directly (an endpoint that is this pod), with no inbound
// proxy on the way to remove it.
func TestHopHeaderNotSentToOwnPod(t *testing.T) {
	ctx := testContext(t)
	seen := make(chan []string, 1)
	app := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Values(HopHeader)
	}))
	p := startProxy(t, Config{Resolver: staticResolver(t, dst("self.test:80", app.addr)),
		LocalIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
	c, _ := h1Client(t, p.out)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://self.test/", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	if h := <-seen; len(h) != 0 {
		t.Fatalf("this pod's application saw %s: %q", HopHeader, h)
	}
}
