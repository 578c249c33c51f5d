package exetrim

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

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

// readOnlyExeMappings lists the mappings of /proc/self/maps backed by the
// executable (same device and inode as /proc/self/exe) and not writable.
func readOnlyExeMappings() ([]mapping, error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &st); err != nil {
		return nil, fmt.Errorf("exetrim: %w", err)
	}
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil, fmt.Errorf("exetrim: %w", err)
	}
	return parseMaps(b, uint64(unix.Major(st.Dev)), uint64(unix.Minor(st.Dev)), st.Ino)
}

// parseMaps picks, from /proc/PID/maps text, the mappings of the file on
// device major:minor with inode ino whose permissions are not writable.
// A line: "lo-hi perms offset major:minor inode path".
func parseMaps(b []byte, major, minor, ino uint64) ([]mapping, error) {
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		if len(f[1]) < 2 || f[1][1] == 'w' {
			continue
		}
		mj, mn, ok := strings.Cut(f[3], ":")
		if !ok {
			return nil, fmt.Errorf("exetrim: /proc/self/maps: device %q", f[3])
		}
		dmaj, err1 := strconv.ParseUint(mj, 16, 32)
		dmin, err2 := strconv.ParseUint(mn, 16, 32)
		inode, err3 := strconv.ParseUint(f[4], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("exetrim: /proc/self/maps: %q", sc.Text())
		}
		if dmaj != major || dmin != minor || inode != ino || ino == 0 {
			continue
		}
		l, h, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("exetrim: /proc/self/maps: range %q", f[0])
		}
		lo, err1 := strconv.ParseUint(l, 16, 64)
		hi, err2 := strconv.ParseUint(h, 16, 64)
		if err1 != nil || err2 != nil || hi <= lo {
			return nil, fmt.Errorf("exetrim: /proc/self/maps: range %q", f[0])
		}
		out = append(out, mapping{uintptr(lo), uintptr(hi)})
	}
	return out, sc.Err()
}

// resident is the process's resident set in bytes (/proc/self/statm).
func resident() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, fmt.Errorf("exetrim: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, fmt.Errorf("exetrim: /proc/self/statm: %q", b)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("exetrim: /proc/self/statm: %w", err)
	}
	return pages * int64(os.Getpagesize()), nil
}
