package hub

import (
	"testing"
	"time"
)

// The same warning of one authority is logged once per warnEvery, with the
// count of lines not logged meanwhile; another text, or another authority,
// is logged at once.
func TestWarnLimiter(t *testing.T) {
	var l WarnLimiter
	t0 := time.Unix(1000, 0)
	steps := []struct {
		authority, text string
		at              time.Duration
		ok              bool
		suppressed      int
	}{
		{"a:80", "not found", 0, true, 0},
		{"a:80", "not found", time.Second, false, 0},
		{"a:80", "not found", 2 * time.Second, false, 0},
		{"b:80", "not found", 2 * time.Second, true, 0},
		{"a:80", "other", 3 * time.Second, true, 0},
		{"a:80", "other", 4 * time.Second, false, 0},
		{"a:80", "other", 3*time.Second + warnEvery, true, 1},
	}
	for i, s := range steps {
		ok, n := l.allow(s.authority, s.text, t0.Add(s.at))
		if ok != s.ok || n != s.suppressed {
			t.Errorf("step %d (%s %q at +%v): allow = %v, %d; want %v, %d", i, s.authority, s.text, s.at, ok, n, s.ok, s.suppressed)
		}
	}
}
