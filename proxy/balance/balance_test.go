package balance

import (
	"errors"
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
	h := newHarness(PeakEWMA)
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
	approx(t, "re-added b's load", b2.Load(), float64(DefaultRTT))
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
						done := e.Start()
						h.clock.Advance(time.Duration(g+1) * time.Microsecond)
						switch i % 40 {
						case 0:
							e.Fail()
						case 1:
							e.Succeed()
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
