// Package sut starts and measures the systems under test: meridian-proxy,
// nginx and HAProxy processes pinned to their own CPU, read through /proc.
package sut

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat. It is 100
// on every Linux ABI Go supports, and reading it properly needs cgo (sysconf).
const clockTicks = 100

// Proc is one started process.
type Proc struct {
	Name   string
	Cmd    *exec.Cmd
	Log    string // file holding its stdout and stderr
	done   chan struct{}
	err    error  // exit status, valid once done is closed
	cgroup string // LimitCPU's, removed by Stop
}

// Start runs bin with args, pinned to cpus (a taskset list such as "1") when
// cpus is not empty. taskset execs the program, so the PID is the program's.
func Start(name, cpus, logDir, bin string, args ...string) (*Proc, error) {
	argv := append([]string{bin}, args...)
	if cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	logPath := filepath.Join(logDir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// Its own process group, so a Ctrl-C to the benchmark reaches us first
	// and we stop our children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); lf.Close(); close(p.done) }()
	return p, nil
}

// PID of the process.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Exited reports whether the process has ended, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM, waits up to grace, then kills. It returns the exit
// error unless the process ended because of our signal.
func (p *Proc) Stop(grace time.Duration) error {
	defer p.removeCgroup()
	if exited, err := p.Exited(); exited {
		return fmt.Errorf("%s had already exited: %v", p.Name, err)
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		_ = p.Cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s ignored SIGTERM for %v; killed", p.Name, grace)
	}
}

// LogTail is the last n lines of the process's output.
func (p *Proc) LogTail(n int) string {
	b, _ := os.ReadFile(p.Log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// CPUSeconds is user+system CPU time used so far, from /proc/PID/stat.
func (p *Proc) CPUSeconds() (float64, error) { return pidCPU(strconv.Itoa(p.PID())) }

// SelfCPUSeconds is the calling process's CPU time.
func SelfCPUSeconds() (float64, error) { return pidCPU("self") }

func pidCPU(pid string) (float64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields are counted after its ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(ut+st) / clockTicks, nil
}

// MachineBusySeconds is the CPU time all CPUs spent not idle, from the "cpu"
// line of /proc/stat. Minus what the benchmark's own processes used, it shows
// whether something else on the machine (a build, a test run) competed with
// a measurement.
func MachineBusySeconds() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("unexpected /proc/stat")
	}
	var busy int64
	// user nice system idle iowait irq softirq steal: all but idle and iowait.
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, err
		}
		busy += v
	}
	return float64(busy) / clockTicks, nil
}

// CPUTicks is the busy and total ticks of the CPUs in list ("0", "0-1",
// "0,2", as taskset takes them; empty: all) from /proc/stat: the busy share
// of those CPUs over an interval is the difference of two readings. Steal
// and guest time are neither (not this machine's).
func CPUTicks(list string) (busy, total float64) {
	want := map[string]bool{}
	for _, part := range strings.Split(list, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		lo, hi, found := strings.Cut(part, "-")
		a, _ := strconv.Atoi(lo)
		b := a
		if found {
			b, _ = strconv.Atoi(hi)
		}
		for i := a; i <= b; i++ {
			want["cpu"+strconv.Itoa(i)] = true
		}
	}
	data, _ := os.ReadFile("/proc/stat")
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || (len(want) > 0 && !want[f[0]]) || (len(want) == 0 && f[0] != "cpu") {
			continue
		}
		// user nice system idle iowait irq softirq: busy but idle and iowait.
		for i, v := range f[1:8] {
			n, _ := strconv.ParseFloat(v, 64)
			total += n
			if i != 3 && i != 4 {
				busy += n
			}
		}
	}
	return busy, total
}

// Status holds the /proc/PID/status and fd figures a benchmark reports.
type Status struct {
	RSS, PeakRSS int64 // bytes: VmRSS and VmHWM
	Threads      int
	FDs          int
}

// Status reads /proc/PID/status and counts /proc/PID/fd.
func (p *Proc) Status() (Status, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.PID()))
	if err != nil {
		return Status{}, err
	}
	defer f.Close()
	var st Status
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fields[0], 10, 64)
		switch k {
		case "VmRSS":
			st.RSS = n * 1024
		case "VmHWM":
			st.PeakRSS = n * 1024
		case "Threads":
			st.Threads = int(n)
		}
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.PID())); err == nil {
		st.FDs = len(ents)
	}
	return st, sc.Err()
}

// ResetPeak resets VmHWM to the current RSS (Linux >= 4.0, "5" in clear_refs),
// so a later Status().PeakRSS is the peak of one load level alone.
func (p *Proc) ResetPeak() error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.PID()), []byte("5"), 0)
}

// MB formats bytes as MiB with one decimal.
func MB(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// FreePort is a loopback TCP port free now, picked below the kernel's
// ephemeral range (32768 and up by default): a port the kernel handed out
// for a moment can be given to an outgoing connection again before the
// peer that is to listen on it starts.
func FreePort() (int, error) {
	for range 100 {
		p := 20000 + rand.IntN(12000)
		ln, err := net.Listen("tcp", Addr(p))
		if err != nil {
			continue // in use
		}
		ln.Close()
		return p, nil
	}
	return 0, errors.New("no free port in 20000-31999")
}

// Addr is "127.0.0.1:port".
func Addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// WaitTCP waits until addr accepts connections or p exits.
func WaitTCP(p *Proc, addr string, timeout time.Duration) error {
	return poll(p, timeout, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// WaitHTTP200 waits until url answers 200 or p exits.
func WaitHTTP200(p *Proc, url string, timeout time.Duration) error {
	c := &http.Client{Timeout: 500 * time.Millisecond}
	return poll(p, timeout, func() bool {
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func poll(p *Proc, timeout time.Duration, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("%s exited during start-up (%v):\n%s", p.Name, err, p.LogTail(20))
		}
		if ok() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %v:\n%s", p.Name, timeout, p.LogTail(20))
}

// Scrape fetches a Prometheus text endpoint and returns the sum of the
// samples of metric (all label sets), and whether any was found.
func Scrape(ctx context.Context, url, metric string) (float64, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, false, err
	}
	var sum float64
	found := false
	for _, line := range bytes.Split(body, []byte("\n")) {
		s := string(line)
		if !strings.HasPrefix(s, metric) {
			continue
		}
		rest := s[len(metric):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // a longer metric name with this prefix
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found, nil
}

// PinSelf is PinSelfPriority with the normal priority.
func PinSelf(cpus string) error { return PinSelfPriority(cpus, PrioNormal) }

// PinSelfPriority re-executes the running program, once, under `taskset -c
// cpus` so the load generator and the systems under test never share a core,
// and under a scheduling priority (see Priority). Go sizes GOMAXPROCS from the
// affinity mask at start-up, which is why this re-execs rather than calling
// sched_setaffinity on a running process. Children started later inherit the
// priority. It pins nothing when cpus is empty or the machine has one CPU.
func PinSelfPriority(cpus string, prio Priority) error {
	const marker = "MERIDIAN_BENCH_PINNED"
	if os.Getenv(marker) != "" {
		return nil
	}
	var argv []string
	switch prio {
	case "", PrioNormal:
	case PrioFIFO:
		argv = append(argv, "chrt", "--fifo", "10")
	case PrioRR:
		argv = append(argv, "chrt", "--rr", "10")
	case PrioNice:
		argv = append(argv, "nice", "-n", "-20")
	default:
		return fmt.Errorf("unknown priority %q (normal, nice, fifo, rr)", prio)
	}
	if cpus != "" && runtime.NumCPU() >= 2 {
		argv = append(argv, "taskset", "-c", cpus)
	}
	if len(argv) == 0 {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("%s not found: %w", argv[0], err)
	}
	argv = append(append(argv, self), os.Args[1:]...)
	return syscall.Exec(bin, argv, append(os.Environ(), marker+"=1"))
}

// Priority is how the benchmark's processes are scheduled against whatever
// else runs on the machine.
type Priority string

const (
	// PrioNormal: like any process. Right on a dedicated machine.
	PrioNormal Priority = "normal"
	// PrioNice: nice -20, a large CFS share but no guaranteed preemption.
	PrioNice Priority = "nice"
	// PrioFIFO: SCHED_FIFO priority 10 for the harness and everything it
	// starts, so a build or test run sharing the machine cannot delay a
	// request (it only gets the CPU time the benchmark leaves idle). Kernel
	// RT throttling still reserves 5% of each CPU for everything else.
	PrioFIFO Priority = "fifo"
	// PrioRR: SCHED_RR priority 10, the same shield, except that threads of
	// the same priority on one CPU take turns (100 ms slices) instead of
	// one running until it blocks: a Go program with two threads running
	// on one CPU (a loop holding a processor, evloop's Hold) can otherwise
	// livelock, one thread spinning in the runtime on a lock or a sweep the
	// other, never run again, holds (Go issues 73499, 76353).
	PrioRR Priority = "rr"
)

// RealTime says whether p is a real-time policy: other work only gets the
// CPU time the benchmark leaves idle, and CFS quotas do not apply.
func (p Priority) RealTime() bool { return p == PrioFIFO || p == PrioRR }

// RunDelay is the time the process's threads spent runnable but waiting for
// a CPU, from /proc/PID/task/*/schedstat: the direct measure of how much CPU
// contention delayed it.
func (p *Proc) RunDelay() float64 { return runDelay(strconv.Itoa(p.PID())) }

// SelfRunDelay is RunDelay of the calling process.
func SelfRunDelay() float64 { return runDelay("self") }

func runDelay(pid string) float64 {
	tasks, _ := filepath.Glob("/proc/" + pid + "/task/*/schedstat")
	var ns int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) >= 2 {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			ns += v
		}
	}
	return float64(ns) / 1e9
}

// CollectNow runs a full collection. Call it between measurements: with
// QuietGC the heap otherwise grows to the memory limit and the collection
// that then happens (with the allocations that must scavenge to stay under
// the limit) stalls whatever measurement it lands in for 100-200 ms.
func CollectNow() { runtime.GC() }

// QuietGC keeps the harness's own garbage collector out of the measurements.
// With the load generator and backends on one CPU, the default GOGC collects
// a ~4 MB heap several times a second and each cycle delays the requests due
// meanwhile by milliseconds, which the corrected latency rightly counts. The
// harness allocates some tens of MB/s, so collecting only near 1 GiB means a
// cycle a minute at most.
func QuietGC() {
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(1 << 30)
}

// Harness starts a benchmark program the way every one here starts: the
// process pinned to cpus at prio (re-executing itself if needed), its GC
// held off, a context ended by Ctrl-C or SIGTERM, and the directory for
// proxy logs and configs (logDir, or a new temporary one named after
// name). It exits the program on failure.
func Harness(name, cpus string, prio Priority, logDir string) (ctx context.Context, stop context.CancelFunc, dir string) {
	if err := PinSelfPriority(cpus, prio); err != nil {
		log.Fatal(err)
	}
	QuietGC()
	ctx, stop = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	dir = logDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", name+"-"); err != nil {
			log.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}
	return ctx, stop, dir
}
