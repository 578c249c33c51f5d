package dstclient

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
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

// wait sleeps for the current delay and doubles it; false when ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	d := time.Duration(float64(b.cur) * (0.8 + 0.4*rand.Float64()))
	b.cur = min(2*b.cur, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
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
	if err != nil {
		cancel()
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
