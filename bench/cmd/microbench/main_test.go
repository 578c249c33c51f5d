package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/meridian-mesh/meridian/proxy/sidecar
cpu: Intel(R) Xeon(R) Processor
BenchmarkMeshedRequest/proto=http1-get/tls=plain-2         	    2000	    267662 ns/op	    500000 cpu-ns/op	   21736 B/op	     257 allocs/op
BenchmarkMeshedRequest/proto=http1-get/tls=mtls-2          	    2000	    406110 ns/op	   24380 B/op	     282 allocs/op
BenchmarkMeshedRequest/proto=http1-get/tls=plain-2         	    2000	    200000 ns/op	    400000 cpu-ns/op	   21700 B/op	     258 allocs/op
BenchmarkMeshedRequest/proto=http1-get/tls=mtls-2          	    2000	    400000 ns/op	   24300 B/op	     283 allocs/op
BenchmarkMeshedRequest/proto=http1-get/tls=plain-2         	    2000	    900000 ns/op	    450000 cpu-ns/op	   21800 B/op	     256 allocs/op
BenchmarkMeshedRequest/proto=http1-get/tls=mtls-2          	    2000	    500000 ns/op	   24400 B/op	     281 allocs/op
BenchmarkSmall-2   	 1000000	        12.5 ns/op	       0 B/op	       0 allocs/op
PASS
ok  	github.com/meridian-mesh/meridian/proxy/sidecar	7.830s
`

// The RESULT line holds, per case in order of appearance, the median of
// each figure over the runs (odd count: the middle run; not the mean);
// cpu-ns/op only for the cases that report it.
func TestResultLine(t *testing.T) {
	var copied bytes.Buffer
	res, err := collect(strings.NewReader(sample), &copied)
	if err != nil {
		t.Fatal(err)
	}
	if copied.String() != sample {
		t.Errorf("output not passed through unchanged:\n%s", copied.String())
	}
	var out strings.Builder
	if err := printResult(&out, res, []string{"count=3"}); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	want := "RESULT count=3" +
		" http1_get_plain_ns=267662 http1_get_plain_cpu_ns=450000 http1_get_plain_bytes=21736 http1_get_plain_allocs=257" +
		" http1_get_mtls_ns=406110 http1_get_mtls_bytes=24380 http1_get_mtls_allocs=282" +
		" BenchmarkSmall_ns=12 BenchmarkSmall_bytes=0 BenchmarkSmall_allocs=0\n"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestMedianEven(t *testing.T) {
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median of 1..4 = %v, want 2.5", got)
	}
}

// Output without a result line (a build failure, a filter matching
// nothing) is an error, as is a result without -benchmem's figures: the
// RESULT line must not silently lose a case's allocations.
func TestMissingFigures(t *testing.T) {
	if _, err := collect(strings.NewReader("PASS\nok  \tx\t0.1s\n"), io.Discard); err == nil {
		t.Error("no result lines: no error")
	}
	res, err := collect(strings.NewReader("BenchmarkX-2 \t 100 \t 5 ns/op\n"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := printResult(io.Discard, res, nil); err == nil || !strings.Contains(err.Error(), "B/op") {
		t.Errorf("result without B/op: error %v, want one naming B/op", err)
	}
}

func TestParseLine(t *testing.T) {
	for _, c := range []struct {
		line, name string
		ok         bool
	}{
		{"BenchmarkA/x=1-16 \t 10 \t 3 ns/op", "BenchmarkA/x=1", true},
		{"BenchmarkA/name-with-dash \t 10 \t 3 ns/op", "BenchmarkA/name-with-dash", true},
		{"BenchmarkA/x=1-2", "", false}, // a name line whose results follow a log line
		{"BenchmarkA-2 \t ten \t 3 ns/op", "", false},
		{"--- FAIL: BenchmarkA", "", false},
	} {
		name, _, ok := parseLine(c.line)
		if name != c.name || ok != c.ok {
			t.Errorf("parseLine(%q) = %q, %v; want %q, %v", c.line, name, ok, c.name, c.ok)
		}
	}
}

func TestCaseKey(t *testing.T) {
	for name, want := range map[string]string{
		"BenchmarkMeshedRequest/proto=http1-get/tls=plain": "http1_get_plain",
		"BenchmarkMeshedRequest/proto=grpc/tls=mtls":       "grpc_mtls",
		"BenchmarkRequest/plain":                           "plain",
		"BenchmarkPick":                                    "BenchmarkPick",
	} {
		if got := caseKey(name); got != want {
			t.Errorf("caseKey(%q) = %q, want %q", name, got, want)
		}
	}
}
