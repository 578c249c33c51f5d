package local

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/steps"
	storelocal "github.com/meridian-mesh/meridian/controlplane/store/local"
)

// replicaSets runs nothing: every instance asked for is available at once
// (the test plays the ReplicaSet controller), and declared in dir as the
// demo declares its instances: a Pod each with its hash and an
// EndpointSlice of the stable Service, which the driver's view compiles
// and verifies the weights against.
type replicaSets struct {
	mu      sync.Mutex
	desired map[string]int32
	dir     string
	written time.Time
}

func (r *replicaSets) Scale(_ *v1alpha1.Rollout, hash string, _ *corev1.PodTemplateSpec, n int32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.desired[hash] = n
	var b strings.Builder
	for _, h := range slices.Sorted(maps.Keys(r.desired)) {
		for i := range r.desired[h] {
			name := fmt.Sprintf("app-%s-%d", h, i)
			fmt.Fprintf(&b, `---
apiVersion: v1
kind: Pod
metadata: {name: %[1]s, namespace: ns, labels: {app: app, rollouts-pod-template-hash: %[2]s}}
status: {phase: Running, podIP: 127.0.0.1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %[1]s, namespace: ns, labels: {kubernetes.io/service-name: svc}}
addressType: IPv4
ports: [{name: http, port: %[3]d}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}, targetRef: {kind: Pod, namespace: ns, name: %[1]s}}]
`, name, h, 10000+i)
		}
	}
	// A later mtime each time: the directory is reloaded by it.
	now := time.Now()
	if !now.After(r.written) {
		now = r.written.Add(time.Millisecond)
	}
	r.written = now
	return writeFile(filepath.Join(r.dir, "instances.yaml"), []byte(b.String()), r.written)
}

func (r *replicaSets) ReplicaSets(*v1alpha1.Rollout) []steps.ReplicaSet {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []steps.ReplicaSet
	for h, n := range r.desired {
		out = append(out, steps.ReplicaSet{Hash: h, Replicas: n, Ready: n, Available: n})
	}
	return out
}

func (r *replicaSets) Pods(string) []corev1.Pod { return nil }

// successRate is a provider measuring a fixed success rate.
type successRate float64

func (s successRate) Measure(context.Context, *v1alpha1.AnalysisRun, v1alpha1.Metric, *v1alpha1.Measurement) (analysis.Result, error) {
	n := int64(100)
	return analysis.Result{Value: float64(s), Requests: &n}, nil
}

const services = `apiVersion: v1
kind: Service
metadata: {name: svc, namespace: ns}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc-canary, namespace: ns}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: meridian.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: sr, namespace: ns}
spec:
  metrics:
  - name: sr
    successCondition: result >= 0.9
    provider: {meridian: {metric: success-rate}}
`

func rolloutDoc(image string) string {
	return `apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: app, namespace: ns}
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec: {containers: [{name: app, image: ` + image + `}]}
  strategy:
    canary:
      stableService: svc
      canaryService: svc-canary
      trafficRouting: {meridian: {}}
      scaleDownDelaySeconds: 0
      abortScaleDownDelaySeconds: 0
      steps:
      - setWeight: 20
      - analysis: {templates: [{templateName: sr}]}
      - setWeight: 50
`
}

func write(t *testing.T, dir, name, content string, mtime time.Time) {
	t.Helper()
	if err := writeFile(filepath.Join(dir, name), []byte(content), mtime); err != nil {
		t.Fatal(err)
	}
}

// runDriver runs a driver over dir with p until the test ends; the lines
// it reports go to lines.
func runDriver(t *testing.T, dir string, p analysis.Provider) (*replicaSets, chan string) {
	_, rs, lines := startDriver(t, dir, p)
	return rs, lines
}

func startDriver(t *testing.T, dir string, p analysis.Provider) (*Driver, *replicaSets, chan string) {
	rs := &replicaSets{desired: map[string]int32{}, dir: dir}
	lines := make(chan string, 1000)
	d, err := New(Options{Dir: dir, ReplicaSets: rs, Provider: p, Interval: 10 * time.Millisecond,
		Progress: func(l string) { lines <- l }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return d, rs, lines
}

// waitStatus waits until the directory (as the controller loads it: the
// status file over the declared Rollout) has a status satisfying ok.
func waitStatus(t *testing.T, dir, what string, ok func(v1alpha1.RolloutStatus) bool) v1alpha1.RolloutStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		objs, err := storelocal.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if ro, isRO := o.(*v1alpha1.Rollout); isRO && ok(ro.Status) {
				return ro.Status
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not in %s within 10s", what, dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A v2 whose analysis fails is aborted by the driver, and one whose
// analysis succeeds is promoted: the statuses the step machine decides,
// written where the controller reads them.
func TestDriverAbortsAndPromotes(t *testing.T) {
	for _, tc := range []struct {
		name string
		rate successRate
	}{{"bad", 0.5}, {"good", 0.99}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			now := time.Now()
			write(t, dir, "services.yaml", services, now)
			write(t, dir, "rollout.yaml", rolloutDoc("app:v1"), now)
			rs, lines := runDriver(t, dir, tc.rate)
			v1 := waitStatus(t, dir, "v1 stable", func(st v1alpha1.RolloutStatus) bool {
				return st.Phase == v1alpha1.RolloutPhaseHealthy
			}).StableRS
			write(t, dir, "rollout.yaml", rolloutDoc("app:v2"), now.Add(time.Second))
			var st v1alpha1.RolloutStatus
			if tc.name == "bad" {
				st = waitStatus(t, dir, "aborted", func(st v1alpha1.RolloutStatus) bool { return st.Abort })
				if st.StableRS != v1 || st.Canary.Weights.Stable.Weight != 100 || !strings.Contains(st.Message, `AnalysisRun "app-`) {
					t.Errorf("aborted status: %+v", st)
				}
			} else {
				st = waitStatus(t, dir, "promoted", func(st v1alpha1.RolloutStatus) bool {
					return st.StableRS != "" && st.StableRS != v1 && st.Phase == v1alpha1.RolloutPhaseHealthy
				})
				if w := st.Canary.Weights; w.Stable.Weight != 100 || w.Stable.PodTemplateHash != st.StableRS || w.Stable.ServiceName != "svc" {
					t.Errorf("promoted weights: %+v", w)
				}
				rs.mu.Lock()
				if rs.desired[v1] != 0 || rs.desired[st.StableRS] != 1 {
					t.Errorf("replicas after promotion: %v", rs.desired)
				}
				rs.mu.Unlock()
			}
			var all []string
			for len(lines) > 0 {
				all = append(all, <-lines)
			}
			want := "Failed (sr=0.5)"
			if tc.name == "good" {
				want = "Successful (sr=0.99)"
			}
			if !strings.Contains(strings.Join(all, "\n"), want) {
				t.Errorf("progress lines have no %q:\n%s", want, strings.Join(all, "\n"))
			}
		})
	}
}

// What local mode cannot drive is an InvalidSpec naming the field, and
// nothing is scaled.
func TestDriverRefusesWhatLocalModeCannotDo(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "rollout.yaml", rolloutDoc("app:v1"), time.Now()) // no Services, no template
	rs, _ := runDriver(t, dir, successRate(1))
	st := waitStatus(t, dir, "invalid", func(st v1alpha1.RolloutStatus) bool { return st.Phase == v1alpha1.RolloutPhaseDegraded })
	if st.Message != "InvalidSpec: spec.strategy.canary.canaryService: Service ns/svc-canary not found" {
		t.Errorf("message = %q", st.Message)
	}
	rs.mu.Lock()
	if len(rs.desired) != 0 {
		t.Errorf("scaled: %v", rs.desired)
	}
	rs.mu.Unlock()
	if _, err := os.Stat(filepath.Join(dir, "."+StatusFile+".tmp")); !os.IsNotExist(err) {
		t.Errorf("a temporary file is left: %v", err)
	}
}

// promote, abort and retry act on the driver's status between passes, as
// the CLI's patches do on the status subresource, and the driver goes on
// from there.
func TestDriverActs(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	doc := func(image string) string {
		return strings.Replace(rolloutDoc(image), "      - analysis: {templates: [{templateName: sr}]}\n", "      - pause: {}\n", 1)
	}
	write(t, dir, "services.yaml", services, now)
	write(t, dir, "rollout.yaml", doc("app:v1"), now)
	d, _, _ := startDriver(t, dir, successRate(1))
	v1 := waitStatus(t, dir, "v1 stable", func(st v1alpha1.RolloutStatus) bool { return st.Phase == v1alpha1.RolloutPhaseHealthy }).StableRS
	pausedAt1 := func(st v1alpha1.RolloutStatus) bool {
		return st.Phase == v1alpha1.RolloutPhasePaused && st.CurrentStepIndex != nil && *st.CurrentStepIndex == 1 && !st.Abort
	}

	write(t, dir, "rollout.yaml", doc("app:v2"), now.Add(time.Second))
	waitStatus(t, dir, "v2 paused at its pause step", pausedAt1)
	if err := d.Act("ns", "app", func(ro *v1alpha1.Rollout) { steps.Promote(ro, false) }); err != nil {
		t.Fatal(err)
	}
	v2 := waitStatus(t, dir, "v2 promoted past its pause, to the end", func(st v1alpha1.RolloutStatus) bool {
		return st.Phase == v1alpha1.RolloutPhaseHealthy && st.StableRS != v1
	}).StableRS

	write(t, dir, "rollout.yaml", doc("app:v3"), now.Add(2*time.Second))
	waitStatus(t, dir, "v3 paused at its pause step", pausedAt1)
	if err := d.Act("ns", "app", steps.Abort); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, dir, "v3 aborted", func(st v1alpha1.RolloutStatus) bool { return st.Abort && st.Phase == v1alpha1.RolloutPhaseDegraded })
	if st.StableRS != v2 || st.Canary.Weights.Stable.Weight != 100 {
		t.Fatalf("aborted: stable %s weights %+v", st.StableRS, st.Canary.Weights)
	}
	if err := d.Act("ns", "app", steps.Retry); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, dir, "v3 retried: paused at its pause step again", pausedAt1)
	if err := d.Act("ns", "app", func(ro *v1alpha1.Rollout) { steps.Promote(ro, true) }); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, dir, "v3 fully promoted", func(st v1alpha1.RolloutStatus) bool {
		return st.Phase == v1alpha1.RolloutPhaseHealthy && st.StableRS != v2 && st.StableRS != v1
	})
	if err := d.Act("ns", "nothere", steps.Abort); !errors.Is(err, ErrNotFound) {
		t.Fatalf("acting on an undeclared Rollout: %v", err)
	}
}
