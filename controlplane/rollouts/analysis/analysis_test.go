package analysis

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

func TestEvalConditionArgoSyntax(t *testing.T) {
	for _, tc := range []struct {
		value any
		cond  string
		want  bool
		err   bool
	}{
		{[]float64{0.97}, "result[0] >= 0.95", true, false},
		{[]float64{0.90}, "result[0] >= 0.95", false, false},
		{0.95, "result > 0.9", true, false},
		{0.85, "result > 0.9", false, false},
		{[]float64{}, "len(result) > 0", false, false},
		{[]float64{1, 2}, "len(result) > 0 && result[1] == 2", true, false},
		{map[string]any{"ok": true, "successPercent": 0.93}, "result.ok && result.successPercent >= 0.90", true, false},
		{[]any{map[string]any{"count": 3.0}}, "result[0].count == 3", true, false},
		{"12", "asInt(result) == 12", true, false},
		{"0.5", "asFloat(result) < 1", true, false},
		{math.NaN(), "isNaN(result)", true, false},
		{math.Inf(1), "isInf(result)", true, false},
		{nil, "isNil(result)", true, false},
		{nil, "default(result, 0) == 0", true, false},
		{math.NaN(), "default(result, 1.0) == 1.0", true, false},
		{"x", "asInt(result) == 1", false, true},                   // a helper's panic is an error
		{0.5, "result + 1", false, true},                           // not a boolean
		{0.5, "result >=", false, true},                            // does not compile
		{[]float64{}, "result[0] >= 0.95", false, true},            // index out of range
		{map[string]any{"a": 1.0}, "result.b.c == 1", false, true}, // nil member access
	} {
		got, err := EvalCondition(tc.value, tc.cond)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("%v %q = %v, %v; want %v, error %v", tc.value, tc.cond, got, err, tc.want, tc.err)
		}
	}
}

// Judge follows Argo's EvaluateResult table.
func TestJudge(t *testing.T) {
	S, F, I, E := v1alpha1.AnalysisPhaseSuccessful, v1alpha1.AnalysisPhaseFailed, v1alpha1.AnalysisPhaseInconclusive, v1alpha1.AnalysisPhaseError
	for _, tc := range []struct {
		success, failure string
		value            float64
		want             v1alpha1.AnalysisPhase
	}{
		{"", "", 0, S},                               // no condition: success
		{"result >= 0.95", "", 0.97, S},              // success only, met
		{"result >= 0.95", "", 0.90, F},              // success only, not met: failure
		{"", "result < 0.90", 0.85, F},               // failure only, met
		{"", "result < 0.90", 0.93, S},               // failure only, not met: success
		{"result >= 0.95", "result < 0.90", 0.97, S}, // both
		{"result >= 0.95", "result < 0.90", 0.85, F},
		{"result >= 0.95", "result < 0.90", 0.92, I}, // neither: inconclusive
		{"result > 0", "result > 0.5", 0.7, F},       // both hold: failure wins
		{"result >", "", 0.7, E},                     // a bad condition is an error
	} {
		m := &v1alpha1.Metric{SuccessCondition: tc.success, FailureCondition: tc.failure}
		if got, _ := Judge(m, tc.value); got != tc.want {
			t.Errorf("success %q failure %q value %v: %s, want %s", tc.success, tc.failure, tc.value, got, tc.want)
		}
	}
}

// No traffic is neither a success nor a failure.
func TestNoTrafficIsInconclusive(t *testing.T) {
	m := &v1alpha1.Metric{SuccessCondition: "result >= 0.95", Provider: v1alpha1.MetricProvider{Meridian: &v1alpha1.MeridianMetric{Metric: v1alpha1.MeridianSuccessRate, MinRequests: ptr(int64(50))}}}
	phase, msg := JudgeResult(m, Result{Value: 1.0, Requests: ptr(int64(49))})
	if phase != v1alpha1.AnalysisPhaseInconclusive || !strings.Contains(msg, "no traffic: 49 requests in the window, fewer than minRequests (50)") {
		t.Fatalf("%s %q", phase, msg)
	}
	if phase, _ := JudgeResult(m, Result{Value: 0.5, Requests: ptr(int64(50))}); phase != v1alpha1.AnalysisPhaseFailed {
		t.Fatalf("with enough requests: %s", phase)
	}
	// The default minimum is one request: zero requests never judge.
	m.Provider.Meridian.MinRequests = nil
	if phase, _ := JudgeResult(m, Result{Value: math.NaN(), Requests: ptr(int64(0))}); phase != v1alpha1.AnalysisPhaseInconclusive {
		t.Fatalf("zero requests: %s", phase)
	}
}

func TestSubstituteArgs(t *testing.T) {
	var m v1alpha1.Metric
	if err := yaml.UnmarshalStrict([]byte(`
name: sr
count: "{{args.count}}"
failureLimit: "{{ args.limit }}"
successCondition: "result[0] >= {{args.threshold}}"
provider:
  prometheus:
    address: http://prometheus:9090
    query: sum(rate(requests{service="{{args.service-name}}"}[5m]))
`), &m); err != nil {
		t.Fatal(err)
	}
	vals, err := ArgValues([]v1alpha1.Argument{
		{Name: "count", Value: ptr("3")},
		{Name: "limit", Value: ptr("1")},
		{Name: "threshold", Value: ptr("0.95")},
		{Name: "service-name", ValueFrom: &v1alpha1.ValueFrom{FieldRef: &v1alpha1.FieldRef{FieldPath: "metadata.name"}}},
	}, func(vf *v1alpha1.ValueFrom) (string, error) {
		if vf.FieldRef != nil && vf.FieldRef.FieldPath == "metadata.name" {
			return `web"}) or vector(1`, nil // a value cannot break out of its string
		}
		return "", errors.New("unknown")
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Substitute(m, vals)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := EffectiveCount(&got); n != 3 {
		t.Errorf("count %v", got.Count)
	}
	if l, _ := limit(got.FailureLimit, 0); l != 1 {
		t.Errorf("failureLimit %v", got.FailureLimit)
	}
	if got.SuccessCondition != "result[0] >= 0.95" {
		t.Errorf("condition %q", got.SuccessCondition)
	}
	if want := `sum(rate(requests{service="web"}) or vector(1"}[5m]))`; got.Provider.Prometheus.Query != want {
		t.Errorf("query %q, want %q", got.Provider.Prometheus.Query, want)
	}
	if _, err := Substitute(m, map[string]string{"count": "3", "threshold": "1", "service-name": "web"}); err == nil || !strings.Contains(err.Error(), "args.limit") {
		t.Errorf("missing arg: %v", err)
	}
	if _, err := ArgValues([]v1alpha1.Argument{{Name: "svc"}}, nil); err == nil || !strings.Contains(err.Error(), "args.svc") {
		t.Errorf("arg without value: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// fake is a Provider giving a scripted sequence of results.
type fake struct {
	results map[string][]any // per metric: Result, error, or "inflight"
	calls   map[string]int
}

func (f *fake) Measure(_ context.Context, _ *v1alpha1.AnalysisRun, m v1alpha1.Metric, inFlight *v1alpha1.Measurement) (Result, error) {
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	seq := f.results[m.Name]
	i := f.calls[m.Name]
	f.calls[m.Name]++
	if i >= len(seq) {
		i = len(seq) - 1
	}
	switch v := seq[i].(type) {
	case error:
		return Result{}, v
	case Result:
		return v, nil
	case float64:
		return Result{Value: v, Requests: ptr(int64(100))}, nil
	}
	panic("bad script")
}

func newRun(t *testing.T, spec string) *v1alpha1.AnalysisRun {
	t.Helper()
	run := &v1alpha1.AnalysisRun{}
	if err := yaml.UnmarshalStrict([]byte(spec), run); err != nil {
		t.Fatal(err)
	}
	return run
}

// drive steps the run on its own schedule until it completes.
func drive(t *testing.T, run *v1alpha1.AnalysisRun, p Provider) time.Time {
	t.Helper()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for range 100 {
		next := Step(context.Background(), run, nil, p, now)
		if run.Status.Phase.Completed() {
			return now
		}
		if next.IsZero() {
			t.Fatalf("run %s with nothing due", run.Status.Phase)
		}
		now = next
	}
	t.Fatal("run never completed")
	return now
}

const srRun = `
metadata: {name: r}
spec:
  metrics:
  - name: sr
    interval: 1m
    count: 5
    successCondition: result >= 0.95
    provider: {meridian: {metric: success-rate}}
`

func TestRunAccounting(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		edit    func(m *v1alpha1.Metric)
		script  []any
		want    v1alpha1.AnalysisPhase
		msg     string
		elapsed time.Duration
	}{
		{"all successful: count reached", nil, []any{0.99}, v1alpha1.AnalysisPhaseSuccessful, "", 4 * time.Minute},
		{"one failure over failureLimit 0", nil, []any{0.99, 0.5}, v1alpha1.AnalysisPhaseFailed, `Metric "sr" assessed Failed due to failed (1) > failureLimit (0)`, time.Minute},
		{"failures within failureLimit", func(m *v1alpha1.Metric) { m.FailureLimit = ptr(intstr.FromInt32(2)) },
			[]any{0.5, 0.5, 0.99}, v1alpha1.AnalysisPhaseSuccessful, "", 4 * time.Minute},
		{"failureLimit exceeded", func(m *v1alpha1.Metric) { m.FailureLimit = ptr(intstr.FromInt32(2)) },
			[]any{0.5, 0.99, 0.5, 0.5}, v1alpha1.AnalysisPhaseFailed, "failed (3) > failureLimit (2)", 3 * time.Minute},
		{"inconclusive over inconclusiveLimit 0", func(m *v1alpha1.Metric) { m.FailureCondition = "result < 0.9" },
			[]any{0.92}, v1alpha1.AnalysisPhaseInconclusive, "inconclusive (1) > inconclusiveLimit (0)", 0},
		{"no traffic is inconclusive", nil, []any{Result{Value: math.NaN(), Requests: ptr(int64(0))}},
			v1alpha1.AnalysisPhaseInconclusive, "no traffic: 0 requests in the window", 0},
		{"inconclusive within inconclusiveLimit", func(m *v1alpha1.Metric) {
			m.FailureCondition = "result < 0.9"
			m.InconclusiveLimit = ptr(intstr.FromInt32(1))
		}, []any{0.92, 0.99}, v1alpha1.AnalysisPhaseSuccessful, "", 4 * time.Minute},
		{"errors: default consecutiveErrorLimit 4", nil, []any{errors.New("connection refused")},
			v1alpha1.AnalysisPhaseError, "consecutiveErrors (5) > consecutiveErrorLimit (4)", 40 * time.Second}, // retried every 10s
		{"errors retried after 10s without interval", func(m *v1alpha1.Metric) {
			m.Interval = ""
			m.Count = nil
			m.ConsecutiveErrorLimit = ptr(intstr.FromInt32(1))
		}, []any{errors.New("refused"), errors.New("refused")}, v1alpha1.AnalysisPhaseError, "consecutiveErrors (2) > consecutiveErrorLimit (1)", 10 * time.Second},
		{"a measurement between errors resets them", func(m *v1alpha1.Metric) { m.ConsecutiveErrorLimit = ptr(intstr.FromInt32(1)) },
			[]any{errors.New("x"), 0.99, errors.New("x"), 0.99, 0.99, 0.99, 0.99}, v1alpha1.AnalysisPhaseSuccessful, "", 4*time.Minute + 20*time.Second},
		{"no count, no interval: one measurement", func(m *v1alpha1.Metric) { m.Interval = ""; m.Count = nil },
			[]any{0.99}, v1alpha1.AnalysisPhaseSuccessful, "", 0},
		{"initialDelay", func(m *v1alpha1.Metric) { m.InitialDelay = "30s"; m.Interval = ""; m.Count = nil },
			[]any{0.99}, v1alpha1.AnalysisPhaseSuccessful, "", 30 * time.Second},
		{"a condition that does not evaluate is an error", func(m *v1alpha1.Metric) {
			m.SuccessCondition = "result[0] > 1"
			m.ConsecutiveErrorLimit = ptr(intstr.FromInt32(0))
		},
			[]any{0.99}, v1alpha1.AnalysisPhaseError, "consecutiveErrors (1) > consecutiveErrorLimit (0)", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := newRun(t, srRun)
			if tc.edit != nil {
				tc.edit(&run.Spec.Metrics[0])
			}
			end := drive(t, run, &fake{results: map[string][]any{"sr": tc.script}})
			if run.Status.Phase != tc.want || !strings.Contains(run.Status.Message, tc.msg) {
				t.Fatalf("phase %s message %q; want %s %q\n%+v", run.Status.Phase, run.Status.Message, tc.want, tc.msg, run.Status.MetricResults)
			}
			if got := end.Sub(t0); got != tc.elapsed {
				t.Errorf("completed after %v, want %v", got, tc.elapsed)
			}
			res := run.Status.MetricResults[0]
			if res.Count != res.Successful+res.Failed+res.Inconclusive {
				t.Errorf("count %d != %d+%d+%d", res.Count, res.Successful, res.Failed, res.Inconclusive)
			}
		})
	}
}

// Record counts as Argo: errors are not measurements of count, and any
// measurement resets the consecutive errors.
func TestRecordConsecutiveErrors(t *testing.T) {
	var r v1alpha1.MetricResult
	for _, p := range []v1alpha1.AnalysisPhase{"Error", "Error", "Successful", "Error", "Failed", "Inconclusive"} {
		Record(&r, v1alpha1.Measurement{Phase: p})
	}
	if r.Count != 3 || r.Successful != 1 || r.Failed != 1 || r.Inconclusive != 1 || r.Error != 3 || r.ConsecutiveError != 0 {
		t.Fatalf("%+v", r)
	}
	Record(&r, v1alpha1.Measurement{Phase: "Error"})
	if r.ConsecutiveError != 1 || r.Count != 3 {
		t.Fatalf("%+v", r)
	}
}

// The run takes the worst metric; a failing metric ends the run at once
// (the others stop measuring); dry-run metrics are recorded but never
// decide.
func TestRunWorstMetricAndDryRun(t *testing.T) {
	spec := `
metadata: {name: r}
spec:
  metrics:
  - name: sr
    interval: 1m
    count: 3
    successCondition: result >= 0.95
    provider: {meridian: {metric: success-rate}}
  - name: latency
    interval: 1m
    count: 3
    successCondition: result < 250
    provider: {meridian: {metric: latency-p99}}
`
	run := newRun(t, spec)
	drive(t, run, &fake{results: map[string][]any{"sr": {0.99}, "latency": {100.0, 900.0}}})
	if run.Status.Phase != v1alpha1.AnalysisPhaseFailed || !strings.Contains(run.Status.Message, `Metric "latency" assessed Failed`) {
		t.Fatalf("%s %q", run.Status.Phase, run.Status.Message)
	}
	if sr := run.Status.MetricResults[0]; sr.Phase != v1alpha1.AnalysisPhaseSuccessful || sr.Count != 2 {
		t.Fatalf("sr stopped as %s after %d measurements", sr.Phase, sr.Count)
	}
	if s := run.Status.RunSummary; s.Count != 2 || s.Failed != 1 || s.Successful != 1 {
		t.Fatalf("summary %+v", s)
	}

	run = newRun(t, spec+"  dryRun: [{metricName: latency}]\n")
	drive(t, run, &fake{results: map[string][]any{"sr": {0.99}, "latency": {900.0}}})
	if run.Status.Phase != v1alpha1.AnalysisPhaseSuccessful {
		t.Fatalf("a dry-run failure decided the run: %s %q", run.Status.Phase, run.Status.Message)
	}
	lat := run.Status.MetricResults[1]
	if !lat.DryRun || lat.Phase != v1alpha1.AnalysisPhaseFailed || !strings.Contains(lat.Message, "Metric assessed Failed due to failed (1) > failureLimit (0)") {
		t.Fatalf("latency %+v", lat)
	}
	if d := run.Status.DryRunSummary; d == nil || d.Count != 1 || d.Failed != 1 || run.Status.RunSummary.Count != 1 {
		t.Fatalf("summaries %+v %+v", run.Status.RunSummary, d)
	}
}

// An unbounded metric (interval, no count) runs until terminated, and then
// succeeds; measurementRetention bounds the measurements kept.
func TestTerminateAndRetention(t *testing.T) {
	run := newRun(t, `
metadata: {name: r}
spec:
  metrics:
  - name: sr
    interval: 1m
    successCondition: result >= 0.95
    provider: {meridian: {metric: success-rate}}
  measurementRetention: [{metricName: sr, limit: 3}]
`)
	p := &fake{results: map[string][]any{"sr": {0.99}}}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for range 20 {
		next := Step(context.Background(), run, nil, p, now)
		if next.Sub(now) != time.Minute {
			t.Fatalf("next %v", next.Sub(now))
		}
		now = next
	}
	if run.Status.Phase != v1alpha1.AnalysisPhaseRunning || len(run.Status.MetricResults[0].Measurements) != 3 || run.Status.MetricResults[0].Count != 20 {
		t.Fatalf("%s %d measurements, count %d", run.Status.Phase, len(run.Status.MetricResults[0].Measurements), run.Status.MetricResults[0].Count)
	}
	run.Spec.Terminate = true
	Step(context.Background(), run, nil, p, now)
	if run.Status.Phase != v1alpha1.AnalysisPhaseSuccessful || run.Status.Message != "Run Terminated" || p.calls["sr"] != 20 {
		t.Fatalf("%s %q after %d calls", run.Status.Phase, run.Status.Message, p.calls["sr"])
	}
}

// A measurement in flight (a job) is resumed at resumeAt, and a run
// terminated meanwhile ends it as Successful "Metric Terminated".
func TestInFlightMeasurement(t *testing.T) {
	run := newRun(t, `
metadata: {name: r}
spec:
  metrics:
  - name: job
    provider: {job: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: t, image: busybox}]}}}}}
`)
	p := &fake{results: map[string][]any{"job": {Result{ResumeAfter: 5 * time.Second, Metadata: map[string]string{"job-name": "r-job"}}, Result{Value: true}}}}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	next := Step(context.Background(), run, nil, p, now)
	m := run.Status.MetricResults[0].Measurements[0]
	if run.Status.Phase != v1alpha1.AnalysisPhaseRunning || m.Phase != v1alpha1.AnalysisPhaseRunning || next.Sub(now) != 5*time.Second || m.Metadata["job-name"] != "r-job" {
		t.Fatalf("%s %+v next %v", run.Status.Phase, m, next)
	}
	Step(context.Background(), run, nil, p, next)
	if run.Status.Phase != v1alpha1.AnalysisPhaseSuccessful || len(run.Status.MetricResults[0].Measurements) != 1 || run.Status.MetricResults[0].Count != 1 {
		t.Fatalf("%s %+v", run.Status.Phase, run.Status.MetricResults[0])
	}

	run = newRun(t, `
metadata: {name: r}
spec:
  metrics:
  - name: job
    provider: {job: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: t, image: busybox}]}}}}}
`)
	p = &fake{results: map[string][]any{"job": {Result{ResumeAfter: 5 * time.Second}}}}
	next = Step(context.Background(), run, nil, p, now)
	run.Spec.Terminate = true
	Step(context.Background(), run, nil, p, next)
	if m := run.Status.MetricResults[0].Measurements[0]; run.Status.Phase != v1alpha1.AnalysisPhaseSuccessful || m.Message != "Metric Terminated" {
		t.Fatalf("%s %+v", run.Status.Phase, m)
	}
}

func TestInvalidRunIsError(t *testing.T) {
	run := newRun(t, `
metadata: {name: r}
spec:
  metrics:
  - name: sr
    count: 3
    provider: {meridian: {metric: success-rate}}
`)
	Step(context.Background(), run, nil, &fake{}, time.Now())
	if run.Status.Phase != v1alpha1.AnalysisPhaseError || !strings.Contains(run.Status.Message, "spec.metrics[0].interval") {
		t.Fatalf("%s %q", run.Status.Phase, run.Status.Message)
	}
}

// Measurement values are recorded as Argo writes them.
func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{0.95, "0.95"}, {[]float64{0.9, 1}, "[0.9,1]"}, {map[string]any{"a": 1.0}, `{"a":1}`}, {"x", "x"}, {nil, ""}, {true, "true"},
	} {
		if got := format(tc.v); got != tc.want {
			t.Errorf("format(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

// A provider's own verdict (a job that failed) is the measurement's phase,
// whatever the conditions say.
func TestProviderVerdict(t *testing.T) {
	run := newRun(t, `
metadata: {name: r}
spec:
  metrics:
  - name: job
    successCondition: "true"
    provider: {job: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: t, image: busybox}]}}}}}
`)
	p := &fake{results: map[string][]any{"job": {Result{Phase: v1alpha1.AnalysisPhaseFailed, Message: "job r-job failed"}}}}
	Step(context.Background(), run, nil, p, time.Now())
	m := run.Status.MetricResults[0].Measurements[0]
	if run.Status.Phase != v1alpha1.AnalysisPhaseFailed || m.Phase != v1alpha1.AnalysisPhaseFailed || m.Message != "job r-job failed" {
		t.Fatalf("%s %+v", run.Status.Phase, m)
	}
}
