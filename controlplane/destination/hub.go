package destination

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

// hub shares the computation of one authority's answer between every stream
// that asks for it: one goroutine per authority follows the store and
// recomputes on change, and streams read its latest result. A thousand
// proxies watching one service cost one computation per change, not a
// thousand, and a result equal to the previous one wakes no stream.
type hub[T any] struct {
	n        store.Notifier
	resync   time.Duration
	log      *slog.Logger
	rpc      string
	computes prometheus.Counter
	// compute answers for an authority: the result, the topics it
	// depends on, and warnings for the log.
	compute func(authority string) (T, []store.Topic, []string)
	equal   func(a, b *T) bool
	// prepare, when not nil, completes a result about to be published
	// (say, its proto form, built once for every stream).
	prepare func(*T)

	// warn limits repeated warnings; shared by the hubs of one server,
	// which compute the same authorities.
	warn *warnLimiter

	mu      sync.Mutex
	entries map[string]*entry[T]
}

// warnEvery is how often the same warnings of one authority are logged:
// a proxy that asks again and again for a name the store does not know
// (a short name, by every request of its application) must not fill the
// log with one line per stream, nor one per RPC (Get and GetProfile).
const warnEvery = 10 * time.Minute

// warnLimiter remembers when each authority's warnings were last logged,
// and how many identical lines were not logged since.
type warnLimiter struct {
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
func (l *warnLimiter) allow(authority, text string, now time.Time) (bool, int) {
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
	authority string
	refs      int // guarded by hub.mu
	stop      context.CancelFunc
	ready     chan struct{} // closed once cur is set

	mu   sync.Mutex
	cur  *T // the latest result; never modified once published
	subs map[chan struct{}]struct{}
}

func newHub[T any](n store.Notifier, resync time.Duration, log *slog.Logger, warn *warnLimiter, rpc string, computes prometheus.Counter,
	compute func(string) (T, []store.Topic, []string), equal func(a, b *T) bool) *hub[T] {
	return &hub[T]{n: n, resync: resync, log: log, warn: warn, rpc: rpc, computes: computes, compute: compute, equal: equal, entries: map[string]*entry[T]{}}
}

// subscription is one stream's view of an entry.
type subscription[T any] struct {
	h    *hub[T]
	e    *entry[T]
	wake chan struct{}
}

// subscribe returns a subscription to authority's answer; wake receives a
// value (coalesced) whenever a new result is published.
func (h *hub[T]) subscribe(authority string) *subscription[T] {
	h.mu.Lock()
	e := h.entries[authority]
	if e == nil {
		ctx, cancel := context.WithCancel(context.Background())
		e = &entry[T]{authority: authority, stop: cancel, ready: make(chan struct{}), subs: map[chan struct{}]struct{}{}}
		h.entries[authority] = e
		go h.follow(ctx, e)
	}
	e.refs++
	h.mu.Unlock()
	s := &subscription[T]{h: h, e: e, wake: make(chan struct{}, 1)}
	e.mu.Lock()
	e.subs[s.wake] = struct{}{}
	e.mu.Unlock()
	return s
}

// latest waits for the first result and returns the current one.
func (s *subscription[T]) latest(ctx context.Context) (*T, bool) {
	select {
	case <-s.e.ready:
	case <-ctx.Done():
		return nil, false
	}
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	return s.e.cur, true
}

func (s *subscription[T]) close() {
	s.e.mu.Lock()
	delete(s.e.subs, s.wake)
	s.e.mu.Unlock()
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if s.e.refs--; s.e.refs == 0 {
		delete(s.h.entries, s.e.authority)
		s.e.stop()
	}
}

// follow computes e's answer until ctx ends: at once, then whenever a
// dependency changes (or, while the authority names no service key, every
// resync period).
func (h *hub[T]) follow(ctx context.Context, e *entry[T]) {
	ws := newWatchSet(h.n)
	defer ws.close()
	jittered := func() time.Duration { return h.resync/2 + rand.N(h.resync) }
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
			res, deps, warns = h.compute(e.authority)
			if !ws.set(deps) {
				break
			}
			// A new dependency: a change between the read and the
			// subscription would be lost, so read again.
		}
		h.computes.Inc()
		if len(warns) > 0 && !slices.Equal(warns, lastWarn) {
			text := strings.Join(warns, "; ")
			if ok, suppressed := h.warn.allow(e.authority, text, time.Now()); ok {
				h.log.Info("destination: "+text, "rpc", h.rpc, "authority", e.authority, "repeats_not_logged", suppressed)
			}
		}
		lastWarn = warns
		e.mu.Lock()
		if first || !h.equal(e.cur, &res) {
			if h.prepare != nil {
				h.prepare(&res)
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
