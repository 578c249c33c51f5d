package memrelease

import (
	"context"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
)

// released is the heap memory returned to the OS, as the runtime counts it.
func released() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

var sink [][]byte

// burst allocates about size bytes in small pieces, kept reachable until it
// returns, as requests in flight keep their buffers.
func burst(size int) {
	sink = make([][]byte, 0, size/(4<<10))
	for range size / (4 << 10) {
		sink = append(sink, make([]byte, 4<<10))
	}
	sink = nil
}

// After a burst the runtime keeps the heap (its goal is twice the peak
// until the next collection, which an idle process only gets every two
// minutes); Run returns it within a few intervals of going quiet.
func TestReleaseAfterBurst(t *testing.T) {
	const size = 64 << 20
	Release() // what earlier tests left is not this test's burst
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan [2]uint64, 1)
	go Run(ctx, Config{Interval: 20 * time.Millisecond, Quiet: 100 * time.Millisecond, Released: func(b, a uint64) {
		select {
		case done <- [2]uint64{b, a}:
		default:
		}
	}})
	rel := released()
	burst(size)
	select {
	case r := <-done:
		t.Logf("retained %d MiB before the release, %d MiB after; %d MiB returned to the OS",
			r[0]>>20, r[1]>>20, (int64(released())-int64(rel))>>20)
		if r[1] > size/4 {
			t.Errorf("retained %d MiB after the release, want under a quarter of the burst's %d MiB", r[1]>>20, size>>20)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no release within 20s of a %d MiB burst (retained %d MiB)", size>>20, Retained()>>20)
	}
}

// While the process allocates fast it is not quiet: no collection is
// forced on it, however much it retains.
func TestNoReleaseWhileBusy(t *testing.T) {
	var n atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	busy := 2 * time.Second
	stop := start.Add(busy)
	// Quiet is half the busy time: a goroutine of this test descheduled
	// for that long on a loaded machine is not expected.
	go Run(ctx, Config{Interval: 50 * time.Millisecond, Quiet: busy / 2, MinInterval: time.Millisecond,
		Released: func(uint64, uint64) { n.Add(1) }})
	for i := 0; time.Now().Before(stop) && i < 1<<20; i++ {
		burst(1 << 20) // hundreds of MiB/s: far above QuietRate
	}
	if got := n.Load(); got != 0 {
		t.Errorf("%d releases while allocating at full speed for %v, want none", got, time.Since(start))
	}
}

// An idle process is left alone: nothing has grown since Run started,
// and then nothing since the release that followed a burst.
func TestIdleLeftAlone(t *testing.T) {
	Release() // what earlier tests left is not this test's burst
	var n atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Run(ctx, Config{Interval: 10 * time.Millisecond, Quiet: 50 * time.Millisecond, MinInterval: 10 * time.Millisecond,
		Released: func(uint64, uint64) { n.Add(1) }})
	time.Sleep(time.Second) // 100 intervals, 20 quiet periods
	if got := n.Load(); got != 0 {
		t.Fatalf("%d releases in an idle second after start, want none", got)
	}
	burst(16 << 20)
	deadline := time.Now().Add(10 * time.Second)
	for n.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n.Load() == 0 {
		t.Fatal("no release within 10s of a 16 MiB burst")
	}
	time.Sleep(time.Second)
	if got := n.Load(); got != 1 {
		t.Errorf("%d releases in the idle second after a burst, want only the one after it", got)
	}
}

// Start reads the floor before it returns: a load right after it (the
// gateway compiling its snapshot) is garbage given back, never the floor,
// however late the scheduler first runs its goroutine. Run started with
// go read it whenever that was, and the gateway kept its load's heap in
// some runs.
func TestStartCountsWhatFollowsIt(t *testing.T) {
	const size = 64 << 20
	Release()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan [2]uint64, 1)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // the load runs before Start's goroutine can
	Start(ctx, Config{Interval: 20 * time.Millisecond, Quiet: 100 * time.Millisecond, Released: func(b, a uint64) {
		select {
		case done <- [2]uint64{b, a}:
		default:
		}
	}})
	burst(size)
	select {
	case r := <-done:
		if r[1] > size/4 {
			t.Errorf("retained %d MiB after the release, want under a quarter of the load's %d MiB", r[1]>>20, size>>20)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no release within 20s of a %d MiB load that followed Start (retained %d MiB)", size>>20, Retained()>>20)
	}
}
