package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseCPUList(t *testing.T) {
	for in, want := range map[string][]int{"": nil, "1": {1}, "0,2": {0, 2}, "2-4": {2, 3, 4}, "0, 3-4": {0, 3, 4}} {
		got, err := parseCPUList(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("parseCPUList(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"a", "3-1", "1-x"} {
		if _, err := parseCPUList(in); err == nil || !strings.Contains(err.Error(), in) {
			t.Errorf("parseCPUList(%q): error %v, want one naming the list", in, err)
		}
	}
}

// A slice is charged with the stalls that overlap it, on any probed CPU for
// a chain and on the client's alone for the direct path.
func TestStallsWorst(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	s := &stalls{client: map[int]bool{0: true}, events: []stall{
		{cpu: 1, from: ms(100), end: ms(145)}, // 45 ms on the proxies' CPU
		{cpu: 0, from: ms(500), end: ms(506)}, // 6 ms on the client's
		{cpu: 1, from: ms(1990), end: ms(2030)},
	}}
	for _, c := range []struct {
		name       string
		from, to   int
		clientOnly bool
		want       time.Duration
		cpu        int
	}{
		{"whole", 0, 1000, false, 45 * time.Millisecond, 1},
		{"direct path: the client's CPU only", 0, 1000, true, 6 * time.Millisecond, 0},
		{"overlap at the start", 140, 400, false, 45 * time.Millisecond, 1},
		{"overlap at the end", 1500, 2000, false, 40 * time.Millisecond, 1},
		{"none inside", 150, 490, false, 0, -1},
		{"touching is not overlapping", 145, 500, false, 0, -1},
	} {
		got, cpu := s.worst(ms(c.from), ms(c.to), c.clientOnly)
		if got != c.want || cpu != c.cpu {
			t.Errorf("%s: worst = %v on CPU %d, want %v on %d", c.name, got, cpu, c.want, c.cpu)
		}
	}
}

// The unstalled median leaves out a pair when either slice of it stalled.
func TestAddedP99Unstalled(t *testing.T) {
	msd := func(v ...float64) []time.Duration {
		d := make([]time.Duration, len(v))
		for i, x := range v {
			d[i] = time.Duration(x * float64(time.Millisecond))
		}
		return d
	}
	direct := row{SliceP99: msd(0.1, 0.1, 0.1, 0.1, 0.1), Stalled: []bool{false, false, false, true, false}}
	chain := row{SliceP99: msd(0.4, 50, 0.6, 0.5, 40), Stalled: []bool{false, true, false, false, true}}
	if got, ok := chain.addedP99(direct); !ok || got != 500*time.Microsecond {
		t.Errorf("addedP99 = %v, %v; want 500µs (the median of all five pairs)", got, ok)
	}
	// Pairs 0 and 2 are left: +0.3 and +0.5 ms.
	if got, ok := chain.addedP99Unstalled(direct); !ok || got != 400*time.Microsecond {
		t.Errorf("addedP99Unstalled = %v, %v; want 400µs", got, ok)
	}
	chain.Stalled = []bool{true, true, true, false, true}
	if _, ok := chain.addedP99Unstalled(direct); ok {
		t.Error("addedP99Unstalled with every pair stalled: ok, want none")
	}
	r := sweepRow{at80P99s: msd(30, 0.8, 0.7, 45, 0.9), at80Stalled: []bool{true, false, false, true, false}}
	if got, ok := r.unstalledAt80(); !ok || got != 800*time.Microsecond {
		t.Errorf("unstalledAt80 = %v, %v; want 800µs", got, ok)
	}
}
