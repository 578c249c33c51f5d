//go:build !linux

package loadgen

import (
	"context"
	"time"
)

// pacer elsewhere is a plain ticker: coarser (the runtime's timers may round
// short sleeps up to a millisecond), but the intended-time accounting is the
// same, so lateness shows up in Result.Lag rather than being hidden.
type pacer struct {
	t        *time.Ticker
	interval time.Duration
	last     time.Time
}

func newPacer(interval time.Duration) (*pacer, error) {
	return &pacer{t: time.NewTicker(interval), interval: interval, last: time.Now()}, nil
}

func (p *pacer) wait(ctx context.Context) (int64, error) {
	select {
	case now := <-p.t.C:
		// A Ticker drops ticks it cannot deliver; count elapsed intervals instead.
		n := int64(now.Sub(p.last) / p.interval)
		if n < 1 {
			n = 1
		}
		p.last = p.last.Add(time.Duration(n) * p.interval)
		return n, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (p *pacer) stop() { p.t.Stop() }
