package dstclient

import (
	"context"
	"sync"

	"google.golang.org/protobuf/proto"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/proxy/profile"
)

// Profile follows authority's profile. It returns once the first profile
// arrives (an authority without one gets an empty profile). A profile that
// does not compile is logged and ignored: the previous one keeps serving.
func (c *Client) Profile(ctx context.Context, authority string) (*profile.Watch, error) {
	wctx, cancel := context.WithCancel(context.Background())
	w := profile.NewWatch(cancel)
	first := make(chan error, 1)
	var once sync.Once
	answer := func(err error) { once.Do(func() { first <- err }) }
	go func() {
		b := c.newBackoff()
		var last *pb.DestinationProfile
		for again := false; wctx.Err() == nil; again = true {
			s, err := c.api.GetProfile(wctx, &pb.GetDestination{Authority: authority, ContextToken: c.o.Token}, reopen(again)...)
			for err == nil {
				var m *pb.DestinationProfile
				if m, err = s.Recv(); err != nil {
					break
				}
				b.reset()
				if last != nil && proto.Equal(last, m) {
					answer(nil)
					continue
				}
				p, perr := profile.FromProto(m)
				if perr != nil {
					c.o.Log.Error("profile rejected; the previous one keeps serving", "authority", authority, "err", perr)
					answer(nil)
					continue
				}
				last = m
				w.Set(p)
				if c.o.OnProfile != nil {
					c.o.OnProfile(authority, p)
				}
				answer(nil)
			}
			answer(err)
			if wctx.Err() != nil || !b.wait(wctx) {
				return
			}
		}
	}()
	if err := c.awaitFirst(ctx, first, cancel, "profile "+authority); err != nil {
		return nil, err
	}
	return w, nil
}
