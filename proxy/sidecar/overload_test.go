package sidecar

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
)

// With MaxInFlight requests held by a slow application, the next one is
// refused at once, in its own protocol (503, gRPC UNAVAILABLE), and
// counted; when the held ones finish, requests flow again.
func TestMaxInFlightSheds(t *testing.T) {
	app := startGRPC(t, "slow")
	release := make(chan struct{})
	arrived := make(chan struct{}, 8)
	app.unary = func(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		if string(req.GetPayload().GetBody()) == "hold" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return &testgrpc.SimpleResponse{ServerId: "slow"}, nil
	}
	p := startProxy(t, Config{InboundForward: app.addr, MaxInFlight: 2})
	client, _ := grpcClient(t, p.in, "slow.test:80")
	ctx := testContext(t)
	call := func(body string) error {
		_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte(body)}})
		return err
	}

	var held sync.WaitGroup
	heldErrs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		held.Add(1)
		go func() { defer held.Done(); heldErrs <- call("hold") }()
	}
	for i := 0; i < 2; i++ {
		select {
		case <-arrived:
		case <-ctx.Done():
			t.Fatal("the held calls did not reach the application")
		}
	}
	expectMetric(t, p.admin, "request_in_flight", labels("direction", "inbound"), 2)

	// A third gRPC call, and an HTTP/1 request: refused, not queued.
	err := call("now")
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "max_in_flight") {
		t.Fatalf("gRPC call beyond the limit: %v, want UNAVAILABLE max_in_flight", err)
	}
	h1, _ := h1Client(t, p.in)
	resp, err := h1.Get("http://slow.test:80/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(httpproxy.ErrorHeader) != "max_in_flight" {
		t.Fatalf("HTTP/1 beyond the limit: %d %s %q", resp.StatusCode, resp.Header.Get(httpproxy.ErrorHeader), body)
	}
	expectMetric(t, p.admin, "request_shed_total", labels("direction", "inbound"), 2)

	close(release)
	held.Wait()
	close(heldErrs)
	for err := range heldErrs {
		if err != nil {
			t.Fatalf("a held call failed: %v", err)
		}
	}
	if err := call("after"); err != nil {
		t.Fatalf("after the held calls ended: %v", err)
	}
	expectMetric(t, p.admin, "request_in_flight", labels("direction", "inbound"), 0)
	expectMetric(t, p.admin, "request_shed_total", labels("direction", "inbound"), 2)
}
