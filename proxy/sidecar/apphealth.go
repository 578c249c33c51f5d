package sidecar

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// DefaultAppProbeInterval is how often an application that refused the
// inbound proxy's connection is probed until it accepts one again.
const DefaultAppProbeInterval = time.Second

// appHealth tracks whether the application behind the inbound proxy takes
// connections. A refused connection (ECONNREFUSED: nothing listens on its
// port) marks it down: the proxy's /ready turns false, so that the kubelet
// (or, in local mode, the registration) takes the pod out of its service's
// endpoints, and a TCP probe every interval watches for it to come back. Any
// connection that succeeds, the probe's or a request's, marks it up. Other
// errors (timeouts, resets) say nothing about whether it listens and are
// left to the balancers of the proxies that call this one.
//
// Only an address that has accepted a connection before counts: without
// --inbound-forward every port of the pod is reached through the proxy, and
// a connection to a port nothing ever served (a scan, a port the
// application does not use) must not take the pod out of service. An
// application that has not listened yet is starting, not down.
type appHealth struct {
	interval time.Duration
	dial     func(ctx context.Context, addr string) (net.Conn, error)
	log      func(msg string, args ...any)
	// onUp runs (without the lock) when the application is back: the
	// inbound side's connect backoff must not keep refusing it.
	onUp func()

	mu      sync.Mutex
	down    bool
	addr    string        // the address last refused, which the probe dials
	changed chan struct{} // closed and replaced at every change
	probing bool
	ctx     context.Context // the proxy's run; nil before Run
	served  map[string]bool // addresses that accepted a connection (bounded)
}

// maxServed bounds appHealth.served: a pod serves a handful of ports.
const maxServed = 1024

func newAppHealth(interval time.Duration, dial func(ctx context.Context, addr string) (net.Conn, error), log func(string, ...any)) *appHealth {
	return &appHealth{interval: interval, dial: dial, log: log, changed: make(chan struct{}), served: map[string]bool{}}
}

// state reports whether the application is up (as far as is known) and a
// channel closed at the next change.
func (a *appHealth) state() (up bool, changed <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.down, a.changed
}

// start lets probes run until ctx ends; a probe owed from before starts now.
func (a *appHealth) start(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ctx = ctx
	a.probeLocked()
}

// observe records the outcome of a connection to the application at addr.
func (a *appHealth) observe(addr string, err error) {
	switch {
	case err == nil:
		a.set(false, addr)
	case errors.Is(err, syscall.ECONNREFUSED):
		a.set(true, addr)
	}
}

func (a *appHealth) set(down bool, addr string) {
	a.mu.Lock()
	up := a.setLocked(down, addr)
	a.mu.Unlock()
	if up && a.onUp != nil {
		a.onUp()
	}
}

// setLocked records the state; it reports whether the application just came
// back up. Called with a.mu held.
func (a *appHealth) setLocked(down bool, addr string) (up bool) {
	if !down && !a.served[addr] && len(a.served) < maxServed {
		a.served[addr] = true
	}
	if down {
		if !a.served[addr] {
			return false // never served: not the application going down
		}
		a.addr = addr
	}
	if a.down == down {
		return false
	}
	a.down = down
	close(a.changed)
	a.changed = make(chan struct{})
	if down {
		a.log("application refuses connections: not ready until it accepts one", "addr", addr)
		a.probeLocked()
	} else {
		a.log("application accepts connections again: ready", "addr", addr)
	}
	return !down
}

// probeLocked starts the probe loop if the application is down and none
// runs. Called with a.mu held.
func (a *appHealth) probeLocked() {
	if !a.down || a.probing || a.ctx == nil {
		return
	}
	a.probing = true
	ctx := a.ctx
	go func() {
		t := time.NewTicker(a.interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				a.mu.Lock()
				a.probing = false
				a.mu.Unlock()
				return
			case <-t.C:
			}
			a.mu.Lock()
			addr, down := a.addr, a.down
			if !down {
				a.probing = false
				a.mu.Unlock()
				return
			}
			a.mu.Unlock()
			pctx, cancel := context.WithTimeout(ctx, a.interval)
			c, err := a.dial(pctx, addr)
			cancel()
			if err == nil {
				c.Close()
			}
			a.observe(addr, err)
		}
	}()
}
