package ports

import (
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	got, err := Parse(DefaultOpaque)
	if err != nil || !slices.Equal(got, []uint16{25, 587, 3306, 4444, 5432, 6379, 9300, 11211}) {
		t.Fatalf("Parse(DefaultOpaque) = %v, %v", got, err)
	}
	if got, err := Parse(""); err != nil || got != nil {
		t.Fatalf("Parse(\"\") = %v, %v; want none", got, err)
	}
	for _, bad := range []string{"0", "65536", "x", "25,", "1-3"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}
