package balance

import (
	"cmp"
	"slices"
	"testing"
	"time"
)

// The bench's balance scenario (bench/cmd/balance) on the fake clock: three
// endpoints, one 10× slower, a request every millisecond, a 1s warm-up and a
// measured run. The balancer's own Pick/StartRequest/done API is driven in
// time order, so the share is deterministic (the harness's Rand is seeded).

// stall is a pause of the whole proxy (or host) from at for d: no response is
// seen during it, so every one due meanwhile arrives at its end, and the
// requests in flight all take a sample inflated by up to d.
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
	var addrs []string
	for a := range rtts {
		addrs = append(addrs, a)
	}
	slices.Sort(addrs)
	h.b.Update(specs(addrs...))
	start := h.clock.Now()
	now := func() time.Duration { return h.clock.Now().Sub(start) }
	// delayed moves a response due at end past any stall it falls in.
	delayed := func(end time.Duration) time.Duration {
		for _, s := range stalls {
			if end >= s.at && end < s.at+s.d {
				end = s.at + s.d
			}
		}
		return end
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
		finishUntil(at)
		e := mustPick(t, h.b)
		if at >= warmup {
			picks++
			if e.Addr() == slow {
				toSlow++
			}
		}
		seq++
		inflight = append(inflight, simReq{end: delayed(at + rtts[e.Addr()]), seq: seq, done: e.StartRequest()})
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

// From a cold start every endpoint is seeded at DefaultRTT (30ms). If the
// first responses only pulled the seed down at the rate τ allows, the fast
// endpoints would still cost over 10ms after the warm-up, the 10× slower one
// would differ from them by a few percent, and P2C would in effect compare
// pending counts: the slow endpoint would win whenever it is idle and its
// partner has one request in flight, ≈ 8% of the requests (the bench's
// 7.8–13.1%). The first response replaces the seed, whatever τ is.
func TestSlowEndpointAfterColdStart(t *testing.T) {
	for _, decay := range []time.Duration{0, 10 * time.Second} { // the default; Linkerd's
		h := newHarness(PeakEWMA, func(o *Options[*conn]) { o.Decay = decay })
		got := simulate(t, h, benchRTTs, "slow", time.Millisecond, time.Second, 5*time.Second)
		t.Logf("decay %v: slow share after a cold start: %.2f%%", cmp.Or(decay, DefaultDecay), 100*got)
		if got > 0.01 {
			t.Errorf("decay %v: slow endpoint got %.2f%% of the requests, want < 1%%", cmp.Or(decay, DefaultDecay), 100*got)
		}
	}
}

// A 10ms pause of the proxy near the end of the warm-up (as traced in the
// bench: both fast endpoints' samples at 11ms at the same instant) raises the
// fast endpoints' cost to the slow one's at once (peak), and it decays with τ.
// While 2×cost(fast) > cost(slow), the idle slow endpoint wins every comparison
// with a fast one that has a request in flight: with Linkerd's τ = 10s that
// lasts the whole run, with the default 1s about a second.
func TestSlowEndpointAfterStall(t *testing.T) {
	pause := stall{at: 800 * time.Millisecond, d: 10 * time.Millisecond}
	share := func(decay time.Duration) float64 {
		h := newHarness(PeakEWMA, func(o *Options[*conn]) { o.Decay = decay })
		got := simulate(t, h, benchRTTs, "slow", time.Millisecond, time.Second, 5*time.Second, pause)
		t.Logf("decay %v: slow share after a 10ms stall: %.2f%%", cmp.Or(decay, DefaultDecay), 100*got)
		return got
	}
	if got := share(0); got > 0.02 {
		t.Errorf("default decay: slow endpoint got %.2f%% of the requests, want < 2%%", 100*got)
	}
	if got := share(10 * time.Second); got < 0.05 {
		t.Errorf("decay 10s: slow endpoint got %.2f%%, want > 5%%: the simulation no longer shows the stall's effect", 100*got)
	}
}
