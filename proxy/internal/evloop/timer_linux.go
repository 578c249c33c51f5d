package evloop

import "time"

// A Timer runs a function on its loop once its time has come. Its methods,
// like After, are the loop's: called only from the loop.
type Timer struct {
	l    *Loop
	when time.Time
	f    func()
	i    int // index in the loop's heap; -1 when not scheduled
}

// After runs f on the loop once d has passed from the loop's clock (Now).
func (l *Loop) After(d time.Duration, f func()) *Timer {
	t := &Timer{l: l, f: f, i: -1}
	t.Reset(d)
	return t
}

// Stop keeps the timer from running; false if it had run or was stopped.
func (t *Timer) Stop() bool {
	if t.i < 0 {
		return false
	}
	t.l.timers.remove(t.i)
	return true
}

// Reset schedules the timer again, d from the loop's clock, whether it ran,
// was stopped or is still due.
func (t *Timer) Reset(d time.Duration) {
	t.Stop()
	t.when = t.l.now.Add(d)
	t.l.timers.push(t)
}

// runTimers runs the timers due by l.now, in the order of their times.
func (l *Loop) runTimers() {
	for len(l.timers) > 0 && !l.timers[0].when.After(l.now) {
		t := l.timers[0]
		l.timers.remove(0)
		t.f()
	}
}

// timerHeap is a binary min-heap of timers by time.
type timerHeap []*Timer

func (h *timerHeap) push(t *Timer) {
	t.i = len(*h)
	*h = append(*h, t)
	h.up(t.i)
}

func (h *timerHeap) remove(i int) {
	s := *h
	last := len(s) - 1
	s[i].i = -1
	if i != last {
		s[i] = s[last]
		s[i].i = i
	}
	s[last] = nil
	*h = s[:last]
	if i != last {
		if !h.down(i) {
			h.up(i)
		}
	}
}

func (h timerHeap) less(i, j int) bool { return h[i].when.Before(h[j].when) }

func (h timerHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].i, h[j].i = i, j
}

func (h timerHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

// down moves i down to its place; false if it did not move.
func (h timerHeap) down(i int) bool {
	start := i
	for {
		c := 2*i + 1
		if c >= len(h) {
			break
		}
		if r := c + 1; r < len(h) && h.less(r, c) {
			c = r
		}
		if !h.less(c, i) {
			break
		}
		h.swap(i, c)
		i = c
	}
	return i > start
}
