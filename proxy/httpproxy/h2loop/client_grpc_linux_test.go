package h2loop

import (
	"context"
	"encoding/binary"
	"net/http"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// clGRPCService is grpc-go's interop TestService's unary call: the
// payload echoed, a header and a trailer of metadata, or the status asked
// for.
type clGRPCService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (clGRPCService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if s := req.GetResponseStatus(); s != nil {
		return nil, status.Error(codes.Code(s.GetCode()), s.GetMessage())
	}
	grpc.SetHeader(ctx, metadata.Pairs("x-header", "h"))
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t"))
	return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
}

// clGRPCCall makes a unary gRPC call with the client: a length-prefixed
// message POSTed as application/grpc, its answer in the DATA, its status
// in the trailers (or, trailers-only, in the response's head).
func clGRPCCall(t *testing.T, c *ClientConn, in *testgrpc.SimpleRequest) (*clRecv, *testgrpc.SimpleResponse) {
	t.Helper()
	msg, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg)))
	body = append(body, msg...)
	req := clReq("POST", "http://example.com/grpc.testing.TestService/UnaryCall", http.Header{
		"Content-Type": {"application/grpc"},
		"Te":           {"trailers"},
	})
	req.ContentLength = int64(len(body))
	r := newClRecv()
	clDo(t, c, req, body, nil, r)
	r.wait(t)
	if r.err != nil {
		t.Fatal(r.err)
	}
	b := r.body.Bytes()
	if len(b) == 0 {
		return r, nil
	}
	if len(b) < 5 || b[0] != 0 || int(binary.BigEndian.Uint32(b[1:])) != len(b)-5 {
		t.Fatalf("response message framing: % x", b[:min(len(b), 5)])
	}
	out := &testgrpc.SimpleResponse{}
	if err := proto.Unmarshal(b[5:], out); err != nil {
		t.Fatal(err)
	}
	return r, out
}

// TestClientGRPCUnary: unary calls to grpc-go's server (its ServeHTTP on
// net/http's HTTP/2 server), an answer and an error status.
func TestClientGRPCUnary(t *testing.T) {
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, clGRPCService{})
	addr := clGoServer(t, gs)
	lp := clLoop(t)
	c := clDial(t, lp, addr, ClientConfig{})
	for i := range 5 {
		payload := make([]byte, 100<<10*i)
		for j := range payload {
			payload[j] = byte(i + j)
		}
		r, out := clGRPCCall(t, c, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: payload}})
		if r.status != 200 || r.header.Get("Content-Type") != "application/grpc" || r.header.Get("X-Header") != "h" {
			t.Fatalf("status %d, header %v", r.status, r.header)
		}
		if r.trailers.Get("Grpc-Status") != "0" || r.trailers.Get("X-Trailer") != "t" {
			t.Fatalf("trailers %v", r.trailers)
		}
		if out == nil || string(out.GetPayload().GetBody()) != string(payload) {
			t.Fatalf("call %d: the payload did not come back", i)
		}
	}
	// An error status, no message (ServeHTTP sends it in trailers where
	// grpc-go's own transport sends a trailers-only response).
	r, out := clGRPCCall(t, c, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "nope"}})
	if out != nil || r.status != 200 || r.trailers.Get("Grpc-Status") != "5" || r.trailers.Get("Grpc-Message") != "nope" {
		t.Fatalf("header %v trailers %v", r.header, r.trailers)
	}
}
