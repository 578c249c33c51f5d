package balance

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// fakeClock only moves when told to; it is safe for concurrent use.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// conn stands in for a per-endpoint transport.
type conn struct {
	spec   Spec
	closed atomic.Int32
}

type harness struct {
	b     *Balancer[*conn]
	clock *fakeClock

	mu      sync.Mutex
	created []*conn
}

func newHarness(s Strategy, opts ...func(*Options[*conn])) *harness {
	h := &harness{clock: &fakeClock{now: t0}}
	o := Options[*conn]{
		Strategy: s,
		Now:      h.clock.Now,
		Rand:     rand.New(rand.NewPCG(1, 2)),
		New: func(s Spec) *conn {
			c := &conn{spec: s}
			h.mu.Lock()
			h.created = append(h.created, c)
			h.mu.Unlock()
			return c
		},
		Close: func(c *conn) { c.closed.Add(1) },
	}
	for _, f := range opts {
		f(&o)
	}
	h.b = New(o)
	return h
}

func (h *harness) ep(t testing.TB, addr string) *Endpoint[*conn] {
	t.Helper()
	for _, e := range h.b.Endpoints() {
		if e.Addr() == addr {
			return e
		}
	}
	t.Fatalf("no endpoint %q", addr)
	return nil
}

// request runs one request against e that takes rtt on the fake clock.
func (h *harness) request(e *Endpoint[*conn], rtt time.Duration) {
	done := e.Start()
	h.clock.Advance(rtt)
	done()
}

func specs(addrs ...string) []Spec {
	var s []Spec
	for _, a := range addrs {
		s = append(s, Spec{Addr: a})
	}
	return s
}

func approx(t testing.TB, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-9*math.Abs(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func mustPick(t testing.TB, b *Balancer[*conn]) *Endpoint[*conn] {
	t.Helper()
	e, err := b.Pick()
	if err != nil {
		t.Fatalf("Pick: %v", err)
	}
	return e
}

func TestParseStrategy(t *testing.T) {
	for _, s := range []Strategy{PeakEWMA, RoundRobin} {
		got, err := ParseStrategy(s.String())
		if err != nil || got != s {
			t.Errorf("ParseStrategy(%q) = %v, %v", s.String(), got, err)
		}
	}
	if PeakEWMA.String() != "p2c-ewma" || RoundRobin.String() != "round-robin" {
		t.Errorf("names: %q %q", PeakEWMA, RoundRobin)
	}
	_, err := ParseStrategy("least-request")
	if err == nil || !strings.Contains(err.Error(), `"p2c-ewma"`) || !strings.Contains(err.Error(), `"round-robin"`) {
		t.Errorf("error should name the allowed values: %v", err)
	}
	if s := Strategy(7).String(); s != "Strategy(7)" {
		t.Errorf("unknown strategy prints %q", s)
	}
}

func TestSeededAtDefaultRTT(t *testing.T) {
	h := newHarness(PeakEWMA)
	h.b.Update(specs("a"))
	approx(t, "default seed", h.ep(t, "a").Load(), float64(30*time.Millisecond))

	h = newHarness(PeakEWMA, func(o *Options[*conn]) { o.DefaultRTT = 5 * time.Millisecond })
	h.b.Update(specs("a"))
	approx(t, "custom seed", h.ep(t, "a").Load(), float64(5*time.Millisecond))
}

// The seed is a guess: the first response replaces it even when smaller
// (blended in, a 30ms seed kept 1.5ms endpoints near a 10ms peer's cost for
// seconds); later smaller samples blend in with SampleDecay. Until then an
// endpoint costs its measured peers' mean. A failed response is a sample only
// if it is slower than that.
func TestFirstSampleReplacesSeed(t *testing.T) {
	h := newHarness(PeakEWMA)
	h.b.Update(specs("a", "b"))
	a, b := h.ep(t, "a"), h.ep(t, "b")
	h.clock.Advance(time.Second)
	approx(t, "b before any response", b.Load(), float64(DefaultRTT)*math.Exp(-float64(time.Second)/float64(DefaultDecay)))
	h.request(a, time.Millisecond)
	approx(t, "a after its first sample", a.Load(), 1e6)
	approx(t, "b, unmeasured, at its peer's cost", b.Load(), 1e6)
	h.clock.Advance(time.Second)
	h.request(a, 500*time.Microsecond)
	w := math.Exp(-float64(time.Second+500*time.Microsecond) / float64(DefaultSampleDecay))
	approx(t, "a after a smaller second sample", a.Load(), 1e6*w+5e5*(1-w))

	h.failingRequest(b, time.Microsecond, "5xx")
	if b.measured.Load() {
		t.Errorf("a fast failure measured b")
	}
	approx(t, "b after a fast failure, without the failure's weight", b.Load()*b.successNow(h.clock.Now()), a.Load())
	h.failingRequest(b, 50*time.Millisecond, "5xx")
	approx(t, "b after a slow failure, without the failure's weight", b.Load()*b.successNow(h.clock.Now()), 5e7)
}

func TestPeakReplacesAtOnce(t *testing.T) {
	h := newHarness(PeakEWMA)
	h.b.Update(specs("a"))
	a := h.ep(t, "a")
	h.request(a, 100*time.Millisecond)
	approx(t, "after 100ms sample", a.Load(), 1e8)
	h.clock.Advance(5 * time.Second) // decayed well below 200ms, but the peak still wins
	h.request(a, 200*time.Millisecond)
	approx(t, "after 200ms sample", a.Load(), 2e8)
}

func TestDecayTowardSmallerRTT(t *testing.T) {
	const tau = 10 * time.Second
	h := newHarness(PeakEWMA, func(o *Options[*conn]) { o.SampleDecay = tau })
	h.b.Update(specs("a"))
	a := h.ep(t, "a")
	h.request(a, 100*time.Millisecond) // cost 1e8, stamped now

	// A 10ms response arriving 2s after the last sample.
	h.clock.Advance(2*time.Second - 10*time.Millisecond)
	h.request(a, 10*time.Millisecond)
	w := math.Exp(-float64(2*time.Second) / float64(tau))
	want := 1e8*w + 1e7*(1-w)
	approx(t, "one small sample", a.Load(), want)

	// Keep sampling 10ms once a second: the estimate follows the formula and
	// converges on 10ms.
	w = math.Exp(-float64(time.Second) / float64(tau))
	for range 100 {
		h.clock.Advance(time.Second - 10*time.Millisecond)
		h.request(a, 10*time.Millisecond)
		want = want*w + 1e7*(1-w)
	}
	approx(t, "after 100 samples", a.Load(), want)
	if got := a.Load(); got > 1.001e7 || got < 1e7 {
		t.Errorf("did not converge on 10ms: %v", got)
	}
}

func TestDecayWithoutSamples(t *testing.T) {
	h := newHarness(PeakEWMA)
	h.b.Update(specs("a"))
	a := h.ep(t, "a")
	h.request(a, 100*time.Millisecond)
	h.clock.Advance(10 * time.Second)
	approx(t, "after τ", a.Load(), 1e8*math.Exp(-1))
	h.clock.Advance(10 * time.Second)
	approx(t, "after 2τ", a.Load(), 1e8*math.Exp(-2))

	// Reading the load (as Pick does) leaves the estimate alone: a history with
	// many reads ends where the same history without them does.
	run := func(reads bool) float64 {
		h := newHarness(PeakEWMA)
		h.b.Update(specs("a"))
		a := h.ep(t, "a")
		h.request(a, 100*time.Millisecond)
		for range 1000 {
			h.clock.Advance(3 * time.Millisecond)
			if reads {
				a.Load()
				h.b.Pick()
			}
		}
		h.request(a, 10*time.Millisecond)
		return a.Load()
	}
	if quiet, busy := run(false), run(true); quiet != busy {
		t.Errorf("reads changed the estimate: %v without, %v with", quiet, busy)
	}
}

func TestLoadFormula(t *testing.T) {
	h := newHarness(PeakEWMA)
	h.b.Update([]Spec{{Addr: "a", Weight: 4}})
	a := h.ep(t, "a")
	for range 3 {
		a.Start()
	}
	// 30ms × (3+1) / 4
	approx(t, "load", a.Load(), float64(30*time.Millisecond))
	if a.Pending() != 3 {
		t.Errorf("Pending = %d, want 3", a.Pending())
	}
}

// With two endpoints, P2C always compares both, so the lighter always wins: if
// the pair could repeat an endpoint the loaded one would win a quarter of picks.
func TestPendingPenalises(t *testing.T) {
	h := newHarness(PeakEWMA)
	h.b.Update(specs("a", "b"))
	a, b := h.ep(t, "a"), h.ep(t, "b")
	for range 3 {
		a.Start()
	}
	if !(a.Load() > b.Load()) {
		t.Fatalf("loads a=%v b=%v", a.Load(), b.Load())
	}
	for range 1000 {
		if e := mustPick(t, h.b); e != b {
			t.Fatalf("picked %s with 3 in flight over %s with 0", e.Addr(), b.Addr())
		}
	}
}

// The same holds on the slow path, when some endpoint is in backoff.
func TestPendingPenalisesAmongReady(t *testing.T) {
	h := newHarness(PeakEWMA)
	h.b.Update(specs("a", "b", "c"))
	a, b, c := h.ep(t, "a"), h.ep(t, "b"), h.ep(t, "c")
	a.Start()
	c.Fail()
	for range 1000 {
		if e := mustPick(t, h.b); e != b {
			t.Fatalf("picked %s, want b", e.Addr())
		}
	}
}

func TestPairDistinctAndUniform(t *testing.T) {
	h := newHarness(PeakEWMA)
	for n := 2; n <= 6; n++ {
		const draws = 30000
		counts := map[[2]int]int{}
		for range draws {
			i, j := h.b.pair(n)
			if i == j || i < 0 || j < 0 || i >= n || j >= n {
				t.Fatalf("pair(%d) = %d, %d", n, i, j)
			}
			counts[[2]int{i, j}]++
		}
		pairs := n * (n - 1)
		if len(counts) != pairs {
			t.Errorf("pair(%d): %d distinct ordered pairs, want %d", n, len(counts), pairs)
		}
		want := float64(draws) / float64(pairs)
		for p, c := range counts {
			if math.Abs(float64(c)-want) > 0.2*want {
				t.Errorf("pair(%d): %v drawn %d times, want ≈ %.0f", n, p, c, want)
			}
		}
	}
}

// share runs picks sequential requests, each taking its endpoint's rtt on the
// fake clock, and returns the fraction that went to addr.
func share(t *testing.T, s Strategy, rtts map[string]time.Duration, addr string, picks int) float64 {
	h := newHarness(s)
	var addrs []string
	for a := range rtts {
		addrs = append(addrs, a)
	}
	h.b.Update(specs(addrs...))
	n := 0
	for range picks {
		e := mustPick(t, h.b)
		if e.Addr() == addr {
			n++
		}
		h.request(e, rtts[e.Addr()])
	}
	return float64(n) / float64(picks)
}

func TestSlowEndpointAvoided(t *testing.T) {
	rtts := map[string]time.Duration{
		"fast1": 10 * time.Millisecond,
		"fast2": 10 * time.Millisecond,
		"slow":  100 * time.Millisecond,
	}
	p2c := share(t, PeakEWMA, rtts, "slow", 10000)
	rr := share(t, RoundRobin, rtts, "slow", 10000)
	t.Logf("slow endpoint share: p2c-ewma %.4f, round-robin %.4f", p2c, rr)
	if p2c >= 0.10 {
		t.Errorf("p2c-ewma sent %.2f%% to the slow endpoint, want < 10%%", 100*p2c)
	}
	if math.Abs(rr-1.0/3) > 0.01 {
		t.Errorf("round-robin sent %.2f%% to the slow endpoint, want ≈ 33%%", 100*rr)
	}
}

// Equal latency, weights 3 and 1: with requests overlapping, P2C balances
// (pending+1)/weight, so the heavy endpoint carries about 3/4 of the traffic.
func TestWeights(t *testing.T) {
	h := newHarness(PeakEWMA)
	h.b.Update([]Spec{{Addr: "heavy", Weight: 3}, {Addr: "light", Weight: 1}})
	const window = 40 // requests in flight; each completes window steps later
	var inflight []func()
	heavy, picks := 0, 10000
	for range picks {
		e := mustPick(t, h.b)
		if e.Addr() == "heavy" {
			heavy++
		}
		inflight = append(inflight, e.Start())
		h.clock.Advance(time.Millisecond)
		if len(inflight) > window {
			inflight[0]()
			inflight = inflight[1:]
		}
	}
	got := float64(heavy) / float64(picks)
	t.Logf("weight 3 share: %.3f", got)
	if got < 0.65 || got > 0.85 {
		t.Errorf("weight 3 vs 1 got %.3f of picks, want ≈ 0.75", got)
	}
}

func TestRoundRobinCycles(t *testing.T) {
	h := newHarness(RoundRobin)
	h.b.Update([]Spec{{Addr: "c"}, {Addr: "a", Weight: 9}, {Addr: "b"}}) // weights are ignored
	var got []string
	for range 6 {
		got = append(got, mustPick(t, h.b).Addr())
	}
	if want := []string{"a", "b", "c", "a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
	h.ep(t, "b").Fail()
	got = got[:0]
	for range 4 {
		got = append(got, mustPick(t, h.b).Addr())
	}
	if want := []string{"a", "c", "a", "c"}; !slices.Equal(got, want) {
		t.Errorf("with b in backoff: order %v, want %v", got, want)
	}
}

func TestBackoffSkipsUntilExpiry(t *testing.T) {
	h := newHarness(PeakEWMA)
	h.b.Update(specs("a", "b"))
	a, b := h.ep(t, "a"), h.ep(t, "b")
	for range 3 { // make a the better choice once it is back
		b.Start()
	}
	a.Fail()
	if h.b.Ready() != 1 {
		t.Fatalf("Ready = %d, want 1", h.b.Ready())
	}
	d := a.RetryAt().Sub(h.clock.Now())
	if d < 80*time.Millisecond || d >= 120*time.Millisecond {
		t.Fatalf("first backoff %v, want 100ms ± 20%%", d)
	}
	// Failures of requests already in flight do not extend it.
	retry := a.RetryAt()
	h.clock.Advance(d / 2)
	a.Fail()
	if !a.RetryAt().Equal(retry) {
		t.Errorf("Fail during backoff moved RetryAt from %v to %v", retry, a.RetryAt())
	}
	for range 100 {
		if e := mustPick(t, h.b); e != b {
			t.Fatalf("picked %s while in backoff", e.Addr())
		}
	}
	h.clock.Advance(retry.Sub(h.clock.Now()) - 1)
	if e := mustPick(t, h.b); e != b {
		t.Fatalf("picked %s 1ns before its backoff ends", e.Addr())
	}
	h.clock.Advance(1)
	if h.b.Ready() != 2 {
		t.Fatalf("Ready = %d after backoff, want 2", h.b.Ready())
	}
	if e := mustPick(t, h.b); e != a {
		t.Fatalf("picked %s, want a tried again once its backoff ended", e.Addr())
	}
}

func TestBackoffGrowsAndResets(t *testing.T) {
	h := newHarness(PeakEWMA)
	h.b.Update(specs("a"))
	a := h.ep(t, "a")
	ratios := map[float64]bool{}
	for k := range 12 {
		base := min(DefaultBackoffMin<<k, DefaultBackoffMax)
		now := h.clock.Now()
		a.Fail()
		d := a.RetryAt().Sub(now)
		if d < base*8/10 || d >= base*12/10 || d > DefaultBackoffMax {
			t.Fatalf("failure %d: backoff %v, want %v ± 20%% and ≤ %v", k+1, d, base, DefaultBackoffMax)
		}
		ratios[float64(d)/float64(base)] = true
		if _, err := h.b.Pick(); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("failure %d: Pick err = %v, want ErrUnavailable", k+1, err)
		}
		h.clock.Advance(d)
		if e := mustPick(t, h.b); e != a { // half-open: tried again
			t.Fatalf("picked %v", e)
		}
	}
	if len(ratios) < 6 {
		t.Errorf("backoffs were not jittered: %v", ratios)
	}

	a.Succeed()
	if !a.RetryAt().IsZero() || h.b.Ready() != 1 {
		t.Fatalf("Succeed did not clear backoff")
	}
	now := h.clock.Now()
	a.Fail()
	if d := a.RetryAt().Sub(now); d >= 120*time.Millisecond {
		t.Errorf("backoff after Succeed = %v, want back at 100ms ± 20%%", d)
	}
	a.Succeed()
	if _, err := h.b.Pick(); err != nil {
		t.Errorf("Succeed during backoff: Pick err = %v", err)
	}
}

func TestErrors(t *testing.T) {
	if errors.Is(ErrNoEndpoints, ErrUnavailable) {
		t.Fatal("errors must be distinct")
	}
	for _, s := range []Strategy{PeakEWMA, RoundRobin} {
		h := newHarness(s)
		if _, err := h.b.Pick(); !errors.Is(err, ErrNoEndpoints) {
			t.Errorf("%v empty: err = %v, want ErrNoEndpoints", s, err)
		}
		h.b.Update(specs("a"))
		h.ep(t, "a").Fail()
		if _, err := h.b.Pick(); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%v one failed: err = %v, want ErrUnavailable", s, err)
		}
		h.b.Update(specs("a", "b", "c"))
		h.ep(t, "b").Fail()
		h.ep(t, "c").Fail()
		if _, err := h.b.Pick(); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%v all failed: err = %v, want ErrUnavailable", s, err)
		}
		if h.b.Len() != 3 || h.b.Ready() != 0 {
			t.Errorf("%v: Len %d Ready %d, want 3 0", s, h.b.Len(), h.b.Ready())
		}
		h.b.Update(nil)
		if _, err := h.b.Pick(); !errors.Is(err, ErrNoEndpoints) {
			t.Errorf("%v emptied: err = %v, want ErrNoEndpoints", s, err)
		}
	}
}

func TestUpdate(t *testing.T) {
	var h *harness
	h = newHarness(PeakEWMA, func(o *Options[*conn]) {
		orig := o.Close
		o.Close = func(c *conn) {
			if !h.b.mu.TryLock() {
				t.Errorf("Close(%s) called with the balancer locked", c.spec.Addr)
			} else {
				h.b.mu.Unlock()
			}
			orig(c)
		}
	})
	h.b.Update(specs("a", "b"))
	a, b := h.ep(t, "a"), h.ep(t, "b")
	aConn, bConn := a.Value(), b.Value()
	if len(h.created) != 2 || aConn.spec.Addr != "a" || bConn.spec.Addr != "b" {
		t.Fatalf("New calls: %v", h.created)
	}
	h.request(a, 100*time.Millisecond) // a's cost: 1e8
	a.Start()
	a.Start()
	bDone := b.Start() // in flight while b is removed

	h.b.Update([]Spec{{Addr: "a", Weight: 2}, {Addr: "c", Weight: 5}})
	if got := len(h.created); got != 3 {
		t.Fatalf("New called %d times, want 3", got)
	}
	if c := h.created[2]; c.spec != (Spec{Addr: "c", Weight: 5}) {
		t.Errorf("New got %+v", c.spec)
	}
	if a2 := h.ep(t, "a"); a2 != a || a2.Value() != aConn {
		t.Errorf("a was rebuilt")
	}
	if a.Pending() != 2 || a.Weight() != 2 {
		t.Errorf("a: pending %d weight %d, want 2 2", a.Pending(), a.Weight())
	}
	approx(t, "a's load", a.Load(), 1e8*3/2) // EWMA kept, new weight applied
	if n := bConn.closed.Load(); n != 1 {
		t.Errorf("b closed %d times, want 1", n)
	}
	if aConn.closed.Load() != 0 {
		t.Errorf("a closed")
	}
	for range 100 {
		if e := mustPick(t, h.b); e == b {
			t.Fatal("picked a removed endpoint")
		}
	}

	// The removed endpoint's request finishes safely, once.
	h.clock.Advance(time.Millisecond)
	bDone()
	bDone()
	if b.Pending() != 0 {
		t.Errorf("removed b: pending %d, want 0", b.Pending())
	}

	// Re-adding an address starts afresh.
	h.b.Update(specs("a", "b", "c"))
	b2 := h.ep(t, "b")
	if b2 == b || b2.Value() == bConn || len(h.created) != 4 {
		t.Errorf("re-added b was not rebuilt")
	}
	// seeded from the measured peer (a: 1e8, decayed 1ms), not from DefaultRTT
	approx(t, "re-added b's load", b2.Load(), 1e8*math.Exp(-float64(time.Millisecond)/float64(DefaultDecay)))
	if bConn.closed.Load() != 1 {
		t.Errorf("old b closed %d times", bConn.closed.Load())
	}

	// Duplicates collapse; the last weight wins.
	h.b.Update([]Spec{{Addr: "a", Weight: 1}, {Addr: "a", Weight: 5}})
	if h.b.Len() != 1 || a.Weight() != 5 {
		t.Errorf("duplicates: Len %d weight %d, want 1 5", h.b.Len(), a.Weight())
	}

	h.b.Close()
	h.b.Close()
	h.b.Update(specs("x"))
	if h.b.Len() != 0 || len(h.created) != 4 {
		t.Errorf("Update after Close: Len %d, New calls %d", h.b.Len(), len(h.created))
	}
	for _, c := range h.created {
		if n := c.closed.Load(); n != 1 {
			t.Errorf("%s closed %d times, want 1", c.spec.Addr, n)
		}
	}
	if _, err := h.b.Pick(); !errors.Is(err, ErrNoEndpoints) {
		t.Errorf("Pick after Close: %v", err)
	}
}

func TestEndpointsSnapshot(t *testing.T) {
	h := newHarness(PeakEWMA)
	h.b.Update(specs("c", "a", "b"))
	snap := h.b.Endpoints()
	h.b.Update(specs("z"))
	var got []string
	for _, e := range snap {
		got = append(got, e.Addr())
	}
	if want := []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("Endpoints %v, want %v", got, want)
	}
}

func TestDoneOnlyCountsOnce(t *testing.T) {
	h := newHarness(PeakEWMA)
	h.b.Update(specs("a"))
	a := h.ep(t, "a")
	done := a.Start()
	h.clock.Advance(50 * time.Millisecond)
	done()
	approx(t, "load", a.Load(), 5e7)
	h.clock.Advance(time.Second)
	done() // a 1.05s sample here would replace the cost
	if a.Pending() != 0 {
		t.Errorf("pending %d, want 0", a.Pending())
	}
	approx(t, "load", a.Load(), 5e7*math.Exp(-0.1))
}

func TestPickDoesNotAllocate(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    Strategy
		fail bool
	}{{"p2c", PeakEWMA, false}, {"p2c-backoff", PeakEWMA, true}, {"round-robin", RoundRobin, false}} {
		h := newHarness(tc.s)
		h.b.Update(specs("a", "b", "c", "d", "e", "f", "g", "h", "i", "j"))
		if tc.fail { // all but one: every Pick takes the slow path
			for _, e := range h.b.Endpoints()[1:] {
				e.Fail()
			}
		}
		if n := testing.AllocsPerRun(1000, func() { h.b.Pick() }); n != 0 {
			t.Errorf("%s: %v allocs per Pick", tc.name, n)
		}
	}
}

// Run with -race: requests race with Update, Fail/Succeed and the accessors.
func TestConcurrent(t *testing.T) {
	for _, s := range []Strategy{PeakEWMA, RoundRobin} {
		t.Run(s.String(), func(t *testing.T) {
			h := newHarness(s)
			sets := [][]Spec{
				specs("a", "b", "c"),
				{{Addr: "b", Weight: 2}, {Addr: "c"}, {Addr: "d"}, {Addr: "e"}},
				specs("e"),
				nil,
				specs("a", "e"),
			}
			h.b.Update(sets[0])

			var seen sync.Map
			var workers sync.WaitGroup
			stop := make(chan struct{})
			updates := 0
			updater := make(chan struct{})
			go func() {
				defer close(updater)
				for i := 1; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					h.b.Update(sets[i%len(sets)])
					updates++
				}
			}()
			for g := range 8 {
				workers.Go(func() {
					for i := range 2000 {
						e, err := h.b.Pick()
						if err != nil {
							if !errors.Is(err, ErrNoEndpoints) && !errors.Is(err, ErrUnavailable) {
								t.Errorf("Pick: %v", err)
								return
							}
							continue
						}
						seen.Store(e, true)
						var done func()
						if i%5 == 4 {
							// A failed response: on an endpoint not measured
							// yet it is compared with its peers' mean, under
							// the balancer's lock.
							d := e.StartRequest()
							done = func() { d(true) }
						} else {
							done = e.Start()
						}
						h.clock.Advance(time.Duration(g+1) * time.Microsecond)
						switch i % 40 {
						case 0:
							e.Fail()
						case 1:
							e.Succeed()
						case 3, 4, 5, 6, 7, 8:
							e.Result("5xx")
						case 9:
							e.Result("")
							h.b.Ejected()
						case 2:
							e.Load()
							h.b.Ready()
							h.b.Len()
							h.b.Endpoints()
						}
						done()
						if i%3 == 0 {
							done()
						}
					}
				})
			}
			workers.Wait()
			close(stop)
			<-updater
			h.b.Close()
			t.Logf("%d updates", updates)

			seen.Range(func(k, _ any) bool {
				if e := k.(*Endpoint[*conn]); e.Pending() != 0 {
					t.Errorf("%s: pending %d after all requests ended", e.Addr(), e.Pending())
				}
				return true
			})
			for _, c := range h.created {
				if n := c.closed.Load(); n != 1 {
					t.Errorf("%s closed %d times, want 1", c.spec.Addr, n)
				}
			}
		})
	}
}

// A new replica joining peers warmed at 1ms takes requests within its first
// second at 200 RPS. Seeded at the fixed 30ms it needed τ·ln(30) ≈ 34s.
func TestNewEndpointSeededFromPeers(t *testing.T) {
	h := newHarness(PeakEWMA)
	h.b.Update(specs("a", "b"))
	for range 2000 { // 10s at 200 RPS
		h.request(mustPick(t, h.b), time.Millisecond)
		h.clock.Advance(4 * time.Millisecond)
	}
	h.b.Update(specs("a", "b", "c"))
	c := h.ep(t, "c")
	if l, a := c.Load(), h.ep(t, "a").Load(); l > 1.01*a {
		t.Errorf("new endpoint's load %v, want about its peers' (%v)", l, a)
	}
	got := 0
	for range 200 { // its first second
		e := mustPick(t, h.b)
		if e == c {
			got++
		}
		h.request(e, time.Millisecond)
		h.clock.Advance(4 * time.Millisecond)
	}
	if got < 200/3/2 {
		t.Errorf("new endpoint got %d of 200 requests in its first second, want about a third", got)
	}
	// With no measured peer the seed is DefaultRTT.
	h2 := newHarness(PeakEWMA)
	h2.b.Update(specs("a"))
	h2.b.Update(specs("a", "b"))
	approx(t, "unmeasured seed", h2.ep(t, "b").Load(), float64(DefaultRTT))
}

// failingRequest runs one request against e that takes rtt and fails.
func (h *harness) failingRequest(e *Endpoint[*conn], rtt time.Duration, reason string) {
	done := e.StartRequest()
	h.clock.Advance(rtt)
	done(true)
	e.Result(reason)
}

// okRequest runs one successful request through StartRequest and Result.
func (h *harness) okRequest(e *Endpoint[*conn], rtt time.Duration) {
	done := e.StartRequest()
	h.clock.Advance(rtt)
	done(false)
	e.Result("")
}

// An endpoint answering 500 in 0.1ms against a healthy one at 1ms: before
// any ejection (accrual off here) the failures weigh on its load, so it
// loses. Counted as ordinary latency it drew 93% of the requests.
func TestFastFailureLoses(t *testing.T) {
	h := newHarness(PeakEWMA, func(o *Options[*conn]) { o.FailureAccrual = -1 })
	h.b.Update(specs("bad", "good"))
	for range 100 { // both healthy at 1ms first
		h.okRequest(mustPick(t, h.b), time.Millisecond)
	}
	bad := 0
	const n = 2000
	for range n {
		e := mustPick(t, h.b)
		if e.Addr() == "bad" {
			bad++
			h.failingRequest(e, 100*time.Microsecond, "5xx")
		} else {
			h.okRequest(e, time.Millisecond)
		}
		h.clock.Advance(time.Millisecond)
	}
	share := float64(bad) / n
	t.Logf("failing endpoint's share: %.3f", share)
	if share > 0.05 {
		t.Errorf("failing endpoint got %.1f%% of requests, want < 5%%", 100*share)
	}
	if h.b.Ejected() != 0 {
		t.Errorf("ejected with accrual off")
	}
	// A failure's latency never lowers the cost; a slower one raises it.
	e := h.ep(t, "bad")
	before := e.Load()
	h.failingRequest(e, time.Microsecond, "5xx")
	if e.Load() < before {
		t.Errorf("a fast failure lowered the load from %v to %v", before, e.Load())
	}
}

func TestSuccessRatioRecoversWhenIdle(t *testing.T) {
	h := newHarness(PeakEWMA, func(o *Options[*conn]) { o.FailureAccrual = -1 })
	h.b.Update(specs("a"))
	a := h.ep(t, "a")
	h.okRequest(a, time.Millisecond)
	l0 := a.Load()
	h.failingRequest(a, 0, "5xx")
	h.failingRequest(a, 0, "5xx")
	s := 1.0
	for range 2 {
		s += successAlpha * (0 - s)
	}
	approx(t, "load after two failures", a.Load(), l0/s)
	h.clock.Advance(DefaultDecay)
	want := l0 * math.Exp(-1) / (1 - (1-s)*math.Exp(-1))
	approx(t, "load after τ idle", a.Load(), want)
}

type ejection struct{ addr, reason string }

func accrualHarness(ej *[]ejection, mu *sync.Mutex) *harness {
	return newHarness(PeakEWMA, func(o *Options[*conn]) {
		o.OnEject = func(addr, reason string) {
			mu.Lock()
			*ej = append(*ej, ejection{addr, reason})
			mu.Unlock()
		}
	})
}

func TestAccrualEjectsProbesAndRestores(t *testing.T) {
	var ej []ejection
	var mu sync.Mutex
	h := accrualHarness(&ej, &mu)
	h.b.Update(specs("a", "b"))
	a, b := h.ep(t, "a"), h.ep(t, "b")
	for range DefaultFailureAccrual - 1 {
		h.failingRequest(a, time.Millisecond, "5xx")
	}
	h.okRequest(a, time.Millisecond) // a success resets the count
	for range DefaultFailureAccrual - 1 {
		h.failingRequest(a, time.Millisecond, "5xx")
	}
	if h.b.Ejected() != 0 {
		t.Fatalf("ejected after %d consecutive failures", DefaultFailureAccrual-1)
	}
	stale := a.StartRequest() // sent before the ejection, reported during it
	h.failingRequest(a, time.Millisecond, "grpc")
	if h.b.Ejected() != 1 || len(ej) != 1 || ej[0] != (ejection{"a", "grpc"}) {
		t.Fatalf("after %d failures: ejected %d, OnEject %v", DefaultFailureAccrual, h.b.Ejected(), ej)
	}
	_, until := a.Ejected()
	d := until.Sub(h.clock.Now())
	if d < 800*time.Millisecond || d >= 1200*time.Millisecond {
		t.Fatalf("first ejection %v, want 1s ± 20%%", d)
	}
	stale(true)
	a.Result("5xx")
	if _, u := a.Ejected(); !u.Equal(until) {
		t.Errorf("a request sent before the ejection moved it from %v to %v", until, u)
	}
	for range 100 {
		if e := mustPick(t, h.b); e != b {
			t.Fatalf("picked %s while ejected", e.Addr())
		}
	}
	// Half-open: exactly one probe once the ejection ends.
	h.clock.Advance(until.Sub(h.clock.Now()))
	for range 3 {
		b.Start() // make a the better choice
	}
	probe := mustPick(t, h.b)
	if probe != a {
		t.Fatalf("picked %s, want a probed", probe.Addr())
	}
	for range 100 {
		if e := mustPick(t, h.b); e != b {
			t.Fatalf("picked %s while its probe is in flight", e.Addr())
		}
	}
	// The probe fails: ejected again, for twice as long.
	h.failingRequest(a, time.Millisecond, "5xx")
	_, until = a.Ejected()
	if d := until.Sub(h.clock.Now()); d < 1600*time.Millisecond || d >= 2400*time.Millisecond {
		t.Fatalf("second ejection %v, want 2s ± 20%%", d)
	}
	if len(ej) != 2 {
		t.Errorf("OnEject calls %v, want 2", ej)
	}
	// It keeps doubling up to the maximum.
	for k := 2; k < 10; k++ {
		h.clock.Advance(until.Sub(h.clock.Now()))
		if e := mustPick(t, h.b); e != a {
			t.Fatalf("probe %d: picked %s", k, e.Addr())
		}
		h.failingRequest(a, time.Millisecond, "5xx")
		_, until = a.Ejected()
		base := min(DefaultEjectBackoffMin<<k, DefaultEjectBackoffMax)
		if d := until.Sub(h.clock.Now()); d < base*8/10 || d > DefaultEjectBackoffMax {
			t.Fatalf("ejection %d: %v, want %v ± 20%% and ≤ %v", k+1, d, base, DefaultEjectBackoffMax)
		}
	}
	// A successful probe restores it, and the next failures start afresh.
	h.clock.Advance(until.Sub(h.clock.Now()))
	if e := mustPick(t, h.b); e != a {
		t.Fatalf("picked %s, want the probe", e.Addr())
	}
	h.okRequest(a, time.Millisecond)
	if ok, _ := a.Ejected(); ok || h.b.Ready() != 2 {
		t.Fatalf("not restored after a successful probe")
	}
	for range DefaultFailureAccrual {
		h.failingRequest(a, time.Millisecond, "reset")
	}
	_, until = a.Ejected()
	if d := until.Sub(h.clock.Now()); d >= 1200*time.Millisecond {
		t.Errorf("ejection after recovery %v, want back at 1s ± 20%%", d)
	}
}

// A probe whose client went away reports nothing: the endpoint is probed
// again later rather than staying out forever.
func TestAbandonedProbe(t *testing.T) {
	var ej []ejection
	var mu sync.Mutex
	h := accrualHarness(&ej, &mu)
	h.b.Update(specs("a", "b"))
	a := h.ep(t, "a")
	for range DefaultFailureAccrual {
		h.failingRequest(a, 0, "5xx")
	}
	h.clock.Advance(DefaultEjectBackoffMax)
	if e := mustPick(t, h.b); e != a {
		t.Fatalf("picked %s, want the probe", e.Addr())
	}
	h.clock.Advance(DefaultEjectBackoffMax)
	if e := mustPick(t, h.b); e != a {
		t.Fatalf("picked %s, want a probed again", e.Addr())
	}
}

func TestMaxEjectedShare(t *testing.T) {
	fail := func(h *harness, addr string) {
		for range DefaultFailureAccrual + 3 {
			h.failingRequest(h.ep(t, addr), 0, "5xx")
		}
	}
	var ej []ejection
	var mu sync.Mutex

	h := accrualHarness(&ej, &mu)
	h.b.Update(specs("a"))
	fail(h, "a")
	if h.b.Ejected() != 0 || len(ej) != 0 {
		t.Errorf("a single endpoint was ejected")
	}
	if _, err := h.b.Pick(); err != nil {
		t.Errorf("Pick: %v", err)
	}

	h = accrualHarness(&ej, &mu)
	h.b.Update(specs("a", "b"))
	fail(h, "a")
	fail(h, "b")
	if h.b.Ejected() != 1 || h.b.Ready() != 1 {
		t.Errorf("two failing endpoints: ejected %d, ready %d; want 1, 1", h.b.Ejected(), h.b.Ready())
	}

	// The last ready endpoint is kept even within the share: b is in
	// connect backoff, so a is not ejected.
	h = accrualHarness(&ej, &mu)
	h.b.Update(specs("a", "b", "c", "d"))
	h.ep(t, "b").Fail()
	h.ep(t, "c").Fail()
	h.ep(t, "d").Fail()
	fail(h, "a")
	if h.b.Ejected() != 0 {
		t.Errorf("ejected the last ready endpoint")
	}

	h = accrualHarness(&ej, &mu)
	h.b.Update(specs("a", "b", "c", "d", "e"))
	for _, a := range []string{"a", "b", "c", "d"} {
		fail(h, a)
	}
	if h.b.Ejected() != 2 {
		t.Errorf("5 endpoints, 4 failing, share 0.5: ejected %d, want 2", h.b.Ejected())
	}
	h = newHarness(PeakEWMA, func(o *Options[*conn]) { o.MaxEjectedShare = 1 })
	h.b.Update(specs("a", "b", "c"))
	fail(h, "a")
	fail(h, "b")
	fail(h, "c")
	if h.b.Ejected() != 2 {
		t.Errorf("share 1: ejected %d of 3, want 2 (never the last)", h.b.Ejected())
	}
}

// Connect failures count toward accrual: an endpoint refusing connections is
// ejected, not just backed off for 100ms at a time.
func TestConnectFailuresAccrue(t *testing.T) {
	var ej []ejection
	var mu sync.Mutex
	h := accrualHarness(&ej, &mu)
	h.b.Update(specs("a", "b"))
	a := h.ep(t, "a")
	for range DefaultFailureAccrual {
		a.Fail()
		h.clock.Advance(a.RetryAt().Sub(h.clock.Now()))
	}
	if ok, _ := a.Ejected(); !ok || len(ej) != 1 || ej[0].reason != "connect" {
		t.Errorf("after %d connect failures: ejected %v, OnEject %v", DefaultFailureAccrual, ok, ej)
	}
}

func benchBalancer(s Strategy) *Balancer[struct{}] {
	b := New(Options[struct{}]{Strategy: s})
	var sp []Spec
	for _, a := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"} {
		sp = append(sp, Spec{Addr: a})
	}
	b.Update(sp)
	return b
}

func BenchmarkPick(b *testing.B) {
	bal := benchBalancer(PeakEWMA)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := bal.Pick(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkPickRoundRobin(b *testing.B) {
	bal := benchBalancer(RoundRobin)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := bal.Pick(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// A whole request's worth of balancer work: Pick, Start, done.
func BenchmarkPickStartDone(b *testing.B) {
	bal := benchBalancer(PeakEWMA)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			e, err := bal.Pick()
			if err != nil {
				b.Error(err)
				return
			}
			e.Start()()
		}
	})
}

// Picks in a set of 100 measured endpoints that one new endpoint has just
// joined: while it has no response, a pair that draws it computes its
// peers' mean, O(n) (peerCost).
func BenchmarkPickWithNewEndpoint(b *testing.B) {
	bal := New(Options[struct{}]{})
	var sp []Spec
	for i := range 100 {
		sp = append(sp, Spec{Addr: fmt.Sprintf("10.0.0.%d:80", i)})
	}
	bal.Update(sp)
	for _, e := range bal.Endpoints() {
		e.Start()()
	}
	bal.Update(append(sp, Spec{Addr: "10.0.1.0:80"}))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := bal.Pick(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// PickPreferred: the preferred endpoint while it is ready, even when the
// balancer would choose another; the balancer's choice while it is in
// backoff or gone, and when nothing is preferred.
func TestPickPreferred(t *testing.T) {
	for _, s := range []Strategy{PeakEWMA, RoundRobin} {
		h := newHarness(s)
		h.b.Update(specs("a", "b", "c"))
		for range 5 { // c is the worst choice for peak-EWMA
			h.ep(t, "c").Start()
		}
		isC := func(c *conn) bool { return c.spec.Addr == "c" }
		for range 20 {
			e, err := h.b.PickPreferred(isC)
			if err != nil || e.Addr() != "c" {
				t.Fatalf("%v: PickPreferred(c) = %v, %v; want c", s, e, err)
			}
		}
		h.ep(t, "c").Fail()
		for range 20 {
			e, err := h.b.PickPreferred(isC)
			if err != nil || e.Addr() == "c" {
				t.Fatalf("%v: PickPreferred(c) with c in backoff = %v, %v; want another", s, e, err)
			}
		}
		h.b.Update(specs("a", "b"))
		if e, err := h.b.PickPreferred(isC); err != nil || e.Addr() == "c" {
			t.Fatalf("%v: PickPreferred(c) with c gone = %v, %v", s, e, err)
		}
		h.b.Update(nil)
		if _, err := h.b.PickPreferred(isC); !errors.Is(err, ErrNoEndpoints) {
			t.Fatalf("%v: PickPreferred on an empty set: %v, want ErrNoEndpoints", s, err)
		}
	}
}
