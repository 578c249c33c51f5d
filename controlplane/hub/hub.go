// Package hub shares the computation of one key's answer between every
// stream that asks for it: one goroutine per key follows the store topics
// the answer read, recomputes on change, and publishes the result only when
// it differs; streams read the latest result. The destination API's
// endpoint sets and profiles, and the gateway API's snapshots, are served
// this way.
package hub

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-mesh/meridian/controlplane/store"
)

// Hub computes the answers of keys (authorities, Gateways) for every
// stream that subscribes to them. A thousand proxies watching one key cost
// one computation per change, not a thousand, and a result equal to the
// previous one wakes no stream.
type Hub[T any] struct {
	o       Options[T]
	mu      sync.Mutex
	entries map[string]*entry[T]
}

// Options configure a Hub.
type Options[T any] struct {
	// Notifier wakes a key's computation when a topic it read changes.
	Notifier store.Notifier
	// Compute answers for a key: the result, the topics it read, and
	// warnings for the log.
	Compute func(key string) (T, []store.Topic, []string)
	// Equal reports whether two results are the same answer.
	Equal func(a, b *T) bool
	// Prepare, when not nil, completes a result about to be published
	// (say, its proto form, built once for every stream).
	Prepare func(*T)
	// Resync is how often a key whose answer read no topic (nothing the
	// store can announce yet) is computed again; jittered.
	Resync time.Duration
	// Log gets the warnings, prefixed with Name, labelled with RPC and
	// with the key under KeyName (default "key").
	Log                *slog.Logger
	Name, RPC, KeyName string
	// Computes counts computations, when not nil.
	Computes prometheus.Counter
	// Warn limits repeated warnings; hubs that compute the same keys
	// (Get and GetProfile) share one.
	Warn *WarnLimiter
}

// New returns a hub; o.Notifier, o.Compute and o.Equal are required.
func New[T any](o Options[T]) *Hub[T] {
	if o.Resync <= 0 {
		o.Resync = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Warn == nil {
		o.Warn = &WarnLimiter{}
	}
	if o.KeyName == "" {
		o.KeyName = "key"
	}
	return &Hub[T]{o: o, entries: map[string]*entry[T]{}}
}

// warnEvery is how often the same warnings of one authority are logged:
// a proxy that asks again and again for a name the store does not know
// (a short name, by every request of its application) must not fill the
// log with one line per stream, nor one per RPC (Get and GetProfile).
const warnEvery = 10 * time.Minute

// WarnLimiter remembers when each key's warnings were last logged, and how
// many identical lines were not logged since. The zero value is ready.
type WarnLimiter struct {
	mu     sync.Mutex
	warned map[string]warning
}

type warning struct {
	text       string
	at         time.Time
	suppressed int
}

// allow says whether text, a warning about authority, is logged now, and
// how many identical lines were suppressed before it.
func (l *WarnLimiter) allow(authority, text string, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.warned == nil {
		l.warned = map[string]warning{}
	}
	w, ok := l.warned[authority]
	if ok && w.text == text && now.Sub(w.at) < warnEvery {
		w.suppressed++
		l.warned[authority] = w
		return false, 0
	}
	if len(l.warned) >= 10000 {
		// Bounded: forget the lines whose window has passed.
		for a, w := range l.warned {
			if now.Sub(w.at) >= warnEvery {
				delete(l.warned, a)
			}
		}
	}
	l.warned[authority] = warning{text: text, at: now}
	if ok && w.text == text {
		return true, w.suppressed
	}
	return true, 0
}

// entry is one authority's shared state.
type entry[T any] struct {
	key   string
	refs  int // guarded by hub.mu
	stop  context.CancelFunc
	ready chan struct{} // closed once cur is set

	mu   sync.Mutex
	cur  *T // the latest result; never modified once published
	subs map[chan struct{}]struct{}
}

// Subscription is one stream's view of a key's answer.
type Subscription[T any] struct {
	h    *Hub[T]
	e    *entry[T]
	wake chan struct{}
}

// Subscribe returns a subscription to key's answer. Close it when done.
func (h *Hub[T]) Subscribe(key string) *Subscription[T] {
	h.mu.Lock()
	e := h.entries[key]
	if e == nil {
		ctx, cancel := context.WithCancel(context.Background())
		e = &entry[T]{key: key, stop: cancel, ready: make(chan struct{}), subs: map[chan struct{}]struct{}{}}
		h.entries[key] = e
		go h.follow(ctx, e)
	}
	e.refs++
	h.mu.Unlock()
	s := &Subscription[T]{h: h, e: e, wake: make(chan struct{}, 1)}
	e.mu.Lock()
	e.subs[s.wake] = struct{}{}
	e.mu.Unlock()
	return s
}

// Wake receives a value (coalesced) whenever a new result is published.
func (s *Subscription[T]) Wake() <-chan struct{} { return s.wake }

// Latest waits for the first result and returns the current one, which
// the caller must not modify; false when ctx ended first.
func (s *Subscription[T]) Latest(ctx context.Context) (*T, bool) {
	select {
	case <-s.e.ready:
	case <-ctx.Done():
		return nil, false
	}
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	return s.e.cur, true
}

// Close ends the subscription; the key's computation stops with its last.
func (s *Subscription[T]) Close() {
	s.e.mu.Lock()
	delete(s.e.subs, s.wake)
	s.e.mu.Unlock()
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if s.e.refs--; s.e.refs == 0 {
		delete(s.h.entries, s.e.key)
		s.e.stop()
	}
}

// follow computes e's answer until ctx ends: at once, then whenever a
// dependency changes (or, while the authority names no service key, every
// resync period).
func (h *Hub[T]) follow(ctx context.Context, e *entry[T]) {
	ws := newWatchSet(h.o.Notifier)
	defer ws.close()
	jittered := func() time.Duration { return h.o.Resync/2 + rand.N(h.o.Resync) }
	poll := time.NewTimer(time.Hour)
	defer poll.Stop()
	var lastWarn []string
	first := true
	for {
		var (
			res   T
			deps  []store.Topic
			warns []string
		)
		for range 4 {
			res, deps, warns = h.o.Compute(e.key)
			if !ws.set(deps) {
				break
			}
			// A new dependency: a change between the read and the
			// subscription would be lost, so read again.
		}
		if h.o.Computes != nil {
			h.o.Computes.Inc()
		}
		if len(warns) > 0 && !slices.Equal(warns, lastWarn) {
			text := strings.Join(warns, "; ")
			if ok, suppressed := h.o.Warn.allow(e.key, text, time.Now()); ok {
				h.o.Log.Info(h.o.Name+": "+text, "rpc", h.o.RPC, h.o.KeyName, e.key, "repeats_not_logged", suppressed)
			}
		}
		lastWarn = warns
		e.mu.Lock()
		if first || !h.o.Equal(e.cur, &res) {
			if h.o.Prepare != nil {
				h.o.Prepare(&res)
			}
			e.cur = &res
			for w := range e.subs {
				select {
				case w <- struct{}{}:
				default: // a wake is pending: the stream will read the latest
				}
			}
		}
		e.mu.Unlock()
		if first {
			close(e.ready)
			first = false
		}
		var tick <-chan time.Time
		if len(deps) == 0 {
			poll.Reset(jittered())
			tick = poll.C
		}
		if !ws.wait(ctx, tick) {
			return
		}
	}
}
