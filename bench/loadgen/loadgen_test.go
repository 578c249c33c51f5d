package loadgen_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/bench/backend"
	"github.com/meridian-mesh/meridian/bench/loadgen"
)

// A server that stalls once for 200 ms at 100 RPS. With one worker the
// generator itself cannot send during the stall, which is exactly the
// closed-loop blind spot: measured from the actual send, only one request of
// 200 is slow and the p99 looks fine; measured from the intended send, the ~20
// requests due during the stall carry 10–200 ms and the p99 shows it.
func TestStallCountsAgainstQueuedRequests(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 50 {
			time.Sleep(200 * time.Millisecond)
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()

	c := loadgen.HTTPClient(1)
	res, err := loadgen.Run(context.Background(), loadgen.Options{
		Rate: 100, Duration: 2 * time.Second, Concurrency: 1,
	}, loadgen.HTTPGet(c, srv.URL, ""))
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summary()
	t.Logf("corrected p50=%v p99=%v max=%v; service p99=%v; ok=%d err=%d rate=%.1f",
		s.P50, s.P99, s.Max, time.Duration(res.Service.ValueAtQuantile(99))*time.Microsecond,
		s.OK, s.Errors, s.Rate)
	if res.Scheduled != 200 || s.OK != 200 || s.Errors != 0 {
		t.Fatalf("scheduled=%d ok=%d errors=%d, want 200/200/0", res.Scheduled, s.OK, s.Errors)
	}
	if s.Max < 200*time.Millisecond {
		t.Errorf("max %v, want >= 200ms (the stalled request itself)", s.Max)
	}
	// 99th percentile of 200 = 2nd worst request. Behind the stall, requests
	// were due every 10 ms, so the 2nd worst waited about 190 ms.
	if s.P99 < 150*time.Millisecond {
		t.Errorf("corrected p99 %v, want >= 150ms: the stall must count against queued requests", s.P99)
	}
	if sp99 := time.Duration(res.Service.ValueAtQuantile(99)) * time.Microsecond; sp99 > 100*time.Millisecond {
		t.Errorf("service-time p99 %v; expected the uncorrected view to hide the stall", sp99)
	}
	// 20 requests were due during the stall: all must be over 5 ms.
	var slow int64
	for _, b := range res.Latency.Distribution() {
		if b.From >= 5000 {
			slow += b.Count
		}
	}
	if slow < 15 {
		t.Errorf("%d requests over 5ms, want >= 15 (those queued behind the stall)", slow)
	}
}

// With a stalling gRPC backend and plenty of workers, the requests pile up
// at the server instead; the corrected latency still shows the stall.
func TestGRPCStall(t *testing.T) {
	b, err := backend.StartGRPC("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cc, err := loadgen.GRPCConn(b.Addr, "backend.bench:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	check := loadgen.GRPCHealth(cc)
	var once sync.Once
	var n atomic.Int64
	do := func(ctx context.Context) error {
		// Stall the client side once, as a GC pause in the caller would: the
		// following requests are dispatched late and must be charged for it.
		if n.Add(1) == 30 {
			once.Do(func() { time.Sleep(200 * time.Millisecond) })
		}
		return check(ctx)
	}
	res, err := loadgen.Run(context.Background(), loadgen.Options{
		Rate: 100, Duration: 2 * time.Second, Concurrency: 1,
	}, do)
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summary()
	if s.OK != 200 || s.Errors != 0 {
		t.Fatalf("ok=%d errors=%d (%s)", s.OK, s.Errors, res.ErrorString())
	}
	if s.P99 < 150*time.Millisecond {
		t.Errorf("p99 %v, want >= 150ms", s.P99)
	}
	if b.Count() != 200 {
		t.Errorf("backend counted %d, want 200", b.Count())
	}
}

func TestErrorsCounted(t *testing.T) {
	var n atomic.Int64
	boom := errors.New("boom")
	res, err := loadgen.Run(context.Background(), loadgen.Options{Rate: 500, Duration: time.Second},
		func(ctx context.Context) error {
			if n.Add(1)%10 == 0 {
				return boom
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 50 || res.OK != 450 || res.ErrorKind["boom"] != 50 {
		t.Fatalf("errors=%d ok=%d kinds=%v, want 50/450", res.Errors, res.OK, res.ErrorKind)
	}
	// Failures are not in the latency histogram.
	if res.Latency.TotalCount() != 450 {
		t.Fatalf("histogram holds %d, want 450", res.Latency.TotalCount())
	}
}

func TestHTTPStatusIsError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "backend.bench:8080" {
			http.Error(w, "wrong host "+r.Host, http.StatusBadGateway)
			return
		}
		http.Error(w, "nope", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	res, err := loadgen.Run(context.Background(), loadgen.Options{Rate: 100, Duration: 200 * time.Millisecond},
		loadgen.HTTPGet(loadgen.HTTPClient(4), srv.URL, "backend.bench:8080"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 20 || res.ErrorKind["HTTP 503"] != 20 {
		t.Fatalf("errors=%d kinds=%v", res.Errors, res.ErrorKind)
	}
}

// The achieved rate matches the requested one, and the pacer is precise
// enough that the generator's own lateness is small.
func TestRateAndLag(t *testing.T) {
	var n atomic.Int64
	res, err := loadgen.Run(context.Background(), loadgen.Options{Rate: 2000, Duration: time.Second},
		func(context.Context) error { n.Add(1); return nil })
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summary()
	if n.Load() != 2000 || s.OK != 2000 {
		t.Fatalf("ran %d, ok %d, want 2000", n.Load(), s.OK)
	}
	if s.Rate < 1800 || s.Rate > 2200 {
		t.Errorf("achieved %.0f RPS, want ~2000", s.Rate)
	}
	lag50 := time.Duration(res.Lag.ValueAtQuantile(50)) * time.Microsecond
	t.Logf("lag p50=%v p99=%v max=%v", lag50,
		time.Duration(res.Lag.ValueAtQuantile(99))*time.Microsecond,
		time.Duration(res.Lag.Max())*time.Microsecond)
	// Under -race and on a loaded CI box the tail can be anything; the median
	// must still be far below the 1 ms a time.Sleep pacer would show.
	if lag50 > 500*time.Microsecond {
		t.Errorf("median send lag %v; pacer too coarse", lag50)
	}
}

// A hung target cannot stretch a run beyond Duration + Timeout: requests that
// could not even start before their deadline are counted as errors.
func TestBoundedWhenTargetHangs(t *testing.T) {
	t0 := time.Now()
	res, err := loadgen.Run(context.Background(), loadgen.Options{
		Rate: 100, Duration: 500 * time.Millisecond, Concurrency: 2, Timeout: 100 * time.Millisecond,
	}, func(ctx context.Context) error {
		// A target that ignores the deadline and answers late with an error.
		time.Sleep(250 * time.Millisecond)
		return errors.New("slow")
	})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(t0); el > 2*time.Second {
		t.Fatalf("run took %v", el)
	}
	if res.OK != 0 || res.Errors != 50 {
		t.Fatalf("ok=%d errors=%d, want 0/50 (%s)", res.OK, res.Errors, res.ErrorString())
	}
	if res.ErrorKind[loadgen.ErrLate.Error()] == 0 {
		t.Errorf("expected some requests to miss their deadline in the queue: %v", res.ErrorKind)
	}
}

func TestCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	res, err := loadgen.Run(ctx, loadgen.Options{Rate: 100, Duration: 10 * time.Second},
		func(context.Context) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(t0) > time.Second || res.OK > 30 {
		t.Fatalf("took %v, ok=%d", time.Since(t0), res.OK)
	}
}

func TestMerge(t *testing.T) {
	run := func(d time.Duration) *loadgen.Result {
		r, err := loadgen.Run(context.Background(), loadgen.Options{Rate: 1000, Duration: 100 * time.Millisecond},
			func(context.Context) error { time.Sleep(d); return nil })
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	all := loadgen.NewResult(loadgen.Options{Rate: 1000})
	all.Merge(run(0))
	all.Merge(run(20 * time.Millisecond))
	s := all.Summary()
	if s.OK != 200 || all.Scheduled != 200 || all.Options.Duration != 200*time.Millisecond {
		t.Fatalf("merged ok=%d scheduled=%d duration=%v", s.OK, all.Scheduled, all.Options.Duration)
	}
	// Half the requests took >= 20 ms: p90 reflects the slow slice.
	if s.P90 < 20*time.Millisecond || s.Rate < 500 {
		t.Fatalf("p90 %v rate %.0f", s.P90, s.Rate)
	}
}
