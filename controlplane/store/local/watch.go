package local

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/meridian-mesh/meridian/controlplane/store"
)

// DefaultInterval is how often Watch looks for changed files.
const DefaultInterval = time.Second

// Option configures Watch.
type Option func(*options)

type options struct {
	interval time.Duration
	onReload func(objects int, err error)
}

// Interval sets how often Watch looks for changes (default DefaultInterval).
func Interval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.interval = d
		}
	}
}

// OnReload calls f after every load, the first included: with the number of
// objects now served, or with the error that rejected the load.
func OnReload(f func(objects int, err error)) Option {
	return func(o *options) { o.onReload = f }
}

// Watch loads dir into st with ReplaceAll, then polls the directory's files
// (paths, sizes and modification times) and reloads it whenever they change,
// until ctx is done. A reload that fails (see Load) is logged and changes
// nothing: the previous content keeps serving until the files are fixed.
// Only the first load's error is returned, so that a broken directory fails
// startup; Watch returns nil when ctx is done.
func Watch(ctx context.Context, dir string, st *store.Store, log *slog.Logger, opts ...Option) error {
	o := options{interval: DefaultInterval}
	for _, f := range opts {
		f(&o)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("dir", dir)

	load := func() error {
		objs, err := Load(dir)
		if err == nil {
			err = st.ReplaceAll(objs)
		}
		if o.onReload != nil {
			n := len(objs)
			if err != nil {
				n = -1
			}
			o.onReload(n, err)
		}
		if err == nil {
			log.Info("local store loaded", "objects", len(objs))
		}
		return err
	}

	last, err := fingerprint(dir)
	if err != nil {
		return err
	}
	if err := load(); err != nil {
		return err
	}
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		fp, err := fingerprint(dir)
		if err != nil {
			log.Error("local store: cannot read the directory; still serving the previous content", "err", err)
			continue
		}
		if fp == last {
			continue
		}
		last = fp
		if err := load(); err != nil {
			log.Error("local store: reload rejected; still serving the previous content", "err", err)
		}
	}
}

// fingerprint summarizes the directory's YAML files: a change to any path,
// size or modification time changes it.
func fingerprint(dir string) (uint64, error) {
	files, err := yamlFiles(dir)
	if err != nil {
		return 0, err
	}
	h := fnv.New64a()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00", f.path, f.info.Size(), f.info.ModTime().UnixNano())
	}
	return h.Sum64(), nil
}
