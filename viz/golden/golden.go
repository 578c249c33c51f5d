// Package golden measures proxies' golden metrics over a window: each
// proxy's metrics read at both ends of it, the difference computed by
// viz/stat. `meridian viz stat`, `routes` and `edges` read twice, a window
// apart (Measure); the dashboard reads at every refresh and pairs each read
// with the one a window earlier (Window); rollout analysis will do either.
// Where the reads come from (the API server's pod proxy, a proxy's admin
// endpoint) is a Source.
package golden

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/viz/stat"
)

// Source is one proxy whose metrics are read.
type Source interface {
	// Name names the proxy in errors and across reads: "pod NS/NAME", an
	// admin address.
	Name() string
	// Metrics returns the proxy's metrics in Prometheus text format.
	Metrics(ctx context.Context) ([]byte, error)
}

// Proxy is a Source made of a name and a function.
type Proxy struct {
	Key  string
	Read func(context.Context) ([]byte, error)
}

func (p Proxy) Name() string                                { return p.Key }
func (p Proxy) Metrics(ctx context.Context) ([]byte, error) { return p.Read(ctx) }

const (
	// parallel is how many sources are read at once.
	parallel = 16
	// readTimeout bounds one read, so that one proxy that hangs does not
	// hold up the measurement of the others.
	readTimeout = 10 * time.Second
)

// Reading is one read of a source: its scrape, or the error (naming the
// source) that prevented it.
type Reading struct {
	Scrape stat.Scrape
	Err    error
}

// Result is one source's measurement over a window: its pair of reads
// (OK), or the error (naming the source) that prevented it. A source's
// first read in a Window has neither.
type Result struct {
	Pair stat.Pair
	OK   bool
	Err  error
}

// ReadAll reads every source once, parallel at a time, each within
// readTimeout; the i-th reading is the i-th source's. A scrape's time is
// when its read ended.
func ReadAll(ctx context.Context, srcs []Source) []Reading {
	rs := make([]Reading, len(srcs))
	each(len(srcs), func(i int) { rs[i] = read(ctx, srcs[i]) })
	return rs
}

// Measure reads every source twice, window apart (a source whose first
// read failed is not read again), as `viz stat` does. The window ends
// early, with the second reads, if ctx ends.
func Measure(ctx context.Context, srcs []Source, window time.Duration) []Result {
	first := ReadAll(ctx, srcs)
	select {
	case <-ctx.Done():
	case <-time.After(window):
	}
	out := make([]Result, len(srcs))
	each(len(srcs), func(i int) {
		if first[i].Err != nil {
			out[i].Err = first[i].Err
			return
		}
		r := read(ctx, srcs[i])
		if r.Err != nil {
			out[i].Err = r.Err
			return
		}
		out[i] = Result{Pair: stat.Pair{Before: first[i].Scrape, After: r.Scrape}, OK: true}
	})
	return out
}

func read(ctx context.Context, src Source) Reading {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	b, err := src.Metrics(ctx)
	if err == nil {
		var s stat.Scrape
		if s, err = stat.Parse(bytes.NewReader(b), time.Now()); err == nil {
			return Reading{Scrape: s}
		}
	}
	return Reading{Err: fmt.Errorf("%s: %w", src.Name(), err)}
}

// each runs f(0..n-1), parallel at a time, and waits for all.
func each(n int, f func(int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(i)
		}()
	}
	wg.Wait()
}

// Window pairs each new read of a source with its read Span earlier, so
// that the figures always cover the last Span (a failure now and then
// stays in view for Span, not only for the one interval in which it
// happened). Until a whole Span has passed, a read pairs with the source's
// oldest. It keeps, per source, only the reads the span still needs, and
// forgets a source that was not read (or failed) in the latest Add. Safe
// for concurrent use.
type Window struct {
	span time.Duration
	mu   sync.Mutex
	hist map[string][]stat.Scrape // by Source.Name, oldest first
}

// NewWindow returns an empty window of span.
func NewWindow(span time.Duration) *Window {
	return &Window{span: span, hist: map[string][]stat.Scrape{}}
}

// Add records the readings of srcs (rs[i] is srcs[i]'s, as ReadAll
// returns them) and returns each source's result over the window.
func (w *Window) Add(srcs []Source, rs []Reading) []Result {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Result, len(srcs))
	next := make(map[string][]stat.Scrape, len(srcs))
	for i, src := range srcs {
		r := rs[i]
		if r.Err != nil {
			out[i].Err = r.Err
			continue
		}
		h := trim(w.hist[src.Name()], r.Scrape.Time.Add(-w.span))
		if len(h) > 0 {
			out[i] = Result{Pair: stat.Pair{Before: h[0], After: r.Scrape}, OK: true}
		}
		next[src.Name()] = append(h, r.Scrape)
	}
	w.hist = next
	return out
}

// trim drops the reads that the window no longer needs: it keeps the
// latest read at or before start (the window's beginning) and the ones
// after it.
func trim(h []stat.Scrape, start time.Time) []stat.Scrape {
	i := 0
	for i+1 < len(h) && !h[i+1].Time.After(start) {
		i++
	}
	return slices.Clone(h[i:])
}

// Kept is how many reads of source name the window keeps: its start and
// the reads after it.
func (w *Window) Kept(name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.hist[name])
}
