// Package loadgen is a constant-throughput (open-loop) load generator that
// corrects for coordinated omission.
//
// A closed-loop client (send, wait, send again) stops sending while the server
// stalls, so a 200 ms stall shows up as one slow request and the requests that
// would have been sent meanwhile simply never exist. Here request i is due at
// start + i/Rate whatever happens to earlier requests, and its latency is
// measured from that intended time. If the server (or the bounded worker pool)
// holds a request back, every request scheduled behind it is charged the wait,
// which is what a user arriving at that moment would have seen. This is the
// scheme of wrk2 and Gil Tene's HdrHistogram.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Options describe one run.
type Options struct {
	Rate        float64       // requests per second; must be > 0
	Duration    time.Duration // requests are scheduled over [0, Duration)
	Concurrency int           // cap on requests in flight (worker pool size); default 256
	// Timeout bounds each request, counted from its intended send time, so a
	// run ends at most Timeout after Duration even if the target hangs.
	// Default 5s.
	Timeout time.Duration
}

// ErrLate is recorded when a request could not even be started before its
// deadline (intended time + Timeout) because every worker was busy.
var ErrLate = errors.New("loadgen: not started before its deadline (all workers busy)")

// Histogram values are microseconds: 1 µs to 1 h at 3 significant digits.
const (
	histMin = 1
	histMax = int64(time.Hour / time.Microsecond)
	histSig = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histSig) }

// Result of a run. Latency histograms hold successful requests only; a fast
// failure (connection refused) must not make the distribution look better.
type Result struct {
	Options   Options
	Latency   *hdrhistogram.Histogram // µs from intended send time: the corrected figure
	Service   *hdrhistogram.Histogram // µs from actual send time: what a closed-loop tool reports
	Lag       *hdrhistogram.Histogram // µs the generator sent late (timer or pool saturation)
	Scheduled int64                   // requests due in Duration
	Sent      int64                   // requests actually started
	OK        int64
	Errors    int64
	ErrorKind map[string]int64 // error text → count
	Elapsed   time.Duration    // start to last completion
}

// Summary is the handful of numbers a benchmark reports.
type Summary struct {
	P50, P90, P99, Max time.Duration
	Rate               float64 // completed requests per second over the scheduling window
	OK, Errors         int64
}

// Summary of the corrected latency.
func (r *Result) Summary() Summary {
	q := func(p float64) time.Duration {
		return time.Duration(r.Latency.ValueAtQuantile(p)) * time.Microsecond
	}
	window := r.Options.Duration
	if r.Elapsed > window {
		// The tail of a slow run finishes after the window; count that time
		// too, so a target that cannot keep up shows a lower achieved rate.
		window = r.Elapsed
	}
	return Summary{
		P50:    q(50),
		P90:    q(90),
		P99:    q(99),
		Max:    time.Duration(r.Latency.Max()) * time.Microsecond,
		Rate:   float64(r.OK+r.Errors) / window.Seconds(),
		OK:     r.OK,
		Errors: r.Errors,
	}
}

// ErrorString lists error kinds, most frequent first, for a report line.
func (r *Result) ErrorString() string {
	type kv struct {
		k string
		n int64
	}
	var all []kv
	for k, n := range r.ErrorKind {
		all = append(all, kv{k, n})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n })
	var b strings.Builder
	for i, e := range all {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%d× %s", e.n, e.k)
	}
	return b.String()
}

// maxErrorKinds bounds ErrorKind: error texts that embed addresses or ports
// would otherwise grow it without bound.
const maxErrorKinds = 20

// Run schedules Rate×Duration calls of do at fixed intervals and waits for all
// of them. do gets a context that expires at intended time + Timeout; it
// returns nil for a successful request. Run returns early, with what it has,
// if ctx is cancelled.
func Run(ctx context.Context, o Options, do func(context.Context) error) (*Result, error) {
	if o.Rate <= 0 || o.Duration <= 0 {
		return nil, fmt.Errorf("loadgen: rate %v and duration %v must be positive", o.Rate, o.Duration)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 256
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	interval := time.Duration(float64(time.Second) / o.Rate)
	total := int64(o.Duration / interval)
	if total < 1 {
		total = 1
	}
	r := &Result{
		Options: o, Scheduled: total,
		Latency: newHist(), Service: newHist(), Lag: newHist(),
		ErrorKind: map[string]int64{},
	}

	var (
		mu       sync.Mutex // guards the histograms, ErrorKind and lastDone
		lastDone time.Time
		sent, ok atomic.Int64
		nerr     atomic.Int64
	)
	record := func(intended, started, done time.Time, err error) {
		mu.Lock()
		defer mu.Unlock()
		if done.After(lastDone) {
			lastDone = done
		}
		if err != nil {
			msg := err.Error()
			if _, seen := r.ErrorKind[msg]; seen || len(r.ErrorKind) < maxErrorKinds {
				r.ErrorKind[msg]++
			} else {
				r.ErrorKind["(other)"]++
			}
			return
		}
		_ = r.Latency.RecordValue(micros(done.Sub(intended)))
		_ = r.Service.RecordValue(micros(done.Sub(started)))
		_ = r.Lag.RecordValue(micros(started.Sub(intended)))
	}

	// start is set just before the first request is handed out; the channel
	// send orders that write before every worker's read.
	var start time.Time
	// Workers take request indices from an unbuffered channel: when all of them
	// are busy the pacer blocks, ticks pile up, and the backlog is sent as soon
	// as a worker frees up, each charged from its own intended time.
	work := make(chan int64)
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				intended := start.Add(time.Duration(i) * interval)
				deadline := intended.Add(o.Timeout)
				now := time.Now()
				if !now.Before(deadline) {
					nerr.Add(1)
					record(intended, now, now, ErrLate)
					continue
				}
				rctx, cancel := context.WithDeadline(ctx, deadline)
				sent.Add(1)
				err := do(rctx)
				cancel()
				if err != nil {
					nerr.Add(1)
				} else {
					ok.Add(1)
				}
				record(intended, now, time.Now(), err)
			}
		}()
	}

	p, err := newPacer(interval)
	if err != nil {
		close(work)
		wg.Wait()
		return nil, err
	}
	// The pacer's first tick is one interval from now: request 0 is due now.
	start = time.Now()
	var due int64 = 1 // request 0 is due at start
dispatch:
	for i := int64(0); i < total; i++ {
		for i >= due {
			n, err := p.wait(ctx)
			if err != nil {
				break dispatch
			}
			due += n
		}
		select {
		case work <- i:
		case <-ctx.Done():
			break dispatch
		}
	}
	p.stop()
	close(work)
	wg.Wait()

	r.Sent, r.OK, r.Errors = sent.Load(), ok.Load(), nerr.Load()
	if !lastDone.IsZero() {
		r.Elapsed = lastDone.Sub(start)
	}
	return r, ctx.Err()
}

func micros(d time.Duration) int64 {
	us := d.Microseconds()
	if us < histMin {
		return histMin
	}
	if us > histMax {
		return histMax
	}
	return us
}

// Ms formats a duration as milliseconds with three decimals, the unit the
// benchmark tables use.
func Ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

// Median is the median of ds (the mean of the middle two for an even
// count; 0 for none), ds left as it was: the statistic of per-slice
// figures that one disturbed slice moves no more than any other.
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	d := slices.Clone(ds)
	slices.Sort(d)
	if n := len(d); n%2 == 0 {
		return (d[n/2-1] + d[n/2]) / 2
	}
	return d[len(d)/2]
}

// Merge adds o's requests and histograms to r, so a measurement split into
// slices (interleaved with other targets' slices) reports as one run.
func (r *Result) Merge(o *Result) {
	r.Latency.Merge(o.Latency)
	r.Service.Merge(o.Service)
	r.Lag.Merge(o.Lag)
	r.Scheduled += o.Scheduled
	r.Sent += o.Sent
	r.OK += o.OK
	r.Errors += o.Errors
	for k, n := range o.ErrorKind {
		r.ErrorKind[k] += n
	}
	r.Elapsed += o.Elapsed
	r.Options.Duration += o.Options.Duration
}

// NewResult is an empty Result to Merge slices into.
func NewResult(o Options) *Result {
	return &Result{Options: o, Latency: newHist(), Service: newHist(), Lag: newHist(), ErrorKind: map[string]int64{}}
}
