package local

import (
	"context"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/viz/golden"
)

// Rollout is one Rollout as the dashboard shows it: the Rollout (status as
// last written), its stable and canary instances' proxies, and its
// AnalysisRuns, oldest first. The fields are viz/dashboard.Rollout's.
type Rollout struct {
	Rollout        *v1alpha1.Rollout
	Stable, Canary []golden.Proxy
	Runs           []*v1alpha1.AnalysisRun
}

// Rollouts returns every Rollout the driver drives, by namespace and name.
func (d *Driver) Rollouts(context.Context) ([]Rollout, error) {
	d.mu.Lock()
	keys := make([]store.Key, 0, len(d.rollouts))
	for k := range d.rollouts {
		keys = append(keys, k)
	}
	d.mu.Unlock()
	sortKeys(keys)
	var out []Rollout
	for _, k := range keys {
		ro, s := d.rollout(k)
		if ro == nil {
			continue
		}
		r := Rollout{Rollout: ro}
		canary := ro.Status.CurrentPodHash
		for _, p := range d.o.ReplicaSets.Pods(ro.Namespace) {
			h := p.Labels[v1alpha1.DefaultRolloutUniqueLabelKey]
			addr, ok := adminAddr(&p)
			if !ok || h == "" {
				continue
			}
			px := golden.Proxy{Key: "pod " + p.Namespace + "/" + p.Name, Read: adminMetrics(addr)}
			switch {
			case h == ro.Status.StableRS:
				r.Stable = append(r.Stable, px)
			case h == canary:
				r.Canary = append(r.Canary, px)
			}
		}
		d.mu.Lock()
		for _, run := range s.runs {
			r.Runs = append(r.Runs, run.run.DeepCopy())
		}
		d.mu.Unlock()
		sort.Slice(r.Runs, func(i, j int) bool {
			a, b := r.Runs[i], r.Runs[j]
			if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
				return a.CreationTimestamp.Before(&b.CreationTimestamp)
			}
			return a.Name < b.Name
		})
		out = append(out, r)
	}
	return out, nil
}

var metricsClient = &http.Client{Timeout: 10 * time.Second}

// adminMetrics reads a proxy's /metrics at its admin address.
func adminMetrics(addr string) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
		if err != nil {
			return nil, err
		}
		resp, err := metricsClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	}
}
