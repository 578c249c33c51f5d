// Package balance picks an endpoint for each request.
//
// The default strategy is power of two choices (P2C) over peak-EWMA latency, as
// in Finagle and tower: sample two distinct ready endpoints at random and send the
// request to the one whose latency estimate times in-flight requests is lower.
// Round-robin is kept as a baseline for benchmarks.
//
// Endpoints whose connections fail are put in exponential backoff and skipped
// until it expires, so a dead endpoint costs one failed connect per backoff
// period rather than a share of the traffic.
package balance

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// ErrNoEndpoints means the endpoint set is empty.
	ErrNoEndpoints = errors.New("no endpoints")
	// ErrUnavailable means there are endpoints but every one is in backoff; the
	// caller should fail fast (503) rather than queue.
	ErrUnavailable = errors.New("all endpoints unavailable")
)

// Defaults for the zero values of Options.
const (
	DefaultDecay      = 10 * time.Second
	DefaultRTT        = 30 * time.Millisecond // Linkerd's seed for an unmeasured endpoint
	DefaultBackoffMin = 100 * time.Millisecond
	DefaultBackoffMax = 10 * time.Second

	// backoffJitter spreads retries of many proxies that lost the same endpoint at
	// the same moment: each backoff is scaled by a factor in [1-j, 1+j).
	backoffJitter = 0.2
)

// Strategy selects how Pick chooses.
type Strategy int

const (
	PeakEWMA   Strategy = iota // P2C over peak-EWMA latency × pending / weight
	RoundRobin                 // cycle through ready endpoints, ignoring latency and weights
)

var strategyNames = [...]string{PeakEWMA: "p2c-ewma", RoundRobin: "round-robin"}

// ParseStrategy parses a strategy name as written by String.
func ParseStrategy(s string) (Strategy, error) {
	for i, name := range strategyNames {
		if s == name {
			return Strategy(i), nil
		}
	}
	return 0, fmt.Errorf("balance: unknown strategy %q (allowed: %q, %q)",
		s, strategyNames[PeakEWMA], strategyNames[RoundRobin])
}

func (s Strategy) String() string {
	if s >= 0 && int(s) < len(strategyNames) {
		return strategyNames[s]
	}
	return fmt.Sprintf("Strategy(%d)", int(s))
}

// Spec describes one endpoint of the set given to Update.
type Spec struct {
	Addr   string
	Weight uint32 // relative; 0 means 1
}

// Options configures a Balancer. Zero values take the defaults.
type Options[T any] struct {
	Strategy   Strategy      // an unknown value behaves as PeakEWMA
	Decay      time.Duration // τ of the EWMA
	DefaultRTT time.Duration // cost of an endpoint with no samples yet
	BackoffMin time.Duration
	BackoffMax time.Duration
	Now        func() time.Time // must be safe for concurrent use
	// Rand is only used with the balancer's lock held, so it must not be shared
	// with anything else. The default is a PCG seeded from the runtime.
	Rand  *rand.Rand
	New   func(Spec) T // builds an endpoint's value when it is added (nil: zero T)
	Close func(T)      // releases it when the endpoint is removed (nil: nothing)
}

// Balancer holds a set of endpoints and picks one per request. It is safe for
// concurrent use.
type Balancer[T any] struct {
	o       Options[T] // defaults applied; read-only after New
	decayNS float64

	// updateMu serialises Update and Close so that New and Close callbacks run
	// without mu held: building or tearing down a transport never stalls Pick.
	updateMu sync.Mutex
	byAddr   map[string]*Endpoint[T] // guarded by updateMu
	closed   bool                    // guarded by updateMu

	mu      sync.Mutex
	eps     []*Endpoint[T] // sorted by Addr; replaced on Update, never modified in place
	rnd     *rand.Rand
	next    int            // round-robin cursor
	scratch []*Endpoint[T] // Pick's slow path reuses it so that Pick does not allocate
}

// New returns an empty balancer; call Update to give it endpoints.
func New[T any](o Options[T]) *Balancer[T] {
	if o.Decay <= 0 {
		o.Decay = DefaultDecay
	}
	if o.DefaultRTT <= 0 {
		o.DefaultRTT = DefaultRTT
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = DefaultBackoffMin
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	o.BackoffMax = max(o.BackoffMax, o.BackoffMin)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &Balancer[T]{
		o:       o,
		decayNS: float64(o.Decay),
		byAddr:  map[string]*Endpoint[T]{},
		rnd:     o.Rand,
	}
}

// Update replaces the endpoint set. Endpoints whose Addr is retained keep their
// EWMA state, pending count and value (a changed weight is applied); removed ones
// are Closed after the lock is released; new ones are created with New. If an
// Addr appears more than once the last weight wins. Update after Close does
// nothing.
func (b *Balancer[T]) Update(specs []Spec) {
	b.updateMu.Lock()
	defer b.updateMu.Unlock()
	if b.closed {
		return
	}
	now := b.o.Now()
	next := make(map[string]*Endpoint[T], len(specs))
	eps := make([]*Endpoint[T], 0, len(specs))
	for _, s := range specs {
		if e, dup := next[s.Addr]; dup {
			e.setWeight(s.Weight)
			continue
		}
		e, ok := b.byAddr[s.Addr]
		if ok {
			e.setWeight(s.Weight)
		} else {
			e = b.newEndpoint(s, now)
		}
		next[s.Addr] = e
		eps = append(eps, e)
	}
	slices.SortFunc(eps, func(x, y *Endpoint[T]) int { return cmp.Compare(x.addr, y.addr) })

	var removed []*Endpoint[T]
	for addr, e := range b.byAddr {
		if _, ok := next[addr]; !ok {
			removed = append(removed, e)
		}
	}
	b.byAddr = next

	b.mu.Lock()
	b.eps = eps
	b.mu.Unlock()

	slices.SortFunc(removed, func(x, y *Endpoint[T]) int { return cmp.Compare(x.addr, y.addr) })
	b.closeValues(removed)
}

// Close removes every endpoint and closes its value. Requests in flight may
// still call their done funcs. Pick then returns ErrNoEndpoints.
func (b *Balancer[T]) Close() {
	b.updateMu.Lock()
	defer b.updateMu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	b.mu.Lock()
	eps := b.eps
	b.eps = nil
	b.mu.Unlock()
	b.byAddr = nil
	b.closeValues(eps)
}

func (b *Balancer[T]) closeValues(eps []*Endpoint[T]) {
	if b.o.Close == nil {
		return
	}
	for _, e := range eps {
		b.o.Close(e.value)
	}
}

func (b *Balancer[T]) newEndpoint(s Spec, now time.Time) *Endpoint[T] {
	e := &Endpoint[T]{
		addr:  s.Addr,
		b:     b,
		cost:  float64(b.o.DefaultRTT),
		stamp: now,
	}
	e.setWeight(s.Weight)
	if b.o.New != nil {
		e.value = b.o.New(s)
	}
	return e
}

// Pick chooses an endpoint for one request. It returns ErrNoEndpoints if the set
// is empty and ErrUnavailable if every endpoint is in backoff.
func (b *Balancer[T]) Pick() (*Endpoint[T], error) {
	now := b.o.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.eps) == 0 {
		return nil, ErrNoEndpoints
	}
	if b.o.Strategy == RoundRobin {
		return b.pickRoundRobin(now)
	}
	return b.pickP2C(now)
}

// pickP2C is called with mu held.
func (b *Balancer[T]) pickP2C(now time.Time) (*Endpoint[T], error) {
	eps := b.eps
	if len(eps) == 1 {
		if eps[0].ready(now) {
			return eps[0], nil
		}
		return nil, ErrUnavailable
	}
	// Fast path, O(1): draw the pair from the whole set and keep it if both are
	// ready. Given that both are ready the pair is uniform over ready pairs, as
	// is the slow path's, so the mix of the two is uniform too.
	i, j := b.pair(len(eps))
	if e, ok := lesser(eps[i], eps[j], now); ok {
		return e, nil
	}
	// Slow path, O(n): some endpoint is in backoff; sample from the ready ones.
	ready := b.scratch[:0]
	for _, e := range eps {
		if e.ready(now) {
			ready = append(ready, e)
		}
	}
	b.scratch = ready
	defer clear(ready) // do not keep removed endpoints reachable
	switch len(ready) {
	case 0:
		return nil, ErrUnavailable
	case 1:
		return ready[0], nil
	}
	i, j = b.pair(len(ready))
	e, _ := lesser(ready[i], ready[j], now)
	return e, nil
}

// pair draws two distinct indices in [0, n), n ≥ 2, uniformly. Called with mu held.
func (b *Balancer[T]) pair(n int) (i, j int) {
	i = b.rnd.IntN(n)
	j = b.rnd.IntN(n - 1)
	if j >= i {
		j++
	}
	return i, j
}

// lesser returns whichever of x and y has the lower load, or ok=false if either
// is in backoff. Ties go to x, which is itself a random draw.
func lesser[T any](x, y *Endpoint[T], now time.Time) (e *Endpoint[T], ok bool) {
	lx, okx := x.loadIfReady(now)
	ly, oky := y.loadIfReady(now)
	if !okx || !oky {
		return nil, false
	}
	if ly < lx {
		return y, true
	}
	return x, true
}

// pickRoundRobin is called with mu held. It ignores weights: it is a baseline
// for comparing P2C against, not a production strategy.
func (b *Balancer[T]) pickRoundRobin(now time.Time) (*Endpoint[T], error) {
	n := len(b.eps)
	for k := range n {
		i := (b.next + k) % n
		if e := b.eps[i]; e.ready(now) {
			b.next = (i + 1) % n
			return e, nil
		}
	}
	return nil, ErrUnavailable
}

// Len returns the number of endpoints in the set.
func (b *Balancer[T]) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.eps)
}

// Ready returns the number of endpoints not in backoff now.
func (b *Balancer[T]) Ready() int {
	now := b.o.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, e := range b.eps {
		if e.ready(now) {
			n++
		}
	}
	return n
}

// Endpoints returns a snapshot of the set, sorted by Addr.
func (b *Balancer[T]) Endpoints() []*Endpoint[T] {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.eps)
}

// jitter returns a factor in [1-backoffJitter, 1+backoffJitter).
func (b *Balancer[T]) jitter() float64 {
	b.mu.Lock()
	f := b.rnd.Float64()
	b.mu.Unlock()
	return 1 + backoffJitter*(2*f-1)
}

// Endpoint is one member of the set. It stays valid after removal, so requests
// in flight can finish against it.
type Endpoint[T any] struct {
	addr  string
	value T
	b     *Balancer[T]

	mu      sync.Mutex
	weight  uint32    // as given, for Weight
	wdiv    float64   // divisor for load: weight, 0 mapped to 1
	cost    float64   // peak-EWMA RTT estimate, ns
	stamp   time.Time // when cost last took a sample
	pending int
	backoff time.Duration // base of the current backoff; 0 when healthy
	retryAt time.Time     // not ready before this
}

// Addr returns the endpoint's address.
func (e *Endpoint[T]) Addr() string { return e.addr }

// Value returns what Options.New built for the endpoint.
func (e *Endpoint[T]) Value() T { return e.value }

// Weight returns the endpoint's weight as last given to Update.
func (e *Endpoint[T]) Weight() uint32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.weight
}

func (e *Endpoint[T]) setWeight(w uint32) {
	e.mu.Lock()
	e.weight = w
	e.wdiv = float64(max(w, 1))
	e.mu.Unlock()
}

// Start marks one request in flight and returns the func to call when its
// response arrives: it records the RTT since Start and ends the request. Only the
// first call counts, so it is safe to both defer it and call it early.
func (e *Endpoint[T]) Start() (done func()) {
	start := e.b.o.Now()
	e.mu.Lock()
	e.pending++
	e.mu.Unlock()
	var fired atomic.Bool
	return func() {
		if fired.Swap(true) {
			return
		}
		now := e.b.o.Now()
		e.mu.Lock()
		e.pending--
		e.observe(now, now.Sub(start))
		e.mu.Unlock()
	}
}

// observe folds one RTT sample into cost. Called with e.mu held.
//
// Peak: a sample above the estimate replaces it at once, so a slowing endpoint
// is penalised immediately; smaller samples pull it down only as fast as τ
// allows, so it regains traffic cautiously.
func (e *Endpoint[T]) observe(now time.Time, rtt time.Duration) {
	r := float64(max(rtt, 0))
	if r > e.cost {
		e.cost = r
	} else {
		w := e.b.weightSince(e.stamp, now)
		e.cost = e.cost*w + r*(1-w)
	}
	// Concurrent done funcs may read the clock in one order and lock in the
	// other; never move stamp backwards.
	if now.After(e.stamp) {
		e.stamp = now
	}
}

// weightSince is exp(-Δt/τ), with Δt clamped at 0.
func (b *Balancer[T]) weightSince(stamp, now time.Time) float64 {
	dt := now.Sub(stamp)
	if dt <= 0 {
		return 1
	}
	return math.Exp(-float64(dt) / b.decayNS)
}

// load is cost decayed to now, times (pending+1), over weight. Called with e.mu
// held.
//
// The decay is tower's zero-RTT update (cost*w), but computed without storing it:
// tower and Finagle write the decayed value back and move the stamp, which makes
// the weight a later real sample gets depend on how often the endpoint happened
// to be considered. Keeping the read pure makes the estimate a function of the
// samples and the clock alone.
func (e *Endpoint[T]) load(now time.Time) float64 {
	cost := e.cost * e.b.weightSince(e.stamp, now)
	return cost * float64(e.pending+1) / e.wdiv
}

func (e *Endpoint[T]) ready(now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !now.Before(e.retryAt)
}

func (e *Endpoint[T]) loadIfReady(now time.Time) (float64, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if now.Before(e.retryAt) {
		return 0, false
	}
	return e.load(now), true
}

// Load returns the endpoint's current load: its decayed cost (ns) times
// (pending+1), divided by its weight.
func (e *Endpoint[T]) Load() float64 {
	now := e.b.o.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.load(now)
}

// Pending returns the number of requests in flight.
func (e *Endpoint[T]) Pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pending
}

// Fail records a failure to connect: the endpoint is skipped by Pick until its
// backoff expires, then tried again (half-open). Each failure after a retry
// doubles the backoff, from BackoffMin up to BackoffMax, with jitter.
//
// Failures reported while the endpoint is already backing off are ignored: they
// come from requests sent before the first failure was noticed, and counting
// them would push a briefly unreachable endpoint straight to BackoffMax.
func (e *Endpoint[T]) Fail() {
	now := e.b.o.Now()
	f := e.b.jitter() // before e.mu: the balancer lock is never taken under it
	lo, hi := e.b.o.BackoffMin, e.b.o.BackoffMax
	e.mu.Lock()
	defer e.mu.Unlock()
	if now.Before(e.retryAt) {
		return
	}
	if e.backoff == 0 {
		e.backoff = lo
	} else {
		e.backoff = min(2*e.backoff, hi)
	}
	d := min(time.Duration(float64(e.backoff)*f), hi)
	e.retryAt = now.Add(d)
}

// Succeed records a successful connection, ending any backoff.
func (e *Endpoint[T]) Succeed() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.backoff = 0
	e.retryAt = time.Time{}
}

// RetryAt returns when the endpoint's latest backoff ends (or ended); the zero
// time if it has not failed since it last succeeded. For debugging and tests.
func (e *Endpoint[T]) RetryAt() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.retryAt
}
