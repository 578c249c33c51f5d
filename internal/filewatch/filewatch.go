// Package filewatch polls files for changes. Polling, not inotify: a
// mounted Secret or ConfigMap changes by the kubelet swapping a symlink,
// which inotify on the file misses, and a poll every second or minute
// costs nothing next to the reload it triggers.
package filewatch

import (
	"context"
	"os"
	"time"
)

// Every calls fn every interval until ctx ends (not at once: the caller
// has just loaded what it watches).
func Every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

// Poll looks at the files every interval until ctx ends. look returns a
// stamp of what it sees (a modification time, the contents) and false
// when it cannot tell now (a file being replaced): that look is skipped.
// When a stamp differs from the last one (initially last), Poll calls
// changed with it and remembers what changed returns: the stamp itself, or
// a fresher one when changed looked again.
func Poll[S comparable](ctx context.Context, interval time.Duration, last S, look func() (S, bool), changed func(S) S) {
	Every(ctx, interval, func() {
		if s, ok := look(); ok && s != last {
			last = changed(s)
		}
	})
}

// Stamp is what a look at one file sees: its modification time, size and
// inode, following links. The inode makes a file replaced by a rename (how
// a writer replaces a file whole, and how the kubelet swaps a mounted
// Secret) a change even within the file system's timestamp granularity
// (a few milliseconds) and at the same size.
type Stamp struct {
	mtime, size int64
	ino         uint64
}

// Stat is a look at one file; false when it cannot be stat'ed.
func Stat(path string) (Stamp, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return Stamp{}, false
	}
	return Stamp{fi.ModTime().UnixNano(), fi.Size(), inode(fi)}, true
}

// Contents is a look at small files: their contents, each followed by a NUL
// so that moving bytes from one file to the next is a change. A file that
// cannot be read counts as empty: its coming back is a change.
func Contents(paths ...string) string {
	var all []byte
	for _, p := range paths {
		b, _ := os.ReadFile(p)
		all = append(append(all, b...), 0)
	}
	return string(all)
}
