package sidecar

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// What MaxInFlightFor assumes. A request held in flight costs the proxy
// about 40 KiB (HTTP/1) to 60 KiB (HTTP/2) of heap and stack
// (BenchmarkInFlightFootprint); the budget leaves room for headers larger
// than a benchmark's. Both directions may be full at once.
const (
	InFlightBudget = 64 << 10 // bytes per request in flight
	MemoryBaseline = 16 << 20 // an idle proxy's memory
	minInFlight    = 100
)

// MaxInFlightFor is the default MaxInFlight of a proxy that may use limit
// bytes (0: unknown): as many requests per direction as fit in the memory
// beyond the baseline with both directions full, within [100,
// DefaultMaxInFlight], so that the proxy sheds load before the kernel kills
// it.
func MaxInFlightFor(limit int64) int {
	if limit <= 0 {
		return DefaultMaxInFlight
	}
	n := (limit - MemoryBaseline) / (2 * InFlightBudget)
	return int(min(max(n, minInFlight), DefaultMaxInFlight))
}

// MemoryLimit is the memory the proxy may use: its cgroup's limit (v2
// memory.max, v1 memory.limit_in_bytes) with source "cgroup", else the Go
// runtime's soft limit (GOMEMLIMIT) with source "GOMEMLIMIT"; 0 when
// neither is set.
func MemoryLimit() (limit int64, source string) {
	if l := cgroupMemoryLimit("/sys/fs/cgroup"); l > 0 {
		return l, "cgroup"
	}
	if l := debug.SetMemoryLimit(-1); l < math.MaxInt64 {
		return l, "GOMEMLIMIT"
	}
	return 0, ""
}

// cgroupMemoryLimit reads the memory limit of the cgroup mounted at root
// (in a container, its own): 0 when there is none.
func cgroupMemoryLimit(root string) int64 {
	for _, f := range []string{"memory.max", "memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		n, err := strconv.ParseInt(v, 10, 64)
		// v2 says "max"; v1 says a number near MaxInt64 when unlimited.
		if err != nil || n <= 0 || n >= 1<<60 {
			return 0
		}
		return n
	}
	return 0
}

// SetGoMemoryLimit makes the Go runtime collect garbage harder before the
// hard limit: its soft limit becomes 90% of a cgroup limit, unless
// GOMEMLIMIT asks for less. (The injector sets GOMEMLIMIT to the whole
// limit, and the runtime does not read cgroups.) It returns the soft limit
// in force, or 0 when there is none.
func SetGoMemoryLimit(limit int64, source string) int64 {
	cur := debug.SetMemoryLimit(-1)
	if source == "cgroup" {
		if soft := limit / 10 * 9; soft < cur {
			debug.SetMemoryLimit(soft)
			cur = soft
		}
	}
	if cur == math.MaxInt64 {
		return 0
	}
	return cur
}
