package ports

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseRanges: port lists come from annotations anyone who can edit a
// pod writes. An accepted list is well formed (every range within 1-65535,
// low not above high) and Join gives a canonical form that parses back to
// the same ranges; a refused list names the item at fault.
func FuzzParseRanges(f *testing.F) {
	for _, s := range []string{"", "25", "25,3306,4000-4010", " 25 , 4000 - 4010 ,", "0", "65536", "-5", "5-", "10-5",
		"1-2-3", "+25", "25.0", "mysql", "99999999999999999999", "1,65535,7-7", "٣"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParseRanges(s)
		if err != nil {
			for _, item := range Items(s) {
				if _, e := ParseRange(item); e != nil {
					if e.Error() != err.Error() {
						t.Fatalf("ParseRanges(%q) = %v; want the first bad item's error, %v", s, err, e)
					}
					return
				}
			}
			t.Fatalf("ParseRanges(%q) = %v, but every item parses", s, err)
		}
		for _, r := range rs {
			if r.First < 1 || r.First > r.Last {
				t.Fatalf("ParseRanges(%q) accepted %v", s, r)
			}
		}
		j := Join(rs)
		again, err := ParseRanges(j)
		if err != nil || !slices.Equal(again, rs) {
			t.Fatalf("ParseRanges(Join(%v)) = %v, %v", rs, again, err)
		}
		if Join(again) != j {
			t.Fatalf("Join is not canonical: %q then %q", j, Join(again))
		}
	})
}

// FuzzParse: --opaque-ports. An accepted list is single ports 1-65535 that
// format back to the same list; a refused one quotes the item at fault.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", DefaultOpaque, "25,", "1-3", "0", "x", " 25 , 26"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := Parse(s)
		if err != nil {
			if !strings.Contains(err.Error(), "is not a port (1-65535)") {
				t.Fatalf("Parse(%q) error does not say what is wrong: %v", s, err)
			}
			return
		}
		var parts []string
		for _, p := range ps {
			if p == 0 {
				t.Fatalf("Parse(%q) accepted port 0", s)
			}
			parts = append(parts, strconv.Itoa(int(p)))
		}
		if again, err := Parse(strings.Join(parts, ",")); err != nil || !slices.Equal(again, ps) {
			t.Fatalf("Parse of %v formatted = %v, %v", ps, again, err)
		}
	})
}
