package dstclient

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/proxy/profile"
)

// profileAPI sends the first profile of its script on a GetProfile
// stream, the rest once more is closed, and then holds the stream open.
type profileAPI struct {
	pb.UnimplementedDestinationServer
	script []*pb.DestinationProfile
	more   chan struct{}
}

func (f *profileAPI) GetProfile(_ *pb.GetDestination, s grpc.ServerStreamingServer[pb.DestinationProfile]) error {
	for i, m := range f.script {
		if i == 1 {
			<-f.more
		}
		if err := s.Send(m); err != nil {
			return err
		}
	}
	<-s.Context().Done()
	return nil
}

func split(stable, canary uint32) *pb.DestinationProfile {
	return &pb.DestinationProfile{DstOverrides: []*pb.WeightedDst{{Authority: "a.web:80", Weight: stable}, {Authority: "b.web:80", Weight: canary}}}
}

// OnProfile sees each profile the watch applies, once it is the current
// one, and nothing for a repeated or a rejected profile.
func TestProfileOnProfile(t *testing.T) {
	bad := &pb.DestinationProfile{Routes: []*pb.Route{{Condition: &pb.RequestMatch{Match: &pb.RequestMatch_Path{Path: &pb.PathMatch{Regex: "("}}}}}}
	f := &profileAPI{script: []*pb.DestinationProfile{split(100, 0), split(80, 20), split(80, 20), bad, split(50, 50)}, more: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterDestinationServer(g, f)
	go g.Serve(ln)
	defer g.Stop()
	addr := ln.Addr().String()

	var (
		mu   sync.Mutex
		seen []uint32 // canary weights, in order
		w    *profile.Watch
		bad2 bool // the hook ran before the watch held the profile
	)
	done := make(chan struct{})
	c := clientWith(t, addr, Options{FirstAnswer: 5 * time.Second, OnProfile: func(authority string, p *profile.Profile) {
		mu.Lock()
		defer mu.Unlock()
		// The first profile comes before Profile returns the watch.
		if authority != "web:80" || (w != nil && w.Current() != p) {
			bad2 = true
		}
		seen = append(seen, p.Splits[1].Weight)
		if len(seen) == 3 {
			close(done)
		}
	}})
	got, err := c.Profile(context.Background(), "web:80")
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	mu.Lock()
	w = got
	mu.Unlock()
	close(f.more)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("three profiles not applied within 5s")
	}
	time.Sleep(50 * time.Millisecond) // nothing more may follow
	mu.Lock()
	defer mu.Unlock()
	if bad2 {
		t.Error("OnProfile called before the profile was the watch's current one, or with the wrong authority")
	}
	if len(seen) != 3 || seen[0] != 0 || seen[1] != 20 || seen[2] != 50 {
		t.Errorf("OnProfile saw canary weights %v, want [0 20 50] (the repeat and the rejected profile not reported)", seen)
	}
}
