// Package ctxwatch lets a server whose request contexts it cancels itself
// (h1server, h2server) run a client's cancellation callback (h1client's)
// without context.AfterFunc, which costs 5 allocations per call and an
// entry in the context's children map: the callback goes into a slot of
// the server's per-request state.
package ctxwatch

import (
	"context"
	"sync"
)

// Key is the context key under which a request's context gives its Slot.
type Key struct{}

// Context is a request's context with its slot, kept in the server's
// per-request state (no allocation). Its Context is the request's
// context.WithCancel, so that the contexts derived from it are linked to
// that cancelCtx without a goroutine: their lookup of the nearest
// cancelCtx goes through Value to it, and its Done is this one's.
type Context struct {
	context.Context
	Slot Slot
}

// Reset starts c for a request whose context is ctx.
func (c *Context) Reset(ctx context.Context) {
	c.Context = ctx
	c.Slot.Reset(ctx)
}

// Value gives the slot under Key, the rest from the request's context.
func (c *Context) Value(key any) any {
	if _, ok := key.(Key); ok {
		return &c.Slot
	}
	return c.Context.Value(key)
}

// Slot is one request's watch, kept by the server that made the request's
// context. The zero value is ready; the server calls Fire each time the
// context may have ended (Fire runs the callback only once it has).
type Slot struct {
	mu    sync.Mutex
	ctx   context.Context // the request's: Watch refuses once it ended
	f     func()
	id    uint64 // of the watch in place; 0 for none
	next  uint64
	fired bool
}

// Reset starts the slot for a request whose context is ctx.
func (s *Slot) Reset(ctx context.Context) {
	s.mu.Lock()
	s.ctx, s.f, s.id, s.fired = ctx, nil, 0, false
	s.mu.Unlock()
}

// Watch is context.AfterFunc(ctx, f) when ctx's watch is s (ctx gives s
// under Key and ends exactly when s's context does): f will run once s's
// context ends, unless Stop(id) comes first. ok is false (the caller uses
// context.AfterFunc) when ctx is not s's, when s's context has ended
// already, or when another watch is in place.
func Watch(ctx context.Context, f func()) (s *Slot, id uint64, ok bool) {
	done := ctx.Done()
	if done == nil {
		return nil, 0, false
	}
	s, _ = ctx.Value(Key{}).(*Slot)
	if s == nil {
		return nil, 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// A context in between (a route timeout's) ends on its own: only the
	// same Done channel proves ctx ends when s's context does.
	if s.ctx == nil || s.ctx.Done() != done || s.fired || s.ctx.Err() != nil || s.id != 0 {
		return nil, 0, false
	}
	s.next++
	s.f, s.id = f, s.next
	return s, s.id, true
}

// Stop removes watch id: false when its callback has run or runs (as
// context.AfterFunc's stop says it).
func (s *Slot) Stop(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id != id {
		return false
	}
	s.f, s.id = nil, 0
	return true
}

// Fire runs the callback in place if the context has ended, once: the
// server calls it when it cancels the context and when the context's
// parent ends.
func (s *Slot) Fire() {
	s.mu.Lock()
	if s.ctx == nil || s.ctx.Err() == nil {
		s.mu.Unlock()
		return
	}
	s.fired = true
	f := s.f
	s.f, s.id = nil, 0
	s.mu.Unlock()
	if f != nil {
		f()
	}
}
