package filewatch

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestPoll drives Poll with scripted looks: what changed sees, and what it
// returns being remembered, do not depend on timing.
func TestPoll(t *testing.T) {
	type look struct {
		s  string
		ok bool
	}
	for _, tc := range []struct {
		name    string
		last    string
		looks   []look
		reply   func(string) string // what changed returns; nil: its argument
		changed []string
	}{
		{"no change", "a", []look{{"a", true}, {"a", true}}, nil, nil},
		{"each change once", "a", []look{{"b", true}, {"b", true}, {"c", true}, {"a", true}}, nil, []string{"b", "c", "a"}},
		{"the first look counts when last differs", "", []look{{"a", true}, {"a", true}}, nil, []string{"a"}},
		{"a look that cannot tell is skipped", "a", []look{{"", false}, {"a", true}, {"b", false}, {"b", true}}, nil, []string{"b"}},
		{"changed's reply is remembered", "a", []look{{"b", true}, {"c", true}, {"c", true}},
			func(string) string { return "c" }, []string{"b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			i := 0
			var got []string
			done := make(chan struct{})
			go func() {
				defer close(done)
				Poll(ctx, time.Millisecond, tc.last, func() (string, bool) {
					if i == len(tc.looks) {
						cancel() // the script is over; Poll returns at its next tick
						return tc.last, false
					}
					l := tc.looks[i]
					i++
					return l.s, l.ok
				}, func(s string) string {
					got = append(got, s)
					if tc.reply != nil {
						return tc.reply(s)
					}
					return s
				})
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Poll did not return after ctx ended")
			}
			if !slices.Equal(got, tc.changed) {
				t.Errorf("changed with %q, want %q", got, tc.changed)
			}
		})
	}
}

func TestEveryStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := make(chan struct{}, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Every(ctx, time.Millisecond, func() { calls <- struct{}{} })
	}()
	<-calls
	<-calls
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Every did not return after ctx ended")
	}
}

func TestLooks(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if _, ok := Stat(a); ok {
		t.Error("Stat of a missing file: ok")
	}
	if err := os.WriteFile(a, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(a, old, old); err != nil {
		t.Fatal(err)
	}
	first, ok := Stat(a)
	if !ok || first.mtime != old.UnixNano() || first.size != 1 {
		t.Errorf("Stat = %+v, %v; want mtime %d, size 1", first, ok, old.UnixNano())
	}
	// Replaced by a rename with the same size and modification time: a
	// change all the same (another inode).
	if err := os.WriteFile(b, []byte("y"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(b, old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(b, a); err != nil {
		t.Fatal(err)
	}
	if second, _ := Stat(a); second == first {
		t.Errorf("a file replaced by a rename looks unchanged: %+v", second)
	}
	os.Remove(a)
	for _, tc := range []struct {
		a, b string // contents; "-" for missing
		want string
	}{
		{"-", "-", "\x00\x00"},
		{"xy", "-", "xy\x00\x00"},
		{"x", "y", "x\x00y\x00"}, // not "xy\x00\x00": moving a byte to the next file is a change
	} {
		for p, c := range map[string]string{a: tc.a, b: tc.b} {
			os.Remove(p)
			if c != "-" {
				if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got := Contents(a, b); got != tc.want {
			t.Errorf("Contents(%q, %q) = %q, want %q", tc.a, tc.b, got, tc.want)
		}
	}
}
