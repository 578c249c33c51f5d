// Package emoji implements the demo's EmojiService: a fixed, read-only
// catalogue of emojis that the web front end lists and validates votes
// against.
package emoji

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/meridian-mesh/meridian/demo/proto/emojivotopb"
)

// catalogue is ordered the way the UI shows it. It never changes at run
// time, so the server needs no locking.
var catalogue = []struct{ unicode, shortcode string }{
	{"😂", ":joy:"}, {"🤔", ":thinking:"}, {"😍", ":heart_eyes:"}, {"😎", ":sunglasses:"},
	{"🤩", ":star_struck:"}, {"😇", ":innocent:"}, {"🙃", ":upside_down_face:"}, {"😴", ":sleeping:"},
	{"🤯", ":exploding_head:"}, {"🥳", ":partying_face:"}, {"😱", ":scream:"}, {"😭", ":sob:"},
	{"😡", ":rage:"}, {"🤓", ":nerd_face:"}, {"🥶", ":cold_face:"}, {"🤠", ":cowboy_hat_face:"},
	{"👻", ":ghost:"}, {"👽", ":alien:"}, {"🤖", ":robot:"}, {"💩", ":poop:"},
	{"🎃", ":jack_o_lantern:"}, {"🙈", ":see_no_evil:"}, {"👍", ":+1:"}, {"👏", ":clap:"},
	{"🙌", ":raised_hands:"}, {"🙏", ":pray:"}, {"💪", ":muscle:"}, {"✌️", ":v:"},
	{"🐶", ":dog:"}, {"🐱", ":cat:"}, {"🦊", ":fox_face:"}, {"🐼", ":panda_face:"},
	{"🦄", ":unicorn:"}, {"🐙", ":octopus:"}, {"🐢", ":turtle:"}, {"🦀", ":crab:"},
	{"🌵", ":cactus:"}, {"🌈", ":rainbow:"}, {"🔥", ":fire:"}, {"⭐", ":star:"},
	{"🍕", ":pizza:"}, {"🍩", ":doughnut:"}, {"🌮", ":taco:"}, {"🍣", ":sushi:"},
	{"☕", ":coffee:"}, {"🍺", ":beer:"}, {"🚀", ":rocket:"}, {"🎉", ":tada:"},
	{"💯", ":100:"}, {"❤️", ":heart:"},
}

// Server implements pb.EmojiServiceServer. Use NewServer; the zero value
// serves an empty catalogue.
type Server struct {
	pb.UnimplementedEmojiServiceServer

	list    []*pb.Emoji
	byShort map[string]*pb.Emoji
}

var _ pb.EmojiServiceServer = (*Server)(nil)

// NewServer returns a Server over the built-in catalogue.
func NewServer() *Server {
	s := &Server{byShort: make(map[string]*pb.Emoji, len(catalogue))}
	for _, e := range catalogue {
		m := &pb.Emoji{Unicode: e.unicode, Shortcode: e.shortcode}
		s.list = append(s.list, m)
		s.byShort[e.shortcode] = m
	}
	return s
}

// Register registers a new Server on r (usually a *grpc.Server) and
// returns it.
func Register(r grpc.ServiceRegistrar) *Server {
	s := NewServer()
	pb.RegisterEmojiServiceServer(r, s)
	return s
}

// ListAll returns the whole catalogue in display order.
func (s *Server) ListAll(context.Context, *pb.ListAllRequest) (*pb.ListAllResponse, error) {
	// The messages are shared between calls; gRPC only reads them while
	// marshalling, which is safe concurrently.
	return &pb.ListAllResponse{List: s.list}, nil
}

// FindByShortcode looks an emoji up by shortcode, colons included. An
// unknown shortcode is codes.NotFound so callers can tell "no such emoji"
// from a failed call.
func (s *Server) FindByShortcode(_ context.Context, req *pb.FindByShortcodeRequest) (*pb.FindByShortcodeResponse, error) {
	e, ok := s.byShort[req.GetShortcode()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "emoji %q not found", req.GetShortcode())
	}
	return &pb.FindByShortcodeResponse{Emoji: e}, nil
}
