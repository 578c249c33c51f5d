// Package memrelease gives the heap a burst of load left behind back to the
// operating system once the process has gone quiet.
//
// After a burst, a Go process keeps its heap: the collector's goal stays
// at twice the peak's live heap until the next collection, and an idle
// process allocates nothing, so that collection is the runtime's forced
// one, every two minutes; only then does the background scavenger start
// returning pages, a little at a time. A proxy that carried 5000 RPS
// for a few seconds held 30-50 MB for minutes. Run watches the heap the
// process retains (not released to the OS) and, once the allocation rate
// has stayed low for a while, collects and returns the free pages at once
// (debug.FreeOSMemory), at most once per MinInterval.
package memrelease

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Config tunes Run; the zero value takes every default.
type Config struct {
	// Interval is how often Run reads the runtime's statistics. Default 1s.
	Interval time.Duration
	// Quiet is how long the process must allocate less than QuietRate
	// before its heap is released. Default 5s.
	Quiet time.Duration
	// QuietRate, in bytes allocated per second, is the rate below which
	// the process counts as quiet. Default 1 MiB/s: an idle proxy, or one
	// carrying tens of requests per second.
	QuietRate uint64
	// Slack is how far the retained heap must have grown over what was
	// retained after the last release (or at start) to be worth a
	// collection. Default 4 MiB.
	Slack uint64
	// MinInterval is the least time between two releases. Default 10s.
	MinInterval time.Duration
	// Released, if set, is called after each release with the retained
	// heap before and after it (bytes). For logs and tests.
	Released func(before, after uint64)
}

// What Run reads: heap bytes held from the OS (objects, fragmentation,
// free pages not yet returned, stacks), and all bytes ever allocated.
var names = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/gc/heap/allocs:bytes",
	"/sched/goroutines:goroutines",
}

// stats reads the retained heap and the cumulative allocations.
type stats []metrics.Sample

func newStats() stats {
	s := make(stats, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	return s
}

func (s stats) read() (retained, allocs, goroutines uint64) {
	metrics.Read(s)
	for _, m := range s[:4] {
		retained += m.Value.Uint64()
	}
	return retained, s[4].Value.Uint64(), s[5].Value.Uint64()
}

// Retained is the heap the process holds from the operating system:
// objects (live or not yet collected), fragmentation, free pages not yet
// returned, and goroutine stacks.
func Retained() uint64 {
	r, _, _ := newStats().read()
	return r
}

// Release collects twice, so that what sync.Pools hold (kept for one
// collection) is freed too, and returns every free page to the operating
// system. It costs two full collections: call it when the process is
// quiet.
func Release() {
	runtime.GC()
	debug.FreeOSMemory()
}

// Run releases the heap whenever the process has been quiet for
// cfg.Quiet and has grown since the last release: at least cfg.Slack more
// heap retained, or a quarter (and at least 16) of its goroutines gone
// (idle connections closed: their buffers are garbage the collector has
// not seen yet). Run returns when ctx ends.
//
// What the process retains when Run starts is its first floor: releasing
// what initialisation left is not worth it (a few hundred KiB, less than
// the mark workers and work buffers a first collection costs). Started
// with go, Run reads that floor whenever its goroutine first runs, which
// may be after work that follows the go statement: Start reads it before.
func Run(ctx context.Context, cfg Config) {
	s := newStats()
	floor, allocs, g := s.read()
	run(ctx, cfg, s, floor, allocs, g)
}

// Start is Run on a goroutine of its own, with its floor read before
// Start returns: work done after Start (a gateway loading 10,000 routes,
// whose garbage is several times the table) is garbage Run gives back.
// Without it, whether that load counted as the floor depended on when
// the scheduler first ran Run's goroutine, and the gateway kept 120 MB
// instead of 55 in some runs (bench/README.md, Edge gateway).
func Start(ctx context.Context, cfg Config) {
	s := newStats()
	floor, allocs, g := s.read()
	go run(ctx, cfg, s, floor, allocs, g)
}

func run(ctx context.Context, cfg Config, s stats, floor, lastAllocs, floorG uint64) {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = 5 * time.Second
	}
	if cfg.QuietRate == 0 {
		cfg.QuietRate = 1 << 20
	}
	if cfg.Slack == 0 {
		cfg.Slack = 4 << 20
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = 10 * time.Second
	}
	last := time.Now()
	var quietSince, lastRelease time.Time // zero: not quiet; never released
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			retained, allocs, g := s.read()
			rate := float64(allocs-lastAllocs) / now.Sub(last).Seconds()
			lastAllocs, last = allocs, now
			if rate >= float64(cfg.QuietRate) {
				quietSince = time.Time{}
				continue
			}
			if quietSince.IsZero() {
				quietSince = now
			}
			floor = min(floor, retained) // the runtime returned some itself
			grown := retained >= floor+cfg.Slack || g+max(floorG/4, 16) <= floorG
			if now.Sub(quietSince) < cfg.Quiet || !grown || (!lastRelease.IsZero() && now.Sub(lastRelease) < cfg.MinInterval) {
				continue
			}
			Release()
			floor, lastAllocs, floorG = s.read()
			lastRelease, last = time.Now(), time.Now()
			if cfg.Released != nil {
				cfg.Released(retained, floor)
			}
		}
	}
}
