package runnable

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// blocker runs until ctx ends, then takes stopTime to stop, and records
// that it did.
type blocker struct {
	stopTime time.Duration
	stopped  atomic.Bool
}

func (b *blocker) Start(ctx context.Context) error {
	<-ctx.Done()
	time.Sleep(b.stopTime)
	b.stopped.Store(true)
	return nil
}

func TestGroup(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		parts   func(bs []*blocker) []Runnable
		cancel  bool // cancel the group's context (else a part must end it)
		wantErr string
	}{
		{
			name:   "context ends: all stop, nil",
			parts:  func(bs []*blocker) []Runnable { return []Runnable{bs[0], bs[1]} },
			cancel: true,
		},
		{
			name: "one fails: the others stop, its error is returned",
			parts: func(bs []*blocker) []Runnable {
				return []Runnable{bs[0], Named("store", Func(func(context.Context) error { return boom })), bs[1]}
			},
			wantErr: "store: boom",
		},
		{
			name: "one finishes early: the others keep running",
			parts: func(bs []*blocker) []Runnable {
				return []Runnable{bs[0], Func(func(context.Context) error { return nil }), bs[1]}
			},
			cancel: true,
		},
		{
			name: "first error wins over errors while stopping",
			parts: func(bs []*blocker) []Runnable {
				return []Runnable{
					Named("first", Func(func(context.Context) error { time.Sleep(10 * time.Millisecond); return boom })),
					Named("second", Func(func(ctx context.Context) error { <-ctx.Done(); return errors.New("stopping") })),
				}
			},
			wantErr: "first: boom",
		},
		{
			name:  "empty group returns at once",
			parts: func([]*blocker) []Runnable { return nil },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			bs := []*blocker{{stopTime: 20 * time.Millisecond}, {stopTime: 40 * time.Millisecond}}
			g := Group(tc.parts(bs))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- g.Start(ctx) }()
			if tc.cancel {
				time.Sleep(10 * time.Millisecond)
				cancel()
			}
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the group did not return")
			}
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
			if tc.wantErr == "first: boom" && !errors.Is(err, boom) {
				t.Fatalf("err %v does not wrap the cause", err)
			}
			// Start returned: every part that ran has stopped.
			for i, b := range bs {
				used := false
				for _, r := range g {
					used = used || r == Runnable(b)
				}
				if used && !b.stopped.Load() {
					t.Errorf("part %d still running after Start returned", i)
				}
			}
		})
	}
}

// A group is a Runnable: groups nest, and an inner failure stops the outer
// group's other parts.
func TestGroupNests(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	outer := &blocker{}
	g := Group{outer, Group{Func(func(context.Context) error { return errors.New("inner") })}}
	if err := g.Start(context.Background()); err == nil || err.Error() != "inner" {
		t.Fatalf("err %v", err)
	}
	if !outer.stopped.Load() {
		t.Fatal("outer part still running")
	}
}
