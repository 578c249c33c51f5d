package golden

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/viz/stat"
)

// metrics is a proxy's /metrics with inbound successes, failures and
// latency buckets (le 10, le 100, +Inf), cumulative.
func metrics(success, failure int, buckets ...int) string {
	var b strings.Builder
	b.WriteString("# TYPE response_total counter\n")
	fmt.Fprintf(&b, "response_total{direction=\"inbound\",classification=\"success\",status_code=\"200\"} %d\n", success)
	if failure >= 0 {
		fmt.Fprintf(&b, "response_total{direction=\"inbound\",classification=\"failure\",status_code=\"500\"} %d\n", failure)
	}
	if len(buckets) == 3 {
		b.WriteString("# TYPE response_latency_ms histogram\n")
		for i, le := range []string{"10", "100", "+Inf"} {
			fmt.Fprintf(&b, "response_latency_ms_bucket{direction=\"inbound\",le=%q} %d\n", le, buckets[i])
		}
		fmt.Fprintf(&b, "response_latency_ms_sum{direction=\"inbound\"} 0\nresponse_latency_ms_count{direction=\"inbound\"} %d\n", buckets[2])
	}
	return b.String()
}

// scripted answers its reads in turn: a text, or an error when the text is
// "!".
type scripted struct {
	name  string
	reads []string
	n     atomic.Int32
}

func (s *scripted) Name() string { return s.name }

func (s *scripted) Metrics(context.Context) ([]byte, error) {
	i := int(s.n.Add(1)) - 1
	if i >= len(s.reads) {
		return nil, fmt.Errorf("read %d: not scripted", i)
	}
	if s.reads[i] == "!" {
		return nil, errors.New("connection refused")
	}
	return []byte(s.reads[i]), nil
}

func ptr(v float64) *float64 { return &v }

func fmtp(p *float64) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprintf("%.4g", *p)
}

// Measure's window arithmetic: what one proxy did between its two reads.
func TestMeasure(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after string
		requests      *float64 // nil: unknown
		success, p50  *float64
		err           string // the error, naming the source
	}{
		{name: "traffic", before: metrics(100, 10, 50, 100, 110), after: metrics(190, 20, 130, 190, 210),
			requests: ptr(100), success: ptr(0.9), p50: ptr(6.25)},
		{name: "zero traffic", before: metrics(100, 10, 50, 100, 110), after: metrics(100, 10, 50, 100, 110),
			requests: ptr(0)}, // no success rate, no latency: nothing invented
		{name: "counter reset (the proxy restarted)", before: metrics(100, 10, 50, 100, 110), after: metrics(5, 0, 5, 5, 5),
			requests: ptr(5), success: ptr(1), p50: ptr(5)},
		{name: "series missing before (first failure)", before: metrics(100, -1, 100, 100, 100), after: metrics(108, 2, 110, 110, 110),
			requests: ptr(10), success: ptr(0.8), p50: ptr(5)},
		{name: "series missing after", before: metrics(100, 10, 50, 100, 110), after: metrics(104, -1),
			requests: ptr(4), success: ptr(1)},
		{name: "no series at all", before: "", after: "", requests: ptr(0)},
		{name: "first read fails", before: "!", err: "web-1: connection refused"},
		{name: "second read fails", before: metrics(1, 0), after: "!", err: "web-1: connection refused"},
		{name: "unparsable", before: metrics(1, 0), after: "response_total{", err: "web-1: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &scripted{name: "web-1", reads: []string{tc.before, tc.after}}
			res := Measure(context.Background(), []Source{src}, 0)
			if len(res) != 1 {
				t.Fatalf("%d results for one source", len(res))
			}
			r := res[0]
			if tc.err != "" {
				if r.Err == nil || r.OK || !strings.HasPrefix(r.Err.Error(), tc.err) {
					t.Fatalf("result %+v, want error %q", r, tc.err)
				}
				if tc.before == "!" && src.n.Load() != 1 {
					t.Fatalf("a source whose first read failed was read %d times", src.n.Load())
				}
				return
			}
			if r.Err != nil || !r.OK {
				t.Fatalf("result %+v", r)
			}
			row := stat.Summarize("ns", "deploy", "web", 1, 1, "inbound", []stat.Pair{r.Pair})
			if fmtp(row.Requests) != fmtp(tc.requests) || fmtp(row.SuccessRate) != fmtp(tc.success) || fmtp(row.LatencyP50) != fmtp(tc.p50) {
				t.Fatalf("requests %s success %s p50 %s, want %s %s %s", fmtp(row.Requests), fmtp(row.SuccessRate), fmtp(row.LatencyP50),
					fmtp(tc.requests), fmtp(tc.success), fmtp(tc.p50))
			}
			if !r.Pair.After.Time.After(r.Pair.Before.Time) && !r.Pair.After.Time.Equal(r.Pair.Before.Time) {
				t.Fatal("the second read is older than the first")
			}
		})
	}
}

// Measure waits the window between the reads, and ends it early when ctx
// ends.
func TestMeasureWindow(t *testing.T) {
	src := &scripted{name: "a", reads: []string{metrics(0, 0), metrics(10, 0)}}
	start := time.Now()
	r := Measure(context.Background(), []Source{src}, 50*time.Millisecond)[0]
	if time.Since(start) < 50*time.Millisecond || !r.OK {
		t.Fatalf("measured %+v in %v, want a pair over 50ms", r, time.Since(start))
	}
	if dt := r.Pair.After.Time.Sub(r.Pair.Before.Time); dt < 50*time.Millisecond {
		t.Fatalf("reads %v apart, want at least the window", dt)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	src = &scripted{name: "a", reads: []string{metrics(0, 0), metrics(10, 0)}}
	start = time.Now()
	Measure(ctx, []Source{src}, time.Hour)
	if time.Since(start) > 10*time.Second {
		t.Fatal("a cancelled context did not end the window")
	}
}

// Many sources: each result is its own source's, in order, and no more
// than parallel are read at once.
func TestMeasureManySources(t *testing.T) {
	var cur, peak atomic.Int32
	var srcs []Source
	for i := range 3 * parallel {
		srcs = append(srcs, Proxy{Key: fmt.Sprint(i), Read: func(context.Context) ([]byte, error) {
			n := cur.Add(1)
			defer cur.Add(-1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			if i%7 == 0 {
				return nil, errors.New("down")
			}
			return []byte(metrics(i, 0)), nil
		}})
	}
	for i, r := range Measure(context.Background(), srcs, 0) {
		if i%7 == 0 {
			if r.Err == nil || r.Err.Error() != fmt.Sprintf("%d: down", i) {
				t.Errorf("source %d: %v, want its error", i, r.Err)
			}
			continue
		}
		if !r.OK || len(r.Pair.After.Families) == 0 {
			t.Errorf("source %d: %+v", i, r)
		}
	}
	if p := peak.Load(); p > parallel {
		t.Fatalf("%d reads at once, want at most %d", p, parallel)
	}
}

// The sliding window: each read pairs with the latest read at or before
// the window's start (the oldest, until a whole window has passed).
func TestWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(sec int, success int) Reading {
		s, err := stat.Parse(strings.NewReader(metrics(success, 0)), t0.Add(time.Duration(sec)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return Reading{Scrape: s}
	}
	down := Reading{Err: errors.New("a: down")}
	a := Proxy{Key: "a"}
	for _, tc := range []struct {
		name  string
		reads []Reading // of source a, in turn
		// what the last Add gives: the pair's start (seconds), or -1 for
		// none; and the reads kept
		from, kept int
		err        bool
	}{
		{name: "first read", reads: []Reading{at(0, 0)}, from: -1, kept: 1},
		{name: "second read", reads: []Reading{at(0, 0), at(5, 10)}, from: 0, kept: 2},
		{name: "a whole window", reads: []Reading{at(0, 0), at(5, 10), at(10, 20)}, from: 0, kept: 3},
		{name: "slides", reads: []Reading{at(0, 0), at(5, 10), at(10, 20), at(15, 30)}, from: 5, kept: 3},
		{name: "a gap longer than the window", reads: []Reading{at(0, 0), at(5, 10), at(60, 20)}, from: 5, kept: 2},
		{name: "a failed read forgets the source", reads: []Reading{at(0, 0), down, at(5, 10)}, from: -1, kept: 1},
		{name: "fails", reads: []Reading{at(0, 0), down}, err: true, kept: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWindow(10 * time.Second)
			var r Result
			for _, rd := range tc.reads {
				r = w.Add([]Source{a}, []Reading{rd})[0]
			}
			switch {
			case tc.err:
				if r.Err == nil || r.OK {
					t.Fatalf("%+v, want the error", r)
				}
			case tc.from < 0:
				if r.OK || r.Err != nil {
					t.Fatalf("%+v, want no pair yet", r)
				}
			default:
				if !r.OK || !r.Pair.Before.Time.Equal(t0.Add(time.Duration(tc.from)*time.Second)) {
					t.Fatalf("%+v, want a pair from %ds", r, tc.from)
				}
			}
			if n := w.Kept("a"); n != tc.kept {
				t.Fatalf("%d reads kept, want %d", n, tc.kept)
			}
		})
	}

	// A source not read in the latest Add is forgotten.
	w := NewWindow(10 * time.Second)
	w.Add([]Source{a, Proxy{Key: "b"}}, []Reading{at(0, 0), at(0, 0)})
	w.Add([]Source{a}, []Reading{at(5, 1)})
	if w.Kept("b") != 0 || w.Kept("a") != 2 {
		t.Fatalf("kept a=%d b=%d, want 2 and 0", w.Kept("a"), w.Kept("b"))
	}
}

// Windows are shared by refreshes that may overlap; run with -race.
func TestWindowConcurrent(t *testing.T) {
	w := NewWindow(time.Second)
	srcs := []Source{Proxy{Key: "a"}, Proxy{Key: "b"}}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				s, _ := stat.Parse(strings.NewReader(metrics(1, 0)), time.Now())
				for _, r := range w.Add(srcs, []Reading{{Scrape: s}, {Scrape: s}}) {
					if r.Err != nil {
						t.Error(r.Err)
					}
				}
				w.Kept("a")
			}
		}()
	}
	wg.Wait()
}

// Over real sockets: a proxy's admin endpoint on loopback, read twice.
func TestMeasureOverHTTP(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, metrics(int(10*n.Add(1)), 0))
	}))
	defer srv.Close()
	src := Proxy{Key: srv.Listener.Addr().String(), Read: func(ctx context.Context) ([]byte, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/metrics", nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}}
	r := Measure(context.Background(), []Source{src}, 10*time.Millisecond)[0]
	if !r.OK {
		t.Fatal(r.Err)
	}
	if g := stat.Summarize("", "proxy", "a", 1, 1, "inbound", []stat.Pair{r.Pair}); g.Requests == nil || *g.Requests != 10 {
		t.Fatalf("requests %s, want 10", fmtp(g.Requests))
	}
}
