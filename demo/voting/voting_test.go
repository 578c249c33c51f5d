package voting_test

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/meridian-mesh/meridian/demo/proto/emojivotopb"
	"github.com/meridian-mesh/meridian/demo/voting"
)

// client serves a fresh voting service on a real loopback socket and
// returns a client for it.
func client(t *testing.T) pb.VotingServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	voting.Register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewVotingServiceClient(cc)
}

func results(t *testing.T, c pb.VotingServiceClient) []*pb.VotingResult {
	t.Helper()
	resp, err := c.Results(context.Background(), &pb.ResultsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetResults()
}

func TestCountsSortedByVotes(t *testing.T) {
	c := client(t)
	if got := results(t, c); len(got) != 0 {
		t.Fatalf("fresh server has results %v", got)
	}
	for sc, n := range map[string]int{":joy:": 3, ":tada:": 1, ":fire:": 2, ":cat:": 1} {
		for range n {
			if _, err := c.Vote(context.Background(), &pb.VoteRequest{Shortcode: sc}); err != nil {
				t.Fatalf("Vote(%s): %v", sc, err)
			}
		}
	}
	want := []struct {
		sc string
		n  int64
	}{{":joy:", 3}, {":fire:", 2}, {":cat:", 1}, {":tada:", 1}}
	got := results(t, c)
	if len(got) != len(want) {
		t.Fatalf("got %d results %v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		if got[i].GetShortcode() != w.sc || got[i].GetVotes() != w.n {
			t.Errorf("result %d = %s:%d, want %s:%d", i, got[i].GetShortcode(), got[i].GetVotes(), w.sc, w.n)
		}
	}
}

func TestFailingShortcode(t *testing.T) {
	c := client(t)
	_, err := c.Vote(context.Background(), &pb.VoteRequest{Shortcode: voting.FailingShortcode})
	if s := status.Convert(err); s.Code() != codes.Unknown || s.Message() != "ERROR" {
		t.Fatalf("Vote(%s) error = %v, want Unknown ERROR", voting.FailingShortcode, err)
	}
	if got := results(t, c); len(got) != 0 {
		t.Fatalf("failed vote was counted: %v", got)
	}
}

func TestEmptyShortcode(t *testing.T) {
	_, err := client(t).Vote(context.Background(), &pb.VoteRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Vote(\"\") error = %v, want InvalidArgument", err)
	}
}

// TestConcurrentVotes is mainly for the race detector; it also checks that
// no vote is lost.
func TestConcurrentVotes(t *testing.T) {
	s := voting.NewServer()
	const workers, each = 8, 200
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				if _, err := s.Vote(context.Background(), &pb.VoteRequest{Shortcode: ":joy:"}); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Results(context.Background(), &pb.ResultsRequest{}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	resp, _ := s.Results(context.Background(), &pb.ResultsRequest{})
	if got := resp.GetResults(); len(got) != 1 || got[0].GetVotes() != workers*each {
		t.Fatalf("results = %v, want :joy: %d", got, workers*each)
	}
}

// FailureRate fails about that fraction of ordinary votes (the demo's bad
// voting v2), and the failed ones are not counted.
func TestFailureRate(t *testing.T) {
	s := &voting.Server{FailureRate: 0.3}
	const n = 2000
	failed := 0
	for range n {
		if _, err := s.Vote(context.Background(), &pb.VoteRequest{Shortcode: ":joy:"}); err != nil {
			if st := status.Convert(err); st.Code() != codes.Unknown || st.Message() != "ERROR" {
				t.Fatalf("error = %v, want Unknown ERROR", err)
			}
			failed++
		}
	}
	if failed < n*22/100 || failed > n*38/100 {
		t.Fatalf("%d of %d votes failed, want about 30%%", failed, n)
	}
	resp, _ := s.Results(context.Background(), &pb.ResultsRequest{})
	if got := resp.GetResults(); len(got) != 1 || got[0].GetVotes() != int64(n-failed) {
		t.Fatalf("results = %v, want :joy: %d", got, n-failed)
	}
}
