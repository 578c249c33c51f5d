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
// One timer, armed for the oldest idle worker, ends them: a timer per
// worker, reset and stopped around each request with a select on it, cost
// 2% of the gateway's CPU per HTTP/2 request. The zero value is ready.
type workers struct {
	idleFor time.Duration // 0: workerIdle
	mu      sync.Mutex
	idle    []*worker   // idle, the most recent last (so the oldest first)
	reaper  *time.Timer // runs reap; armed while a worker is idle
	armed   bool
	stopped bool // by stop: a worker ends after its f instead of idling
}

type worker struct {
	next  chan func() // one slot: a send never waits
	since time.Time   // when it became idle (p.mu)
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

func (p *workers) idleTime() time.Duration {
	if p.idleFor > 0 {
		return p.idleFor
	}
	return workerIdle
}

// work runs f, then what run hands it, until reap or stopIdle ends it
// (nil), or stop. A handler that ends its goroutine (runtime.Goexit) ends
// the worker: it is on no list while it runs.
func (p *workers) work(f func()) {
	w := &worker{next: make(chan func(), 1)}
	for f != nil {
		f()
		p.mu.Lock()
		if p.stopped {
			p.mu.Unlock()
			return
		}
		w.since = time.Now()
		p.idle = append(p.idle, w)
		if !p.armed {
			p.arm(p.idleTime())
		}
		p.mu.Unlock()
		f = <-w.next
	}
}

// arm (p.mu held) makes reap run in d.
func (p *workers) arm(d time.Duration) {
	if p.reaper == nil {
		p.reaper = time.AfterFunc(d, p.reap)
	} else {
		p.reaper.Reset(d)
	}
	p.armed = true
}

// reap ends the workers idle for the idle time, the oldest first, and
// arms itself for the next one's.
func (p *workers) reap() {
	d := p.idleTime()
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].since) >= d {
		p.idle[n].next <- nil // idle: its slot is empty
		n++
	}
	p.idle = slices.Delete(p.idle, 0, n)
	p.armed = false
	if len(p.idle) > 0 {
		p.arm(d - now.Sub(p.idle[0].since))
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

// stop ends the idle workers, and each running one once its f returns;
// run still runs f after it, each on a goroutine that ends with it.
func (p *workers) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.stopIdle()
}

// Workers is the server's pool of handler goroutines for other servers'
// handlers (proxy/httpproxy/h2loop's Bridge): Run runs f on a goroutine
// that ran an earlier one if one is idle. The zero value is ready.
type Workers struct{ p workers }

// Run runs f on an idle worker, or a new one.
func (w *Workers) Run(f func()) { w.p.run(f) }

// Stop ends the idle workers at once (they end after their idle time
// otherwise), and each running one when its f returns: for a server that
// stops. Run still runs f after Stop, each on a goroutine that ends with it.
func (w *Workers) Stop() { w.p.stop() }
