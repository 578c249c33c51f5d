package sidecar

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
)

// Issue 10: a replica that fails fast must not draw the traffic. Two
// replicas, each behind its own inbound sidecar; one fails. A client sends
// a bounded run of requests through its sidecar; once the failing replica is
// ejected the healthy one serves nearly everything, and the ejection is
// counted with its reason.

const (
	accrualRequests = 400
	accrualTail     = 200 // the requests judged: all after the ejection
	accrualWorkers  = 8
)

// sendAll sends n requests from accrualWorkers concurrent clients (bounded
// by the test's context) and returns each one's success in the order they
// ended. Concurrency matters: with requests in flight on the healthy replica
// its load rises and P2C tries the failing one now and then, as it does
// under real traffic; one request at a time, the failing replica's first
// failure alone would keep it out for seconds and it would never be ejected.
func sendAll(ctx context.Context, t *testing.T, n int, send func() bool) []bool {
	t.Helper()
	var mu sync.Mutex
	var ok []bool
	var next atomic.Int64
	var wg sync.WaitGroup
	for range accrualWorkers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				o := send()
				mu.Lock()
				ok = append(ok, o)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(ok) < n {
		t.Fatalf("only %d of %d requests within the test's time", len(ok), n)
	}
	return ok
}

// sendUntilEjected sends rounds of accrualRequests until the client's proxy
// has counted an ejection of authority (at most 10 rounds) and returns the
// last round's results. One round is usually enough; but when a few fast
// failures happen to be slow ones on a loaded machine, the failure weighting
// alone keeps the failing replica out of the P2C comparisons for seconds
// (no traffic, so no five failures in a row yet), and it is ejected only
// once its penalty has decayed and it is tried again.
func sendUntilEjected(ctx context.Context, t *testing.T, client *testProxy, authority string, send func() bool) []bool {
	t.Helper()
	var ok []bool
	for range 10 {
		ok = sendAll(ctx, t, accrualRequests, send)
		if v, _ := metricSum(scrape(t, client.admin), "endpoint_ejections_total", labels("direction", "outbound", "authority", authority)); v >= 1 {
			break
		}
	}
	return ok
}

// assertTail checks that the last accrualTail requests succeeded (99%: one
// probe of the ejected replica may fail among them) and that the client's
// proxy counted an ejection of authority for reason.
func assertTail(t *testing.T, ok []bool, client *testProxy, authority, reason string) {
	t.Helper()
	failed := 0
	for _, o := range ok[len(ok)-accrualTail:] {
		if !o {
			failed++
		}
	}
	if failed > accrualTail/100 {
		t.Errorf("%d of the last %d requests failed, want ≤ %d (the failing replica ejected)", failed, accrualTail, accrualTail/100)
	}
	fams := scrape(t, client.admin)
	if v, _ := metricSum(fams, "endpoint_ejections_total", labels("direction", "outbound", "authority", authority, "reason", reason)); v < 1 {
		t.Errorf("endpoint_ejections_total{authority=%s,reason=%s} = %v, want ≥ 1", authority, reason, v)
	}
	// Ejected now, or being probed: the second ejection lasts 2s and more.
	if v, _ := metricSum(fams, "endpoint_ejected", labels("direction", "outbound", "authority", authority)); v != 1 {
		t.Errorf("endpoint_ejected{authority=%s} = %v, want 1", authority, v)
	}
}

func httpSender(ctx context.Context, t *testing.T, client *http.Client, url string, served *tally) func() bool {
	return func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			served.add("error")
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		served.add(resp.Header.Get("X-Server"))
		return resp.StatusCode == http.StatusOK
	}
}

// One replica answers 500 at once. Counted as a fast response it drew 93%
// of the requests.
func TestReplicaAnswering500IsEjected(t *testing.T) {
	ctx := testContext(t)
	good := startHTTP(t, named("good"))
	bad := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Server", "bad")
		http.Error(w, "broken", http.StatusInternalServerError)
	}))
	a := clientProxy(t, dst("web.test:80", serverSidecars(t, good.addr, bad.addr)...))
	client, _ := h2cClient(t, a.out)
	var served tally
	ok := sendUntilEjected(ctx, t, a, "web.test:80", httpSender(ctx, t, client, "http://web.test/", &served))
	t.Logf("served: %v", &served)
	assertTail(t, ok, a, "web.test:80", "5xx")
}

// One replica's application is killed while its inbound proxy stays up and
// answers 503 for it. With both replicas registered, 100% of requests
// failed from about 9s on. Its proxy also stops reporting ready.
func TestReplicaWithDeadAppIsEjected(t *testing.T) {
	ctx := testContext(t)
	good := startHTTP(t, named("good"))
	bad := startHTTP(t, named("bad"))
	goodIn := startProxy(t, Config{InboundForward: good.addr})
	badIn := startProxy(t, Config{InboundForward: bad.addr})
	a := clientProxy(t, dst("web.test:80", goodIn.in, badIn.in))
	client, _ := h2cClient(t, a.out)
	var served tally
	send := httpSender(ctx, t, client, "http://web.test/", &served)
	for range 50 { // both replicas warm
		if !send() {
			t.Fatal("warm-up request failed")
		}
	}
	if served.get("bad") == 0 {
		t.Fatalf("warm-up never reached the second replica: %v", &served)
	}
	bad.kill()
	ok := sendUntilEjected(ctx, t, a, "web.test:80", send)
	t.Logf("served: %v", &served)
	assertTail(t, ok, a, "web.test:80", "app_unavailable")
	if isReady(badIn.admin) {
		t.Errorf("the dead application's proxy still reports ready")
	}
	if !isReady(goodIn.admin) {
		t.Errorf("the healthy application's proxy reports not ready")
	}
}

// gRPC servers report failure in grpc-status, not in the HTTP status (200):
// in a trailers-only response (an error before anything was sent), or in
// the trailers after the response headers.
func TestReplicaAnsweringGRPCUnavailableIsEjected(t *testing.T) {
	for _, trailersOnly := range []bool{true, false} {
		name := map[bool]string{true: "trailers-only", false: "trailers"}[trailersOnly]
		t.Run(name, func(t *testing.T) {
			ctx := testContext(t)
			good := startGRPC(t, "good")
			bad := startGRPC(t, "bad")
			bad.unary = func(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
				if !trailersOnly {
					if err := grpc.SendHeader(ctx, metadata.Pairs("x-server", "bad")); err != nil {
						return nil, err
					}
				}
				return nil, status.Error(codes.Unavailable, "overloaded")
			}
			a := clientProxy(t, dst("grpc.test:80", serverSidecars(t, good.addr, bad.addr)...))
			client, _ := grpcClient(t, a.out, "grpc.test:80")
			var served tally
			ok := sendUntilEjected(ctx, t, a, "grpc.test:80", func() bool {
				resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
				if err != nil {
					served.add(status.Code(err).String())
					return false
				}
				served.add(resp.GetServerId())
				return true
			})
			t.Logf("served: %v", &served)
			assertTail(t, ok, a, "grpc.test:80", "grpc")
		})
	}
}

// Requests their clients cancel say nothing about the endpoint: an endpoint
// whose every request is cancelled (slow, and the clients impatient) is not
// ejected. Its slowness is the latency estimate's business.
func TestClientCancellationsDoNotEject(t *testing.T) {
	ctx := testContext(t)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	a := clientProxy(t, dst("slow.test:80", serverSidecars(t, startHTTP(t, slow).addr, startHTTP(t, slow).addr)...))
	client, _ := h2cClient(t, a.out)
	for range 20 {
		rctx, cancel := context.WithCancel(ctx)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://slow.test/", nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		// Cancel once the request is in flight at the client proxy.
		eventually(t, "request in flight", func() bool {
			v, _ := metricSum(scrape(t, a.admin), "request_in_flight", labels("direction", "outbound"))
			return v == 1
		})
		cancel()
		<-done
		eventually(t, "request ended", func() bool {
			v, _ := metricSum(scrape(t, a.admin), "request_in_flight", labels("direction", "outbound"))
			return v == 0
		})
	}
	if v, _ := metricSum(scrape(t, a.admin), "endpoint_ejections_total", nil); v != 0 {
		t.Errorf("endpoint_ejections_total = %v after client cancellations, want 0", v)
	}
}

func isReady(admin string) bool { return ready(admin) == http.StatusOK }

// The inbound proxy's readiness follows its application: false once a
// connection to it is refused, true again once the probe connects. A port
// that never accepted a connection (nothing was ever served there) does not
// count: a scan of the pod's ports must not take it out of service.
func TestInboundReadinessFollowsApp(t *testing.T) {
	ctx := testContext(t)
	app := startHTTP(t, named("app"))
	addr := app.addr
	closed := loopbackListener(t).Addr().String()
	in := startProxy(t, Config{InboundForward: addr, AppProbeInterval: 20 * time.Millisecond})
	in.app.observe(closed, syscall.ECONNREFUSED) // as a redirected connection to a closed port
	if !isReady(in.admin) {
		t.Fatal("a port that never served made the proxy not ready")
	}
	client, _ := h1Client(t, in.in)
	get := func() int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://app.test/", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := get(); s != http.StatusOK || !isReady(in.admin) {
		t.Fatalf("status %d, ready %v; want 200 and ready", s, isReady(in.admin))
	}
	up, changed := in.AppReady()
	if !up {
		t.Fatal("AppReady false with the application up")
	}
	app.kill()
	if s := get(); s != http.StatusServiceUnavailable {
		t.Fatalf("status %d with the application down, want 503", s)
	}
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("AppReady did not signal the change")
	}
	if isReady(in.admin) {
		t.Fatal("ready while the application refuses connections")
	}
	// Each refused connect grows the inbound side's backoff (100ms, 200ms,
	// 400ms...); three of them put it near a second.
	connects := 0
	eventually(t, "three refused connects", func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://app.test/", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Header.Get(httpproxy.ErrorHeader) == "connect" {
			connects++
		}
		return connects >= 3
	})
	// The application comes back on its address; the probe sees it.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	srv := &http.Server{Handler: named("app"), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	eventually(t, "ready once the application listens again", func() bool { return isReady(in.admin) })
	// Ready means served: the backoff of the refused connects is over.
	if s := get(); s != http.StatusOK {
		t.Errorf("status %d once ready again, want 200", s)
	}
	if up, _ := in.AppReady(); !up {
		t.Error("AppReady false after the application came back")
	}
}
