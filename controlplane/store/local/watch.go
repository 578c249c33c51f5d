package local

import (
	"context"
	"log/slog"
	"time"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/internal/filewatch"
)

// DefaultInterval is how often Watch looks for changed files.
const DefaultInterval = time.Second

// Option configures Watch.
type Option func(*options)

type options struct {
	interval  time.Duration
	onReload  func(objects int, err error)
	onStatus  func(Status)
	onObjects func([]runtime.Object)
}

// Interval sets how often Watch looks for changes (default DefaultInterval).
func Interval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.interval = d
		}
	}
}

// OnReload calls f after every load that changed something, the first
// included: with the number of objects now served and the errors of the
// files rejected (Status.Err; nil when every file is applied), or with -1
// and the error that stopped the load (the directory cannot be listed).
func OnReload(f func(objects int, err error)) Option {
	return func(o *options) { o.onReload = f }
}

// OnStatus calls f with every file's status after every load that changed
// something, the first included.
func OnStatus(f func(Status)) Option {
	return func(o *options) { o.onStatus = f }
}

// OnObjects calls f with every object served (those the store does not
// hold, such as analysis templates, included; Rollouts with the status of
// their status file) after every load that changed something, the first
// included, before the store is written. f must not modify them.
func OnObjects(f func([]runtime.Object)) Option {
	return func(o *options) { o.onObjects = f }
}

// Watch loads dir into st with ReplaceAll, then polls the directory's files
// (paths, sizes and modification times) and reloads the files that change,
// until ctx is done. Each file is applied whole or rejected whole: a file in
// error (see Load) is logged and reported (OnStatus, OnReload) and keeps
// serving its last good content, if it had one, while the other files'
// changes apply; a removed file's objects go. The controller thus starts
// with whatever is valid. Watch returns an error only when the first load
// cannot list the directory, and nil when ctx is done.
func Watch(ctx context.Context, dir string, st *store.Store, log *slog.Logger, opts ...Option) error {
	o := options{interval: DefaultInterval}
	for _, f := range opts {
		f(&o)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("dir", dir)

	l := loader{dir: dir}
	var prev map[string]string // rejected file → its error, as last logged
	load := func(first bool) error {
		objs, status, changed, err := l.load()
		if err == nil && (changed || first) {
			if o.onObjects != nil {
				o.onObjects(objs)
			}
			held := make([]runtime.Object, 0, len(objs))
			for _, obj := range objs {
				if StoreHolds(obj) {
					held = append(held, obj)
				}
			}
			err = st.ReplaceAll(held)
		}
		if err != nil {
			l.files = nil // read everything again next time
			if o.onReload != nil {
				o.onReload(-1, err)
			}
			return err
		}
		if !changed && !first {
			return nil
		}
		rejected := map[string]string{}
		for _, f := range status.Files {
			if f.Err == nil {
				if _, was := prev[f.Path]; was {
					log.Info("local store: file applied", "file", f.Path, "objects", f.Objects)
				}
				continue
			}
			rejected[f.Path] = f.Err.Error()
			if prev[f.Path] != rejected[f.Path] {
				log.Error("local store: file rejected; its last good objects, if any, keep serving",
					"file", f.Path, "serving", f.Objects, "err", f.Err)
			}
		}
		prev = rejected
		log.Info("local store loaded", "objects", status.Objects, "files", len(status.Files), "rejected", len(rejected))
		if o.onStatus != nil {
			o.onStatus(status)
		}
		if o.onReload != nil {
			o.onReload(status.Objects, status.Err())
		}
		return nil
	}

	if err := load(true); err != nil {
		return err
	}
	filewatch.Every(ctx, o.interval, func() {
		if err := load(false); err != nil {
			log.Error("local store: cannot load the directory; still serving the previous content", "err", err)
		}
	})
	return nil
}
