package gctune

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

var keep [][]byte

// With a small live heap GOGC goes up to 400; as the live heap grows
// past the headroom, back down to 100; when ctx ends, 100.
func TestTune(t *testing.T) {
	if v := gogc(); v != 100 {
		t.Skipf("GOGC is %d (the environment's), not the default", v)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tu := Start(ctx, 64<<20)
	runtime.GC()
	runtime.GC() // the finalizer of the first cycle's sentinel has run
	waitFor(t, func() bool { return gogc() == maxPercent }, "GOGC 400 over a small live heap")
	if got, want := gogc(), tu.Percent(); got != want {
		t.Errorf("GOGC %d, the tuner says %d", got, want)
	}
	// 48 MiB live: GOGC 64/48 × 100, the goal the headroom over it.
	for range 48 {
		keep = append(keep, make([]byte, 1<<20))
	}
	waitFor(t, func() bool { runtime.GC(); v := gogc(); return v > 115 && v < 140 }, "GOGC about 133 over 48 MiB live")
	keep = nil
	// 128 MiB live: twice the headroom, so the default's goal is over it.
	for range 128 {
		keep = append(keep, make([]byte, 1<<20))
	}
	waitFor(t, func() bool { runtime.GC(); return gogc() == 100 }, "GOGC 100 over a live heap above the headroom")
	keep = nil
	waitFor(t, func() bool { runtime.GC(); return gogc() == maxPercent }, "GOGC up again once the heap is freed")
	cancel()
	waitFor(t, func() bool { return gogc() == 100 }, "GOGC 100 after the context ended")
	runtime.GC()
	runtime.GC()
	if v := gogc(); v != 100 {
		t.Errorf("after the end, a collection set GOGC %d", v)
	}
}

// The environment's GOGC, or a headroom of 0, leaves the runtime alone.
func TestOff(t *testing.T) {
	if Start(context.Background(), 0) != nil {
		t.Error("a zero headroom started a tuner")
	}
	t.Setenv("GOGC", "100")
	if Start(context.Background(), 64<<20) != nil {
		t.Error("GOGC in the environment: a tuner started")
	}
	debug.SetGCPercent(100)
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s: GOGC %d", what, gogc())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
