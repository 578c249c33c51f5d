package exetrim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

func trim() (before, after int64, err error) {
	before, err = resident()
	if err != nil {
		return 0, 0, err
	}
	maps, err := readOnlyExeMappings()
	if err != nil {
		return before, before, err
	}
	for _, m := range maps {
		// No unsafe slice over the mapping: the system call takes the
		// address as a number.
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, m.lo, m.hi-m.lo, unix.MADV_DONTNEED); e != 0 {
			return before, before, fmt.Errorf("exetrim: madvise %x-%x: %w", m.lo, m.hi, e)
		}
	}
	after, err = resident()
	return before, after, err
}

type mapping struct{ lo, hi uintptr }

// readOnlyExeMappings lists the mappings of /proc/self/smaps of the file
// whose mapping holds this function's code (the executable), not writable
// and with no private copy of a page. The file is told by that line's
// device, inode and path, not by a stat of /proc/self/exe: on overlayfs (a
// container's image) the maps show the underlying file's device and inode,
// and the stat the overlay's.
func readOnlyExeMappings() ([]mapping, error) {
	pc, _, _, ok := runtime.Caller(0)
	if !ok {
		return nil, errors.New("exetrim: no program counter")
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return nil, fmt.Errorf("exetrim: %w", err)
	}
	return parseMaps(b, pc)
}

// line is one mapping of /proc/PID/smaps: its header, as a maps line
// ("lo-hi perms offset major:minor inode path"; path may be absent, or have
// spaces), then "Key: value" lines, of which Anonymous counts.
type line struct {
	m        mapping
	writable bool
	file     string // "major:minor inode path"
	anon     bool   // some page is a private copy
}

func parseLine(s string) (line, error) {
	f := strings.Fields(s)
	if len(f) < 5 || len(f[1]) < 2 {
		return line{}, fmt.Errorf("exetrim: /proc/self/maps: %q", s)
	}
	l, h, ok := strings.Cut(f[0], "-")
	lo, err1 := strconv.ParseUint(l, 16, 64)
	hi, err2 := strconv.ParseUint(h, 16, 64)
	if !ok || err1 != nil || err2 != nil || hi <= lo {
		return line{}, fmt.Errorf("exetrim: /proc/self/maps: range %q", f[0])
	}
	return line{m: mapping{uintptr(lo), uintptr(hi)}, writable: f[1][1] == 'w', file: strings.Join(f[3:], " ")}, nil
}

// parseMaps picks, from /proc/PID/smaps text, the mappings of the file
// mapped at pc that are not writable and have no anonymous page: a
// read-only mapping gets private copies only from a debugger's breakpoint
// or a uprobe (written into the text through the kernel), which dropping
// would silently remove.
func parseMaps(b []byte, pc uintptr) ([]mapping, error) {
	var lines []line
	exe := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		t := sc.Text()
		if t == "" {
			continue
		}
		if k, v, ok := strings.Cut(t, ":"); ok && !strings.ContainsAny(k, " -") {
			// A field of the mapping above.
			if k == "Anonymous" && len(lines) > 0 && strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")) != "0" {
				lines[len(lines)-1].anon = true
			}
			continue
		}
		l, err := parseLine(t)
		if err != nil {
			return nil, err
		}
		lines = append(lines, l)
		if l.m.lo <= pc && pc < l.m.hi {
			exe = l.file
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	// An anonymous mapping's device and inode are 00:00 0.
	if exe == "" || strings.HasPrefix(exe, "00:00 0") {
		return nil, fmt.Errorf("exetrim: the code at %#x is in no file's mapping", pc)
	}
	var out []mapping
	for _, l := range lines {
		if l.file == exe && !l.writable && !l.anon {
			out = append(out, l.m)
		}
	}
	return out, nil
}

// resident is the process's file-backed resident set in bytes (RssFile
// of /proc/self/status): what Trim changes. The whole resident set would
// also count the heap and stacks, which other goroutines grow at any time
// (by more than Trim drops, under the race detector's shadow memory).
func resident() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("exetrim: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(l, "RssFile:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("exetrim: /proc/self/status: %q: %w", l, err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("exetrim: /proc/self/status has no RssFile")
}
