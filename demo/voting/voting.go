// Package voting implements the demo's VotingService: in-memory vote
// counts per emoji shortcode.
//
// Voting for FailingShortcode always fails, as it does in Linkerd's
// emojivoto, so that the demo shows a success rate below 100% and something
// for retries, dashboards and canary analysis to react to.
package voting

import (
	"cmp"
	"context"
	"math/rand/v2"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/meridian-mesh/meridian/demo/proto/emojivotopb"
)

// FailingShortcode is the emoji whose votes always fail with codes.Unknown.
const FailingShortcode = ":poop:"

// Server implements pb.VotingServiceServer. The zero value is ready to use
// and safe for concurrent use.
type Server struct {
	pb.UnimplementedVotingServiceServer

	// FailureRate is the fraction (0 to 1) of the other votes that fail
	// too, as FailingShortcode's do: a worse version of the service for
	// the demo's rollout to catch (the demo's voting v2). 0: none. Set it
	// before serving.
	FailureRate float64

	mu    sync.Mutex
	votes map[string]int64
}

var _ pb.VotingServiceServer = (*Server)(nil)

// NewServer returns a Server with no votes.
func NewServer() *Server { return &Server{} }

// Register registers a new Server on r (usually a *grpc.Server) and
// returns it.
func Register(r grpc.ServiceRegistrar) *Server {
	s := NewServer()
	pb.RegisterVotingServiceServer(r, s)
	return s
}

// Vote counts one vote. It does not check that the shortcode is a known
// emoji; that is the caller's job (the web front end asks EmojiService).
func (s *Server) Vote(_ context.Context, req *pb.VoteRequest) (*pb.VoteResponse, error) {
	code := req.GetShortcode()
	switch code {
	case "":
		return nil, status.Error(codes.InvalidArgument, "shortcode is required")
	case FailingShortcode:
		// Deliberate, and a bare "ERROR" like emojivoto's, so it reads as
		// an application bug rather than a mesh problem.
		return nil, status.Error(codes.Unknown, "ERROR")
	}
	if s.FailureRate > 0 && rand.Float64() < s.FailureRate {
		return nil, status.Error(codes.Unknown, "ERROR")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.votes == nil {
		s.votes = make(map[string]int64)
	}
	s.votes[code]++
	return &pb.VoteResponse{}, nil
}

// Results returns every shortcode that has votes, most votes first; ties
// are broken by shortcode so the order is stable between calls.
func (s *Server) Results(context.Context, *pb.ResultsRequest) (*pb.ResultsResponse, error) {
	s.mu.Lock()
	results := make([]*pb.VotingResult, 0, len(s.votes))
	for code, n := range s.votes {
		results = append(results, &pb.VotingResult{Shortcode: code, Votes: n})
	}
	s.mu.Unlock()

	slices.SortFunc(results, func(a, b *pb.VotingResult) int {
		return cmp.Or(cmp.Compare(b.Votes, a.Votes), cmp.Compare(a.Shortcode, b.Shortcode))
	})
	return &pb.ResultsResponse{Results: results}, nil
}
