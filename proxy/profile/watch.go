package profile

import (
	"context"
	"sync"

	"github.com/meridian-mesh/meridian/internal/latest"
)

// Source finds profiles; the destination API client implements it.
type Source interface {
	// Profile follows authority's profile; it returns once the first is known.
	Profile(ctx context.Context, authority string) (*Watch, error)
}

// Watch is a subscription to one authority's profile.
type Watch struct {
	cancel func()
	mu     sync.Mutex
	cur    *Profile
	ch     *latest.Chan[*Profile]
	closed bool
}

// NewWatch returns a watch holding an empty profile; cancel is called on Close.
func NewWatch(cancel func()) *Watch {
	return &Watch{cancel: cancel, cur: &Profile{BudgetSpec: DefaultBudget}, ch: latest.New[*Profile]()}
}

// Updates delivers each new profile (coalesced: only the newest waits).
func (w *Watch) Updates() <-chan *Profile { return w.ch.Updates() }

// Current returns the latest profile (never nil).
func (w *Watch) Current() *Profile {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// Set publishes a new profile.
func (w *Watch) Set(p *Profile) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.cur = p
	w.ch.Set(p)
}

// Close ends the watch.
func (w *Watch) Close() {
	if w.cancel != nil {
		w.cancel()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		w.ch.Close()
	}
}
