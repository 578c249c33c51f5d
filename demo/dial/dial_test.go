package dial_test

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/meridian-mesh/meridian/demo/dial"
	"github.com/meridian-mesh/meridian/demo/emoji"
	pb "github.com/meridian-mesh/meridian/demo/proto/emojivotopb"
)

// TestAuthority stands a plain gRPC server in for the proxy and checks that
// requests reach it carrying the authority the proxy would route by.
func TestAuthority(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	authorities := make(chan []string, 1)
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		authorities <- md.Get(":authority")
		return h(ctx, req)
	}))
	emoji.Register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	const authority = "emoji-svc.emojivoto:8080"
	cc, err := dial.GRPC(context.Background(), lis.Addr().String(), authority)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := pb.NewEmojiServiceClient(cc).ListAll(context.Background(), &pb.ListAllRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := <-authorities; len(got) != 1 || got[0] != authority {
		t.Fatalf(":authority = %q, want %q", got, authority)
	}
}

func TestCanceledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := dial.GRPC(ctx, "127.0.0.1:1", "x"); err == nil {
		t.Fatal("GRPC with a canceled context succeeded")
	}
}
