package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/meridian-mesh/meridian/proxy/balance"
)

// streamingApp answers / with its name, and /stream with a first chunk and
// then nothing until it is killed.
func streamingApp(name string, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Server", name)
		if r.URL.Path != "/stream" {
			io.WriteString(w, "ok from "+name)
			return
		}
		io.WriteString(w, "part 1\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
}

// An endpoint that dies in the middle of a streamed HTTP/1 response: the
// client sees the body fail (not a clean, short end), the response counts
// as a failure, and later requests go to the endpoints left. The client
// speaks HTTP/1.1 or HTTP/2 (h2c) to the proxy: either way its stream
// is aborted, never ended as if complete.
func TestHTTPEndpointDiesMidStream(t *testing.T) {
	for _, proto := range []string{"http1", "h2c"} {
		t.Run(proto, func(t *testing.T) { testEndpointDiesMidStream(t, proto) })
	}
}

func testEndpointDiesMidStream(t *testing.T, proto string) {
	ctx := testContext(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	apps := map[string]*httpBackend{}
	var eps []string
	for i := range 3 {
		name := fmt.Sprintf("web-%d", i)
		apps[name] = startHTTP(t, streamingApp(name, release))
		eps = append(eps, apps[name].addr)
	}
	a := clientProxy(t, dst("web.test:80", eps...))
	client, _ := h1Client(t, a.out)
	if proto == "h2c" {
		client, _ = h2cClient(t, a.out)
	}
	get := func(path string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://web.test"+path, nil)
		return client.Do(req)
	}
	for i := range 30 { // every endpoint has pooled connections
		resp, err := get("/")
		if err != nil {
			t.Fatalf("warm-up %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	resp, err := get("/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	victim := resp.Header.Get("X-Server")
	r := bufio.NewReader(resp.Body)
	if line, err := r.ReadString('\n'); err != nil || line != "part 1\n" {
		t.Fatalf("first chunk %q, %v", line, err)
	}
	apps[victim].kill()
	rest, err := io.ReadAll(r)
	if err == nil {
		t.Fatalf("the stream from a killed endpoint ended cleanly (%q); want a truncation error", rest)
	}
	t.Logf("killed %s; the client's read failed with %v", victim, err)

	for i := range 60 {
		resp, err := get("/")
		if err != nil {
			t.Fatalf("request %d after the kill: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d after the kill: %s %q", i, resp.Status, body)
		}
		if s := resp.Header.Get("X-Server"); s == victim {
			t.Fatalf("request %d was served by the killed %s", i, victim)
		}
	}

	fams := scrape(t, a.admin)
	if v, _ := metricSum(fams, "response_total", labels("direction", "outbound", "target_addr", apps[victim].addr,
		"classification", "failure", "status_code", "200", "error", "stream")); v != 1 {
		t.Errorf("response_total for the broken stream = %v, want 1 failure", v)
	}
}

// The same for a gRPC stream: the client gets an error status, not a hang,
// and new calls succeed on the servers left.
func TestGRPCEndpointDiesMidStream(t *testing.T) {
	ctx := testContext(t)
	backends := map[string]*grpcBackend{}
	var eps []string
	for i := range 3 {
		b := startGRPC(t, fmt.Sprintf("grpc-%d", i))
		backends[b.name] = b
		eps = append(eps, b.addr)
	}
	a := clientProxy(t, dst("grpc.test:80", eps...))
	client, _ := grpcClient(t, a.out, "grpc.test:80")
	for i := range 30 {
		if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
			t.Fatalf("warm-up %d: %v", i, err)
		}
	}

	stream, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("hi")}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	victim, _, _ := cutColon(string(resp.GetPayload().GetBody()))
	backends[victim].srv.Stop() // closes its listener and every connection
	_, err = stream.Recv()
	if code := status.Code(err); code == codes.OK || code == codes.DeadlineExceeded {
		t.Fatalf("stream from a killed server ended with %v; want an error status", err)
	}
	t.Logf("killed %s; the stream failed with %v", victim, err)

	for i := range 60 {
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		if err != nil {
			t.Fatalf("call %d after the kill: %v", i, err)
		}
		if resp.GetServerId() == victim {
			t.Fatalf("call %d was served by the killed %s", i, victim)
		}
	}
	fams := scrape(t, a.admin)
	if v, _ := metricSum(fams, "response_total", labels("direction", "outbound", "target_addr", backends[victim].addr,
		"classification", "failure", "error", "stream")); v != 1 {
		t.Errorf("response_total for the broken stream = %v, want 1 failure", v)
	}
}

// deadAddr is a loopback address that refuses connections.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln := loopbackListener(t)
	ln.Close()
	return ln.Addr().String()
}

// A request whose endpoint refuses the connection is sent to another one,
// body and all, and the dead endpoint is skipped afterwards.
func TestConnectFailureIsRetried(t *testing.T) {
	for _, proto := range []string{"http1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			ctx := testContext(t)
			dead := deadAddr(t)
			live := startHTTP(t, named("live"))
			a := roundRobinProxy(t, dst("web.test:80", dead, live.addr))
			client, _ := h1Client(t, a.out)
			if proto == "h2c" {
				client, _ = h2cClient(t, a.out)
			}
			const total = 10
			for i := range total {
				body := strings.Repeat(fmt.Sprintf("body %d;", i), 1000)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://web.test/", strings.NewReader(body))
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(got) != body {
					t.Fatalf("request %d: %s, %d-byte body (want %d)", i, resp.Status, len(got), len(body))
				}
			}
			fams := scrape(t, a.admin)
			// The loops dial an HTTP/2 endpoint ahead of its streams (the
			// first goes to the goroutine path meanwhile): a refused dial
			// fails no request there, the balancer backs the endpoint off.
			relayed := proto == "h2c" && (loopEnv == "1" || loopEnv == "hold")
			if v, _ := metricSum(fams, "response_total", labels("target_addr", dead, "classification", "failure", "error", "connect")); v < 1 && !relayed {
				t.Errorf("no connect failure was counted for the dead endpoint:\n%s", dumpFamily(fams, "response_total"))
			}
			if v, _ := metricSum(fams, "response_total", labels("target_addr", live.addr, "classification", "success")); v != total {
				t.Errorf("response_total{live, success} = %v, want %d", v, total)
			}
		})
	}
}

// Opaque connections: a refused endpoint is skipped for another, and a
// destination without endpoints closes the connection and is counted.
func TestOpaqueConnectFailure(t *testing.T) {
	live := startTCP(t, func(c net.Conn) { io.Copy(c, c) })
	kv := dst("kv.test:6379", deadAddr(t), live.addr)
	kv.Addresses = []string{vip}
	empty := dst("empty.test:6379")
	empty.Addresses = []string{"127.0.0.252:6379"}
	r := staticResolver(t, kv, empty)

	a := startProxy(t, Config{Resolver: r, OrigDst: fixedOrigDst(vip), Balancer: balance.RoundRobin})
	for i := range 5 {
		c := dialTCP(t, a.out)
		writeFrame(c, []byte("ping"))
		if got, err := readFrame(c); err != nil || string(got) != "ping" {
			t.Fatalf("connection %d: %q, %v", i, got, err)
		}
		c.Close()
	}

	e := startProxy(t, Config{Resolver: r, OrigDst: fixedOrigDst("127.0.0.252:6379")})
	c := dialTCP(t, e.out)
	writeFrame(c, []byte("ping"))
	if got, err := io.ReadAll(c); err != nil || len(got) != 0 {
		t.Fatalf("a connection to a destination without endpoints got %q, %v; want it closed", got, err)
	}
	expectMetric(t, e.admin, "endpoint_unavailable_total", labels("direction", "outbound", "authority", "empty.test:6379", "reason", "no_endpoints"), 1)
}

// Opaque connections whose only endpoint refuses: the connection is
// closed, and once the endpoint is in backoff the stream is counted as
// unavailable (the same reason an HTTP request gets).
func TestOpaqueOnlyEndpointRefuses(t *testing.T) {
	down := dst("down.test:6379", deadAddr(t))
	down.Addresses = []string{"127.0.0.251:6379"}
	p := startProxy(t, Config{Resolver: staticResolver(t, down), OrigDst: fixedOrigDst("127.0.0.251:6379")})
	c := dialTCP(t, p.out)
	writeFrame(c, []byte("ping"))
	if got, err := io.ReadAll(c); err != nil || len(got) != 0 {
		t.Fatalf("a connection whose only endpoint refuses got %q, %v; want it closed", got, err)
	}
	expectMetric(t, p.admin, "endpoint_unavailable_total", labels("direction", "outbound", "authority", "down.test:6379", "reason", "unavailable"), 1)
}
