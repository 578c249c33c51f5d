package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// grpcMesh is three TestService servers, each behind its own sidecar, and a
// client sidecar that knows them as grpc.test:80.
func grpcMesh(t *testing.T) ([]*grpcBackend, *testProxy) {
	t.Helper()
	var backends []*grpcBackend
	var apps []string
	for i := range 3 {
		b := startGRPC(t, fmt.Sprintf("grpc-%d", i))
		backends = append(backends, b)
		apps = append(apps, b.addr)
	}
	a := roundRobinProxy(t, dst("grpc.test:80", serverSidecars(t, apps...)...))
	return backends, a
}

func TestGRPCUnaryTrailersAndBalancing(t *testing.T) {
	ctx := testContext(t)
	_, a := grpcMesh(t)
	client, _ := grpcClient(t, a.out, "grpc.test:80")

	const total = 150
	var served tally
	for i := range total {
		var header, trailer metadata.MD
		payload := []byte(fmt.Sprintf("unary %d", i))
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: payload}},
			grpc.Header(&header), grpc.Trailer(&trailer))
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if string(resp.GetPayload().GetBody()) != string(payload) {
			t.Fatalf("call %d: payload %q, want %q", i, resp.GetPayload().GetBody(), payload)
		}
		name := resp.GetServerId()
		if h := header.Get("x-server"); len(h) != 1 || h[0] != name {
			t.Fatalf("call %d: header x-server %q, want [%s]", i, h, name)
		}
		if tr := trailer.Get("x-trailer"); len(tr) != 1 || tr[0] != "from-"+name {
			t.Fatalf("call %d: trailer x-trailer %q, want [from-%s]", i, tr, name)
		}
		served.add(name)
	}
	assertEven(t, &served, total, "grpc-0", "grpc-1", "grpc-2")
}

// A deadline set by the client ends the call with DEADLINE_EXCEEDED, and the
// cancellation reaches the server's handler through both proxies.
func TestGRPCDeadlinePropagates(t *testing.T) {
	ctx := testContext(t)
	backends, a := grpcMesh(t)
	cancelled := make(chan error, 3)
	for _, b := range backends {
		b.unary = func(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			<-ctx.Done() // blocks until the deadline or a cancel arrives
			cancelled <- ctx.Err()
			return nil, ctx.Err()
		}
	}
	client, _ := grpcClient(t, a.out, "grpc.test:80")

	callCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err := client.UnaryCall(callCtx, &testgrpc.SimpleRequest{})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("call ended with %v, want DEADLINE_EXCEEDED", err)
	}
	select {
	case err := <-cancelled:
		if err == nil {
			t.Error("server handler returned with a live context")
		}
	case <-ctx.Done():
		t.Fatal("the server's context was never cancelled")
	}
}

// Bidirectional streaming: messages flow both ways, and the trailers that
// end the stream reach the client.
func TestGRPCBidiStream(t *testing.T) {
	ctx := testContext(t)
	backends, a := grpcMesh(t)
	client, _ := grpcClient(t, a.out, "grpc.test:80")

	stream, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var server string
	for i := range 20 {
		msg := fmt.Sprintf("ping %d", i)
		if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(msg)}}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv %d: %v", i, err)
		}
		name, body, ok := cutColon(string(resp.GetPayload().GetBody()))
		if !ok || body != msg {
			t.Fatalf("recv %d: %q, want <server>:%s", i, resp.GetPayload().GetBody(), msg)
		}
		if server == "" {
			server = name
		} else if name != server {
			t.Fatalf("one stream was answered by %s and %s", server, name)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("stream ended with %v, want a clean end (io.EOF)", err)
	}
	if tr := stream.Trailer().Get("x-trailer"); len(tr) != 1 || tr[0] != "stream-"+server {
		t.Errorf("trailer x-trailer %q, want [stream-%s]", tr, server)
	}
	b := backendNamed(t, backends, server)
	select {
	case err := <-b.streamDone:
		if err != nil {
			t.Errorf("server stream context ended with %v after a clean close", err)
		}
	case <-ctx.Done():
		t.Fatal("server handler did not return")
	}
}

// A server that ends a bidirectional stream while the client is still
// sending (here: an error after the first message) gets its status to the
// client; the proxies must not wait for the client to finish sending.
func TestGRPCServerEndsStreamFirst(t *testing.T) {
	ctx := testContext(t)
	b := startGRPC(t, "grpc")
	b.fullDuplex = func(stream grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
		if _, err := stream.Recv(); err != nil {
			return err
		}
		stream.SetTrailer(metadata.Pairs("x-why", "quota"))
		return status.Error(codes.ResourceExhausted, "enough")
	}
	a := clientProxy(t, dst("grpc.test:80", serverSidecars(t, b.addr)...))
	client, _ := grpcClient(t, a.out, "grpc.test:80")

	for i := range 3 {
		stream, err := client.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallRequest{}); err != nil {
			t.Fatal(err)
		}
		// No CloseSend: the client's half of the stream stays open.
		_, err = stream.Recv()
		if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != "enough" {
			t.Fatalf("stream %d ended with %v, want RESOURCE_EXHAUSTED: enough", i, err)
		}
		if v := stream.Trailer().Get("x-why"); len(v) != 1 || v[0] != "quota" {
			t.Errorf("stream %d: trailer x-why %q, want [quota]", i, v)
		}
	}
}

// A client that cancels mid-stream cancels the server's stream context.
func TestGRPCClientCancelPropagates(t *testing.T) {
	ctx := testContext(t)
	backends, a := grpcMesh(t)
	client, _ := grpcClient(t, a.out, "grpc.test:80")

	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.FullDuplexCall(streamCtx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("hello")}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	name, _, _ := cutColon(string(resp.GetPayload().GetBody()))
	b := backendNamed(t, backends, name)

	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("Recv after cancel: %v, want CANCELED", err)
	}
	select {
	case err := <-b.streamDone:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("server stream context ended with %v, want context.Canceled", err)
		}
	case <-ctx.Done():
		t.Fatal("the server's stream context was never cancelled")
	}
}

func backendNamed(t *testing.T, backends []*grpcBackend, name string) *grpcBackend {
	t.Helper()
	for _, b := range backends {
		if b.name == name {
			return b
		}
	}
	t.Fatalf("no backend is named %q", name)
	return nil
}

func cutColon(s string) (before, after string, ok bool) {
	for i := range len(s) {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
