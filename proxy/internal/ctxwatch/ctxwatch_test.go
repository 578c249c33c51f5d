package ctxwatch

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
)

type slotCtx struct {
	context.Context
	s *Slot
}

func (c slotCtx) Value(key any) any {
	if _, ok := key.(Key); ok {
		return c.s
	}
	return c.Context.Value(key)
}

type otherKey struct{}

func TestWatch(t *testing.T) {
	inner, cancel := context.WithCancel(context.Background())
	var s Slot
	s.Reset(inner)
	ctx := context.WithValue(slotCtx{inner, &s}, otherKey{}, "v") // value contexts in between are fine
	ran := 0
	w, id, ok := Watch(ctx, func() { ran++ })
	if !ok || w != &s {
		t.Fatal("Watch refused its slot's context")
	}
	if _, _, ok := Watch(ctx, func() {}); ok {
		t.Fatal("a second watch took the slot")
	}
	derived, stop := context.WithCancel(ctx)
	defer stop()
	if _, _, ok := Watch(derived, func() {}); ok {
		t.Fatal("Watch took a context that ends on its own")
	}
	if _, _, ok := Watch(context.WithoutCancel(ctx), func() {}); ok {
		t.Fatal("Watch took a context that never ends")
	}
	s.Fire() // not ended: nothing runs
	if ran != 0 {
		t.Fatal("Fire ran the callback before the context ended")
	}
	if !s.Stop(id) || s.Stop(id) {
		t.Fatal("Stop: want true once, then false")
	}
	_, id, ok = Watch(ctx, func() { ran++ })
	if !ok {
		t.Fatal("the slot was not free after Stop")
	}
	cancel()
	s.Fire()
	s.Fire()
	if ran != 1 {
		t.Fatalf("callback ran %d times, want 1", ran)
	}
	if s.Stop(id) {
		t.Fatal("Stop after the callback ran said true")
	}
	if _, _, ok := Watch(ctx, func() {}); ok {
		t.Fatal("Watch took an ended context")
	}
}

// TestStopOrFire: Stop and Fire racing, the callback runs exactly when
// Stop says false (context.AfterFunc's contract).
func TestStopOrFire(t *testing.T) {
	for range 200 {
		inner, cancel := context.WithCancel(context.Background())
		var s Slot
		s.Reset(inner)
		var ran atomic.Int32
		_, id, ok := Watch(slotCtx{inner, &s}, func() { ran.Add(1) })
		if !ok {
			t.Fatal("Watch refused")
		}
		var stopped bool
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); cancel(); s.Fire() }()
		go func() { defer wg.Done(); stopped = s.Stop(id) }()
		wg.Wait()
		if stopped == (ran.Load() == 1) || ran.Load() > 1 {
			t.Fatalf("Stop said %v, callback ran %d times", stopped, ran.Load())
		}
	}
}
