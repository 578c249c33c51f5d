package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/cli/rollout"
	"github.com/meridian-mesh/meridian/demo/launch"
)

// abort, retry and promote --full with --demo act on the demo's Rollout
// (local mode, no API server) as they do on a cluster's.
func TestRolloutCommandsOnTheDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A good v2 whose pauses last longer than the test: only the commands
	// move it on.
	d, err := launch.Start(ctx, launch.Options{WebAddr: "127.0.0.1:0", GatewayAddr: "127.0.0.1:0", GatewayHTTPAddr: "127.0.0.1:0", VoteRate: 20,
		Rollout: launch.RolloutOptions{Version: launch.RolloutGood, Delay: 500 * time.Millisecond, Pause: 10 * time.Minute, Window: 5 * time.Second,
			ScaleDownDelay: time.Second, Settle: time.Second, Interval: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	u, err := serveDemoDashboard(ctx, d, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(u, "http://")
	dc := &rollout.DemoClient{Address: addr}
	wait := func(what string, ok func(*v1alpha1.Rollout) bool) *v1alpha1.Rollout {
		t.Helper()
		var last *v1alpha1.Rollout
		for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if _, ro, err := dc.Info(ctx, "voting"); err == nil {
				if last = ro; ok(ro) {
					return ro
				}
			}
		}
		t.Fatalf("%s: not within 45s; last status %+v", what, last)
		return nil
	}
	run := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		root := newRoot()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(append([]string{"rollout"}, args...), "--demo="+addr))
		if err := root.ExecuteContext(ctx); err != nil {
			t.Fatalf("meridian rollout %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}
	pausedAtCanary := func(ro *v1alpha1.Rollout) bool {
		w := ro.Status.Canary.Weights
		return ro.Status.Phase == v1alpha1.RolloutPhasePaused && !ro.Status.Abort && w != nil && w.Canary.Weight == 20 && ro.Status.StableRS != ro.Status.CurrentPodHash
	}
	v1 := wait("v2 at 20%, paused", pausedAtCanary).Status.StableRS

	if out := run("abort", "voting"); out != "rollout 'voting' aborted\n" {
		t.Fatalf("abort said %q", out)
	}
	ro := wait("aborted", func(ro *v1alpha1.Rollout) bool {
		return ro.Status.Abort && ro.Status.Phase == v1alpha1.RolloutPhaseDegraded
	})
	if w := ro.Status.Canary.Weights; w == nil || w.Stable.Weight != 100 || ro.Status.StableRS != v1 {
		t.Fatalf("after abort: stable %s weights %+v", ro.Status.StableRS, w)
	}
	run("retry", "voting")
	wait("retried: at 20% again", pausedAtCanary)
	if out := run("promote", "voting", "--full"); out != "rollout 'voting' fully promoted\n" {
		t.Fatalf("promote --full said %q", out)
	}
	ro = wait("fully promoted", func(ro *v1alpha1.Rollout) bool {
		return ro.Status.Phase == v1alpha1.RolloutPhaseHealthy && ro.Status.StableRS != v1 && ro.Status.StableRS == ro.Status.CurrentPodHash
	})
	if w := ro.Status.Canary.Weights; w == nil || w.Stable.Weight != 100 || w.Stable.PodTemplateHash != ro.Status.StableRS {
		t.Fatalf("after promotion: weights %+v", w)
	}
	// What the demo cannot do is refused by name.
	var out bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"rollout", "abort", "nothere", "--demo=" + addr})
	if err := root.ExecuteContext(ctx); err == nil || !strings.Contains(err.Error(), "rollout nothere not found") {
		t.Fatalf("abort of a Rollout the demo does not run: %v", err)
	}
}
