package h2server

import (
	"slices"
	"sync"
	"time"
)

// workerIdle is how long a worker waits for its next stream before it
// ends (its stack freed with it), unless workers.idleFor says otherwise.
const workerIdle = 5 * time.Second

// workers runs streams' handlers on goroutines that served earlier ones,
// as grpc-go's stream workers do: a proxy's handler chain is deep, and a
// new goroutine's stack grew two or three times for each request (copied
// each time: 6% of the gateway's CPU per HTTP/2 request at saturation).
// The most recently idle worker is taken first, so that a steady load
// keeps as many warm as it has streams in flight; one idle for workerIdle
// ends, and so do all idle ones when the server's last connection closes.
// The zero value is ready.
type workers struct {
	idleFor time.Duration // 0: workerIdle
	mu      sync.Mutex
	idle    []*worker // idle, the most recent last
}

type worker struct {
	next  chan func() // one slot: a send never waits
	timer *time.Timer
}

// run runs f on an idle worker, or a new one.
func (p *workers) run(f func()) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w.next <- f
		return
	}
	p.mu.Unlock()
	go p.work(f)
}

// work runs f, then what run hands it, until it has been idle for
// workerIdle. A handler that ends its goroutine (runtime.Goexit) ends
// the worker: it is on no list while it runs.
func (p *workers) work(f func()) {
	w := &worker{next: make(chan func(), 1)}
	idleFor := p.idleFor
	if idleFor <= 0 {
		idleFor = workerIdle
	}
	for f != nil {
		f()
		p.mu.Lock()
		p.idle = append(p.idle, w)
		p.mu.Unlock()
		if w.timer == nil {
			w.timer = time.NewTimer(idleFor)
		} else {
			w.timer.Reset(idleFor)
		}
		select {
		case f = <-w.next:
			w.timer.Stop()
			continue
		case <-w.timer.C:
		}
		// Idle long enough: off the list and done, unless run took
		// it meanwhile (its function is then on the way).
		p.mu.Lock()
		i := -1
		for j, o := range p.idle {
			if o == w {
				i = j
				break
			}
		}
		if i >= 0 {
			p.idle = slices.Delete(p.idle, i, i+1)
		}
		p.mu.Unlock()
		if i >= 0 {
			return
		}
		f = <-w.next
	}
	if w.timer != nil {
		w.timer.Stop()
	}
}

// stopIdle ends the idle workers.
func (p *workers) stopIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, w := range idle {
		w.next <- nil
	}
}
