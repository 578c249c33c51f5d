package sidecar

import (
	"context"
	"io"
	"net/http"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
)

// An application's gRPC error status, including a trailers-only response
// (an error before any message), reaches the client unchanged.
func TestGRPCErrorStatusPassesThrough(t *testing.T) {
	ctx := testContext(t)
	b := startGRPC(t, "grpc")
	b.unary = func(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		grpc.SetTrailer(ctx, metadata.Pairs("x-why", "no such thing"))
		return nil, status.Error(codes.NotFound, "thing "+string(req.GetPayload().GetBody())+" not found")
	}
	a := clientProxy(t, dst("grpc.test:80", serverSidecars(t, b.addr)...))
	client, _ := grpcClient(t, a.out, "grpc.test:80")
	for i := range 20 {
		var trailer metadata.MD
		_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("x")}}, grpc.Trailer(&trailer))
		st := status.Convert(err)
		if st.Code() != codes.NotFound || st.Message() != "thing x not found" {
			t.Fatalf("call %d: %v, want NOT_FOUND: thing x not found", i, err)
		}
		if v := trailer.Get("x-why"); len(v) != 1 || v[0] != "no such thing" {
			t.Fatalf("call %d: trailer x-why %q", i, v)
		}
	}
}

// A destination without endpoints fails fast with 503 (UNAVAILABLE for
// gRPC), marked as the proxy's answer, and is counted.
func TestNoEndpoints(t *testing.T) {
	ctx := testContext(t)
	a := clientProxy(t, dst("empty.test:80"))

	t.Run("http", func(t *testing.T) {
		client, _ := h1Client(t, a.out)
		for _, host := range []string{"empty.test", "unknown.test"} {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/", nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("%s: %s, want 503", host, resp.Status)
			}
			if resp.Header.Get(httpproxy.ErrorHeader) == "" {
				t.Errorf("%s: no %s header on the proxy's answer", host, httpproxy.ErrorHeader)
			}
		}
	})
	t.Run("grpc", func(t *testing.T) {
		client, _ := grpcClient(t, a.out, "empty.test:80")
		_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Errorf("call: %v, want UNAVAILABLE", err)
		}
	})

	fams := scrape(t, a.admin)
	if v, _ := metricSum(fams, "endpoint_unavailable_total", labels("direction", "outbound", "authority", "empty.test:80", "reason", "no_endpoints")); v != 2 {
		t.Errorf("endpoint_unavailable_total{authority=empty.test:80,reason=no_endpoints} = %v, want 2", v)
	}
	if v, _ := metricSum(fams, "endpoint_unavailable_total", labels("direction", "outbound", "reason", "unknown_authority")); v != 1 {
		t.Errorf("endpoint_unavailable_total{reason=unknown_authority} = %v, want 1", v)
	}
	if v, _ := metricSum(fams, "request_total", labels("authority", "empty.test:80")); v != 0 {
		t.Errorf("request_total counts %v requests that were never sent", v)
	}
}
