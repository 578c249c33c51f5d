// Package gwclient is the gateway proxy's client of the control plane's
// gateway API (gatewaypb.Gateway/Watch): it keeps one Gateway's snapshot
// stream open, hands every snapshot to the proxy, and reconnects with a
// capped, jittered backoff (proxy/dstclient's) when the stream breaks; the
// proxy keeps serving the last snapshot meanwhile.
package gwclient

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// Options say which Gateway to watch.
type Options struct {
	Namespace, Name string // the Gateway
	// Token says who asks (the proxy's workload), for the server's logs.
	Token string
	// BackoffMin and BackoffMax bound reconnection delays. Defaults 100ms,
	// 10s, as proxy/dstclient's.
	BackoffMin, BackoffMax time.Duration
	Log                    *slog.Logger
}

// Client watches one Gateway's snapshots.
type Client struct {
	api gatewaypb.GatewayClient
	o   Options
}

// New returns a client over cc (its transport credentials present the
// proxy's identity, see proxy/dstclient.DialOptions).
func New(cc grpc.ClientConnInterface, o Options) *Client {
	if o.BackoffMin <= 0 {
		o.BackoffMin = 100 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Client{api: gatewaypb.NewGatewayClient(cc), o: o}
}

// Run watches until ctx ends, calling apply with every snapshot received,
// in order. A broken stream is opened again after a backoff (exponential
// from BackoffMin to BackoffMax, jittered ±20%, back to BackoffMin once a
// snapshot arrived); apply is not called meanwhile, so the proxy keeps the
// last snapshot it applied. apply's errors (a snapshot the proxy refused)
// are logged; the stream goes on, since the next snapshot replaces it whole.
func (c *Client) Run(ctx context.Context, apply func(*gatewaypb.Snapshot) error) {
	delay := c.o.BackoffMin
	for again := false; ; again = true {
		got, err := c.watch(ctx, apply, again)
		if ctx.Err() != nil {
			return
		}
		if got {
			delay = c.o.BackoffMin
		}
		d := min(time.Duration(float64(delay)*(0.8+0.4*rand.Float64())), c.o.BackoffMax)
		delay = min(2*delay, c.o.BackoffMax)
		c.o.Log.Warn("gateway snapshot stream broken; the last snapshot keeps serving", "gateway", c.o.Namespace+"/"+c.o.Name, "err", err, "retry_in", d)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// watch runs one stream until it breaks; got reports whether it delivered
// a snapshot.
func (c *Client) watch(ctx context.Context, apply func(*gatewaypb.Snapshot) error, again bool) (got bool, err error) {
	var opts []grpc.CallOption
	if again {
		// Wait for gRPC to reconnect rather than fail at once while the
		// control plane is down (as proxy/dstclient's streams).
		opts = append(opts, grpc.WaitForReady(true))
	}
	stream, err := c.api.Watch(ctx, &gatewaypb.WatchRequest{Namespace: c.o.Namespace, Name: c.o.Name, ContextToken: c.o.Token}, opts...)
	if err != nil {
		return false, err
	}
	for {
		s, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the server ended the stream")
			}
			return got, err
		}
		got = true
		if err := apply(s); err != nil {
			c.o.Log.Warn("gateway snapshot refused", "gateway", c.o.Namespace+"/"+c.o.Name, "version", s.GetVersion(), "err", err)
		}
	}
}
