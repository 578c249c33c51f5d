package h2loop

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
)

// proxy/h2server's grpc_test.go against a Server serving a Bridge:
// grpc-go's client, grpc.Server's ServeHTTP as the handler.

// brTestService is grpc-go's interop TestService.
type brTestService struct {
	testgrpc.UnimplementedTestServiceServer
	ended chan error // how each streaming call's context ended
}

func (s *brTestService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if req.GetResponseStatus() != nil {
		return nil, status.Error(codes.Code(req.GetResponseStatus().GetCode()), req.GetResponseStatus().GetMessage())
	}
	if req.GetFillServerId() { // a slow call: waits for its deadline or cancellation
		select {
		case <-ctx.Done():
		case <-time.After(brTimeout):
		}
		s.ended <- ctx.Err()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	grpc.SetHeader(ctx, metadata.Pairs("x-header", "h"))
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t"))
	return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
}

func (s *brTestService) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	for _, p := range req.GetResponseParameters() {
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
			return err
		}
	}
	return nil
}

func (s *brTestService) StreamingInputCall(stream grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
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

func (s *brTestService) FullDuplexCall(stream grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
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

func brGRPCSetup(t *testing.T) (testgrpc.TestServiceClient, *brTestService) {
	t.Helper()
	svc := &brTestService{ended: make(chan error, 16)}
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, svc)
	ts := brStart(t, h2server.Config{}, gs)
	cc, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc), svc
}

// brEnded is how the service's next call ended (bounded).
func brEnded(t *testing.T, svc *brTestService) error {
	t.Helper()
	select {
	case err := <-svc.ended:
		return err
	case <-time.After(brTimeout):
		t.Fatal("the server's call did not end")
		return nil
	}
}

func TestBrGRPCUnary(t *testing.T) {
	client, _ := brGRPCSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), brTimeout)
	defer cancel()
	for i := range 20 {
		var header, trailer metadata.MD
		body := []byte(fmt.Sprint("payload ", i))
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: body}}, grpc.Header(&header), grpc.Trailer(&trailer))
		if err != nil {
			t.Fatal(err)
		}
		if string(resp.GetPayload().GetBody()) != string(body) || len(header.Get("x-header")) == 0 || header.Get("x-header")[0] != "h" || len(trailer.Get("x-trailer")) == 0 || trailer.Get("x-trailer")[0] != "t" {
			t.Fatalf("%v %v %v", resp, header, trailer)
		}
	}
	// an error status: trailers-only
	_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "nope"}})
	if s, _ := status.FromError(err); s.Code() != codes.NotFound || s.Message() != "nope" {
		t.Fatalf("%v", err)
	}
}

func TestBrGRPCStreaming(t *testing.T) {
	client, svc := brGRPCSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), brTimeout)
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
	if err := brEnded(t, svc); err != nil {
		t.Fatalf("server's context: %v", err)
	}
}

func TestBrGRPCCancellation(t *testing.T) {
	client, svc := brGRPCSetup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bidi, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bidi.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("x")}})
	bidi.Recv()
	cancel()
	err = brEnded(t, svc)
	if err == nil {
		// The call's Recv failed at the reset before the request's
		// context ended (see TestBrResetBodyError).
		t.Fatal("the server's call ended before its context")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("server's context: %v", err)
	}
}

func TestBrGRPCDeadline(t *testing.T) {
	client, svc := brGRPCSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{FillServerId: true})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("%v", err)
	}
	if err := brEnded(t, svc); err == nil {
		t.Fatal("server's context not ended")
	}
}
