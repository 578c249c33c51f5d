package sidecar

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCgroupMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		file, content string
		want          int64
	}{
		{"memory.max", "262144000\n", 262144000},
		{"memory.max", "max\n", 0},
		{"memory/memory.limit_in_bytes", "134217728\n", 134217728},
		{"memory/memory.limit_in_bytes", "9223372036854771712\n", 0}, // v1 without a limit
		{"", "", 0}, // no cgroup files at all
	} {
		root := t.TempDir()
		if c.file != "" {
			p := filepath.Join(root, c.file)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(c.content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got := cgroupMemoryLimit(root); got != c.want {
			t.Errorf("%s %q: limit %d, want %d", c.file, c.content, got, c.want)
		}
	}
}

// The default in-flight limit fits the memory limit: both directions full
// of requests stay within it, where the fixed 10,000 would need about 1 GB.
func TestMaxInFlightFor(t *testing.T) {
	if got := MaxInFlightFor(0); got != DefaultMaxInFlight {
		t.Errorf("no limit: %d, want %d", got, DefaultMaxInFlight)
	}
	for _, limit := range []int64{64 << 20, 128 << 20, 250 << 20, 1 << 30} {
		n := MaxInFlightFor(limit)
		if n < minInFlight || n > DefaultMaxInFlight {
			t.Errorf("limit %d MiB: %d, outside [%d, %d]", limit>>20, n, minInFlight, DefaultMaxInFlight)
		}
		if use := MemoryBaseline + 2*int64(n)*InFlightBudget; use > limit {
			t.Errorf("limit %d MiB: %d in flight per direction would use %d MiB", limit>>20, n, use>>20)
		}
	}
	if got := MaxInFlightFor(250 << 20); got != 1872 {
		t.Errorf("250 MiB: %d, want 1872", got)
	}
	if got := MaxInFlightFor(8 << 20); got != minInFlight {
		t.Errorf("8 MiB: %d, want the floor %d", got, minInFlight)
	}
	if got := MaxInFlightFor(64 << 30); got != DefaultMaxInFlight {
		t.Errorf("64 GiB: %d, want the ceiling %d", got, DefaultMaxInFlight)
	}
}
