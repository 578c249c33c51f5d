package ports

import (
	"fmt"
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

// Moved from proxy/redirect (its ParsePorts is this ParseRanges).
func TestParseRanges(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: the ranges, or the error
	}{
		{"", "[]"},
		{" ", "[]"},
		{"25", "[25]"},
		{"25,3306,4000-4010", "[25 3306 4000-4010]"},
		{" 25 , 4000 - 4010 ,", "[25 4000-4010]"},
		{"25,,26", "[25 26]"},
		{"1,65535,7-7", "[1 65535 7]"},
		{"0", "error: port 0 is out of range 1-65535"},
		{"65536", "error: port 65536 is out of range 1-65535"},
		{"99999999999999999999", `error: "99999999999999999999" is not a port number`},
		{"mysql", `error: "mysql" is not a port number`},
		{"25,http", `error: "http" is not a port number`},
		{"-5", `error: range "-5": missing port number`},
		{"5-", `error: range "5-": missing port number`},
		{"10-5", `error: range "10-5": it ends before it starts`},
		{"1-2-3", `error: range "1-2-3": "2-3" is not a port number`},
		{"4000-70000", `error: range "4000-70000": port 70000 is out of range 1-65535`},
		{"+25", `error: "+25" is not a port number`},
		{"25.0", `error: "25.0" is not a port number`},
	} {
		got, err := ParseRanges(tc.in)
		s := fmt.Sprint(got)
		if err != nil {
			s = "error: " + err.Error()
		}
		if s != tc.want {
			t.Errorf("ParseRanges(%q) = %s, want %s", tc.in, s, tc.want)
		}
	}
}

func TestParsePort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // the port, or the error
	}{
		{"1", "1"},
		{" 65535 ", "65535"},
		{"0025", "25"},
		{"", "error: missing port number"},
		{"0", "error: port 0 is out of range 1-65535"},
		{"-1", `error: "-1" is not a port number`},
		{"http", `error: "http" is not a port number`},
	} {
		n, err := ParsePort(tc.in)
		got := fmt.Sprint(n)
		if err != nil {
			got = "error: " + err.Error()
		}
		if got != tc.want {
			t.Errorf("ParsePort(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestItems(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{" , ,", nil},
		{"25", []string{"25"}},
		{" 25, 4000-4010,,mysql ", []string{"25", "4000-4010", "mysql"}},
	} {
		if got := Items(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("Items(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRange(t *testing.T) {
	for _, tc := range []struct {
		r    Range
		port uint32
		want bool
	}{
		{Range{25, 25}, 25, true},
		{Range{25, 25}, 26, false},
		{Range{4000, 4010}, 3999, false},
		{Range{4000, 4010}, 4000, true},
		{Range{4000, 4010}, 4010, true},
		{Range{4000, 4010}, 4011, false},
		{Range{65535, 65535}, 65535 + 65536, false}, // no wrap at 16 bits
	} {
		if got := tc.r.Contains(tc.port); got != tc.want {
			t.Errorf("%v.Contains(%d) = %v, want %v", tc.r, tc.port, got, tc.want)
		}
	}
}

func TestJoinRoundTrip(t *testing.T) {
	for _, s := range []string{"", "25", "25,4000-4010,1,65535"} {
		rs, err := ParseRanges(s)
		if err != nil {
			t.Fatalf("ParseRanges(%q): %v", s, err)
		}
		if got := Join(rs); got != s {
			t.Errorf("Join(ParseRanges(%q)) = %q", s, got)
		}
	}
}
