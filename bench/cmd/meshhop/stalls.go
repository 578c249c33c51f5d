package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var stallThreshold = flag.Duration("stall-threshold", 5*time.Millisecond, "lateness of the stall probes (a thread at SCHED_FIFO 99 on each pinned CPU, waking every 10 ms) above which a slice counts as stalled by the machine; 0: no probes")

// A stall is time a pinned CPU gave to nothing in user space: the probe, a
// thread of the highest real-time priority that sleeps 10 ms at a time,
// woke late by that much. Nothing in a proxy can delay it, only the kernel
// (a thread that does not yield, interrupts) or the hypervisor taking the
// virtual CPU away, so a slice it saw stalled measured the machine, not the
// chain (bench/README.md, "Host stalls").
const (
	probeEnv    = "MESHHOP_STALL_PROBE"
	probePeriod = 10 * time.Millisecond
	probeReport = time.Millisecond // lateness worth a line to the parent
)

// probes are this run's stall probes (none until startStallProbes).
var probes = &stalls{}

// stalls collects what the probes report.
type stalls struct {
	mu     sync.Mutex
	events []stall
	procs  []*exec.Cmd
	client map[int]bool // the load generator's CPUs (the direct path runs on these alone)
}

type stall struct {
	cpu       int
	from, end time.Time // the probe's intended wake-up and its actual one
}

// startStallProbes starts one probe per CPU in the taskset lists of the
// load generator's and the proxies' CPUs (empty lists: none).
func startStallProbes(clientCPUs, sutCPUs string) (*stalls, error) {
	s := &stalls{client: map[int]bool{}}
	if *stallThreshold <= 0 {
		return s, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	for i, l := range []string{clientCPUs, sutCPUs} {
		cpus, err := parseCPUList(l)
		if err != nil {
			return nil, err
		}
		for _, c := range cpus {
			if i == 0 {
				s.client[c] = true
			}
			if seen[c] {
				continue
			}
			seen[c] = true
			cmd := exec.Command("taskset", "-c", strconv.Itoa(c), "chrt", "--fifo", "99", self)
			cmd.Env = append(os.Environ(), probeEnv+"="+strconv.Itoa(c))
			cmd.Stderr = os.Stderr
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			out, err := cmd.StdoutPipe()
			if err != nil {
				return nil, err
			}
			if err := cmd.Start(); err != nil {
				s.stop()
				return nil, fmt.Errorf("stall probe on CPU %d: %w", c, err)
			}
			s.procs = append(s.procs, cmd)
			go s.read(c, out)
		}
	}
	return s, nil
}

func (s *stalls) read(cpu int, r interface{ Read([]byte) (int, error) }) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var at, late int64
		if _, err := fmt.Sscan(sc.Text(), &at, &late); err != nil {
			log.Printf("stall probe on CPU %d: %q: %v", cpu, sc.Text(), err)
			continue
		}
		end := time.Unix(0, at)
		s.mu.Lock()
		s.events = append(s.events, stall{cpu: cpu, from: end.Add(-time.Duration(late)), end: end})
		s.mu.Unlock()
	}
}

// worst is the longest stall that overlapped [from, to], and its CPU; on
// the load generator's CPUs only if clientOnly (the direct path's slices).
func (s *stalls) worst(from, to time.Time, clientOnly bool) (time.Duration, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var w time.Duration
	cpu := -1
	for _, e := range s.events {
		if clientOnly && !s.client[e.cpu] {
			continue
		}
		if e.end.After(from) && e.from.Before(to) && e.end.Sub(e.from) > w {
			w, cpu = e.end.Sub(e.from), e.cpu
		}
	}
	return w, cpu
}

func (s *stalls) stop() {
	for _, c := range s.procs {
		_ = c.Process.Kill()
		_ = c.Wait()
	}
}

// runStallProbe is the probe process's whole life (started by
// startStallProbes, pinned and at SCHED_FIFO 99 by taskset and chrt): wake
// every probePeriod on the absolute clock and report each wake-up later
// than probeReport as "unix-nanoseconds lateness-nanoseconds". It ends when
// its parent does (Pdeathsig) or stops reading.
func runStallProbe() {
	runtime.LockOSThread()
	w := bufio.NewWriter(os.Stdout)
	var next unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &next)
	for {
		ns := next.Nano() + int64(probePeriod)
		next = unix.NsecToTimespec(ns)
		for unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &next, nil) == unix.EINTR {
		}
		var now unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &now)
		late := now.Nano() - ns
		if late > int64(probeReport) {
			fmt.Fprintf(w, "%d %d\n", time.Now().UnixNano(), late)
			if w.Flush() != nil {
				os.Exit(0)
			}
		}
		if late > int64(probePeriod) {
			next = now // a long stall: no burst of wake-ups to catch up
		}
	}
}

// parseCPUList reads a taskset list ("1", "0,2", "2-3").
func parseCPUList(l string) ([]int, error) {
	var cpus []int
	for _, part := range strings.Split(l, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("CPU list %q: %w", l, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("CPU list %q: bad range %q", l, part)
			}
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}
