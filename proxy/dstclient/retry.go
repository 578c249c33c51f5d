package dstclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"

	"github.com/meridian-mesh/meridian/proxy/discover"
)

// backoff is the reconnection delay every stream of a Client uses:
// exponential from BackoffMin to BackoffMax, with jitter so that every proxy
// does not reconnect in the same instant.
type backoff struct {
	min, max, cur time.Duration
}

func (c *Client) newBackoff() *backoff {
	return &backoff{min: c.o.BackoffMin, max: c.o.BackoffMax, cur: c.o.BackoffMin}
}

// reset is called once a stream has delivered something.
func (b *backoff) reset() { b.cur = b.min }

// next returns the current delay, jittered ±20% but never past max (the
// documented bound), and doubles it.
func (b *backoff) next() time.Duration {
	d := min(time.Duration(float64(b.cur)*(0.8+0.4*rand.Float64())), b.max)
	b.cur = min(2*b.cur, b.max)
	return d
}

// wait sleeps for the next delay; false when ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.next())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// reopen are the call options of a stream opened again after one broke:
// it waits for the connection to be ready instead of failing at once while
// it is down, so the stream is back as soon as gRPC has reconnected
// (ConnectParams) rather than at the stream's next backoff, which may be
// 10 s later. A first stream fails fast: a request is waiting for it
// (awaitFirst bounds it anyway).
func reopen(again bool) []grpc.CallOption {
	if again {
		return []grpc.CallOption{grpc.WaitForReady(true)}
	}
	return nil
}

// awaitFirst waits for a stream's first answer, bounded by FirstAnswer and
// ctx. On any failure it calls cancel, ending the stream's goroutine, and
// returns the error prefixed with what (errors.Is still sees through it).
func (c *Client) awaitFirst(ctx context.Context, first <-chan error, cancel context.CancelFunc, what string) error {
	timer := time.NewTimer(c.o.FirstAnswer)
	defer timer.Stop()
	var err error
	select {
	case err = <-first:
	case <-timer.C:
		err = fmt.Errorf("no answer from the control plane within %s", c.o.FirstAnswer)
	case <-ctx.Done():
		err = ctx.Err()
	}
	var nf *discover.NotFoundError
	if errors.As(err, &nf) {
		return err // its watch goes on: nf.Stop ends it
	}
	if err != nil {
		cancel()
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
