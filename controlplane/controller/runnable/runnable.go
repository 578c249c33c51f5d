// Package runnable runs the parts of a process together: each part is a
// Runnable (controller-runtime's manager.Runnable shape, Start(ctx) error,
// blocking until ctx ends or it fails), and a Group starts them all, stops
// them all as soon as one fails, and returns only once every one has
// returned, so that nothing it started outlives it.
package runnable

import (
	"context"
	"fmt"
	"sync"
)

// Runnable is one part of a process. Start blocks until ctx ends (then it
// returns nil) or the part fails (then it returns why). Any
// controller-runtime manager.Runnable is one, and the other way round.
type Runnable interface {
	Start(ctx context.Context) error
}

// Func adapts a function to a Runnable.
type Func func(ctx context.Context) error

// Start calls f.
func (f Func) Start(ctx context.Context) error { return f(ctx) }

// Named wraps r so that its error says which part failed.
func Named(name string, r Runnable) Runnable { return named{name, r} }

type named struct {
	name string
	r    Runnable
}

func (n named) Start(ctx context.Context) error {
	if err := n.r.Start(ctx); err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	return nil
}

func (n named) String() string { return n.name }

// Group is a Runnable made of runnables that start together and stop
// together (errgroup's shape, with the Runnable contract).
type Group []Runnable

// Start starts every runnable in its own goroutine and waits for all of
// them. The first error cancels the context the others run under, and is
// what Start returns once they have all returned; an error seen after ctx
// ended (a part that failed while stopping) is returned too when there was
// no earlier one. A runnable that returns nil before ctx ends has simply
// finished (nothing left to do): the others keep running.
func (g Group) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, r := range g {
		wg.Go(func() {
			if err := r.Start(ctx); err != nil {
				once.Do(func() { first = err })
				cancel()
			}
		})
	}
	wg.Wait()
	return first
}
