// Package latest is a channel that keeps only the newest value: a producer
// that publishes faster than its consumer reads never blocks and never
// queues, and the consumer, whenever it reads, gets the most recent value.
// Endpoint sets and profiles are delivered this way: a consumer only ever
// needs the current one.
package latest

import "sync"

// Chan holds at most one undelivered value. Its methods are safe for
// concurrent use; Set after Close does nothing.
type Chan[T any] struct {
	mu     sync.Mutex
	ch     chan T
	closed bool
}

// New returns an open, empty Chan.
func New[T any]() *Chan[T] { return &Chan[T]{ch: make(chan T, 1)} }

// Updates is the channel to receive from; it is closed by Close.
func (c *Chan[T]) Updates() <-chan T { return c.ch }

// Set replaces any undelivered value with v.
func (c *Chan[T]) Set(v T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	select {
	case <-c.ch:
	default:
	}
	c.ch <- v
}

// Close closes Updates (after any undelivered value); it may be called
// more than once.
func (c *Chan[T]) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.ch)
	}
}
