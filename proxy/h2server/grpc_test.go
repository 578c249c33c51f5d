package h2server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// testService is grpc-go's interop TestService, served by grpc.Server's
// ServeHTTP on this package's server.
type testService struct {
	testgrpc.UnimplementedTestServiceServer
	ended chan error // how each streaming call's context ended
}

func (s *testService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if req.GetResponseStatus() != nil {
		return nil, status.Error(codes.Code(req.GetResponseStatus().GetCode()), req.GetResponseStatus().GetMessage())
	}
	if req.GetFillServerId() { // a slow call: waits for its deadline or cancellation
		<-ctx.Done()
		s.ended <- ctx.Err()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	grpc.SetHeader(ctx, metadata.Pairs("x-header", "h"))
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t"))
	return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
}

func (s *testService) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	for _, p := range req.GetResponseParameters() {
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
			return err
		}
	}
	return nil
}

func (s *testService) StreamingInputCall(stream grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
	total := 0
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(m.GetPayload().GetBody())
	}
}

func (s *testService) FullDuplexCall(stream grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	defer func() { s.ended <- stream.Context().Err() }()
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: m.GetPayload()}); err != nil {
			return err
		}
	}
}

func grpcSetup(t *testing.T) (testgrpc.TestServiceClient, *testService) {
	t.Helper()
	svc := &testService{ended: make(chan error, 16)}
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, svc)
	ts := startServer(t, Config{}, gs)
	cc, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc), svc
}

func TestGRPCUnary(t *testing.T) {
	client, _ := grpcSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for i := range 20 {
		var header, trailer metadata.MD
		body := []byte(fmt.Sprint("payload ", i))
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: body}}, grpc.Header(&header), grpc.Trailer(&trailer))
		if err != nil {
			t.Fatal(err)
		}
		if string(resp.GetPayload().GetBody()) != string(body) || header.Get("x-header")[0] != "h" || trailer.Get("x-trailer")[0] != "t" {
			t.Fatalf("%v %v %v", resp, header, trailer)
		}
	}
	// an error status: trailers-only
	_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "nope"}})
	if s, _ := status.FromError(err); s.Code() != codes.NotFound || s.Message() != "nope" {
		t.Fatalf("%v", err)
	}
}

func TestGRPCStreaming(t *testing.T) {
	client, svc := grpcSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	// server streaming, with messages bigger than the windows
	var params []*testgrpc.ResponseParameters
	for _, n := range []int32{1, 100, 70000, 2 << 20, 0} {
		params = append(params, &testgrpc.ResponseParameters{Size: n})
	}
	out, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range params {
		m, err := out.Recv()
		if err != nil || int32(len(m.GetPayload().GetBody())) != p.GetSize() {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if _, err := out.Recv(); err != io.EOF {
		t.Fatal(err)
	}
	// client streaming
	in, err := client.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{10, 100000, 3 << 20} {
		if err := in.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: make([]byte, n)}}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := in.CloseAndRecv()
	if err != nil || res.GetAggregatedPayloadSize() != 10+100000+3<<20 {
		t.Fatalf("%v %v", res, err)
	}
	// bidi
	bidi, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		msg := fmt.Sprint("m", i)
		if err := bidi.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(msg)}}); err != nil {
			t.Fatal(err)
		}
		m, err := bidi.Recv()
		if err != nil || string(m.GetPayload().GetBody()) != msg {
			t.Fatalf("%d: %v %v", i, m, err)
		}
	}
	bidi.CloseSend()
	if _, err := bidi.Recv(); err != io.EOF {
		t.Fatal(err)
	}
	if err := <-svc.ended; err != nil {
		t.Fatalf("server's context: %v", err)
	}
}

func TestGRPCCancellation(t *testing.T) {
	client, svc := grpcSetup(t)
	ctx, cancel := context.WithCancel(context.Background())
	bidi, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bidi.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("x")}})
	bidi.Recv()
	cancel()
	select {
	case err := <-svc.ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("server's context: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("the server's stream was not cancelled")
	}
}

func TestGRPCDeadline(t *testing.T) {
	client, svc := grpcSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{FillServerId: true})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("%v", err)
	}
	select {
	case err := <-svc.ended:
		if err == nil {
			t.Fatal("server's context not ended")
		}
	case <-time.After(testTimeout):
		t.Fatal("the server's call did not end at its deadline")
	}
}
