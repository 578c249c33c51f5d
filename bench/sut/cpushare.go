package sut

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LimitCPU moves the process, every thread of it, into a CPU cgroup of its
// own whose bandwidth is share of one CPU (0 < share <= 1), enforced by the
// kernel's CFS quota: however much work is offered, the process gets at most
// share of a CPU's time per period. On a machine whose load generator cannot
// saturate a whole core of the fastest peers, a peer given a fraction of one
// saturates first, and its saturation rate is then measured, not
// extrapolated. The quota is 1 ms (the kernel's least) per period of 1/share
// ms, so a throttled process waits at most the rest of a period (1.5 ms at
// 0.4). Real-time (SCHED_FIFO) tasks are not subject to it. Stop removes the
// cgroup.
func (p *Proc) LimitCPU(share float64) error {
	if share <= 0 || share > 1 {
		return fmt.Errorf("cpu share %v: want 0 < share <= 1", share)
	}
	const quotaUS = 1000
	periodUS := int(quotaUS/share + 0.5)
	name := fmt.Sprintf("meridian-bench-%s-%d", p.Name, p.PID())
	// cgroup v1: the cpu controller's own hierarchy; v2: the root's
	// children, which must have the cpu controller.
	dir, limits := filepath.Join("/sys/fs/cgroup", name), [][2]string{{"cpu.max", fmt.Sprintf("%d %d", quotaUS, periodUS)}}
	if v1 := "/sys/fs/cgroup/cpu"; exists(filepath.Join(v1, "cpu.cfs_quota_us")) {
		dir, limits = filepath.Join(v1, name), [][2]string{{"cpu.cfs_period_us", strconv.Itoa(periodUS)}, {"cpu.cfs_quota_us", strconv.Itoa(quotaUS)}}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("cpu share: %w", err)
	}
	p.cgroup = dir
	if !exists(filepath.Join(dir, limits[0][0])) {
		return fmt.Errorf("cpu share: no cpu controller in %s (echo +cpu > /sys/fs/cgroup/cgroup.subtree_control)", dir)
	}
	for _, kv := range append(limits, [2]string{"cgroup.procs", strconv.Itoa(p.PID())}) {
		if err := os.WriteFile(filepath.Join(dir, kv[0]), []byte(kv[1]), 0); err != nil {
			return fmt.Errorf("cpu share in %s: %w", dir, err)
		}
	}
	return nil
}

// Throttled is the time the kernel held the process back for its CPU share
// (LimitCPU), in seconds; 0 without one.
func (p *Proc) Throttled() float64 {
	if p.cgroup == "" {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(p.cgroup, "cpu.stat"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "throttled_time": // v1, ns
			return v / 1e9
		case "throttled_usec": // v2
			return v / 1e6
		}
	}
	return 0
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// removeCgroup removes LimitCPU's cgroup once the process has ended (a
// cgroup with a task in it cannot be removed).
func (p *Proc) removeCgroup() {
	if p.cgroup != "" {
		_ = os.Remove(p.cgroup)
	}
}
