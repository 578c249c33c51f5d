// Package balance picks an endpoint for each request.
//
// The default strategy is power of two choices (P2C) over peak-EWMA latency, as
// in Finagle and tower: sample two distinct ready endpoints at random and send the
// request to the one whose latency estimate times in-flight requests is lower.
// Round-robin is kept as a baseline for benchmarks.
//
// Three choices differ from Linkerd's peak-EWMA (tower's, with a 10s τ and a
// 30ms seed), each for a cause measured in issue 13, where a 10× slower
// endpoint drew 8–9% of the requests (README.md, "The slow endpoint's
// share"): an endpoint's first response replaces its seed, as in Finagle; an
// endpoint with no response yet costs its measured peers' mean when it is
// compared, so it is tried at once even at one request at a time; and
// samples below the estimate pull it down with SampleDecay (250ms), while an
// estimate that takes no samples decays with Linkerd's 10s (Decay). A pause
// of the proxy, which every request in flight sees at once, thus raises the
// busy fast endpoints' cost for a few hundred milliseconds rather than
// seconds, and an avoided slow endpoint is still retried as seldom as in
// Linkerd.
//
// Endpoints whose connections fail are put in exponential backoff and skipped
// until it expires, so a dead endpoint costs one failed connect per backoff
// period rather than a share of the traffic. Endpoints whose requests fail
// (Result) are penalised in their load at once and, after consecutive
// failures, ejected for a growing backoff and then probed (failure accrual,
// as Linkerd's proxy; outlier detection in Envoy's terms).
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
	DefaultDecay = 10 * time.Second // Linkerd's EWMA_DECAY
	// DefaultSampleDecay is τ of the samples' blending. At Linkerd's 10s a
	// 5–17ms pause of the proxy (several a second on a loaded host) kept
	// 1.5ms endpoints within 2× of a 10ms peer's cost for seconds, and P2C
	// sent that peer 8–9% of the requests; at 1s the worst of 10 bench runs
	// still gave it 10–12%, at 250ms under 7% (README.md).
	DefaultSampleDecay = 250 * time.Millisecond
	DefaultRTT         = 30 * time.Millisecond // Linkerd's seed for an unmeasured endpoint
	DefaultBackoffMin  = 100 * time.Millisecond
	DefaultBackoffMax  = 10 * time.Second

	DefaultFailureAccrual  = 5 // consecutive failures that eject an endpoint
	DefaultEjectBackoffMin = time.Second
	DefaultEjectBackoffMax = 60 * time.Second
	DefaultMaxEjectedShare = 0.5

	// successAlpha is the weight of one result in the success ratio: about
	// the last 1/α results count, so a handful of failures are felt at once.
	successAlpha = 0.25
	// minSuccess bounds the load's divisor: an endpoint that only fails
	// weighs at most 1/minSuccess times its latency-based load.
	minSuccess = 0.01

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
	Strategy Strategy // an unknown value behaves as PeakEWMA
	// Decay is τ of an estimate's decay toward 0 while it takes no samples
	// (tower's zero-RTT update): how soon an endpoint avoided for its
	// slowness is tried again. It is also τ of the success ratio's recovery.
	Decay time.Duration
	// SampleDecay is τ with which samples below the estimate pull it down:
	// how soon an endpoint whose responses are fast again, after a peak,
	// costs what they say. tower and Finagle use one τ for both.
	SampleDecay time.Duration
	DefaultRTT  time.Duration // cost of an endpoint with no samples yet
	BackoffMin  time.Duration // connect-failure backoff
	BackoffMax  time.Duration
	// FailureAccrual is how many consecutive failed requests (Result) eject
	// an endpoint; negative: never eject (failures still weigh on the load).
	FailureAccrual int
	// An ejection lasts EjectBackoffMin, doubling (with jitter) each time
	// the probe sent when it ends fails, up to EjectBackoffMax.
	EjectBackoffMin time.Duration
	EjectBackoffMax time.Duration
	// MaxEjectedShare caps the share of the set ejected at once (0 < s ≤ 1);
	// an ejection beyond it, or one that would leave no ready endpoint, does
	// not happen. A set of one endpoint is never ejected.
	MaxEjectedShare float64
	// OnEject, when set, is called (without locks held) each time an
	// endpoint is ejected, with the reason of the failure that ejected it.
	OnEject func(addr, reason string)
	Now     func() time.Time // must be safe for concurrent use
	// Rand is only used with the balancer's lock held, so it must not be shared
	// with anything else. The default is a PCG seeded from the runtime.
	Rand  *rand.Rand
	New   func(Spec) T // builds an endpoint's value when it is added (nil: zero T)
	Close func(T)      // releases it when the endpoint is removed (nil: nothing)
}

// Balancer holds a set of endpoints and picks one per request. It is safe for
// concurrent use.
type Balancer[T any] struct {
	o        Options[T] // defaults applied; read-only after New
	decayNS  float64    // Decay
	sampleNS float64    // SampleDecay

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
	if o.SampleDecay <= 0 {
		o.SampleDecay = DefaultSampleDecay
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
	if o.FailureAccrual == 0 {
		o.FailureAccrual = DefaultFailureAccrual
	}
	if o.EjectBackoffMin <= 0 {
		o.EjectBackoffMin = DefaultEjectBackoffMin
	}
	if o.EjectBackoffMax <= 0 {
		o.EjectBackoffMax = DefaultEjectBackoffMax
	}
	o.EjectBackoffMax = max(o.EjectBackoffMax, o.EjectBackoffMin)
	if o.MaxEjectedShare <= 0 || o.MaxEjectedShare > 1 {
		o.MaxEjectedShare = DefaultMaxEjectedShare
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &Balancer[T]{
		o:        o,
		decayNS:  float64(o.Decay),
		sampleNS: float64(o.SampleDecay),
		byAddr:   map[string]*Endpoint[T]{},
		rnd:      o.Rand,
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

// peerCost is the cost of an endpoint that has no response yet: the mean of
// the current (decayed) costs of the endpoints in the set that have one, or
// NaN when none has (the endpoint then keeps its DefaultRTT seed). Computed at
// pick time, not when the endpoint joins: a seed fixed at DefaultRTT, or at
// the peers' mean of that moment, falls behind a peer whose first response
// replaces its own seed, and P2C never picks the endpoint whose cost is far
// above every peer's until it decays (τ·ln(30ms/0.3ms) at one request at a
// time; TestUnmeasuredEndpointTriedPromptly). At the mean it ties with a
// typical peer and takes its share at once; (pending+1) still counts, so it
// is not flooded before its first response. O(n), and only while some
// endpoint of the pair is unmeasured. Called with b.mu held, no e.mu.
func (b *Balancer[T]) peerCost(now time.Time) float64 {
	sum, n := 0.0, 0
	for _, e := range b.eps {
		if !e.measured.Load() {
			continue
		}
		e.mu.Lock()
		sum += e.cost * b.weightSince(e.stamp, now)
		e.mu.Unlock()
		n++
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}

// seedFor returns peerCost if e is unmeasured, else NaN (unused). Called
// with b.mu held, no e.mu.
func (b *Balancer[T]) seedFor(e *Endpoint[T], now time.Time) float64 {
	if e.measured.Load() {
		return math.NaN()
	}
	return b.peerCost(now)
}

func (b *Balancer[T]) newEndpoint(s Spec, now time.Time) *Endpoint[T] {
	e := &Endpoint[T]{
		addr:    s.Addr,
		b:       b,
		cost:    float64(b.o.DefaultRTT),
		stamp:   now,
		success: 1,
	}
	e.setWeight(s.Weight)
	if b.o.New != nil {
		e.value = b.o.New(s)
	}
	return e
}

// Pick chooses an endpoint for one request. It returns ErrNoEndpoints if the set
// is empty and ErrUnavailable if every endpoint is in backoff.
func (b *Balancer[T]) Pick() (*Endpoint[T], error) { return b.PickPreferred(nil) }

// PickPreferred is Pick, except that a ready endpoint whose value prefer
// accepts is chosen over the balancer's choice: a session pinned to an
// endpoint (the gateway's session persistence) goes back to it while it
// is in the set and neither in backoff nor ejected, and to the balancer's
// choice otherwise. A nil prefer is Pick.
func (b *Balancer[T]) PickPreferred(prefer func(T) bool) (*Endpoint[T], error) {
	now := b.o.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.eps) == 0 {
		return nil, ErrNoEndpoints
	}
	if prefer != nil {
		for _, e := range b.eps {
			if prefer(e.value) && e.ready(now) {
				return e.claim(now), nil
			}
		}
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
			return eps[0].claim(now), nil
		}
		return nil, ErrUnavailable
	}
	// Fast path, O(1): draw the pair from the whole set and keep it if both are
	// ready. Given that both are ready the pair is uniform over ready pairs, as
	// is the slow path's, so the mix of the two is uniform too.
	i, j := b.pair(len(eps))
	if e, ok := b.lesser(eps[i], eps[j], now); ok {
		return e.claim(now), nil
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
		return ready[0].claim(now), nil
	}
	i, j = b.pair(len(ready))
	e, _ := b.lesser(ready[i], ready[j], now)
	return e.claim(now), nil
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
// is in backoff. Ties go to x, which is itself a random draw. Called with mu
// held.
func (b *Balancer[T]) lesser(x, y *Endpoint[T], now time.Time) (e *Endpoint[T], ok bool) {
	sx, sy := math.NaN(), math.NaN()
	if mx, my := x.measured.Load(), y.measured.Load(); !mx || !my {
		seed := b.peerCost(now) // once for the pair
		if !mx {
			sx = seed
		}
		if !my {
			sy = seed
		}
	}
	lx, okx := x.loadIfReady(now, sx)
	ly, oky := y.loadIfReady(now, sy)
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
			return e.claim(now), nil
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

// Ejected returns the number of endpoints ejected by failure accrual now
// (probing ones included).
func (b *Balancer[T]) Ejected() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, e := range b.eps {
		if e.ejectState.Load() != 0 {
			n++
		}
	}
	return n
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
	// measured: cost comes from a response, not from the seed. It only
	// ever becomes true; atomic so that Pick knows without e.mu whether it
	// needs the peers' mean (peerCost).
	measured atomic.Bool

	// success is the EWMA of results (1 success, 0 failure) as of resultAt;
	// read, it recovers toward 1 with τ, so an idle endpoint is forgiven.
	success  float64
	resultAt time.Time
	// Failure accrual: consecutive failures; while ejected (ejectState !=
	// 0), the base of the ejection backoff and its end. At the end the
	// endpoint is half-open: the first Pick claims it as the probe and the
	// probe's Result decides.
	failures     int
	ejectBackoff time.Duration
	ejectedUntil time.Time
	// ejectState lets Pick skip e.mu for the common, healthy case.
	ejectState atomic.Int32
}

// Ejection states.
const (
	healthy int32 = iota
	ejected       // until ejectedUntil; then the next Pick claims the probe
	probing       // the probe is in flight, its Result decides; if none comes by ejectedUntil, another probe is claimed
)

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
	start := e.begin()
	var fired atomic.Bool
	return func() {
		if !fired.Swap(true) {
			e.end(start, false)
		}
	}
}

// StartRequest is Start for a caller that knows, when the response's headers
// arrive, whether it failed: a failure's RTT may raise the cost (a slow
// failure is slowness) but never lowers it, so an endpoint that fails fast
// never looks fast. The outcome itself is reported with Result.
func (e *Endpoint[T]) StartRequest() (done func(failed bool)) {
	start := e.begin()
	var fired atomic.Bool
	return func(failed bool) {
		if !fired.Swap(true) {
			e.end(start, failed)
		}
	}
}

// BeginRequest and EndRequest are StartRequest for a caller that ends each
// request exactly once itself (the HTTP forwarder): no closure to allocate.
// EndRequest takes what BeginRequest returned.
func (e *Endpoint[T]) BeginRequest() time.Time { return e.begin() }

// EndRequest ends a request begun with BeginRequest; see StartRequest.
func (e *Endpoint[T]) EndRequest(start time.Time, failed bool) { e.end(start, failed) }

func (e *Endpoint[T]) begin() time.Time {
	start := e.b.o.Now()
	e.mu.Lock()
	e.pending++
	e.mu.Unlock()
	return start
}

func (e *Endpoint[T]) end(start time.Time, failed bool) {
	now := e.b.o.Now()
	seed := math.NaN()
	if failed && !e.measured.Load() {
		// A failure only counts if it is slower than the cost P2C gave the
		// endpoint, which for an unmeasured one is its peers' mean.
		e.b.mu.Lock()
		seed = e.b.peerCost(now)
		e.b.mu.Unlock()
	}
	e.mu.Lock()
	e.pending--
	ref := e.cost // as observe's peak test: the stored estimate
	if !e.measured.Load() && !math.IsNaN(seed) {
		ref = seed
	}
	if rtt := float64(max(now.Sub(start), 0)); !failed || rtt > ref {
		e.observe(now, now.Sub(start))
	}
	e.mu.Unlock()
}

// observe folds one RTT sample into cost. Called with e.mu held.
//
// Peak: a sample above the estimate replaces it at once, so a slowing endpoint
// is penalised immediately; smaller samples pull it down with SampleDecay, so
// it regains traffic gradually, as its responses show it is fast again.
//
// The first sample replaces the seed whatever its size, as in Finagle (whose
// unmeasured cost is 0, so its first sample is a peak): the seed is a guess,
// not a measurement to recover from. Blended in, a 30ms seed kept 1.5ms
// endpoints within a few percent of a 10ms peer for seconds after a cold
// start, and P2C sent that peer ≈ 8% of the requests.
func (e *Endpoint[T]) observe(now time.Time, rtt time.Duration) {
	r := float64(max(rtt, 0))
	if !e.measured.Load() || r > e.cost {
		e.measured.Store(true)
		e.cost = r
	} else {
		w := decayWeight(e.stamp, now, e.b.sampleNS)
		e.cost = e.cost*w + r*(1-w)
	}
	// Concurrent done funcs may read the clock in one order and lock in the
	// other; never move stamp backwards.
	if now.After(e.stamp) {
		e.stamp = now
	}
}

// weightSince is exp(-Δt/τ), τ = Decay, with Δt clamped at 0.
func (b *Balancer[T]) weightSince(stamp, now time.Time) float64 {
	return decayWeight(stamp, now, b.decayNS)
}

// decayWeight is exp(-Δt/tau), with Δt clamped at 0; tau in ns.
func decayWeight(stamp, now time.Time, tau float64) float64 {
	dt := now.Sub(stamp)
	if dt <= 0 {
		return 1
	}
	return math.Exp(-float64(dt) / tau)
}

// load is cost decayed to now, times (pending+1), over weight. Called with e.mu
// held.
//
// The decay is tower's zero-RTT update (cost*w), but computed without storing it:
// tower and Finagle write the decayed value back and move the stamp, which makes
// the weight a later real sample gets depend on how often the endpoint happened
// to be considered. Keeping the read pure makes the estimate a function of the
// samples and the clock alone.
//
// The load is divided by the success ratio (see successNow), so failures
// weigh on it at once, before any ejection: an endpoint failing one request
// in two counts twice its latency-based load.
func (e *Endpoint[T]) load(now time.Time, seed float64) float64 {
	l := e.costNow(now, seed) * float64(e.pending+1) / e.wdiv
	if e.success < 1 {
		l /= max(e.successNow(now), minSuccess)
	}
	return l
}

// costNow is the cost decayed to now; for an endpoint with no response yet,
// seed (its peers' mean, see peerCost) unless that is NaN. Called with e.mu
// held.
func (e *Endpoint[T]) costNow(now time.Time, seed float64) float64 {
	if !e.measured.Load() && !math.IsNaN(seed) {
		return seed
	}
	return e.cost * e.b.weightSince(e.stamp, now)
}

// successNow is the success ratio recovered toward 1 for the time since the
// last result, with the same τ as the cost: an endpoint that failed and was
// then left alone (ejected, or merely avoided) is gradually trusted again.
// Called with e.mu held.
func (e *Endpoint[T]) successNow(now time.Time) float64 {
	return 1 - (1-e.success)*e.b.weightSince(e.resultAt, now)
}

func (e *Endpoint[T]) ready(now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.readyLocked(now)
}

// readyLocked: not in connect backoff, not ejected, not probing. Called with
// e.mu held.
func (e *Endpoint[T]) readyLocked(now time.Time) bool {
	if now.Before(e.retryAt) {
		return false
	}
	// Ejected, or probing with the probe's time up: half-open.
	return e.ejectState.Load() == healthy || !now.Before(e.ejectedUntil)
}

func (e *Endpoint[T]) loadIfReady(now time.Time, seed float64) (float64, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.readyLocked(now) {
		return 0, false
	}
	if e.ejectState.Load() != healthy {
		// Half-open: the probe goes now, whatever the penalty the failures
		// that ejected it left on its load, or a set whose other endpoint is
		// barely loaded would not probe it for τ.
		return 0, true
	}
	return e.load(now, seed), true
}

// claim is called by Pick on the endpoint it chose (with the balancer's lock
// held). An ejected endpoint whose ejection has ended is half-open: this
// request is its probe, and no other is sent until the probe's Result. If
// the probe never reports (its client went away), the endpoint is probed
// again after another ejection period.
func (e *Endpoint[T]) claim(now time.Time) *Endpoint[T] {
	if e.ejectState.Load() == healthy {
		return e
	}
	e.mu.Lock()
	if e.ejectState.Load() != healthy && !now.Before(e.ejectedUntil) {
		e.ejectState.Store(probing)
		e.ejectedUntil = now.Add(e.ejectBackoff)
	}
	e.mu.Unlock()
	return e
}

// Load returns the endpoint's current load: its decayed cost (ns) times
// (pending+1), divided by its weight.
func (e *Endpoint[T]) Load() float64 {
	now := e.b.o.Now()
	e.b.mu.Lock()
	seed := e.b.seedFor(e, now)
	e.b.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.load(now, seed)
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
//
// A counted connect failure is also a failed request for failure accrual
// (Result("connect")), so an endpoint that keeps refusing is ejected.
func (e *Endpoint[T]) Fail() {
	now := e.b.o.Now()
	f := e.b.jitter() // before e.mu: the balancer lock is never taken under it
	lo, hi := e.b.o.BackoffMin, e.b.o.BackoffMax
	e.mu.Lock()
	if now.Before(e.retryAt) {
		e.mu.Unlock()
		return
	}
	if e.backoff == 0 {
		e.backoff = lo
	} else {
		e.backoff = min(2*e.backoff, hi)
	}
	d := min(time.Duration(float64(e.backoff)*f), hi)
	e.retryAt = now.Add(d)
	e.mu.Unlock()
	e.Result("connect")
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

// Result records the outcome of one request to the endpoint, once it is
// known (for gRPC, after the trailers): "" for a success, else a short
// reason ("5xx", "grpc", "reset", "connect", "timeout", ...). A request the
// client cancelled has no outcome and must not be reported.
//
// Each result moves the success ratio that divides the load. FailureAccrual
// consecutive failures eject the endpoint for EjectBackoffMin (±20%), within
// MaxEjectedShare; when the ejection ends one request probes it: a success
// makes it healthy again, a failure ejects it for twice as long, up to
// EjectBackoffMax. Results of requests sent before an ejection, arriving
// during it, move only the success ratio.
func (e *Endpoint[T]) Result(failure string) {
	b := e.b
	now := b.o.Now()
	x := 1.0
	if failure != "" {
		x = 0
	}
	e.mu.Lock()
	if failure != "" || e.success < 1 {
		s := e.successNow(now)
		e.success = s + successAlpha*(x-s)
		e.resultAt = now
		if failure == "" && e.success > 1-1e-6 {
			e.success = 1 // back on the fast path of load
		}
	}
	state := e.ejectState.Load()
	var eject bool
	switch {
	case state == probing && failure == "":
		e.ejectState.Store(healthy)
		e.failures, e.ejectBackoff, e.ejectedUntil = 0, 0, time.Time{}
	case state == probing:
		eject = true // again, for longer
	case state == ejected:
		// A request sent before the ejection: the probe decides.
	case failure == "":
		e.failures = 0
	default:
		e.failures++
		eject = b.o.FailureAccrual > 0 && e.failures >= b.o.FailureAccrual
	}
	e.mu.Unlock()
	if eject && b.eject(e, now) && b.o.OnEject != nil {
		b.o.OnEject(e.addr, failure)
	}
}

// eject ejects e if it still qualifies and the set allows it, and reports
// whether it did. It takes the balancer's lock, then e's, as Pick does.
func (b *Balancer[T]) eject(e *Endpoint[T], now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := 1 + backoffJitter*(2*b.rnd.Float64()-1)
	e.mu.Lock()
	state := e.ejectState.Load()
	e.mu.Unlock()
	switch state {
	case ejected:
		return false // another failure got here first
	case healthy:
		if !b.mayEject(e, now) {
			return false // it keeps its load penalty instead
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ejectState.Load() != state {
		return false
	}
	if state == probing {
		e.ejectBackoff = min(2*e.ejectBackoff, b.o.EjectBackoffMax)
	} else {
		e.ejectBackoff = b.o.EjectBackoffMin
	}
	d := min(time.Duration(float64(e.ejectBackoff)*f), b.o.EjectBackoffMax)
	e.ejectedUntil = now.Add(d)
	e.ejectState.Store(ejected)
	return true
}

// mayEject reports whether ejecting e keeps the set within MaxEjectedShare
// and leaves some other endpoint ready. Called with b.mu held, not e.mu.
func (b *Balancer[T]) mayEject(e *Endpoint[T], now time.Time) bool {
	n := len(b.eps)
	if !slices.Contains(b.eps, e) {
		return false // removed from the set meanwhile
	}
	ejectedN, readyOthers := 0, 0
	for _, o := range b.eps {
		if o.ejectState.Load() != healthy {
			ejectedN++
		}
		if o != e && o.ready(now) {
			readyOthers++
		}
	}
	limit := min(int(math.Floor(b.o.MaxEjectedShare*float64(n))), n-1)
	return ejectedN+1 <= limit && readyOthers > 0
}

// Ejected reports whether the endpoint is ejected (or being probed) by
// failure accrual, and until when.
func (e *Endpoint[T]) Ejected() (bool, time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ejectState.Load() != healthy, e.ejectedUntil
}
