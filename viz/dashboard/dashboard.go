// Package dashboard is viz's web dashboard: it reads the proxies of a set
// of workloads every refresh, computes each workload's golden metrics and
// the edges between workloads over the last Window (viz/golden, viz/stat), and
// Rollouts with their stable's and canary's figures side by side, and serves
// them as JSON (/api/snapshot) and as a page that shows them live (/).
package dashboard

import (
	"bytes"
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/viz/golden"
	"github.com/meridian-mesh/meridian/viz/stat"
)

// Proxy is one proxy to read: Key identifies it across refreshes (a pod's
// namespace/name, an admin address).
type Proxy = golden.Proxy

// Workload is one row: a workload and the proxies of its meshed pods.
type Workload struct {
	Namespace, Kind, Name string
	Total                 int // all its pods, meshed or not
	Proxies               []Proxy
}

// Options configure a Dashboard.
type Options struct {
	// List returns the workloads to show; called at every refresh, so that
	// pods coming and going are followed. Nil: no workloads.
	List func(context.Context) ([]Workload, error)
	// Rollouts returns the Rollouts to show, with their stable's and
	// canary's proxies; called at every refresh. Nil: no rollouts view.
	Rollouts func(context.Context) ([]Rollout, error)
	// Refresh is how often the proxies are read (default 5s).
	Refresh time.Duration
	// Window is how far back the figures go (default DefaultWindow, at
	// least Refresh): each refresh compares the latest read with the one
	// Window earlier, so that occasional failures stay in view for Window,
	// not only for the one refresh interval in which they happened.
	Window time.Duration
	Log    *slog.Logger
}

// DefaultWindow is the dashboard's default window: long enough that a
// failure now and then (the demo's deliberate ones) shows in the success
// rate, short enough to follow a change.
const DefaultWindow = 30 * time.Second

// Dashboard serves the snapshot; Run refreshes it.
type Dashboard struct {
	o    Options
	mux  *http.ServeMux
	mu   sync.Mutex
	snap Snapshot
	// win keeps each proxy's reads (by Proxy.Key) within the window: the
	// oldest is the start of the figures.
	win *golden.Window
}

// Snapshot is what /api/snapshot returns.
type Snapshot struct {
	Time      time.Time    `json:"time"`
	Window    float64      `json:"windowSeconds"`    // what the figures cover (up to Options.Window); 0 before the second read
	WindowMax float64      `json:"windowMaxSeconds"` // Options.Window
	Workloads []stat.Row   `json:"workloads"`
	Edges     []stat.Edge  `json:"edges"`
	Rollouts  []RolloutRow `json:"rollouts"`
	Errors    []string     `json:"errors"`
}

//go:embed index.html
var indexHTML []byte

// New returns a dashboard; call Run to refresh it.
func New(o Options) *Dashboard {
	if o.Refresh <= 0 {
		o.Refresh = 5 * time.Second
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	o.Window = max(o.Window, o.Refresh)
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	d := &Dashboard{o: o, mux: http.NewServeMux(), win: golden.NewWindow(o.Window)}
	d.snap = Snapshot{Workloads: []stat.Row{}, Edges: []stat.Edge{}, Rollouts: []RolloutRow{}, Errors: []string{}, WindowMax: o.Window.Seconds()}
	d.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(bytes.ReplaceAll(indexHTML, []byte("{{REFRESH_MS}}"), fmt.Appendf(nil, "%d", o.Refresh.Milliseconds())))
	})
	d.mux.HandleFunc("GET /api/snapshot", func(w http.ResponseWriter, _ *http.Request) {
		d.mu.Lock()
		b, err := json.Marshal(d.snap)
		d.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	return d
}

func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) { d.mux.ServeHTTP(w, r) }

// Run refreshes every Options.Refresh until ctx ends.
func (d *Dashboard) Run(ctx context.Context) {
	t := time.NewTicker(d.o.Refresh)
	defer t.Stop()
	for {
		d.Refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Refresh reads every proxy once and computes the snapshot from the
// previous reads. A proxy that is both a workload's and a Rollout's (same
// Key) is read once.
func (d *Dashboard) Refresh(ctx context.Context) {
	now := time.Now()
	snap := Snapshot{Time: now, Workloads: []stat.Row{}, Edges: []stat.Edge{}, Rollouts: []RolloutRow{}, Errors: []string{}, WindowMax: d.o.Window.Seconds()}
	var ws []Workload
	if d.o.List != nil {
		var err error
		if ws, err = d.o.List(ctx); err != nil {
			snap.Errors = append(snap.Errors, err.Error())
		}
	}
	var ros []Rollout
	if d.o.Rollouts != nil {
		var err error
		if ros, err = d.o.Rollouts(ctx); err != nil {
			snap.Errors = append(snap.Errors, err.Error())
		}
		ros = slices.DeleteFunc(ros, func(r Rollout) bool { return r.Rollout == nil })
	}

	var srcs []golden.Source
	index := map[string]int{} // Proxy.Key → its place in srcs
	add := func(ps []Proxy) {
		for _, p := range ps {
			if _, ok := index[p.Key]; !ok {
				index[p.Key] = len(srcs)
				srcs = append(srcs, p)
			}
		}
	}
	for _, w := range ws {
		add(w.Proxies)
	}
	for _, r := range ros {
		add(r.Stable)
		if !promoted(r.Rollout) {
			add(r.Canary)
		}
	}
	results := d.win.Add(srcs, golden.ReadAll(ctx, srcs))
	var windows []float64
	for _, r := range results {
		switch {
		case r.Err != nil:
			snap.Errors = append(snap.Errors, r.Err.Error())
		case r.OK:
			windows = append(windows, r.Pair.After.Time.Sub(r.Pair.Before.Time).Seconds())
		}
	}
	pairs := func(ps []Proxy) []stat.Pair {
		var out []stat.Pair
		for _, p := range ps {
			if r := results[index[p.Key]]; r.OK {
				out = append(out, r.Pair)
			}
		}
		return out
	}

	for _, w := range ws {
		ps := pairs(w.Proxies)
		snap.Workloads = append(snap.Workloads, stat.Summarize(w.Namespace, w.Kind, w.Name, len(w.Proxies), w.Total, "inbound", ps))
		snap.Edges = append(snap.Edges, stat.Edges(w.Namespace, w.Name, ps)...)
	}
	for _, r := range ros {
		canary := r.Canary
		if promoted(r.Rollout) {
			canary = nil
		}
		snap.Rollouts = append(snap.Rollouts, newRolloutRow(r, pairs(r.Stable), pairs(canary), len(canary)))
	}
	if len(windows) > 0 {
		snap.Window = slices.Max(windows)
	}
	slices.SortFunc(snap.Workloads, func(a, b stat.Row) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	slices.SortFunc(snap.Rollouts, func(a, b RolloutRow) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	stat.SortEdges(snap.Edges)
	d.mu.Lock()
	d.snap = snap
	d.mu.Unlock()
}
