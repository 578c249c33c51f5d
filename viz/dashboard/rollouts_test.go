package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// The rollouts view: a canary and a stable behind real proxies, each
// failing a different share of the traffic sent through it between two
// refreshes; the JSON shows their figures side by side, with the steps as
// written, the current one, the weights, the pause and the latest
// AnalysisRun. A fully promoted Rollout has no canary apart; a blue-green
// one no weights. A proxy that is also a workload's is read once per
// refresh.
func TestDashboardRollouts(t *testing.T) {
	ctx := context.Background()
	stableIn, stableAdmin := proxiedApp(t)
	canaryIn, canaryAdmin := proxiedApp(t)
	var stableReads atomic.Int64
	c := &http.Client{Timeout: 5 * time.Second}
	reader := func(admin net.Addr, n *atomic.Int64) func(context.Context) ([]byte, error) {
		return func(ctx context.Context) ([]byte, error) {
			if n != nil {
				n.Add(1)
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin.String()+"/metrics", nil)
			resp, err := c.Do(req)
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			return io.ReadAll(resp.Body)
		}
	}
	stable := Proxy{Key: "pod shop/web-5f8c7d9b4-a", Read: reader(stableAdmin, &stableReads)}
	canary := Proxy{Key: "pod shop/web-6d4f6b7c9-a", Read: reader(canaryAdmin, nil)}

	now := metav1.NewTime(time.Date(2026, 12, 4, 15, 0, 0, 0, time.UTC))
	web := &v1alpha1.Rollout{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: v1alpha1.RolloutSpec{Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{
			TrafficRouting: &v1alpha1.RolloutTrafficRouting{Meridian: &v1alpha1.MeridianTrafficRouting{}},
			Steps: []v1alpha1.CanaryStep{
				{SetWeight: ptr.To[int32](20)},
				{Pause: &v1alpha1.RolloutPause{Duration: ptr.To(intstr.FromInt32(30))}},
				{Analysis: &v1alpha1.RolloutAnalysis{Templates: []v1alpha1.RolloutAnalysisTemplate{{TemplateName: "success-rate"}, {TemplateName: "latency", ClusterScope: true}}}},
				{SetWeight: ptr.To[int32](50)},
				{Pause: &v1alpha1.RolloutPause{}},
				{Pause: &v1alpha1.RolloutPause{Duration: ptr.To(intstr.FromString("5m"))}},
				{Pause: &v1alpha1.RolloutPause{Duration: ptr.To(intstr.FromString("45"))}},
				{SetCanaryScale: &v1alpha1.SetCanaryScale{Weight: ptr.To[int32](40)}},
				{SetCanaryScale: &v1alpha1.SetCanaryScale{Replicas: ptr.To[int32](3)}},
				{SetCanaryScale: &v1alpha1.SetCanaryScale{MatchTrafficWeight: true}},
				{SetHeaderRoute: &v1alpha1.SetHeaderRoute{Name: "hdr", Match: []v1alpha1.HeaderRoutingMatch{
					{HeaderName: "x-canary", HeaderValue: &v1alpha1.StringMatch{Exact: "yes"}}}}},
				{SetHeaderRoute: &v1alpha1.SetHeaderRoute{Name: "hdr"}},
			},
		}}},
		Status: v1alpha1.RolloutStatus{
			Phase: v1alpha1.RolloutPhasePaused, Message: "CanaryPauseStep",
			CurrentStepIndex: ptr.To[int32](4), StableRS: "5f8c7d9b4", CurrentPodHash: "6d4f6b7c9",
			PauseConditions: []v1alpha1.PauseCondition{{Reason: v1alpha1.PauseReasonCanaryPauseStep, StartTime: now}},
			Canary: v1alpha1.CanaryStatus{Weights: &v1alpha1.TrafficWeights{
				Canary: v1alpha1.WeightDestination{Weight: 50, PodTemplateHash: "6d4f6b7c9"},
				Stable: v1alpha1.WeightDestination{Weight: 50, PodTemplateHash: "5f8c7d9b4"}, Verified: ptr.To(true)}},
		},
	}
	runs := []*v1alpha1.AnalysisRun{
		{ObjectMeta: metav1.ObjectMeta{Name: "web-6d4f6b7c9-2-2"}, Status: v1alpha1.AnalysisRunStatus{Phase: v1alpha1.AnalysisPhaseSuccessful,
			RunSummary: v1alpha1.RunSummary{Count: 2, Successful: 2, Inconclusive: 1}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "web-6d4f6b7c9-2-1"}, Status: v1alpha1.AnalysisRunStatus{Phase: v1alpha1.AnalysisPhaseFailed}},
	}
	// api: promoted (stable == current), basic canary without steps'
	// weights in the status; its "canary" proxy must not be read.
	api := &v1alpha1.Rollout{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"},
		Spec: v1alpha1.RolloutSpec{Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{
			Steps: []v1alpha1.CanaryStep{{SetWeight: ptr.To[int32](10)}}}}},
		Status: v1alpha1.RolloutStatus{Phase: v1alpha1.RolloutPhaseHealthy, CurrentStepIndex: ptr.To[int32](1), StableRS: "aaa", CurrentPodHash: "aaa"},
	}
	unread := Proxy{Key: "pod shop/api-aaa-x", Read: func(context.Context) ([]byte, error) {
		t.Error("a promoted Rollout's canary proxies were read")
		return nil, io.EOF
	}}
	bg := &v1alpha1.Rollout{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "db"},
		Spec:       v1alpha1.RolloutSpec{Strategy: v1alpha1.RolloutStrategy{BlueGreen: &v1alpha1.BlueGreenStrategy{ActiveService: "db"}}},
		Status:     v1alpha1.RolloutStatus{Phase: v1alpha1.RolloutPhaseProgressing, StableRS: "b1", CurrentPodHash: "b2"},
	}

	d := New(Options{
		List: func(context.Context) ([]Workload, error) {
			return []Workload{{Namespace: "shop", Kind: "deployment", Name: "web", Total: 2, Proxies: []Proxy{stable}}}, nil
		},
		Rollouts: func(context.Context) ([]Rollout, error) {
			return []Rollout{
				{Rollout: web, Stable: []Proxy{stable}, Canary: []Proxy{canary}, Runs: runs},
				{Rollout: bg},
				{Rollout: api, Canary: []Proxy{unread}},
			}, nil
		},
	})
	srv := httptest.NewServer(d)
	defer srv.Close()
	snapshot := func() (Snapshot, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/api/snapshot")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var s Snapshot
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
		return s, string(b)
	}

	d.Refresh(ctx)
	s, raw := snapshot()
	if len(s.Rollouts) != 3 || s.Rollouts[1].Name != "api" || s.Rollouts[2].Name != "web" {
		t.Fatalf("rollouts %s, want ops/db, shop/api, shop/web", raw)
	}
	// Nothing known before the second read: the figures are null.
	if r := s.Rollouts[2]; r.Stable.SuccessRate != nil || r.Canary.SuccessRate != nil || r.Canary.Requests != nil ||
		!strings.Contains(raw, `"successRate":null`) {
		t.Fatalf("after one read: %s", raw)
	}
	if len(s.Errors) != 0 {
		t.Fatalf("errors %q", s.Errors)
	}

	send := func(in net.Addr, n, failing int) {
		t.Helper()
		for i := 0; i < n; i++ {
			path := "/"
			if i < failing {
				path = "/fail"
			}
			resp, err := c.Get("http://" + in.String() + path)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	send(stableIn, 20, 1) // 95%
	send(canaryIn, 10, 3) // 70%
	d.Refresh(ctx)
	s, raw = snapshot()
	r := s.Rollouts[2]
	num := func(p *float64) float64 {
		if p == nil {
			return -1
		}
		return *p
	}
	if num(r.Stable.Requests) != 20 || num(r.Stable.SuccessRate) != 0.95 || r.Stable.Kind != "stable" || r.Stable.Name != "5f8c7d9b4" || r.Stable.MeshedPods != 1 {
		t.Errorf("stable: %+v", r.Stable)
	}
	if num(r.Canary.Requests) != 10 || num(r.Canary.SuccessRate) != 0.7 || r.Canary.Kind != "canary" || r.Canary.Name != "6d4f6b7c9" || r.Canary.MeshedPods != 1 {
		t.Errorf("canary: %+v", r.Canary)
	}
	for _, g := range [][3]*float64{{r.Stable.RPS, r.Stable.LatencyP50, r.Stable.LatencyP99}, {r.Canary.RPS, r.Canary.LatencyP50, r.Canary.LatencyP99}} {
		if num(g[0]) <= 0 || num(g[1]) < 0 || num(g[2]) < num(g[1]) {
			t.Errorf("rps %v, p50 %v, p99 %v: want figures", num(g[0]), num(g[1]), num(g[2]))
		}
	}
	wantSteps := []string{"setWeight: 20", "pause: 30s", "analysis: success-rate, latency (cluster)", "setWeight: 50", "pause", "pause: 5m", "pause: 45s",
		"setCanaryScale: weight 40", "setCanaryScale: replicas 3", "setCanaryScale: matchTrafficWeight", "setHeaderRoute: hdr x-canary=yes", "setHeaderRoute: hdr (removed)"}
	if strings.Join(r.Steps, "|") != strings.Join(wantSteps, "|") {
		t.Errorf("steps\n%q\nwant\n%q", r.Steps, wantSteps)
	}
	if r.CurrentStepIndex == nil || *r.CurrentStepIndex != 4 || r.Step != "4/12" || r.Strategy != "Canary" || r.Phase != "Paused" || r.Message != "CanaryPauseStep" {
		t.Errorf("where: %+v", r)
	}
	if w := r.Weights; w == nil || w.Canary != 50 || w.Stable != 50 || w.From != "status" || w.Verified == nil || !*w.Verified {
		t.Errorf("weights %+v", w)
	}
	if r.StableHash != "5f8c7d9b4" || r.CanaryHash != "6d4f6b7c9" || len(r.PauseConditions) != 1 || r.PauseConditions[0].Reason != "CanaryPauseStep" || !r.PauseConditions[0].StartTime.Equal(&now) {
		t.Errorf("hashes and pause: %+v", r)
	}
	if r.PauseUntil != nil {
		t.Errorf("pause without a duration: until %v, want null", r.PauseUntil)
	}
	if a := r.Analysis; a == nil || a.Name != "web-6d4f6b7c9-2-2" || a.Phase != "Successful" || a.Successful != 2 || a.Failed != 0 || a.Inconclusive != 1 {
		t.Errorf("analysis %+v, want the newest run's", a)
	}
	// The workload that shares the stable's proxy: the same figures, from
	// the same single read per refresh.
	if w := s.Workloads[0]; num(w.Requests) != 20 || num(w.SuccessRate) != 0.95 {
		t.Errorf("workload web: %+v", w)
	}
	if n := stableReads.Load(); n != 2 {
		t.Errorf("the stable's proxy was read %d times in two refreshes, want 2", n)
	}

	// api: promoted, its canary is its stable (not read); weights from the
	// steps (100 after the last step); no analysis.
	a := s.Rollouts[1]
	if a.Canary.MeshedPods != 0 || a.Canary.Requests != nil || a.Stable.MeshedPods != 0 || a.Analysis != nil || a.Phase != "Healthy" {
		t.Errorf("api: %+v", a)
	}
	if w := a.Weights; w == nil || w.Canary != 100 || w.Stable != 0 || w.From != "steps" || w.Verified != nil {
		t.Errorf("api weights %+v", w)
	}
	// db: blue-green, no steps and no weights.
	if b := s.Rollouts[0]; b.Strategy != "BlueGreen" || b.Weights != nil || len(b.Steps) != 0 || b.CurrentStepIndex != nil || b.Step != "-" || b.PauseConditions == nil {
		t.Errorf("db: %+v", b)
	}
	if !strings.Contains(raw, `"steps":[]`) || !strings.Contains(raw, `"weights":null`) || !strings.Contains(raw, `"pauseConditions":[]`) {
		t.Errorf("JSON: empty lists must be arrays, unknown weights null: %s", raw)
	}

	// Live: the next refresh follows the Rollout's status (the step after
	// a promote, the weights the controller set).
	// Promoted past the untimed pause, it is at "pause: 5m", paused since
	// later.
	later := metav1.NewTime(now.Add(time.Minute))
	web.Status.CurrentStepIndex = ptr.To[int32](5)
	web.Status.PauseConditions = []v1alpha1.PauseCondition{{Reason: v1alpha1.PauseReasonCanaryPauseStep, StartTime: later}}
	web.Status.Message = "CanaryPauseStep 2"
	web.Status.Canary.Weights.Canary.Weight, web.Status.Canary.Weights.Stable.Weight = 60, 40
	send(canaryIn, 4, 0)
	d.Refresh(ctx)
	s, _ = snapshot()
	r = s.Rollouts[2]
	if *r.CurrentStepIndex != 5 || r.Weights.Canary != 60 || r.Weights.Stable != 40 || r.Message != "CanaryPauseStep 2" || num(r.Canary.Requests) != 14 {
		t.Errorf("after the status changed: %+v (canary %+v)", r, r.Canary)
	}
	if r.PauseUntil == nil || !r.PauseUntil.Time.Equal(later.Add(5*time.Minute)) {
		t.Errorf("timed pause: until %v, want %v", r.PauseUntil, later.Add(5*time.Minute))
	}

	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), `id="rollouts-section" hidden`) || !strings.Contains(string(page), "renderRollout") {
		t.Errorf("the page has no rollouts section hidden until there are rollouts")
	}
}
