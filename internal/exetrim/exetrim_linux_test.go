package exetrim

import (
	"crypto/sha256"
	"encoding/hex"
	"runtime"
	"testing"
)

func TestParseMaps(t *testing.T) {
	smaps := []byte(`00400000-00a00000 r-xp 00000000 00:2f 4242 /usr/bin/meridian-proxy
Size:               6144 kB
Rss:                5292 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
00a00000-01000000 r--p 00600000 00:2f 4242 /usr/bin/meridian-proxy
Rss:                5044 kB
Anonymous:             0 kB
01000000-01080000 rw-p 00c00000 00:2f 4242 /usr/bin/meridian-proxy
Anonymous:           296 kB
01100000-01180000 r-xp 00d00000 00:2f 4242 /usr/bin/meridian-proxy
Anonymous:             4 kB
01180000-03000000 rw-p 00000000 00:00 0
Anonymous:           128 kB
7f0000000000-7f0000100000 r-xp 00000000 fd:01 99 /usr/lib/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000201000 r--p 00000000 fd:02 4242 /usr/bin/meridian-proxy
7f0000300000-7f0000301000 r--p 00000000 00:2f 4242 /usr/bin/meridian proxy (deleted)
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
THPeligible:           0
`)
	got, err := parseMaps(smaps, 0x401234)
	if err != nil {
		t.Fatal(err)
	}
	want := []mapping{{0x400000, 0xa00000}, {0xa00000, 0x1000000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %x, want %x: the read-only mappings of the file the code is in, not its writable one, not one with a private page (a breakpoint), nor another file's", got, want)
	}
	if _, err := parseMaps(smaps, 0x2000000); err == nil {
		t.Error("code in an anonymous mapping was taken for a file's")
	}
	if _, err := parseMaps(smaps, 0x10); err == nil {
		t.Error("code in no mapping was accepted")
	}
	if _, err := parseMaps([]byte("00400000 r-xp 00000000 fd:01 4242 /x\n"), 0x400000); err == nil {
		t.Error("a malformed range was accepted")
	}
}

// data is initialised (the executable's writable data mapping) and changed
// before Trim: Trim must leave it as the process wrote it.
var data = [4]int{1, 2, 3, 4}

// Trimming the test binary's own mappings shrinks its file-backed resident set, keeps
// what it wrote to its data, and leaves its code runnable: a function run
// for the first time after, the collector (which reads the read-only
// pclntab), and a second Trim.
func TestTrim(t *testing.T) {
	data[2] = 42
	before, after, err := Trim()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("file-backed resident %d KiB before, %d KiB after", before>>10, after>>10)
	if after >= before {
		t.Errorf("file-backed resident %d bytes after Trim, want under the %d before", after, before)
	}
	if data != [4]int{1, 2, 42, 4} {
		t.Errorf("data %v after Trim, want [1 2 42 4]: a writable mapping was dropped", data)
	}
	// sha256 has not run in this process before: its code is faulted in
	// from the page cache now.
	sum := sha256.Sum256([]byte("meridian"))
	const want = "b6c4ac412ac8822355239dd717c11ca5b07373e4db550d0423c1b6aeceef8493"
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Errorf("sha256 %s after Trim, want %s", got, want)
	}
	runtime.GC()
	if _, _, err := Trim(); err != nil {
		t.Fatal(err)
	}
	if again := sha256.Sum256([]byte("meridian")); hex.EncodeToString(again[:]) != want {
		t.Error("sha256 changed after a second Trim")
	}
}
