package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A started process is recorded in run/<name>.pid as "<pid> <start time>",
// the start time (field 22 of /proc/<pid>/stat) telling it apart from a
// later process that got the same pid.

type proc struct {
	name  string
	pid   int
	start string
}

func (c *config) pidFile(name string) string { return c.path("run", name+".pid") }

// startProcess starts a component in its own session, detached from the
// caller, with its output in logs/<name>.log.
func (c *config) startProcess(name, bin string, args []string, env []string) (*proc, error) {
	if err := os.MkdirAll(c.path("logs"), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.path("run"), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(c.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s: %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + c.path("home"),
	}, env...)
	cmd.Dir = c.work
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %v", name, err)
	}
	p := &proc{name: name, pid: cmd.Process.Pid, start: procStartTime(cmd.Process.Pid)}
	cmd.Process.Release()
	if err := os.WriteFile(c.pidFile(name), []byte(fmt.Sprintf("%d %s\n", p.pid, p.start)), 0o644); err != nil {
		return nil, err
	}
	return p, nil
}

// recorded reads the pid file of a component; nil when there is none.
func (c *config) recorded(name string) *proc {
	data, err := os.ReadFile(c.pidFile(name))
	if err != nil {
		return nil
	}
	f := strings.Fields(string(data))
	if len(f) < 1 {
		return nil
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return nil
	}
	p := &proc{name: name, pid: pid}
	if len(f) > 1 {
		p.start = f[1]
	}
	return p
}

// alive reports whether the recorded process still runs (a zombie does not).
func (p *proc) alive() bool {
	if p == nil {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return false
	}
	state, start := statFields(string(data))
	if state == "Z" || state == "X" {
		return false
	}
	return p.start == "" || p.start == start
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs.
func (p *proc) stop(grace time.Duration) {
	if !p.alive() {
		return
	}
	syscall.Kill(p.pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !p.alive() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	syscall.Kill(p.pid, syscall.SIGKILL)
	for i := 0; i < 50 && p.alive(); i++ {
		time.Sleep(100 * time.Millisecond)
	}
}

// gone reports whether the process has left the process table: exited and
// reaped (pid 1 reaps the node's processes, which outlive `up`).
func (p *proc) gone() bool {
	return p == nil || procStartTime(p.pid) != p.start
}

func procStartTime(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	_, start := statFields(string(data))
	return start
}

// statFields returns the state and start time from /proc/<pid>/stat; the
// command name in parentheses may hold spaces.
func statFields(stat string) (state, start string) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return "", ""
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 20 {
		return "", ""
	}
	return f[0], f[19]
}

// shimPIDs finds the containerd shims serving this node's containerd: the
// shims outlive containerd, so `down` stops them by pid.
func (c *config) shimPIDs() []*proc {
	entries, _ := os.ReadDir("/proc")
	var out []*proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, _ := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if !strings.HasPrefix(filepath.Base(exe), "containerd-shim") {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(cmdline), c.containerdSocket()) {
			out = append(out, &proc{name: "containerd-shim", pid: pid, start: procStartTime(pid)})
		}
	}
	return out
}

func waitFor(what string, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = check(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
