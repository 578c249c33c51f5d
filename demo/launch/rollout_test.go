package launch

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/cli/rollout"
	rolloutlocal "github.com/meridian-mesh/meridian/controlplane/rollouts/local"
)

// rolloutOptions are the demo's with the rollout of v2 on short durations.
func rolloutOptions(t *testing.T, version string) Options {
	o := testOptions(0) // the test votes itself
	o.Rollout = RolloutOptions{Version: version, Delay: 500 * time.Millisecond, Pause: time.Second, Window: 5 * time.Second,
		ScaleDownDelay: 2 * time.Second, Settle: 1500 * time.Millisecond, Interval: 100 * time.Millisecond,
		Progress: func(line string) { t.Log(line) }}
	return o
}

// voter votes for an emoji that never fails in v1 (unlike :poop:) through
// the gateway, steadily, until stopped; every failure is one a voting
// instance answered (counted at its proxy) or one the mesh caused.
type voter struct {
	ok, failed atomic.Int64
	stop       context.CancelFunc
	done       sync.WaitGroup
}

func startVoter(d *Demo) *voter {
	ctx, cancel := context.WithCancel(context.Background())
	v := &voter{stop: cancel}
	client := d.Gateway.Client(5 * time.Second)
	for range 4 {
		v.done.Add(1)
		go func() {
			defer v.done.Done()
			for ctx.Err() == nil {
				resp, err := client.Post(d.URL+"/api/vote?choice="+url.QueryEscape(":joy:"), "", nil)
				if ctx.Err() != nil {
					return
				}
				if err != nil || resp.StatusCode != http.StatusOK {
					v.failed.Add(1)
				} else {
					v.ok.Add(1)
				}
				if resp != nil {
					resp.Body.Close()
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return v
}

// sampler keeps the last counts read from each rollout instance's proxy
// (by instance, so an instance's counts survive it being stopped).
type sampler struct {
	mu   sync.Mutex
	last map[string]Counts
	stop context.CancelFunc
	done chan struct{}
}

func startSampler(t *testing.T, d *Demo) *sampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sampler{last: map[string]Counts{}, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for ctx.Err() == nil {
			for _, p := range d.instances.Instances() {
				c, err := p.Counts()
				if err != nil {
					t.Error(err)
					return
				}
				s.mu.Lock()
				s.last[p.Name] = c
				s.mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return s
}

// byHash sums the instances' last counts by pod-template hash.
func (s *sampler) byHash() map[string]Counts {
	s.stop()
	<-s.done
	out := map[string]Counts{}
	for name, c := range s.last {
		// <rollout>-<hash>-<suffix>
		h := strings.Split(strings.TrimPrefix(name, RolloutName+"-"), "-")[0]
		o := out[h]
		o.Success += c.Success
		o.Failure += c.Failure
		out[h] = o
	}
	return out
}

// waitRollout waits until the demo's Rollout satisfies ok.
func waitRollout(t *testing.T, ctx context.Context, d *Demo, what string, ok func(rolloutlocal.Rollout) bool) rolloutlocal.Rollout {
	t.Helper()
	for {
		ros, err := d.Rollout.Rollouts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range ros {
			if r.Rollout.Name == RolloutName && ok(r) {
				return r
			}
		}
		select {
		case <-ctx.Done():
			var st any = "no Rollout"
			if len(ros) > 0 {
				st = ros[0].Rollout.Status
			}
			t.Fatalf("%s: not within the time: %+v", what, st)
		case err := <-d.Errors():
			t.Fatalf("%s: %v", what, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// podHashes are the hashes of the running instances.
func podHashes(d *Demo) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range d.instances.Pods(Namespace) {
		if h := p.Labels[v1alpha1.DefaultRolloutUniqueLabelKey]; !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

// The bad v2 is rolled out by the demo's Rollout, caught by the analysis
// (its success rate read from its own proxy) and aborted on its own: all
// traffic back on v1, v2's instance stopped, and every failed request one
// that v2 itself answered: none failed at v1, none because of the switches.
func TestRolloutBadV2IsAborted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d, err := Start(ctx, rolloutOptions(t, RolloutBad))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	v1 := waitRollout(t, ctx, d, "v1 healthy", func(r rolloutlocal.Rollout) bool {
		return r.Rollout.Status.Phase == v1alpha1.RolloutPhaseHealthy && r.Rollout.Status.StableRS != ""
	}).Rollout.Status.StableRS
	s := startSampler(t, d)
	v := startVoter(d)

	r := waitRollout(t, ctx, d, "aborted", func(r rolloutlocal.Rollout) bool { return r.Rollout.Status.Abort })
	st := r.Rollout.Status
	if st.Phase != v1alpha1.RolloutPhaseDegraded || !strings.Contains(st.Message, "RolloutAborted") || st.StableRS != v1 {
		t.Errorf("after the abort: phase %s, message %q, stable %s (v1 %s)", st.Phase, st.Message, st.StableRS, v1)
	}
	if w := st.Canary.Weights; w == nil || w.Stable.Weight != 100 || w.Stable.PodTemplateHash != v1 || w.Canary.Weight != 0 {
		t.Errorf("weights after the abort = %+v", w)
	}
	v2 := st.CurrentPodHash
	if v2 == v1 || v2 == "" {
		t.Fatalf("current pod hash %q, stable %q", v2, v1)
	}
	if len(r.Runs) != 1 || r.Runs[0].Status.Phase != v1alpha1.AnalysisPhaseFailed {
		t.Fatalf("analysis runs = %+v", r.Runs)
	}
	run := r.Runs[0]
	if run.Labels[v1alpha1.DefaultRolloutUniqueLabelKey] != v2 || run.Status.MetricResults[0].Measurements[0].Value == "" {
		t.Errorf("run %s: labels %v, results %+v", run.Name, run.Labels, run.Status.MetricResults)
	}
	t.Logf("analysis %s: %s (%s)", run.Name, run.Status.Message, lastValuesOf(run))

	// v2's instance goes after abortScaleDownDelaySeconds; v1 serves alone.
	waitRollout(t, ctx, d, "v2 scaled down", func(rolloutlocal.Rollout) bool {
		h := podHashes(d)
		return len(h) == 1 && h[0] == v1
	})
	time.Sleep(time.Second) // traffic on v1 alone for a while
	v.stop()
	v.done.Wait()
	counts := s.byHash()
	ok, failed := v.ok.Load(), v.failed.Load()
	t.Logf("votes: %d ok, %d failed; at the instances: %+v", ok, failed, counts)
	if counts[v1].Failure != 0 {
		t.Errorf("v1 failed %v requests; it fails only :poop:, never voted here", counts[v1].Failure)
	}
	if counts[v2].Success+counts[v2].Failure == 0 || counts[v2].Failure == 0 {
		t.Errorf("v2 served %+v: the canary got no traffic or failed none", counts[v2])
	}
	if float64(failed) != counts[v2].Failure {
		t.Errorf("%d votes failed, %v of them at v2: the others were failed by the mesh (a switch)", failed, counts[v2].Failure)
	}
	if ok < 100 {
		t.Errorf("only %d votes succeeded", ok)
	}

	// `meridian rollout get voting --demo=ADDR` reads the same over HTTP
	// and draws Argo's tree.
	srv := httptest.NewServer(d.ObjectsHandler())
	defer srv.Close()
	c := &rollout.DemoClient{Address: strings.TrimPrefix(srv.URL, "http://")}
	in, _, err := c.Info(ctx, RolloutName)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := rollout.WriteTree(&b, in, time.Now()); err != nil {
		t.Fatal(err)
	}
	tree := b.String()
	t.Logf("meridian rollout get voting --demo:\n%s", tree)
	for _, want := range []string{"Status:          ✖ Degraded", "# revision:2", "⧉ voting-" + v2, "α " + run.Name, "✖ Failed", "⧉ voting-" + v1, "stable", "Running"} {
		if !strings.Contains(tree, want) {
			t.Errorf("the tree has no %q", want)
		}
	}
	if _, _, err := c.Info(ctx, "nope"); err == nil || err.Error() != "rollout nope not found" {
		t.Errorf("Info(nope) = %v", err)
	}
}

// The good v2 goes through every step and is promoted: it is the stable
// hash with 100% of the traffic, v1's instance is gone, and no vote failed
// on the way (v2 fails nothing more than v1, and the voter never votes
// :poop:).
func TestRolloutGoodV2IsPromoted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d, err := Start(ctx, rolloutOptions(t, RolloutGood))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	v1 := waitRollout(t, ctx, d, "v1 healthy", func(r rolloutlocal.Rollout) bool {
		return r.Rollout.Status.Phase == v1alpha1.RolloutPhaseHealthy && r.Rollout.Status.StableRS != ""
	}).Rollout.Status.StableRS
	s := startSampler(t, d)
	v := startVoter(d)

	r := waitRollout(t, ctx, d, "promoted", func(r rolloutlocal.Rollout) bool {
		st := r.Rollout.Status
		return st.StableRS != v1 && st.StableRS == st.CurrentPodHash && st.Phase == v1alpha1.RolloutPhaseHealthy
	})
	st := r.Rollout.Status
	v2 := st.StableRS
	if w := st.Canary.Weights; w == nil || w.Stable.Weight != 100 || w.Stable.PodTemplateHash != v2 {
		t.Errorf("weights after promotion = %+v", w)
	}
	if len(r.Runs) != 1 || r.Runs[0].Status.Phase != v1alpha1.AnalysisPhaseSuccessful {
		t.Fatalf("analysis runs = %+v", r.Runs)
	}
	t.Logf("analysis %s: Successful (%s)", r.Runs[0].Name, lastValuesOf(r.Runs[0]))
	// v1's instance goes (its endpoint first, then the instance).
	waitRollout(t, ctx, d, "v1 scaled down", func(rolloutlocal.Rollout) bool {
		h := podHashes(d)
		return len(h) == 1 && h[0] == v2
	})
	time.Sleep(time.Second)
	v.stop()
	v.done.Wait()
	counts := s.byHash()
	ok, failed := v.ok.Load(), v.failed.Load()
	t.Logf("votes: %d ok, %d failed; at the instances: %+v", ok, failed, counts)
	if failed != 0 {
		t.Errorf("%d votes failed during the rollout of a v2 that fails none", failed)
	}
	if counts[v1].Success == 0 || counts[v2].Success == 0 {
		t.Errorf("served: %+v; want both versions to have served", counts)
	}
}

func lastValuesOf(r *v1alpha1.AnalysisRun) string {
	var out []string
	for _, mr := range r.Status.MetricResults {
		for _, m := range mr.Measurements {
			out = append(out, fmt.Sprintf("%s=%s %v", mr.Name, m.Value, m.Metadata))
		}
	}
	return strings.Join(out, "; ")
}
