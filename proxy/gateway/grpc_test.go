package gateway

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

type grpcUnary struct {
	testgrpc.UnimplementedTestServiceServer
}

func (grpcUnary) UnaryCall(_ context.Context, r *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{ServerId: "grpc-backend", Payload: r.GetPayload()}, nil
}

// gRPC over TLS (ALPN h2) through an HTTPS listener to an h2c backend; a
// GRPCRoute rule without a valid backend answers UNAVAILABLE, and a method
// no rule routes UNIMPLEMENTED, as gRPC statuses.
func TestGRPCOverTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, grpcUnary{})
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	chain, key := certPEM(t, "grpc.test")
	method := func(m string) *gatewaypb.Match {
		return &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_EXACT, Value: "/grpc.testing.TestService/" + m}}
	}
	good := ruleTo("unary", method("UnaryCall"), &gatewaypb.Backend{Authority: "grpc.svc:80", Weight: 1, Name: "ns/grpc:80", Protocol: gatewaypb.Backend_H2C})
	bad := ruleTo("stream", method("StreamingOutputCall"), &gatewaypb.Backend{Weight: 1, Name: "ns/missing:80"})
	good.Grpc, bad.Grpc = true, true
	pn := freePort(t)
	s := snap("v1", tlsPort(pn, &gatewaypb.Listener{Name: "grpc", Hostname: "grpc.test", Mode: gatewaypb.Listener_HTTPS, Certificates: []string{"ns/grpc"},
		Hosts: []*gatewaypb.Host{hostOf("", good, bad)}}))
	s.Certificates = []*gatewaypb.Certificate{{Name: "ns/grpc", CertChain: chain, PrivateKey: key}}
	startGateway(t, dsts(t, map[string][]string{"grpc.svc:80": {ln.Addr().String()}}), s)

	cc, err := grpc.NewClient("passthrough:///127.0.0.1:"+itoa(pn), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{ServerName: "grpc.test", InsecureSkipVerify: true})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := testgrpc.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hi")}})
	if err != nil || resp.GetServerId() != "grpc-backend" || string(resp.GetPayload().GetBody()) != "hi" {
		t.Fatalf("UnaryCall: %v %v", resp, err)
	}
	stream, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Errorf("invalid backend: %v, want UNAVAILABLE", err)
	}
	if _, err := client.EmptyCall(ctx, &testgrpc.Empty{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("no route: %v, want UNIMPLEMENTED", err)
	}
}
