package sidecar

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// expectMetric waits until the proxy's /metrics shows want for the series
// matching lbls (responses are counted when their body ends, which can be a
// moment after the client has read the last byte).
func expectMetric(t *testing.T, admin, name string, lbls map[string]string, want float64) {
	t.Helper()
	var got float64
	var fams map[string]*dto.MetricFamily
	ok := false
	for i := 0; i < 200 && !ok; i++ {
		if i > 0 {
			sleepPoll()
		}
		fams = scrape(t, admin)
		got, _ = metricSum(fams, name, lbls)
		ok = got == want
	}
	if !ok {
		t.Errorf("%s%v = %v, want %v\n%s", name, lbls, got, want, dumpFamily(fams, name))
	}
}

func dumpFamily(fams map[string]*dto.MetricFamily, name string) string {
	f, ok := fams[name]
	if !ok {
		return "(no such metric)"
	}
	var b strings.Builder
	for _, m := range f.GetMetric() {
		var kv []string
		for _, lp := range m.GetLabel() {
			kv = append(kv, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
		}
		v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		fmt.Fprintf(&b, "  %s{%s} %v\n", name, strings.Join(kv, ","), v)
	}
	return b.String()
}

// The golden metrics after known traffic, read the way Prometheus reads
// them: over HTTP from the admin server, in the text format.
func TestMetrics(t *testing.T) {
	ctx := testContext(t)
	app := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "fine")
	}))
	g := startGRPC(t, "grpc")
	g.unary = func(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		if string(req.GetPayload().GetBody()) == "missing" {
			return nil, status.Error(codes.NotFound, "missing")
		}
		return &testgrpc.SimpleResponse{}, nil
	}
	webB := startProxy(t, Config{InboundForward: app.addr})
	grpcB := startProxy(t, Config{InboundForward: g.addr})
	a := clientProxy(t, dst("web.test:80", webB.in), dst("grpc.test:80", grpcB.in))

	client, _ := h1Client(t, a.out)
	for _, path := range []string{"/ok", "/ok", "/ok", "/fail", "/fail"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://web.test"+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	gc, _ := grpcClient(t, a.out, "grpc.test:80")
	for _, body := range []string{"a", "b", "missing", "c", "missing", "d"} {
		_, err := gc.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte(body)}})
		if want := codes.OK; body == "missing" {
			if status.Code(err) != codes.NotFound {
				t.Fatalf("UnaryCall(%s): %v, want NOT_FOUND", body, err)
			}
		} else if status.Code(err) != want {
			t.Fatalf("UnaryCall(%s): %v", body, err)
		}
	}

	web := func(kv ...string) map[string]string {
		return labels(append([]string{"direction", "outbound", "authority", "web.test:80", "target_addr", webB.in}, kv...)...)
	}
	grpcs := func(kv ...string) map[string]string {
		return labels(append([]string{"direction", "outbound", "authority", "grpc.test:80", "target_addr", grpcB.in}, kv...)...)
	}
	expectMetric(t, a.admin, "request_total", web(), 5)
	expectMetric(t, a.admin, "response_total", web("classification", "success", "status_code", "200", "grpc_status", "", "error", ""), 3)
	expectMetric(t, a.admin, "response_total", web("classification", "failure", "status_code", "500", "grpc_status", ""), 2)
	expectMetric(t, a.admin, "response_latency_ms", web(), 5)
	expectMetric(t, a.admin, "response_latency_ms", web("status_code", "500"), 2)

	expectMetric(t, a.admin, "request_total", grpcs(), 6)
	expectMetric(t, a.admin, "response_total", grpcs("classification", "success", "status_code", "200", "grpc_status", "0"), 4)
	expectMetric(t, a.admin, "response_total", grpcs("classification", "failure", "status_code", "200", "grpc_status", "5"), 2)
	expectMetric(t, a.admin, "response_latency_ms", grpcs(), 6)

	// The server side sees the same requests inbound, addressed to the app.
	expectMetric(t, webB.admin, "request_total", labels("direction", "inbound", "target_addr", app.addr), 5)
	expectMetric(t, webB.admin, "response_total", labels("direction", "inbound", "classification", "failure", "status_code", "500"), 2)
	expectMetric(t, grpcB.admin, "response_total", labels("direction", "inbound", "classification", "failure", "grpc_status", "5"), 2)
	expectMetric(t, grpcB.admin, "response_total", labels("direction", "inbound", "classification", "success", "grpc_status", "0"), 4)
	// The client's two connections (HTTP/1, gRPC) were accepted outbound.
	expectMetric(t, a.admin, "tcp_open_total", labels("direction", "outbound", "peer", "src", "target_addr", ""), 2)
}

// TCP metrics of one opaque connection: opened and closed on both sides,
// with the bytes each way.
func TestTCPMetrics(t *testing.T) {
	echo := startTCP(t, func(c net.Conn) { io.Copy(c, c) })
	a := startProxy(t, Config{OrigDst: fixedOrigDst(echo.addr)})

	c := dialTCP(t, a.out)
	payload := make([]byte, 10000) // starts with a zero byte: not HTTP
	if err := writeFrame(c, payload); err != nil {
		t.Fatal(err)
	}
	if _, err := readFrame(c); err != nil {
		t.Fatal(err)
	}
	const n = 4 + 10000
	// Without an identity every connection says so.
	src := labels("direction", "outbound", "peer", "src", "target_addr", "", "tls", "no_local_identity", "client_id", "", "server_id", "")
	dst := labels("direction", "outbound", "peer", "dst", "target_addr", echo.addr, "tls", "no_local_identity", "client_id", "", "server_id", "")
	for _, l := range []map[string]string{src, dst} {
		expectMetric(t, a.admin, "tcp_open_total", l, 1)
		expectMetric(t, a.admin, "tcp_open_connections", l, 1)
		expectMetric(t, a.admin, "tcp_read_bytes_total", l, n)
		expectMetric(t, a.admin, "tcp_write_bytes_total", l, n)
	}
	c.Close()
	for _, l := range []map[string]string{src, dst} {
		expectMetric(t, a.admin, "tcp_close_total", l, 1)
		expectMetric(t, a.admin, "tcp_open_connections", l, 0)
	}
	expectMetric(t, a.admin, "tcp_close_total", labels("classification", "success"), 2)
	if _, n := metricSum(scrape(t, a.admin), "tcp_open_total", nil); n != 2 {
		t.Errorf("tcp_open_total has %d series, want 2\n%s", n, dumpFamily(scrape(t, a.admin), "tcp_open_total"))
	}
}

// The admin server's probes.
func TestAdminEndpoints(t *testing.T) {
	a := startProxy(t, Config{})
	for _, path := range []string{"/ready", "/live"} {
		resp, err := http.Get("http://" + a.admin + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s, want 200", path, resp.Status)
		}
	}
	fams := scrape(t, a.admin)
	for _, name := range []string{"request_total", "response_total", "response_latency_ms", "endpoint_unavailable_total",
		"tcp_open_total", "tcp_close_total", "tcp_open_connections", "tcp_read_bytes_total", "tcp_write_bytes_total"} {
		if f, ok := fams[name]; ok && len(f.GetMetric()) > 0 {
			t.Errorf("%s has series before any traffic", name)
		}
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("the Go runtime collector is missing from /metrics")
	}
}
