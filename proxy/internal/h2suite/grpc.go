package h2suite

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

	"github.com/meridian-mesh/meridian/proxy/h2server"
	"github.com/meridian-mesh/meridian/proxy/internal/h2test"
)

// RunGRPC runs, as subtests, grpc-go's client against its interop
// TestService served by grpc.Server's ServeHTTP as the server's handler:
// unary and streaming calls, cancellation, deadlines.
func RunGRPC(t *testing.T, start Start) {
	runAll(t, start, []test{
		{"GRPCUnary", grpcUnary},
		{"GRPCStreaming", grpcStreaming},
		{"GRPCCancellation", grpcCancellation},
		{"GRPCDeadline", grpcDeadline},
	})
}

// testService is grpc-go's interop TestService.
type testService struct {
	testgrpc.UnimplementedTestServiceServer
	ended chan error // how each slow or bidi call's context ended
}

func (s *testService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if req.GetResponseStatus() != nil {
		return nil, status.Error(codes.Code(req.GetResponseStatus().GetCode()), req.GetResponseStatus().GetMessage())
	}
	if req.GetFillServerId() { // a slow call: waits for its deadline or cancellation
		select {
		case <-ctx.Done():
		case <-time.After(h2test.Timeout): // the test failed: do not outlive it
		}
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

// grpcSetup serves a testService with start and returns a client of it.
func grpcSetup(t *testing.T, start Start) (testgrpc.TestServiceClient, *testService) {
	t.Helper()
	svc := &testService{ended: make(chan error, 16)}
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, svc)
	ts := start(t, h2server.Config{}, gs)
	cc, err := grpc.NewClient(ts.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc), svc
}

func grpcUnary(t *testing.T, start Start) {
	client, _ := grpcSetup(t, start)
	ctx, cancel := context.WithTimeout(context.Background(), h2test.Timeout)
	defer cancel()
	for i := range 20 {
		var header, trailer metadata.MD
		body := []byte(fmt.Sprint("payload ", i))
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: body}}, grpc.Header(&header), grpc.Trailer(&trailer))
		if err != nil {
			t.Fatal(err)
		}
		if string(resp.GetPayload().GetBody()) != string(body) || fmt.Sprint(header.Get("x-header")) != "[h]" || fmt.Sprint(trailer.Get("x-trailer")) != "[t]" {
			t.Fatalf("%v %v %v", resp, header, trailer)
		}
	}
	// an error status: trailers-only
	_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "nope"}})
	if s, _ := status.FromError(err); s.Code() != codes.NotFound || s.Message() != "nope" {
		t.Fatalf("%v", err)
	}
}

func grpcStreaming(t *testing.T, start Start) {
	client, svc := grpcSetup(t, start)
	ctx, cancel := context.WithTimeout(context.Background(), h2test.Timeout)
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
	if err := await(t, svc.ended, "the server's call did not end"); err != nil {
		t.Fatalf("server's context: %v", err)
	}
}

// The client's cancel ends the server's call by its context: the call
// hears context.Canceled, not only a failed Recv.
func grpcCancellation(t *testing.T, start Start) {
	client, svc := grpcSetup(t, start)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bidi, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bidi.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("x")}})
	bidi.Recv()
	cancel()
	err = await(t, svc.ended, "the server's stream was not cancelled")
	if err == nil {
		// Its Recv failed at the reset before the request's context
		// ended (see ResetBodyError).
		t.Fatal("the server's call ended before its context")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("server's context: %v", err)
	}
}

func grpcDeadline(t *testing.T, start Start) {
	client, svc := grpcSetup(t, start)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{FillServerId: true})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("%v", err)
	}
	if err := await(t, svc.ended, "the server's call did not end at its deadline"); err == nil {
		t.Fatal("server's context not ended")
	}
}
