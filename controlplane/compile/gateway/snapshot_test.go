package gateway

import (
	"slices"
	"testing"
)

func TestLessSpecific(t *testing.T) {
	for h, want := range map[string][]string{
		"a.b.c":   {"*.b.c", "*.c", ""},
		"a":       {""},
		"*.b.c":   {"*.c", ""},
		"*.c":     {""},
		"":        nil,
		"x.y.z.w": {"*.y.z.w", "*.z.w", "*.w", ""},
	} {
		got := lessSpecific(h)
		if !slices.Equal(got, want) {
			t.Errorf("lessSpecific(%q) = %q, want %q", h, got, want)
		}
		// Each covers h, as the proxy matches.
		for _, l := range got {
			if l != "" && !covers(l, h) {
				t.Errorf("%q does not cover %q", l, h)
			}
		}
	}
}
