package balance

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The bench's balance scenario (bench/cmd/balance) on the fake clock: three
// endpoints, one 10× slower, a request every millisecond, a 1s warm-up and a
// measured run. The balancer's own Pick/StartRequest/done API is driven in
// time order, so the share is deterministic (the harness's Rand is seeded).

// stall is a pause of the whole proxy (or its host) from at for d: nothing
// runs during it, so every response due meanwhile is seen at its end (the
// requests in flight all take a sample inflated by up to d), and requests
// arriving meanwhile are picked at its end.
type stall struct{ at, d time.Duration }

type simReq struct {
	end  time.Duration // since the start of the simulation
	seq  int
	done func(failed bool)
}

// simulate sends one request every interval for warmup+measure to the
// endpoints of rtts (each request takes its endpoint's RTT, delayed by the
// stalls it meets) and returns the share of the measured requests that went
// to slow.
func simulate(t *testing.T, h *harness, rtts map[string]time.Duration, slow string,
	interval, warmup, measure time.Duration, stalls ...stall) float64 {
	t.Helper()
	addrs := slices.Sorted(func(yield func(string) bool) {
		for a := range rtts {
			if !yield(a) {
				return
			}
		}
	})
	h.b.Update(specs(addrs...))
	start := h.clock.Now()
	now := func() time.Duration { return h.clock.Now().Sub(start) }
	// delayed moves an event due at d past any stall it falls in.
	delayed := func(d time.Duration) time.Duration {
		for _, s := range stalls {
			if d >= s.at && d < s.at+s.d {
				d = s.at + s.d
			}
		}
		return d
	}
	var inflight []simReq
	seq, picks, toSlow := 0, 0, 0
	finishUntil := func(until time.Duration) {
		for {
			i := -1
			for k, r := range inflight {
				if r.end <= until && (i < 0 || r.end < inflight[i].end ||
					r.end == inflight[i].end && r.seq < inflight[i].seq) {
					i = k
				}
			}
			if i < 0 {
				break
			}
			r := inflight[i]
			inflight = slices.Delete(inflight, i, i+1)
			h.clock.Advance(r.end - now())
			r.done(false)
		}
		h.clock.Advance(until - now())
	}
	for at := time.Duration(0); at < warmup+measure; at += interval {
		pickAt := delayed(at)
		finishUntil(pickAt)
		e := mustPick(t, h.b)
		if at >= warmup {
			picks++
			if e.Addr() == slow {
				toSlow++
			}
		}
		seq++
		inflight = append(inflight, simReq{end: delayed(pickAt + rtts[e.Addr()]), seq: seq, done: e.StartRequest()})
	}
	finishUntil(warmup + measure + time.Second)
	return float64(toSlow) / float64(picks)
}

// benchRTTs are the service times bench/cmd/balance measured through the
// proxy: 1ms backends answer in about 1.5ms, the 10ms one in about 10.5ms.
var benchRTTs = map[string]time.Duration{
	"fast1": 1500 * time.Microsecond,
	"fast2": 1500 * time.Microsecond,
	"slow":  10500 * time.Microsecond,
}

func withDecay(d time.Duration) func(*Options[*conn]) {
	return func(o *Options[*conn]) { o.Decay = d }
}

func withSampleDecay(d time.Duration) func(*Options[*conn]) {
	return func(o *Options[*conn]) { o.SampleDecay = d }
}

// linkerd is tower's peak-EWMA with Linkerd's τ: one τ of 10s, for the decay
// without samples and for the samples' blending.
func linkerd(o *Options[*conn]) { o.Decay, o.SampleDecay = 10*time.Second, 10*time.Second }

// Cause 1. From a cold start every endpoint is seeded at DefaultRTT (30ms).
// If the first responses only pulled the seed down at the rate τ allows, the
// fast endpoints would still cost over 10ms after the warm-up, the 10× slower
// one would differ from them by a few percent, and P2C would in effect
// compare pending counts: the slow endpoint would win whenever it is idle and
// its partner has one request in flight, ≈ 8% of the requests (the bench's
// 7.8–13.1%). The first response replaces the seed, whatever τ is.
func TestSlowEndpointAfterColdStart(t *testing.T) {
	for name, o := range map[string]func(*Options[*conn]){"default": withDecay(0), "Linkerd's τ": linkerd} {
		h := newHarness(PeakEWMA, o)
		got := simulate(t, h, benchRTTs, "slow", time.Millisecond, time.Second, 5*time.Second)
		t.Logf("%s: slow share after a cold start: %.2f%%", name, 100*got)
		if got > 0.01 {
			t.Errorf("%s: slow endpoint got %.2f%% of the requests, want < 1%%", name, 100*got)
		}
	}
}

// Cause 2. A 10ms pause of the proxy near the end of the warm-up (as traced
// in the bench: both fast endpoints' samples at 11ms at the same instant)
// raises the fast endpoints' cost to the slow one's at once (peak), and
// their fast responses after it pull it down with the samples' τ. While
// 2×cost(fast) > cost(slow), the idle slow endpoint wins every comparison
// with a fast one that has a request in flight: with Linkerd's τ = 10s that
// lasts the whole run; with SampleDecay's 250ms, a few hundred milliseconds.
func TestSlowEndpointAfterPause(t *testing.T) {
	pause := stall{at: 800 * time.Millisecond, d: 10 * time.Millisecond}
	share := func(name string, o func(*Options[*conn])) float64 {
		h := newHarness(PeakEWMA, o)
		got := simulate(t, h, benchRTTs, "slow", time.Millisecond, time.Second, 5*time.Second, pause)
		t.Logf("%s: slow share after a 10ms pause: %.2f%%", name, 100*got)
		return got
	}
	if got := share("default", withDecay(0)); got > 0.02 {
		t.Errorf("default: slow endpoint got %.2f%% of the requests, want < 2%%", 100*got)
	}
	if got := share("Linkerd's τ", linkerd); got < 0.05 {
		t.Errorf("Linkerd's τ: slow endpoint got %.2f%%, want > 5%%: the simulation no longer shows the pause's effect", 100*got)
	}
}

// pauses draws a run's pauses: on average one every mean, each lasting 5 to
// 11ms (what the bench's traces showed on the shared machine).
func pauses(rnd *rand.Rand, until, mean time.Duration) []stall {
	var s []stall
	for at := time.Duration(rnd.ExpFloat64() * float64(mean)); at < until; at += time.Duration(rnd.ExpFloat64() * float64(mean)) {
		s = append(s, stall{at: at, d: 5*time.Millisecond + time.Duration(rnd.Int64N(int64(6*time.Millisecond)))})
	}
	return s
}

// The bench's 10 runs on the fake clock, each with its own random pauses
// (about one a second, 5–11ms; the bench's traces on the loaded machine
// showed fast samples of 4–17ms several times a second), for several
// SampleDecay: the slow endpoint's share at the median and in the worst run.
// The default must meet issue 13's target (under 5% at the median, under 10%
// in every run) with a margin: under 2.5% and 5% here.
func TestSlowEndpointUnderPauses(t *testing.T) {
	const runs = 10
	var dflt []float64
	for _, decay := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second,
		2 * time.Second, 5 * time.Second, 10 * time.Second, 0} {
		shares := make([]float64, runs)
		for i := range runs {
			h := newHarness(PeakEWMA, withSampleDecay(decay))
			ps := pauses(rand.New(rand.NewPCG(uint64(i), 13)), 6*time.Second, time.Second)
			shares[i] = simulate(t, h, benchRTTs, "slow", time.Millisecond, time.Second, 5*time.Second, ps...)
		}
		slices.Sort(shares)
		t.Logf("SampleDecay %v: slow share median %.2f%%, worst %.2f%%", cmp.Or(decay, DefaultSampleDecay),
			100*(shares[runs/2-1]+shares[runs/2])/2, 100*shares[runs-1])
		if decay == 0 {
			dflt = shares
		}
	}
	if med := (dflt[runs/2-1] + dflt[runs/2]) / 2; med > 0.025 {
		t.Errorf("default: median slow share %.2f%%, want < 2.5%%", 100*med)
	}
	if worst := dflt[runs-1]; worst > 0.05 {
		t.Errorf("default: worst slow share %.2f%%, want < 5%%", 100*worst)
	}
}

// An endpoint that has no response yet must be tried promptly even when its
// peer's first response is far below the seed and requests go one at a time
// (the sidecar's TestReplicaWithDeadAppIsEjected warm-up): if the seed stayed
// at DefaultRTT while the peer's first response replaced its own, the peer
// (0.3ms, nothing in flight) would win every comparison until the seed
// decayed below it, τ·ln(100). An unmeasured endpoint costs its measured
// peers' mean, so it ties with them. And it is not flooded: while its first
// request is in flight it counts (pending+1) like any other.
func TestUnmeasuredEndpointTriedPromptly(t *testing.T) {
	const rtt = 300 * time.Microsecond
	const gap = 10 * time.Millisecond // one request at a time, 100 RPS
	firstPick := func(h *harness, addr string, max int) int {
		t.Helper()
		for i := range max {
			e := mustPick(t, h.b)
			h.okRequest(e, rtt)
			h.clock.Advance(gap)
			if e.Addr() == addr {
				return i + 1
			}
		}
		return -1
	}
	t.Run("cold start", func(t *testing.T) {
		for seed := range uint64(20) {
			h := newHarness(PeakEWMA, func(o *Options[*conn]) { o.Rand = rand.New(rand.NewPCG(seed, 7)) })
			h.b.Update(specs("a", "b"))
			first := mustPick(t, h.b)
			h.okRequest(first, rtt)
			other := map[string]string{"a": "b", "b": "a"}[first.Addr()]
			if n := firstPick(h, other, 20); n < 0 {
				t.Errorf("seed %d: %s got none of the 20 requests after %s's first response", seed, other, first.Addr())
			}
		}
	})
	t.Run("joins a measured peer", func(t *testing.T) {
		h := newHarness(PeakEWMA)
		h.b.Update(specs("a"))
		firstPick(h, "none", 1000) // 10s of a at 0.3ms
		h.b.Update(specs("a", "b"))
		if n := firstPick(h, "b", 20); n < 0 {
			t.Errorf("b got none of its first 20 requests")
		}
	})
	t.Run("not flooded", func(t *testing.T) {
		h := newHarness(PeakEWMA)
		h.b.Update(specs("a"))
		firstPick(h, "none", 100)
		h.b.Update(specs("a", "b"))
		b := h.ep(t, "b")
		done := b.StartRequest() // its first request hangs
		for range 100 {
			if e := mustPick(t, h.b); e == b {
				t.Fatalf("b picked again with its first request in flight and a idle")
			} else {
				h.okRequest(e, rtt)
			}
			h.clock.Advance(gap)
		}
		done(false)
	})
}

// Why Decay stays at Linkerd's 10s while SampleDecay is 250ms: at a low rate the
// slow endpoint is avoided, takes no samples, and is tried again once its
// decaying cost falls below its peers', after Decay·ln(10.5/1.5) ≈ 2·Decay.
// At 10 RPS a single τ of 1s sent it one request in 20 or so (4.5%), the
// default about one in 200, as Linkerd does.
func TestSlowEndpointAtLowRate(t *testing.T) {
	share := func(name string, o func(*Options[*conn])) float64 {
		h := newHarness(PeakEWMA, o)
		got := simulate(t, h, benchRTTs, "slow", 100*time.Millisecond, time.Second, 60*time.Second)
		t.Logf("%s: slow share at 10 RPS: %.2f%%", name, 100*got)
		return got
	}
	if got := share("default", withDecay(0)); got > 0.01 {
		t.Errorf("default: slow endpoint got %.2f%% of the requests at 10 RPS, want < 1%%", 100*got)
	}
	if got := share("one τ of 1s", func(o *Options[*conn]) { o.Decay, o.SampleDecay = time.Second, time.Second }); got < 0.03 {
		t.Errorf("one τ of 1s: slow endpoint got %.2f%%, want > 3%%: the simulation no longer shows why Decay stays 10s", 100*got)
	}
	if got := share("Linkerd's τ", linkerd); got > 0.01 {
		t.Errorf("Linkerd's τ: slow endpoint got %.2f%% at 10 RPS, want < 1%%", 100*got)
	}
}
