package emoji_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/meridian-mesh/meridian/demo/emoji"
	pb "github.com/meridian-mesh/meridian/demo/proto/emojivotopb"
)

// client serves the emoji service on a real loopback socket and returns a
// client for it.
func client(t *testing.T) pb.EmojiServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	emoji.Register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewEmojiServiceClient(cc)
}

func TestListAll(t *testing.T) {
	resp, err := client(t).ListAll(context.Background(), &pb.ListAllRequest{})
	if err != nil {
		t.Fatal(err)
	}
	list := resp.GetList()
	if len(list) < 40 {
		t.Fatalf("got %d emojis, want about 50", len(list))
	}
	seen := map[string]bool{}
	for _, e := range list {
		sc := e.GetShortcode()
		if e.GetUnicode() == "" || len(sc) < 3 || !strings.HasPrefix(sc, ":") || !strings.HasSuffix(sc, ":") {
			t.Errorf("malformed emoji %v", e)
		}
		if seen[sc] {
			t.Errorf("duplicate shortcode %s", sc)
		}
		seen[sc] = true
	}
	for _, want := range []string{":joy:", ":poop:"} {
		if !seen[want] {
			t.Errorf("catalogue lacks %s", want)
		}
	}
}

func TestFindByShortcode(t *testing.T) {
	resp, err := client(t).FindByShortcode(context.Background(), &pb.FindByShortcodeRequest{Shortcode: ":joy:"})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetEmoji(); got.GetUnicode() != "😂" || got.GetShortcode() != ":joy:" {
		t.Fatalf("got %v, want 😂 :joy:", got)
	}
}

func TestFindByShortcodeNotFound(t *testing.T) {
	c := client(t)
	for _, sc := range []string{":no_such_emoji:", "joy", ""} {
		_, err := c.FindByShortcode(context.Background(), &pb.FindByShortcodeRequest{Shortcode: sc})
		if status.Code(err) != codes.NotFound {
			t.Errorf("FindByShortcode(%q) error = %v, want NotFound", sc, err)
		}
	}
}
