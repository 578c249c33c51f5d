package local

import (
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

const rolloutYAML = `apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: voting, namespace: ns}
spec:
  selector: {matchLabels: {app: voting}}
  template:
    metadata: {labels: {app: voting}}
    spec: {containers: [{name: voting, image: voting:v1}]}
  strategy:
    canary:
      stableService: voting-svc
      canaryService: voting-canary
      trafficRouting: {meridian: {}}
      steps:
      - setWeight: 20
      - analysis: {templates: [{templateName: success-rate}]}
---
apiVersion: meridian.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: success-rate, namespace: ns}
spec:
  metrics:
  - name: success-rate
    successCondition: result >= 0.9
    provider: {meridian: {metric: success-rate, window: 10s}}
`

const rolloutStatusYAML = `apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: voting, namespace: ns}
status:
  stableRS: abc
  canary:
    weights:
      stable: {weight: 80, podTemplateHash: abc, serviceName: voting-svc}
      canary: {weight: 20, podTemplateHash: def, serviceName: voting-canary}
`

// Rollouts go into the store, with the status of their status file over
// the declared one; analysis templates are read (OnObjects) but not stored.
func TestRolloutsTemplatesAndStatusFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "rollout.yaml", rolloutYAML)
	s := store.New()
	var mu sync.Mutex
	var templates []string
	statuses := make(chan Status, 100)
	wait := watchDirWith(t, dir, s, statuses, OnObjects(func(objs []runtime.Object) {
		mu.Lock()
		defer mu.Unlock()
		templates = nil
		for _, o := range objs {
			if at, ok := o.(*v1alpha1.AnalysisTemplate); ok {
				templates = append(templates, at.Namespace+"/"+at.Name)
			}
		}
	}))
	wait("first load", func(st Status) bool { return st.Objects == 2 })
	k := store.Key{Namespace: "ns", Name: "voting"}
	ro, ok := s.Rollout(k)
	if !ok || ro.Status.StableRS != "" {
		t.Fatalf("Rollout = %v, %v; want it without status", ro, ok)
	}
	mu.Lock()
	if strings.Join(templates, ",") != "ns/success-rate" {
		t.Errorf("templates = %v", templates)
	}
	mu.Unlock()

	put(t, dir, "voting"+StatusSuffix, rolloutStatusYAML)
	st := wait("status file", func(st Status) bool { return len(st.Files) == 2 })
	if st.Files[1].Objects != 1 || st.Files[1].Err != nil {
		t.Fatalf("status file: %+v", st.Files[1])
	}
	ro, _ = s.Rollout(k)
	if w := ro.Status.Canary.Weights; ro.Status.StableRS != "abc" || w == nil || w.Canary.Weight != 20 || w.Canary.PodTemplateHash != "def" {
		t.Fatalf("status = %+v", ro.Status)
	}
	if ro.Spec.Strategy.Canary.StableService != "voting-svc" {
		t.Fatalf("the spec was lost: %+v", ro.Spec)
	}
	if got := s.Rollouts(store.Key{Namespace: "ns", Name: "voting-svc"}); len(got) != 1 {
		t.Fatalf("Rollouts(voting-svc) = %v", got)
	}

	// A status file declaring more than a status is rejected; the last
	// good status keeps serving.
	put(t, dir, "voting"+StatusSuffix, rolloutStatusYAML+"spec: {replicas: 3}\n")
	st = wait("bad status file", func(st Status) bool { return rejected(st, "voting"+StatusSuffix) != "" })
	if got := rejected(st, "voting"+StatusSuffix); !strings.Contains(got, "voting.status.yaml:10: spec: a status file holds only apiVersion, kind, metadata and status") {
		t.Errorf("error = %s", got)
	}
	if ro, _ = s.Rollout(k); ro.Status.StableRS != "abc" {
		t.Errorf("status after a rejected status file = %+v", ro.Status)
	}
	put(t, dir, "voting"+StatusSuffix, strings.Replace(rolloutStatusYAML, "kind: Rollout", "kind: ServiceProfile", 1))
	st = wait("status of another kind", func(st Status) bool {
		return strings.Contains(rejected(st, "voting"+StatusSuffix), "holds the status of Rollouts")
	})

	// The status file removed: the declared status again.
	removeFile(t, dir, "voting"+StatusSuffix)
	wait("status file removed", func(st Status) bool { return len(st.Files) == 1 })
	if ro, _ = s.Rollout(k); ro.Status.StableRS != "" {
		t.Errorf("status after the status file went = %+v", ro.Status)
	}

	// An invalid Rollout is rejected with its field.
	put(t, dir, "rollout.yaml", strings.Replace(rolloutYAML, "setWeight: 20", "setWeight: 120", 1))
	st = wait("invalid rollout", func(st Status) bool { return rejected(st, "rollout.yaml") != "" })
	if got := rejected(st, "rollout.yaml"); !strings.Contains(got, "rollout.yaml:15: spec.strategy.canary.steps[0].setWeight") {
		t.Errorf("error = %s", got)
	}
}
