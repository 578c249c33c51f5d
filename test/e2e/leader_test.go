//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// leaseDuration is the chart's (the controller's default
// --leader-election-lease-duration).
const leaseDuration = 15 * time.Second

// TestControllerLeaderFailover: the chart's two controller replicas elect
// one writer with the Lease meridian-controller; deleting the leader's pod
// moves the Lease to another replica within the lease duration, and the
// control plane keeps serving meanwhile: the other replica stays ready, the
// injector keeps injecting (a server-side dry run through the Service), and
// `meridian check` passes again once the replacement is up. The new holder
// is either the other replica or the deleted pod's replacement: the leader
// releases the Lease as it stops, and both candidates race for it (CI saw
// the replacement win).
func TestControllerLeaderFailover(t *testing.T) {
	// An earlier test's control plane may still be going away.
	gone(t, "meridian", 3*time.Minute)
	crds := mustMeridian(t, "", "install", "--crds")
	kubectl(t, crds, "apply", "--server-side", "-f", "-")
	cp := mustMeridian(t, "", "install")
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := runKubectl("", "--namespace", "meridian", "describe", "pods")
			t.Logf("control plane pods:\n%s", out)
			out, _ = runKubectl("", "--namespace", "meridian", "get", "lease", "meridian-controller", "-o", "yaml")
			t.Logf("lease:\n%s", out)
			logs, _ := runKubectl("", "--namespace", "meridian", "logs", "-l", "app.kubernetes.io/name=meridian-controller", "--tail=100", "--prefix")
			t.Logf("controller logs:\n%s", logs)
		}
		un := mustMeridian(t, "", "uninstall")
		runKubectl(un, "delete", "--ignore-not-found", "--wait=false", "-f", "-")
		gone(t, "meridian", 3*time.Minute)
	})
	kubectl(t, cp, "apply", "-f", "-")
	if out, errOut, err := meridian(t, "", "check", "--wait", "4m"); err != nil {
		t.Fatalf("meridian check --wait 4m: %v\n%s\n%s", err, out, errOut)
	}

	pods := readyControllerPods(t)
	if len(pods) != 2 {
		t.Fatalf("ready controller pods %v, want the chart's two", pods)
	}
	leader := eventuallyValue(t, "a leader", time.Minute, func() (string, error) {
		h := leaseHolderPod(t)
		if h == "" || !contains(pods, h) {
			return "", fmt.Errorf("lease held by %q, not one of %v", h, pods)
		}
		return h, nil
	})
	follower := pods[0]
	if follower == leader {
		follower = pods[1]
	}
	eventuallyValue(t, "the leader's meridian_controller_leader 1", 10*time.Second, func() (string, error) {
		if m := leaderMetric(t, leader); m != "1" {
			return "", fmt.Errorf("%s: meridian_controller_leader %q", leader, m)
		}
		return "", nil
	})
	if m := leaderMetric(t, follower); m != "0" {
		t.Errorf("follower %s: meridian_controller_leader %q, want 0", follower, m)
	}
	n := newNamespace(t)
	kubectl(t, "", "annotate", "namespace", n.name, "meridian.io/inject=enabled")

	t.Logf("deleting the leader %s; %s or the replacement should take over", leader, follower)
	deleted := time.Now()
	kubectl(t, "", "--namespace", "meridian", "delete", "pod", leader, "--wait=false")
	var took time.Duration
	var next string
	for {
		if h := leaseHolderPod(t); h != "" && h != leader {
			next, took = h, time.Since(deleted)
			break
		}
		if time.Since(deleted) > 2*leaseDuration {
			t.Fatalf("the lease is held by %q %v after the leader was deleted, want another replica", leaseHolderPod(t), time.Since(deleted).Round(time.Second))
		}
		// Meanwhile the other replica stays ready: it serves throughout.
		if ready := readyControllerPods(t); !contains(ready, follower) {
			t.Errorf("during the hand-over %s is not ready (ready: %v)", follower, ready)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("%s holds the lease %v after %s was deleted (the other replica was %s)", next, took.Round(time.Millisecond), leader, follower)
	if took > leaseDuration {
		t.Errorf("hand-over took %v, more than the lease duration %v", took, leaseDuration)
	}
	// The metric follows once its writers have started.
	eventuallyValue(t, "the new leader's meridian_controller_leader 1", 30*time.Second, func() (string, error) {
		if m := leaderMetric(t, next); m != "1" {
			return "", fmt.Errorf("%s: meridian_controller_leader %q", next, m)
		}
		return "", nil
	})
	if next != follower {
		if m := leaderMetric(t, follower); m != "0" {
			t.Errorf("follower %s: meridian_controller_leader %q while %s leads, want 0", follower, m, next)
		}
	}

	// The injector still injects, through the Service (the new leader is
	// ready; the deleted pod's replacement may not be yet).
	n.eventually("the injector to inject a dry-run pod", time.Minute, func() error {
		out, err := runKubectl(`apiVersion: v1
kind: Pod
metadata: {name: probe}
spec:
  containers: [{name: app, image: `+echoImage+`}]
`, "--namespace", n.name, "create", "--dry-run=server", "-o", "jsonpath={.spec.initContainers[*].name}", "-f", "-")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "meridian-proxy") {
			return fmt.Errorf("dry-run pod's init containers %q: not injected", out)
		}
		return nil
	})
	// The deleted pod's replacement comes up as a follower and the control
	// plane is healthy again.
	if out, errOut, err := meridian(t, "", "check", "--wait", "3m"); err != nil {
		t.Fatalf("meridian check --wait 3m after the hand-over: %v\n%s\n%s", err, out, errOut)
	}
	if h := leaseHolderPod(t); h != next {
		t.Errorf("after the replacement came up the lease is held by %q, want %s still", h, next)
	}
}

// readyControllerPods are the controller's ready pods, not being deleted.
func readyControllerPods(t *testing.T) []string {
	t.Helper()
	out := kubectl(t, "", "--namespace", "meridian", "get", "pods", "-l", "app.kubernetes.io/name=meridian-controller", "-o", "json")
	var list struct {
		Items []struct {
			Metadata struct {
				Name              string  `json:"name"`
				DeletionTimestamp *string `json:"deletionTimestamp"`
			} `json:"metadata"`
			Status struct {
				Conditions []struct{ Type, Status string } `json:"conditions"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range list.Items {
		for _, c := range p.Status.Conditions {
			if c.Type == "Ready" && c.Status == "True" && p.Metadata.DeletionTimestamp == nil {
				names = append(names, p.Metadata.Name)
			}
		}
	}
	return names
}

// leaseHolderPod is the pod holding the Lease meridian-controller: its
// holderIdentity is <pod name>_<random> ("" while nobody holds it).
func leaseHolderPod(t *testing.T) string {
	t.Helper()
	out, err := runKubectl("", "--namespace", "meridian", "get", "lease", "meridian-controller", "-o", "jsonpath={.spec.holderIdentity}")
	if err != nil {
		return ""
	}
	pod, _, _ := strings.Cut(out, "_")
	return pod
}

// leaderMetric is the pod's meridian_controller_leader, read from its admin
// server through the API server's pod proxy.
func leaderMetric(t *testing.T, pod string) string {
	t.Helper()
	out, err := runKubectl("", "get", "--raw", "/api/v1/namespaces/meridian/pods/"+pod+":9996/proxy/metrics")
	if err != nil {
		t.Logf("metrics of %s: %v", pod, err)
		return ""
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "meridian_controller_leader "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func eventuallyValue(t *testing.T, what string, within time.Duration, f func() (string, error)) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		v, err := f()
		if err == nil {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
