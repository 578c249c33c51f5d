package h2client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// grpcBackend is grpc-go's server for the interop TestService.
type grpcBackend struct {
	testgrpc.UnimplementedTestServiceServer
	canceled chan error
}

func (b *grpcBackend) UnaryCall(ctx context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if in.GetResponseStatus() != nil {
		return nil, status.Error(codes.Code(in.GetResponseStatus().GetCode()), in.GetResponseStatus().GetMessage())
	}
	if in.GetResponseSize() < 0 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t"))
	return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: in.GetPayload().GetBody()}}, nil
}

func (b *grpcBackend) StreamingOutputCall(in *testgrpc.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	for _, p := range in.GetResponseParameters() {
		time.Sleep(time.Duration(p.GetIntervalUs()) * time.Microsecond)
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: bytes.Repeat([]byte("s"), int(p.GetSize()))}}); err != nil {
			return err
		}
	}
	return nil
}

func (b *grpcBackend) StreamingInputCall(s grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
	total := 0
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return s.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(m.GetPayload().GetBody())
	}
}

func (b *grpcBackend) FullDuplexCall(s grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	for {
		m, err := s.Recv()
		if err != nil {
			if err != io.EOF {
				select {
				case b.canceled <- s.Context().Err():
				default:
				}
				return err
			}
			return nil
		}
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: m.GetPayload()}); err != nil {
			return err
		}
	}
}

// grpcThrough starts a grpc-go backend, an h2server in front of it that
// relays every stream with h2client (httputil.ReverseProxy, flushing at
// once as the forwarder does), and a grpc-go client of the front.
func grpcThrough(t *testing.T, o Options) (testgrpc.TestServiceClient, *grpcBackend, *testClient) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	b := &grpcBackend{canceled: make(chan error, 1)}
	testgrpc.RegisterTestServiceServer(gs, b)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	c := newTestClient(t, ln.Addr().String(), o)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "backend"
			// The client's deadline ends the call (the proxy cancels
			// the stream), not the backend's own timer.
			pr.Out.Header.Del("Grpc-Timeout")
		},
		ErrorLog:      log.New(io.Discard, "", 0),
		Transport:     c,
		FlushInterval: -1,
	}
	// As the forwarder's flushGate: a trailers-only response is not
	// flushed before its (empty) body, or it would lose its END_STREAM.
	front := serveH2(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rp.ServeHTTP(trailersOnlyGate{w}, r)
	}))
	cc, err := grpc.NewClient(front, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc), b, c
}

func TestGRPC(t *testing.T) {
	client, b, c := grpcThrough(t, Options{StreamWindow: 64 << 10, ConnWindow: 256 << 10})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	t.Run("unary", func(t *testing.T) {
		for _, size := range []int{0, 10, 3 << 20} {
			body := bytes.Repeat([]byte("u"), size)
			var trailer metadata.MD
			resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: body}}, grpc.Trailer(&trailer))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(resp.GetPayload().GetBody(), body) || len(trailer.Get("x-trailer")) != 1 {
				t.Errorf("size %d: %d bytes back, trailer %v", size, len(resp.GetPayload().GetBody()), trailer)
			}
		}
	})
	t.Run("status", func(t *testing.T) {
		_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "nope"}})
		if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "nope" {
			t.Errorf("err %v, want NOT_FOUND: nope", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		dctx, dcancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer dcancel()
		_, err := client.UnaryCall(dctx, &testgrpc.SimpleRequest{ResponseSize: -1})
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("err %v, want DEADLINE_EXCEEDED", err)
		}
	})
	t.Run("server-streaming", func(t *testing.T) {
		params := []*testgrpc.ResponseParameters{{Size: 10}, {Size: 1 << 20, IntervalUs: 20000}, {Size: 5, IntervalUs: 50000}}
		s, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: params})
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range params {
			m, err := s.Recv()
			if err != nil || len(m.GetPayload().GetBody()) != int(p.GetSize()) {
				t.Fatalf("message %d: %v", i, err)
			}
		}
		if _, err := s.Recv(); err != io.EOF {
			t.Errorf("end: %v", err)
		}
	})
	t.Run("client-streaming", func(t *testing.T) {
		s, err := client.StreamingInputCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for i := range 20 {
			n := i * 20000
			total += n
			if err := s.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: make([]byte, n)}}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := s.CloseAndRecv()
		if err != nil || int(resp.GetAggregatedPayloadSize()) != total {
			t.Errorf("aggregated %d, %v; want %d", resp.GetAggregatedPayloadSize(), err, total)
		}
	})
	t.Run("bidi", func(t *testing.T) {
		s, err := client.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			body := bytes.Repeat([]byte{byte(i)}, i*30000)
			if err := s.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: body}}); err != nil {
				t.Fatal(err)
			}
			m, err := s.Recv()
			if err != nil || !bytes.Equal(m.GetPayload().GetBody(), body) {
				t.Fatalf("message %d: %v", i, err)
			}
		}
		s.CloseSend()
		if _, err := s.Recv(); err != io.EOF {
			t.Errorf("end: %v", err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		sctx, scancel := context.WithCancel(ctx)
		s, err := client.FullDuplexCall(sctx)
		if err != nil {
			t.Fatal(err)
		}
		s.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("x")}})
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
		scancel()
		select {
		case err := <-b.canceled:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("backend stream ended with %v, want canceled", err)
			}
		case <-time.After(testTimeout):
			t.Fatal("the backend's stream was not cancelled")
		}
	})
	if n := c.dials.Load(); n != 1 {
		t.Errorf("%d connections to the backend, want 1", n)
	}
}

func TestGRPCConcurrent(t *testing.T) {
	client, _, _ := grpcThrough(t, Options{StreamWindow: 64 << 10, ConnWindow: 256 << 10})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	errs := make(chan error, 40)
	for i := range 40 {
		go func() {
			body := bytes.Repeat([]byte{byte(i)}, i*5000)
			resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: body}})
			if err == nil && !bytes.Equal(resp.GetPayload().GetBody(), body) {
				err = errors.New("wrong body")
			}
			errs <- err
		}()
	}
	for range 40 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

var _ http.RoundTripper = (*Client)(nil)

type trailersOnlyGate struct{ http.ResponseWriter }

func (w trailersOnlyGate) FlushError() error {
	if w.Header().Get("Grpc-Status") != "" {
		return nil
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}
