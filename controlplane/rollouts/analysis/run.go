package analysis

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// Result is one measurement as a provider took it.
type Result struct {
	// Value is what `result` is bound to: a float64 for the meridian
	// provider; a []float64 (a vector) or a float64 (a scalar) for
	// prometheus; the decoded JSON at jsonPath for web.
	Value any
	// Text is the measurement's value as recorded; empty: Value formatted.
	Text string
	// Requests is the number of requests the value was computed over, when
	// the provider knows it (meridian), for minRequests.
	Requests *int64
	// Metadata is kept on the measurement (a job's name, a resolved query).
	Metadata map[string]string
	// ResumeAfter > 0 means the measurement is still in flight (a job):
	// the runner asks again after it, passing the measurement back.
	ResumeAfter time.Duration
	// Phase, when set, is the provider's own verdict (a job succeeded or
	// failed, as Argo's job provider): the conditions are not evaluated.
	Phase v1alpha1.AnalysisPhase
	// Message goes with Phase on the measurement.
	Message string
}

// Provider takes measurements. The metric's {{args.NAME}} are already
// substituted. inFlight is the measurement being resumed, or nil for a new
// one. An error is a measurement Error (counted against
// consecutiveErrorLimit), not a failure.
type Provider interface {
	Measure(ctx context.Context, run *v1alpha1.AnalysisRun, metric v1alpha1.Metric, inFlight *v1alpha1.Measurement) (Result, error)
}

// Terminator is implemented by providers with something to clean up when a
// run stops with a measurement in flight (a job to delete).
type Terminator interface {
	Terminate(ctx context.Context, run *v1alpha1.AnalysisRun, metric v1alpha1.Metric, inFlight *v1alpha1.Measurement) error
}

// DefaultErrorRetryInterval is how soon a metric without an interval is
// measured again after an error (Argo's).
const DefaultErrorRetryInterval = 10 * time.Second

var argPattern = regexp.MustCompile(`\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}`)

// ArgValues resolves a run's arguments; resolve reads a valueFrom (a
// Secret's key, a field of the Rollout). An argument with neither a value
// nor a valueFrom is an error naming it.
func ArgValues(args []v1alpha1.Argument, resolve func(*v1alpha1.ValueFrom) (string, error)) (map[string]string, error) {
	vals := map[string]string{}
	for _, a := range args {
		switch {
		case a.ValueFrom != nil && a.Value != nil:
			return nil, fmt.Errorf("arg %s has both value and valueFrom", a.Name)
		case a.ValueFrom != nil:
			if resolve == nil {
				return nil, fmt.Errorf("arg %s: valueFrom cannot be resolved here", a.Name)
			}
			v, err := resolve(a.ValueFrom)
			if err != nil {
				return nil, fmt.Errorf("arg %s: %w", a.Name, err)
			}
			vals[a.Name] = v
		case a.Value != nil:
			vals[a.Name] = *a.Value
		default:
			return nil, fmt.Errorf("args.%s was not resolved: it has no value", a.Name)
		}
	}
	return vals, nil
}

// Substitute replaces {{args.NAME}} throughout a metric (its conditions,
// limits and provider fields), as Argo does. The values are inserted into
// JSON strings escaped, so a value cannot change the metric's shape. A
// placeholder naming no argument is an error.
func Substitute(metric v1alpha1.Metric, vals map[string]string) (v1alpha1.Metric, error) {
	b, err := json.Marshal(metric)
	if err != nil {
		return metric, err
	}
	var missing string
	out := argPattern.ReplaceAllFunc(b, func(m []byte) []byte {
		name := string(argPattern.FindSubmatch(m)[1])
		v, ok := vals[name]
		if !ok {
			if missing == "" {
				missing = name
			}
			return m
		}
		q, _ := json.Marshal(v)
		return q[1 : len(q)-1] // inside an existing JSON string
	})
	if missing != "" {
		return metric, fmt.Errorf("metric %s: args.%s is not an argument of the run", metric.Name, missing)
	}
	var m v1alpha1.Metric
	if err := json.Unmarshal(out, &m); err != nil {
		return metric, fmt.Errorf("metric %s after substituting args: %w", metric.Name, err)
	}
	return m, nil
}

// limit reads an IntOrString limit, def when unset.
func limit(v *intstr.IntOrString, def int32) (int32, error) {
	if v == nil {
		return def, nil
	}
	if v.Type == intstr.Int {
		return v.IntVal, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v.StrVal))
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", v.StrVal)
	}
	return int32(n), nil
}

// EffectiveCount is the number of measurements a metric takes: count; 1
// without count and interval; 0 (unbounded) with only an interval.
func EffectiveCount(m *v1alpha1.Metric) (int32, error) {
	n, err := limit(m.Count, 0)
	if err != nil {
		return 0, fmt.Errorf("count: %w", err)
	}
	if n == 0 && m.Interval == "" {
		return 1, nil
	}
	return n, nil
}

// Record accounts a finished measurement in its metric's result, as Argo:
// Successful, Failed and Inconclusive count toward count and reset the
// consecutive errors; an Error counts only as an error.
func Record(res *v1alpha1.MetricResult, m v1alpha1.Measurement) {
	switch m.Phase {
	case v1alpha1.AnalysisPhaseSuccessful:
		res.Successful++
		res.Count++
		res.ConsecutiveError = 0
	case v1alpha1.AnalysisPhaseFailed:
		res.Failed++
		res.Count++
		res.ConsecutiveError = 0
	case v1alpha1.AnalysisPhaseInconclusive:
		res.Inconclusive++
		res.Count++
		res.ConsecutiveError = 0
	case v1alpha1.AnalysisPhaseError:
		res.Error++
		res.ConsecutiveError++
	}
}

// limitsBreached reports which limit a metric's counters passed, in
// Argo's order: failureLimit, then inconclusiveLimit, then
// consecutiveErrorLimit (the last one checked wins).
func limitsBreached(metric *v1alpha1.Metric, res *v1alpha1.MetricResult) (v1alpha1.AnalysisPhase, string, error) {
	var phase v1alpha1.AnalysisPhase
	var msg string
	fl, err := limit(metric.FailureLimit, 0)
	if err != nil {
		return "", "", fmt.Errorf("failureLimit: %w", err)
	}
	il, err := limit(metric.InconclusiveLimit, 0)
	if err != nil {
		return "", "", fmt.Errorf("inconclusiveLimit: %w", err)
	}
	el, err := limit(metric.ConsecutiveErrorLimit, DefaultConsecutiveErrorLimit)
	if err != nil {
		return "", "", fmt.Errorf("consecutiveErrorLimit: %w", err)
	}
	if res.Failed > fl {
		phase, msg = v1alpha1.AnalysisPhaseFailed, fmt.Sprintf("failed (%d) > failureLimit (%d)", res.Failed, fl)
	}
	if res.Inconclusive > il {
		phase, msg = v1alpha1.AnalysisPhaseInconclusive, fmt.Sprintf("inconclusive (%d) > inconclusiveLimit (%d)", res.Inconclusive, il)
	}
	if res.ConsecutiveError > el {
		phase, msg = v1alpha1.AnalysisPhaseError, fmt.Sprintf("consecutiveErrors (%d) > consecutiveErrorLimit (%d)", res.ConsecutiveError, el)
	}
	return phase, msg, nil
}

// MetricPhase is a metric's phase from its result, as Argo's
// assessMetricStatus: Pending before any measurement, Running with one in
// flight, Failed / Inconclusive / Error once a limit is passed,
// Successful once count measurements were taken, and Successful when the
// run terminates (an unbounded metric ends that way).
func MetricPhase(metric *v1alpha1.Metric, res *v1alpha1.MetricResult, terminating bool) (v1alpha1.AnalysisPhase, string) {
	if res.Phase.Completed() {
		return res.Phase, ""
	}
	if len(res.Measurements) == 0 {
		if terminating {
			return v1alpha1.AnalysisPhaseSuccessful, ""
		}
		return v1alpha1.AnalysisPhasePending, ""
	}
	if !res.Measurements[len(res.Measurements)-1].Phase.Completed() {
		return v1alpha1.AnalysisPhaseRunning, ""
	}
	phase, msg, err := limitsBreached(metric, res)
	if err != nil {
		return v1alpha1.AnalysisPhaseError, err.Error()
	}
	if phase != "" {
		return phase, msg
	}
	n, err := EffectiveCount(metric)
	if err != nil {
		return v1alpha1.AnalysisPhaseError, err.Error()
	}
	if n > 0 && res.Count >= n {
		return v1alpha1.AnalysisPhaseSuccessful, ""
	}
	if terminating {
		return v1alpha1.AnalysisPhaseSuccessful, ""
	}
	return v1alpha1.AnalysisPhaseRunning, ""
}

// worse orders the phases from best to worst, as Argo's IsWorse.
var worse = map[v1alpha1.AnalysisPhase]int{
	v1alpha1.AnalysisPhasePending:      0,
	v1alpha1.AnalysisPhaseRunning:      1,
	v1alpha1.AnalysisPhaseSuccessful:   2,
	v1alpha1.AnalysisPhaseInconclusive: 3,
	v1alpha1.AnalysisPhaseError:        4,
	v1alpha1.AnalysisPhaseFailed:       5,
}

// dryRun reports whether a metric runs dry (named, or "*").
func dryRun(spec *v1alpha1.AnalysisRunSpec, name string) bool {
	for _, d := range spec.DryRun {
		if d.MetricName == name || d.MetricName == "*" {
			return true
		}
	}
	return false
}

// Terminating reports whether a run is stopping: terminate was set, or a
// metric that is not a dry run has Failed, Errored or is Inconclusive (the
// run's result is then decided; no new measurements start).
func Terminating(run *v1alpha1.AnalysisRun) bool {
	if run.Spec.Terminate {
		return true
	}
	for _, r := range run.Status.MetricResults {
		switch r.Phase {
		case v1alpha1.AnalysisPhaseFailed, v1alpha1.AnalysisPhaseError, v1alpha1.AnalysisPhaseInconclusive:
			if !r.DryRun {
				return true
			}
		}
	}
	return false
}

// Assess updates each metric's phase and message and the run's phase,
// message and summaries, as Argo's assessRunStatus: the run is Running
// until every metric has completed, then takes the worst metric's phase;
// dry-run metrics are counted in dryRunSummary and never decide.
func Assess(run *v1alpha1.AnalysisRun, now time.Time) {
	if run.Status.StartedAt == nil {
		t := metav1.NewTime(now)
		run.Status.StartedAt = &t
	}
	if run.Status.Phase.Completed() {
		return
	}
	terminating := Terminating(run)
	var worst v1alpha1.AnalysisPhase
	var worstMsg string
	if run.Spec.Terminate {
		worstMsg = "Run Terminated"
	}
	var sum, drySum v1alpha1.RunSummary
	everything := true
	for i := range run.Spec.Metrics {
		metric := &run.Spec.Metrics[i]
		dry := dryRun(&run.Spec, metric.Name)
		count := &sum
		if dry {
			count = &drySum
		}
		count.Count++
		res := result(run, metric.Name)
		if res == nil {
			everything = false
			continue
		}
		res.DryRun = dry
		phase, msg := MetricPhase(metric, res, terminating)
		if phase.Completed() && msg == "" {
			// As Argo, the message names the limit passed, whenever the
			// metric was decided.
			_, msg, _ = limitsBreached(metric, res)
		}
		if phase != res.Phase {
			if last := lastMeasurement(res); last != nil {
				res.Message = last.Message
			}
			res.Phase = phase
		}
		if !phase.Completed() {
			everything = false
			continue
		}
		switch phase {
		case v1alpha1.AnalysisPhaseError:
			count.Error++
		case v1alpha1.AnalysisPhaseFailed:
			count.Failed++
		case v1alpha1.AnalysisPhaseInconclusive:
			count.Inconclusive++
		default:
			count.Successful++
		}
		if dry {
			if msg != "" {
				res.Message = fmt.Sprintf("Metric assessed %s due to %s", phase, msg)
			}
			if worst == "" {
				worst = v1alpha1.AnalysisPhaseSuccessful
			}
			continue
		}
		if worst == "" || worse[phase] > worse[worst] {
			worst = phase
			if msg != "" {
				worstMsg = fmt.Sprintf("Metric %q assessed %s due to %s", metric.Name, phase, msg)
				if res.Message != "" {
					worstMsg += fmt.Sprintf(": \"Error Message: %s\"", res.Message)
				}
			}
		}
	}
	run.Status.RunSummary = sum
	run.Status.DryRunSummary = &drySum
	if !terminating && Terminating(run) {
		// A metric decided the run in this pass: the others end now (an
		// unbounded or unfinished metric is Successful when terminated).
		Assess(run, now)
		return
	}
	switch {
	case terminating && worst == "":
		run.Status.Phase, run.Status.Message = v1alpha1.AnalysisPhaseSuccessful, worstMsg
	case terminating:
		run.Status.Phase, run.Status.Message = worst, worstMsg
	case !everything || worst == "":
		run.Status.Phase, run.Status.Message = v1alpha1.AnalysisPhaseRunning, ""
	default:
		run.Status.Phase, run.Status.Message = worst, worstMsg
	}
}

func result(run *v1alpha1.AnalysisRun, name string) *v1alpha1.MetricResult {
	for i := range run.Status.MetricResults {
		if run.Status.MetricResults[i].Name == name {
			return &run.Status.MetricResults[i]
		}
	}
	return nil
}

func lastMeasurement(res *v1alpha1.MetricResult) *v1alpha1.Measurement {
	if res == nil || len(res.Measurements) == 0 {
		return nil
	}
	return &res.Measurements[len(res.Measurements)-1]
}

// Due reports whether a metric is to be measured at now, and otherwise
// when it next is (zero: never again). A measurement in flight is due at
// its resumeAt; the first waits for initialDelay after the run started;
// later ones for interval after the last finished, or 10 s after an error
// (Argo's retry interval, whatever the interval); none once count is reached, or the metric or the
// run is decided.
func Due(run *v1alpha1.AnalysisRun, metric *v1alpha1.Metric, now time.Time) (bool, time.Time) {
	res := result(run, metric.Name)
	if res != nil && res.Phase.Completed() {
		return false, time.Time{}
	}
	last := lastMeasurement(res)
	if last != nil && last.FinishedAt == nil {
		if last.ResumeAt != nil && last.ResumeAt.After(now) {
			return false, last.ResumeAt.Time
		}
		return true, now
	}
	if Terminating(run) {
		return false, time.Time{}
	}
	if last == nil {
		if metric.InitialDelay != "" && run.Status.StartedAt != nil {
			d, err := metric.InitialDelay.Parse()
			if err == nil && run.Status.StartedAt.Add(d).After(now) {
				return false, run.Status.StartedAt.Add(d)
			}
		}
		return true, now
	}
	if n, err := EffectiveCount(metric); err == nil && n > 0 && res.Count >= n {
		return false, time.Time{}
	}
	interval := DefaultErrorRetryInterval
	if last.Phase != v1alpha1.AnalysisPhaseError {
		if metric.Interval == "" {
			return false, time.Time{}
		}
		d, err := metric.Interval.Parse()
		if err != nil {
			return false, time.Time{}
		}
		interval = d
	}
	next := last.FinishedAt.Add(interval)
	if !now.Before(next) {
		return true, now
	}
	return false, next
}

// Retention is how many measurements a metric keeps: its
// measurementRetention (by name, or "*"), else 10.
func Retention(spec *v1alpha1.AnalysisRunSpec, name string) int { return retention(spec, name) }

// retention is how many measurements a metric keeps (default 10).
func retention(spec *v1alpha1.AnalysisRunSpec, name string) int {
	for _, r := range spec.MeasurementRetention {
		if (r.MetricName == name || r.MetricName == "*") && r.Limit > 0 {
			return int(r.Limit)
		}
	}
	return DefaultMeasurementRetention
}

// Step takes the measurements that are due with p, judges them, accounts
// them, trims each metric's history to its retention, and assesses the run.
// vals are the run's resolved arguments (ArgValues). It returns when the run
// next needs a look (zero: it has completed or waits on nothing).
func Step(ctx context.Context, run *v1alpha1.AnalysisRun, vals map[string]string, p Provider, now time.Time) time.Time {
	if run.Status.Phase.Completed() {
		return time.Time{}
	}
	if run.Status.StartedAt == nil {
		t := metav1.NewTime(now)
		run.Status.StartedAt = &t
	}
	if errs := run.Validate(); len(errs) > 0 {
		run.Status.Phase = v1alpha1.AnalysisPhaseError
		run.Status.Message = "analysis spec invalid: " + errs.ToAggregate().Error()
		return time.Time{}
	}
	terminating := Terminating(run)
	for i := range run.Spec.Metrics {
		metric := &run.Spec.Metrics[i]
		due, _ := Due(run, metric, now)
		if !due {
			continue
		}
		res := result(run, metric.Name)
		if res == nil {
			run.Status.MetricResults = append(run.Status.MetricResults, v1alpha1.MetricResult{Name: metric.Name, Phase: v1alpha1.AnalysisPhaseRunning})
			res = &run.Status.MetricResults[len(run.Status.MetricResults)-1]
		}
		inFlight := lastMeasurement(res)
		if inFlight != nil && inFlight.FinishedAt != nil {
			inFlight = nil
		}
		m := measure(ctx, run, metric, vals, p, inFlight, terminating, now)
		if m.Phase.Completed() {
			Record(res, m)
		}
		if inFlight != nil {
			*inFlight = m
		} else {
			res.Measurements = append(res.Measurements, m)
		}
		if keep := retention(&run.Spec, metric.Name); len(res.Measurements) > keep {
			res.Measurements = append([]v1alpha1.Measurement(nil), res.Measurements[len(res.Measurements)-keep:]...)
		}
	}
	Assess(run, now)
	var next time.Time
	for i := range run.Spec.Metrics {
		if _, at := Due(run, &run.Spec.Metrics[i], now); !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	if run.Status.Phase.Completed() {
		return time.Time{}
	}
	return next
}

// measure takes (or resumes, or ends) one measurement.
func measure(ctx context.Context, run *v1alpha1.AnalysisRun, metric *v1alpha1.Metric, vals map[string]string, p Provider, inFlight *v1alpha1.Measurement, terminating bool, now time.Time) v1alpha1.Measurement {
	t := metav1.NewTime(now)
	var m v1alpha1.Measurement
	if inFlight != nil {
		m = *inFlight.DeepCopy()
	} else {
		m.StartedAt = &t
	}
	finish := func(phase v1alpha1.AnalysisPhase, msg string) v1alpha1.Measurement {
		m.Phase, m.Message, m.FinishedAt, m.ResumeAt = phase, msg, &t, nil
		return m
	}
	resolved, err := Substitute(*metric, vals)
	if err != nil {
		return finish(v1alpha1.AnalysisPhaseError, err.Error())
	}
	if inFlight != nil && terminating {
		if term, ok := p.(Terminator); ok {
			if err := term.Terminate(ctx, run, resolved, inFlight); err != nil {
				return finish(v1alpha1.AnalysisPhaseError, err.Error())
			}
		}
		return finish(v1alpha1.AnalysisPhaseSuccessful, "Metric Terminated")
	}
	r, err := p.Measure(ctx, run, resolved, inFlight)
	if err != nil {
		return finish(v1alpha1.AnalysisPhaseError, err.Error())
	}
	if len(r.Metadata) > 0 {
		if m.Metadata == nil {
			m.Metadata = map[string]string{}
		}
		for k, v := range r.Metadata {
			m.Metadata[k] = v
		}
	}
	if r.ResumeAfter > 0 {
		m.Phase = v1alpha1.AnalysisPhaseRunning
		at := metav1.NewTime(now.Add(r.ResumeAfter))
		m.ResumeAt = &at
		return m
	}
	m.Value = r.Text
	if m.Value == "" {
		m.Value = format(r.Value)
	}
	if r.Phase != "" {
		return finish(r.Phase, r.Message)
	}
	phase, msg := JudgeResult(&resolved, r)
	return finish(phase, msg)
}

// format writes a value as Argo records it: numbers plainly, lists as
// [a,b], other values as JSON.
func format(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case []float64:
		parts := make([]string, len(x))
		for i, f := range x {
			parts[i] = strconv.FormatFloat(f, 'f', -1, 64)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case string:
		return x
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
