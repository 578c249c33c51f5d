package check

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

func pass(context.Context, *State) error { return nil }

func fail(msg string) func(context.Context, *State) error {
	return func(context.Context, *State) error { return errors.New(msg) }
}

// recorder is an Observer that keeps what it is told.
type recorder struct {
	mu      sync.Mutex
	waiting []string
	done    []CheckResult
}

func (r *recorder) Waiting(c *Check, _ error, _ time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waiting = append(r.waiting, c.Description)
}

func (r *recorder) Done(res CheckResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = append(r.done, res)
}

func descriptions(rep *Report) []string {
	var out []string
	for _, r := range rep.Results {
		out = append(out, r.Description+"="+string(r.Result))
	}
	return out
}

func TestRunnerFatalStopsLaterGroups(t *testing.T) {
	checks := []Check{
		{Group: "a", Description: "a1", Run: pass},
		{Group: "a", Description: "a2", Run: fail("not fatal"), Hint: "fix a2"},
		{Group: "a", Description: "a3", Fatal: true, Run: fail("fatal"), Hint: "fix a3"},
		{Group: "a", Description: "a4", Run: pass},
		{Group: "b", Description: "b1", Run: pass},
	}
	rec := &recorder{}
	rep := (&Runner{Observer: rec}).Run(context.Background(), checks, NewState(Options{}))
	got := strings.Join(descriptions(rep), " ")
	if want := "a1=success a2=error a3=error"; got != want {
		t.Fatalf("results %q, want %q", got, want)
	}
	if rep.Stopped != "a3" || rep.Success() {
		t.Fatalf("stopped %q success %v", rep.Stopped, rep.Success())
	}
	if len(rec.done) != 3 {
		t.Fatalf("observer saw %d results", len(rec.done))
	}
	if r := rep.Results[1]; r.Hint != "fix a2" || r.Err.Error() != "not fatal" {
		t.Fatalf("a2: %+v", r)
	}
	if r := rep.Results[0]; r.Hint != "" || r.Err != nil {
		t.Fatalf("a passing check carries a hint or error: %+v", r)
	}
}

func TestRunnerWarningsDoNotFail(t *testing.T) {
	checks := []Check{
		{Group: "a", Description: "warning check", Warning: true, Fatal: true, Run: fail("meh")},
		{Group: "a", Description: "warns", Run: func(context.Context, *State) error { return Warnf("soon %d", 1) }},
		{Group: "a", Description: "skipped", Run: func(context.Context, *State) error { return Skip("earlier failed") }},
		{Group: "b", Description: "b1", Run: pass},
	}
	rep := (&Runner{}).Run(context.Background(), checks, NewState(Options{}))
	got := strings.Join(descriptions(rep), " ")
	if want := "warning check=warning warns=warning b1=success"; got != want {
		t.Fatalf("results %q, want %q", got, want)
	}
	if !rep.Success() || rep.Stopped != "" {
		t.Fatalf("warnings failed the run: success %v stopped %q", rep.Success(), rep.Stopped)
	}
	if rep.Results[1].Err.Error() != "soon 1" {
		t.Fatalf("warning error %q", rep.Results[1].Err)
	}
}

func TestRunnerRetriesUntilPass(t *testing.T) {
	n := 0
	checks := []Check{{Group: "a", Description: "flaky", Retry: true, Run: func(context.Context, *State) error {
		n++
		if n < 4 {
			return errors.New("not yet")
		}
		return nil
	}}}
	rec := &recorder{}
	rep := (&Runner{Wait: 5 * time.Second, Interval: 10 * time.Millisecond, Observer: rec}).Run(context.Background(), checks, NewState(Options{}))
	if !rep.Success() || rep.Results[0].Retries != 3 {
		t.Fatalf("success %v retries %d", rep.Success(), rep.Results[0].Retries)
	}
	if len(rec.waiting) != 1 {
		t.Fatalf("waiting reported %d times, want once", len(rec.waiting))
	}
}

func TestRunnerRetryTimesOut(t *testing.T) {
	checks := []Check{
		{Group: "a", Description: "never", Retry: true, Run: fail("still not")},
		{Group: "a", Description: "after", Retry: true, Run: fail("also not")},
	}
	rec := &recorder{}
	start := time.Now()
	rep := (&Runner{Wait: 300 * time.Millisecond, Interval: 20 * time.Millisecond, Observer: rec}).Run(context.Background(), checks, NewState(Options{}))
	el := time.Since(start)
	if rep.Success() || rep.Results[0].Result != Error || rep.Results[0].Retries == 0 {
		t.Fatalf("results %+v", rep.Results)
	}
	// The wait is one window for the run, not one per check.
	if el < 300*time.Millisecond || el > 3*time.Second {
		t.Fatalf("took %v", el)
	}
	if rep.Results[1].Retries != 0 || len(rec.waiting) != 1 {
		t.Fatalf("the second check was retried after the window: retries %d, waiting %v", rep.Results[1].Retries, rec.waiting)
	}
}

// A Retry check that says waiting cannot fix it fails at once.
func TestRunnerFinalNotRetried(t *testing.T) {
	n := 0
	checks := []Check{{Group: "a", Description: "rejected", Retry: true, Run: func(context.Context, *State) error {
		n++
		return Final(errors.New("rejected for good"))
	}}}
	rec := &recorder{}
	rep := (&Runner{Wait: time.Minute, Interval: time.Millisecond, Observer: rec}).Run(context.Background(), checks, NewState(Options{}))
	if n != 1 || rep.Success() || rep.Results[0].Result != Error || rep.Results[0].Err.Error() != "rejected for good" || len(rec.waiting) != 0 {
		t.Fatalf("ran %d times, results %+v, waiting %v", n, rep.Results, rec.waiting)
	}
}

func TestRunnerNoRetry(t *testing.T) {
	n := 0
	count := func(context.Context, *State) error { n++; return errors.New("no") }
	checks := []Check{
		{Group: "a", Description: "not retryable", Run: count},
		{Group: "a", Description: "warning", Retry: true, Warning: true, Run: count},
	}
	rep := (&Runner{Wait: time.Minute, Interval: time.Millisecond}).Run(context.Background(), checks, NewState(Options{}))
	if n != 2 {
		t.Fatalf("ran %d times, want 2 (no retries)", n)
	}
	if got := strings.Join(descriptions(rep), " "); got != "not retryable=error warning=warning" {
		t.Fatal(got)
	}
	// Wait 0 disables retries.
	n = 0
	(&Runner{}).Run(context.Background(), []Check{{Group: "a", Description: "r", Retry: true, Run: count}}, NewState(Options{}))
	if n != 1 {
		t.Fatalf("ran %d times with no wait", n)
	}
}

func TestRunnerPanicAndCancel(t *testing.T) {
	checks := []Check{
		{Group: "a", Description: "panics", Run: func(context.Context, *State) error { panic("boom") }},
		{Group: "a", Description: "after", Run: pass},
	}
	rep := (&Runner{}).Run(context.Background(), checks, NewState(Options{}))
	if got := strings.Join(descriptions(rep), " "); got != "panics=error after=success" {
		t.Fatal(got)
	}
	if !strings.Contains(rep.Results[0].Err.Error(), "boom") {
		t.Fatal(rep.Results[0].Err)
	}

	// A cancelled run stops at the check it interrupts.
	ctx, cancel := context.WithCancel(context.Background())
	checks = []Check{
		{Group: "a", Description: "waits", Retry: true, Run: func(ctx context.Context, _ *State) error {
			cancel()
			return errors.New("interrupted")
		}},
		{Group: "a", Description: "after", Run: pass},
	}
	rep = (&Runner{Wait: time.Minute}).Run(ctx, checks, NewState(Options{}))
	if got := strings.Join(descriptions(rep), " "); got != "waits=error" {
		t.Fatal(got)
	}
}

func TestRunnerTimeout(t *testing.T) {
	checks := []Check{{Group: "a", Description: "slow", Run: func(ctx context.Context, _ *State) error {
		<-ctx.Done()
		return ctx.Err()
	}}}
	rep := (&Runner{Timeout: 50 * time.Millisecond}).Run(context.Background(), checks, NewState(Options{}))
	if !errors.Is(rep.Results[0].Err, context.DeadlineExceeded) {
		t.Fatal(rep.Results[0].Err)
	}
}

func TestTableAndJSON(t *testing.T) {
	checks := []Check{
		{Group: "kubernetes-api", Description: "can query", Run: pass},
		{Group: "meridian-crds", Description: "crds exist", Hint: "meridian install --crds | kubectl apply --server-side -f -", Run: fail("missing a\nmissing b")},
		{Group: "meridian-crds", Description: "soon", Hint: "rotate", Warning: true, Run: fail("expires")},
		{Group: "meridian-crds", Description: "flaky", Retry: true, Run: fail("not yet")},
	}
	var buf bytes.Buffer
	tab := &Table{W: &buf}
	rep := (&Runner{Observer: tab, Wait: 30 * time.Millisecond, Interval: 10 * time.Millisecond}).Run(context.Background(), checks, NewState(Options{}))
	tab.Summary(rep)
	want := `kubernetes-api
--------------
√ can query

meridian-crds
-------------
× crds exist
    missing a
    missing b
    see: meridian install --crds | kubectl apply --server-side -f -
‼ soon
    expires
    see: rotate
… waiting up to 0s for "flaky": not yet
× flaky
    not yet

Status check results are ×
`
	if got := buf.String(); got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}

	buf.Reset()
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Success    bool `json:"success"`
		Categories []struct {
			CategoryName string           `json:"categoryName"`
			Checks       []map[string]any `json:"checks"`
		} `json:"categories"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if doc.Success || len(doc.Categories) != 2 || doc.Categories[0].CategoryName != "kubernetes-api" || len(doc.Categories[1].Checks) != 3 {
		t.Fatalf("json: %s", buf.String())
	}
	ok := doc.Categories[0].Checks[0]
	if ok["description"] != "can query" || ok["result"] != "success" || ok["hint"] != nil || ok["error"] != nil {
		t.Fatalf("success check: %v", ok)
	}
	bad := doc.Categories[1].Checks[0]
	if bad["result"] != "error" || bad["hint"] != "meridian install --crds | kubectl apply --server-side -f -" || bad["error"] != "missing a\nmissing b" {
		t.Fatalf("failed check: %v", bad)
	}
	if w := doc.Categories[1].Checks[1]; w["result"] != "warning" {
		t.Fatalf("warning check: %v", w)
	}
}

func TestMinimumVersion(t *testing.T) {
	for v, ok := range map[string]bool{
		"v1.29.0": true, "v1.34.4": true, "v1.30.2-eks-1234": true, "v2.0.0": true,
		"v1.28.9": false, "v1.21.0+k3s1": false, "nonsense": false,
	} {
		if err := minimumVersion(v); (err == nil) != ok {
			t.Errorf("%s: %v", v, err)
		}
	}
	if err := minimumVersion("v1.28.3"); !strings.Contains(err.Error(), "v1.29") {
		t.Fatal(err)
	}
}

func TestEmbeddedCRDs(t *testing.T) {
	crds, err := EmbeddedCRDs()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, c := range crds {
		names[c.Name] = true
		if len(crdDiff(c, c)) != 0 {
			t.Fatalf("%s differs from itself: %v", c.Name, crdDiff(c, c))
		}
	}
	for _, n := range []string{"serviceprofiles.meridian.io", "trafficsplits.split.smi-spec.io"} {
		if !names[n] {
			t.Fatalf("%s not embedded (have %v)", n, names)
		}
	}
	// A changed schema, a missing version and an unknown stored version are
	// all told.
	want := crds[0]
	have := want.DeepCopy()
	have.Spec.Versions[0].Schema.OpenAPIV3Schema.Description = "older"
	have.Status.StoredVersions = []string{"v0"}
	probs := strings.Join(crdDiff(want, have), "\n")
	for _, s := range []string{"schema differs", "stored as v0"} {
		if !strings.Contains(probs, s) {
			t.Fatalf("diff %q lacks %q", probs, s)
		}
	}
	have = want.DeepCopy()
	have.Spec.Versions = []apiextv1.CustomResourceDefinitionVersion{}
	if probs := crdDiff(want, have); len(probs) != len(want.Spec.Versions) || !strings.Contains(probs[0], "has no version") {
		t.Fatalf("diff %q", probs)
	}
}

func TestGroups(t *testing.T) {
	all := append(append([]string{}, PostGroups...), GroupPreSetup)
	checks, err := Groups(Options{DataPlaneNamespace: "x"}, all...)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, c := range checks {
		key := c.Group + "/" + c.Description
		if seen[key] {
			t.Fatalf("two checks %q", key)
		}
		seen[key] = true
		if c.Run == nil || c.Hint == "" {
			t.Fatalf("check %q has no Run or no hint", key)
		}
	}
	if _, err := Groups(Options{}, "nope"); err == nil {
		t.Fatal("an unknown group was accepted")
	}
}

// The CRDs `meridian install --crds` prints (the chart's crds/) are the ones
// this command compares the cluster's with: otherwise a fresh install would
// be reported out of date.
func TestChartCRDsMatchEmbedded(t *testing.T) {
	dir := filepath.Join("..", "charts", "meridian", "crds")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("no chart CRDs: %v", err)
	}
	chart, err := ParseCRDs(os.DirFS(dir))
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := EmbeddedCRDs()
	if err != nil {
		t.Fatal(err)
	}
	if len(chart) != len(embedded) {
		t.Fatalf("the chart has %d CRDs, api/crds %d", len(chart), len(embedded))
	}
	for i := range chart {
		if chart[i].Name != embedded[i].Name {
			t.Fatalf("chart CRD %s, api/crds %s", chart[i].Name, embedded[i].Name)
		}
		if d := crdDiff(embedded[i], chart[i]); len(d) > 0 {
			t.Fatalf("the chart's %s differs from api/crds: %v", chart[i].Name, d)
		}
	}
}
