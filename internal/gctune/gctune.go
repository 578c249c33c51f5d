// Package gctune raises GOGC while the live heap is small: up to 400,
// and no more than keeps the heap goal a headroom above the live heap;
// 100 once the live heap is over the headroom. See README.md.
package gctune

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// maxPercent bounds GOGC. A goal much larger than the live heap costs
// more than the collections it saves: the allocations then walk through
// more memory than the caches hold (bench/README.md, "Closed-loop
// saturation": GOGC 400 gained 14%, a 32 MiB headroom without this cap
// 3.5%).
const maxPercent = 400

// Tuner sets GOGC after each collection.
type Tuner struct {
	headroom uint64
	ctx      context.Context
	mu       sync.Mutex
	sample   []metrics.Sample
	last     int // the GOGC it set last
}

// Start sets GOGC after each collection until ctx ends (100 then):
// headroom × 100 / live, within [100, 400]. It does nothing, and returns
// nil, when headroom is 0 or the environment sets GOGC (the operator's
// choice stands).
func Start(ctx context.Context, headroom uint64) *Tuner {
	if headroom == 0 || os.Getenv("GOGC") != "" {
		return nil
	}
	t := &Tuner{headroom: headroom, ctx: ctx, last: 100,
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	t.tune()
	t.arm()
	go func() {
		<-ctx.Done()
		t.mu.Lock()
		defer t.mu.Unlock()
		debug.SetGCPercent(100)
		t.last = 100
	}()
	return t
}

// Percent is the GOGC the tuner set last.
func (t *Tuner) Percent() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.last
}

// sentinel is garbage whose finalizer runs after the collection that
// found it: one per cycle, the next armed by the last. (Larger than the
// tiny allocator's 16 bytes, whose blocks are finalized late.)
type sentinel struct{ _ [32]byte }

func (t *Tuner) arm() {
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
		if t.ctx.Err() != nil {
			return
		}
		t.tune()
		t.arm()
	})
}

// tune sets GOGC so that the goal, live × (1 + GOGC/100), is live +
// headroom, within the default's 2 × live and 5 × live.
func (t *Tuner) tune() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctx.Err() != nil {
		return
	}
	metrics.Read(t.sample)
	live := t.sample[0].Value.Uint64()
	pct := maxPercent
	if live > 0 {
		pct = int(min(uint64(maxPercent), max(100, t.headroom*100/live)))
	}
	// A change of a tenth or less is not worth the pacer's recomputing,
	// but the bounds are always reached.
	if d := pct - t.last; d != 0 && (pct == 100 || pct == maxPercent || d*10 > t.last || -d*10 > t.last) {
		debug.SetGCPercent(pct)
		t.last = pct
	}
}
