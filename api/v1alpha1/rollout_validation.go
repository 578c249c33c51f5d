package v1alpha1

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// PauseDuration returns how long a pause step waits, with Argo Rollouts'
// reading of the field: a number is seconds, a string is seconds when it is
// a bare integer ("30") and otherwise a Go duration ("30s", "1h") truncated
// to whole seconds. timed is false for a pause without a duration, which
// waits for promote.
func (p *RolloutPause) PauseDuration() (d time.Duration, timed bool, err error) {
	if p == nil || p.Duration == nil {
		return 0, false, nil
	}
	var secs int64
	switch p.Duration.Type {
	case intstr.Int:
		secs = int64(p.Duration.IntVal)
	default:
		s := p.Duration.StrVal
		if n, err := strconv.ParseInt(s, 10, 32); err == nil {
			secs = n
		} else {
			v, err := time.ParseDuration(s)
			if err != nil {
				return 0, true, fmt.Errorf(`%q is neither a number of seconds nor a duration such as "30s" or "1h"`, s)
			}
			secs = int64(v / time.Second)
		}
	}
	if secs < 0 {
		return 0, true, fmt.Errorf("%s is negative", p.Duration.String())
	}
	return time.Duration(secs) * time.Second, true, nil
}

// Validate checks a Rollout for what its CRD schema cannot express: one
// strategy, one action per step, consistent services, a template or a
// workloadRef, durations and percentages. The controller reports these in
// the Rollout's InvalidSpec condition and does not act on the Rollout.
func (r *Rollout) Validate() field.ErrorList {
	var errs field.ErrorList
	if r.Name == "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "name"), ""))
	}
	spec := field.NewPath("spec")
	s := &r.Spec

	if s.Replicas != nil && *s.Replicas < 0 {
		errs = append(errs, field.Invalid(spec.Child("replicas"), *s.Replicas, "must not be negative"))
	}
	hasTemplate := s.Template != nil && (len(s.Template.Labels) > 0 || len(s.Template.Annotations) > 0 || len(s.Template.Spec.Containers) > 0)
	switch {
	case s.WorkloadRef != nil && hasTemplate:
		errs = append(errs, field.Forbidden(spec.Child("template"), "a Rollout with a workloadRef takes its template from the workload: leave template empty"))
	case s.WorkloadRef == nil && !hasTemplate:
		errs = append(errs, field.Required(spec.Child("template"), "a pod template, or a workloadRef to a Deployment"))
	}
	if ref := s.WorkloadRef; ref != nil {
		path := spec.Child("workloadRef")
		if ref.Kind != "Deployment" {
			errs = append(errs, field.NotSupported(path.Child("kind"), ref.Kind, []string{"Deployment"}))
		}
		if ref.APIVersion != "" && ref.APIVersion != "apps/v1" {
			errs = append(errs, field.NotSupported(path.Child("apiVersion"), ref.APIVersion, []string{"apps/v1"}))
		}
		if ref.Name == "" {
			errs = append(errs, field.Required(path.Child("name"), "the Deployment's name"))
		}
		switch ref.ScaleDown {
		case "", ScaleDownNever, ScaleDownOnSuccess, ScaleDownProgressively:
		default:
			errs = append(errs, field.NotSupported(path.Child("scaleDown"), ref.ScaleDown, []string{ScaleDownNever, ScaleDownOnSuccess, ScaleDownProgressively}))
		}
	}
	if s.Selector == nil {
		if s.WorkloadRef == nil {
			errs = append(errs, field.Required(spec.Child("selector"), "a label selector matching the template's labels"))
		}
	} else {
		sel, err := metav1.LabelSelectorAsSelector(s.Selector)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(spec.Child("selector"), s.Selector.String(), err.Error()))
		case sel.Empty():
			errs = append(errs, field.Invalid(spec.Child("selector"), s.Selector.String(), "must not be empty: it would select every pod of the namespace"))
		case hasTemplate && !sel.Matches(labels.Set(s.Template.Labels)):
			errs = append(errs, field.Invalid(spec.Child("selector"), s.Selector.String(), "must match the template's labels"))
		}
	}
	if d := s.ProgressDeadlineSeconds; d != nil && *d <= s.MinReadySeconds {
		errs = append(errs, field.Invalid(spec.Child("progressDeadlineSeconds"), *d, fmt.Sprintf("must be greater than minReadySeconds (%d)", s.MinReadySeconds)))
	}

	strat := spec.Child("strategy")
	switch {
	case s.Strategy.Canary != nil && s.Strategy.BlueGreen != nil:
		errs = append(errs, field.Forbidden(strat, "set either canary or blueGreen, not both"))
	case s.Strategy.Canary == nil && s.Strategy.BlueGreen == nil:
		errs = append(errs, field.Required(strat, "a canary or a blueGreen strategy"))
	case s.Strategy.Canary != nil:
		errs = append(errs, s.Strategy.Canary.validate(strat.Child("canary"))...)
	default:
		errs = append(errs, s.Strategy.BlueGreen.validate(strat.Child("blueGreen"))...)
	}
	return errs
}

func (c *CanaryStrategy) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if c.CanaryService != "" && c.CanaryService == c.StableService {
		errs = append(errs, field.Invalid(path.Child("canaryService"), c.CanaryService, "must differ from stableService"))
	}
	tr := c.TrafficRouting
	if tr != nil {
		trPath := path.Child("trafficRouting")
		if c.StableService == "" {
			errs = append(errs, field.Required(path.Child("stableService"), "traffic routing needs the stable Service"))
		}
		if c.CanaryService == "" {
			errs = append(errs, field.Required(path.Child("canaryService"), "traffic routing needs the canary Service"))
		}
		if tr.Meridian != nil && tr.SMI != nil {
			errs = append(errs, field.Forbidden(trPath, "set either meridian or smi, not both"))
		}
		if m := tr.Meridian; m != nil && m.HTTPRoute != "" && m.TrafficSplit != "" {
			errs = append(errs, field.Forbidden(trPath.Child("meridian"), "name either an httpRoute or a trafficSplit, not both"))
		}
		if tr.Meridian == nil && tr.SMI == nil && len(tr.Plugins) > 0 {
			errs = append(errs, field.NotSupported(trPath.Child("plugins"), keysOf(tr.Plugins), []string{"meridian", "smi"}))
		}
		seen := map[string]bool{}
		for i, r := range tr.ManagedRoutes {
			if seen[r.Name] {
				errs = append(errs, field.Duplicate(trPath.Child("managedRoutes").Index(i).Child("name"), r.Name))
			}
			seen[r.Name] = true
		}
	}
	errs = append(errs, validateSurge(path, c.MaxSurge, c.MaxUnavailable)...)

	steps := path.Child("steps")
	for i := range c.Steps {
		st := &c.Steps[i]
		p := steps.Index(i)
		n := 0
		if st.SetWeight != nil {
			n++
			if w := *st.SetWeight; w < 0 || w > 100 {
				errs = append(errs, field.Invalid(p.Child("setWeight"), w, "must be a percentage from 0 to 100"))
			}
		}
		if st.Pause != nil {
			n++
			if _, _, err := st.Pause.PauseDuration(); err != nil {
				errs = append(errs, field.Invalid(p.Child("pause", "duration"), st.Pause.Duration.String(), err.Error()))
			}
		}
		if st.Analysis != nil {
			n++
			errs = append(errs, st.Analysis.validate(p.Child("analysis"))...)
		}
		if sc := st.SetCanaryScale; sc != nil {
			n++
			m := 0
			if sc.Weight != nil {
				m++
				if *sc.Weight < 0 || *sc.Weight > 100 {
					errs = append(errs, field.Invalid(p.Child("setCanaryScale", "weight"), *sc.Weight, "must be a percentage from 0 to 100"))
				}
			}
			if sc.Replicas != nil {
				m++
				if *sc.Replicas < 0 {
					errs = append(errs, field.Invalid(p.Child("setCanaryScale", "replicas"), *sc.Replicas, "must not be negative"))
				}
			}
			if sc.MatchTrafficWeight {
				m++
			}
			if m != 1 {
				errs = append(errs, field.Invalid(p.Child("setCanaryScale"), m, "set exactly one of weight, replicas and matchTrafficWeight"))
			}
			if tr == nil {
				errs = append(errs, field.Forbidden(p.Child("setCanaryScale"), "needs trafficRouting: without it replicas are the traffic split"))
			}
		}
		if hr := st.SetHeaderRoute; hr != nil {
			n++
			hp := p.Child("setHeaderRoute")
			if tr == nil {
				errs = append(errs, field.Forbidden(hp, "needs trafficRouting with managedRoutes"))
			} else if !hasManagedRoute(tr, hr.Name) {
				errs = append(errs, field.Invalid(hp.Child("name"), hr.Name, "must be one of trafficRouting.managedRoutes"))
			}
			for j, m := range hr.Match {
				mp := hp.Child("match").Index(j)
				if m.HeaderName == "" {
					errs = append(errs, field.Required(mp.Child("headerName"), ""))
				}
				errs = append(errs, m.HeaderValue.validate(mp.Child("headerValue"))...)
			}
		}
		if n != 1 {
			errs = append(errs, field.Invalid(p, n, "a step sets exactly one of setWeight, pause, analysis, setCanaryScale and setHeaderRoute"))
		}
	}
	if a := c.Analysis; a != nil {
		errs = append(errs, a.RolloutAnalysis.validate(path.Child("analysis"))...)
		if a.StartingStep != nil && (*a.StartingStep < 0 || int(*a.StartingStep) > len(c.Steps)) {
			errs = append(errs, field.Invalid(path.Child("analysis", "startingStep"), *a.StartingStep, fmt.Sprintf("must be a step index from 0 to %d", len(c.Steps))))
		}
	}
	return errs
}

func (b *BlueGreenStrategy) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if b.ActiveService == "" {
		errs = append(errs, field.Required(path.Child("activeService"), ""))
	}
	if b.PreviewService != "" && b.PreviewService == b.ActiveService {
		errs = append(errs, field.Invalid(path.Child("previewService"), b.PreviewService, "must differ from activeService"))
	}
	if b.AutoPromotionSeconds < 0 {
		errs = append(errs, field.Invalid(path.Child("autoPromotionSeconds"), b.AutoPromotionSeconds, "must not be negative"))
	}
	if b.MaxUnavailable != nil {
		errs = append(errs, validateIntOrPercent(path.Child("maxUnavailable"), b.MaxUnavailable)...)
	}
	if b.PrePromotionAnalysis != nil {
		errs = append(errs, b.PrePromotionAnalysis.validate(path.Child("prePromotionAnalysis"))...)
	}
	if b.PostPromotionAnalysis != nil {
		errs = append(errs, b.PostPromotionAnalysis.validate(path.Child("postPromotionAnalysis"))...)
	}
	return errs
}

func (a *RolloutAnalysis) validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(a.Templates) == 0 {
		errs = append(errs, field.Required(path.Child("templates"), "at least one AnalysisTemplate"))
	}
	for i, t := range a.Templates {
		if t.TemplateName == "" {
			errs = append(errs, field.Required(path.Child("templates").Index(i).Child("templateName"), ""))
		}
	}
	seen := map[string]bool{}
	for i, arg := range a.Args {
		p := path.Child("args").Index(i)
		if arg.Name == "" {
			errs = append(errs, field.Required(p.Child("name"), ""))
		} else if seen[arg.Name] {
			errs = append(errs, field.Duplicate(p.Child("name"), arg.Name))
		}
		seen[arg.Name] = true
		if vf := arg.ValueFrom; vf != nil {
			if arg.Value != "" {
				errs = append(errs, field.Forbidden(p.Child("valueFrom"), "set either value or valueFrom, not both"))
			}
			if (vf.PodTemplateHashValue == nil) == (vf.FieldRef == nil) {
				errs = append(errs, field.Invalid(p.Child("valueFrom"), "", "set exactly one of podTemplateHashValue and fieldRef"))
			}
			if h := vf.PodTemplateHashValue; h != nil && *h != Stable && *h != Latest {
				errs = append(errs, field.NotSupported(p.Child("valueFrom", "podTemplateHashValue"), string(*h), []string{string(Stable), string(Latest)}))
			}
		}
	}
	return errs
}

func (m *StringMatch) validate(path *field.Path) field.ErrorList {
	if m == nil {
		return field.ErrorList{field.Required(path, "one of exact, prefix and regex")}
	}
	n := 0
	for _, s := range []string{m.Exact, m.Prefix, m.Regex} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return field.ErrorList{field.Invalid(path, n, "set exactly one of exact, prefix and regex")}
	}
	if m.Regex != "" {
		if _, err := regexp.Compile(m.Regex); err != nil {
			return field.ErrorList{field.Invalid(path.Child("regex"), m.Regex, err.Error())}
		}
	}
	return nil
}

func validateSurge(path *field.Path, surge, unavailable *intstr.IntOrString) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, validateIntOrPercent(path.Child("maxSurge"), surge)...)
	errs = append(errs, validateIntOrPercent(path.Child("maxUnavailable"), unavailable)...)
	if isZero(surge) && isZero(unavailable) {
		errs = append(errs, field.Invalid(path.Child("maxUnavailable"), unavailable.String(), "maxSurge and maxUnavailable cannot both be 0"))
	}
	return errs
}

func isZero(v *intstr.IntOrString) bool {
	if v == nil {
		return false
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(v, 100, true)
	return err == nil && n == 0
}

func validateIntOrPercent(path *field.Path, v *intstr.IntOrString) field.ErrorList {
	if v == nil {
		return nil
	}
	if v.Type == intstr.Int {
		if v.IntVal < 0 {
			return field.ErrorList{field.Invalid(path, v.IntVal, "must not be negative")}
		}
		return nil
	}
	s, ok := strings.CutSuffix(v.StrVal, "%")
	n, err := strconv.Atoi(s)
	if !ok || err != nil || n < 0 || n > 100 {
		return field.ErrorList{field.Invalid(path, v.StrVal, `must be a number or a percentage from "0%" to "100%"`)}
	}
	return nil
}

func hasManagedRoute(tr *RolloutTrafficRouting, name string) bool {
	for _, r := range tr.ManagedRoutes {
		if r.Name == name {
			return true
		}
	}
	return false
}

func keysOf[V any](m map[string]V) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return strings.Join(ks, ",")
}

// argRef matches an argument placeholder, which Argo resolves before it
// reads the field.
var argRef = regexp.MustCompile(`\{\{\s*args\.[A-Za-z0-9_.-]+\s*\}\}`)

// Validate checks an AnalysisTemplate's spec.
func (t *AnalysisTemplate) Validate() field.ErrorList {
	errs := validateName(t.Name)
	return append(errs, t.Spec.validate(field.NewPath("spec"), t.Spec.Metrics, t.Spec.Args, t.Spec.DryRun, t.Spec.MeasurementRetention)...)
}

// Validate checks a ClusterAnalysisTemplate's spec.
func (t *ClusterAnalysisTemplate) Validate() field.ErrorList {
	errs := validateName(t.Name)
	return append(errs, t.Spec.validate(field.NewPath("spec"), t.Spec.Metrics, t.Spec.Args, t.Spec.DryRun, t.Spec.MeasurementRetention)...)
}

// Validate checks an AnalysisRun's spec. Expressions are compiled by the
// analysis runner (controlplane/rollouts/analysis), which fails the run
// with the compiler's message.
func (r *AnalysisRun) Validate() field.ErrorList {
	errs := validateName(r.Name)
	return append(errs, (&AnalysisTemplateSpec{}).validate(field.NewPath("spec"), r.Spec.Metrics, r.Spec.Args, r.Spec.DryRun, r.Spec.MeasurementRetention)...)
}

func validateName(name string) field.ErrorList {
	if name == "" {
		return field.ErrorList{field.Required(field.NewPath("metadata", "name"), "")}
	}
	return nil
}

func (*AnalysisTemplateSpec) validate(path *field.Path, metrics []Metric, args []Argument, dryRun []DryRun, retention []MeasurementRetention) field.ErrorList {
	var errs field.ErrorList
	if len(metrics) == 0 {
		errs = append(errs, field.Required(path.Child("metrics"), "at least one metric"))
	}
	names := map[string]bool{}
	for i := range metrics {
		m := &metrics[i]
		p := path.Child("metrics").Index(i)
		if m.Name == "" {
			errs = append(errs, field.Required(p.Child("name"), ""))
		} else if names[m.Name] {
			errs = append(errs, field.Duplicate(p.Child("name"), m.Name))
		}
		names[m.Name] = true
		errs = append(errs, m.validate(p)...)
	}
	argNames := map[string]bool{}
	for i, a := range args {
		p := path.Child("args").Index(i)
		if a.Name == "" {
			errs = append(errs, field.Required(p.Child("name"), ""))
		} else if argNames[a.Name] {
			errs = append(errs, field.Duplicate(p.Child("name"), a.Name))
		}
		argNames[a.Name] = true
		if vf := a.ValueFrom; vf != nil {
			if a.Value != nil {
				errs = append(errs, field.Forbidden(p.Child("valueFrom"), "set either value or valueFrom, not both"))
			}
			if (vf.SecretKeyRef == nil) == (vf.FieldRef == nil) {
				errs = append(errs, field.Invalid(p.Child("valueFrom"), "", "set exactly one of secretKeyRef and fieldRef"))
			}
		}
	}
	for i, d := range dryRun {
		if d.MetricName != "*" && !names[d.MetricName] {
			errs = append(errs, field.NotFound(path.Child("dryRun").Index(i).Child("metricName"), d.MetricName))
		}
	}
	for i, r := range retention {
		p := path.Child("measurementRetention").Index(i)
		if r.MetricName != "*" && !names[r.MetricName] {
			errs = append(errs, field.NotFound(p.Child("metricName"), r.MetricName))
		}
		if r.Limit < 1 {
			errs = append(errs, field.Invalid(p.Child("limit"), r.Limit, "must be at least 1"))
		}
	}
	return errs
}

func (m *Metric) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, d := range []struct {
		name string
		v    Duration
	}{{"interval", m.Interval}, {"initialDelay", m.InitialDelay}} {
		if d.v == "" || argRef.MatchString(string(d.v)) {
			continue
		}
		if _, err := d.v.Parse(); err != nil {
			errs = append(errs, field.Invalid(p.Child(d.name), string(d.v), `must be a duration such as "30s" or "5m"`))
		}
	}
	for _, l := range []struct {
		name string
		v    *intstr.IntOrString
		min  int
	}{{"count", m.Count, 0}, {"failureLimit", m.FailureLimit, 0}, {"inconclusiveLimit", m.InconclusiveLimit, 0}, {"consecutiveErrorLimit", m.ConsecutiveErrorLimit, 0}} {
		if l.v == nil {
			continue
		}
		n, ok, placeholder := intOrArg(l.v)
		switch {
		case placeholder:
		case !ok:
			errs = append(errs, field.Invalid(p.Child(l.name), l.v.String(), "must be a number or {{args.NAME}}"))
		case n < l.min:
			errs = append(errs, field.Invalid(p.Child(l.name), n, fmt.Sprintf("must be at least %d", l.min)))
		}
	}
	if m.Count != nil && m.Interval == "" {
		if n, ok, _ := intOrArg(m.Count); ok && n > 1 {
			errs = append(errs, field.Required(p.Child("interval"), "a count above 1 needs an interval between the measurements"))
		}
	}
	pp := p.Child("provider")
	n := 0
	if mm := m.Provider.Meridian; mm != nil {
		n++
		if mm.Window != "" {
			if d, err := mm.Window.Parse(); err != nil || d <= 0 {
				errs = append(errs, field.Invalid(pp.Child("meridian", "window"), string(mm.Window), `must be a positive duration such as "1m"`))
			}
		}
		if mm.MinRequests != nil && *mm.MinRequests < 0 {
			errs = append(errs, field.Invalid(pp.Child("meridian", "minRequests"), *mm.MinRequests, "must not be negative"))
		}
		switch mm.Metric {
		case MeridianSuccessRate, MeridianRequestRate, MeridianLatencyP50, MeridianLatencyP95, MeridianLatencyP99:
		default:
			errs = append(errs, field.NotSupported(pp.Child("meridian", "metric"), string(mm.Metric), []string{
				string(MeridianSuccessRate), string(MeridianRequestRate), string(MeridianLatencyP50), string(MeridianLatencyP95), string(MeridianLatencyP99)}))
		}
		switch mm.Target {
		case "", MeridianTargetCanary, MeridianTargetStable:
		default:
			errs = append(errs, field.NotSupported(pp.Child("meridian", "target"), string(mm.Target), []string{string(MeridianTargetCanary), string(MeridianTargetStable)}))
		}
	}
	if pm := m.Provider.Prometheus; pm != nil {
		n++
		if pm.Query == "" {
			errs = append(errs, field.Required(pp.Child("prometheus", "query"), "a PromQL query"))
		}
	}
	if w := m.Provider.Web; w != nil {
		n++
		if w.URL == "" {
			errs = append(errs, field.Required(pp.Child("web", "url"), ""))
		}
		if (w.Body != "" || len(w.JSONBody) > 0) && (w.Method == "" || w.Method == "GET") {
			errs = append(errs, field.Forbidden(pp.Child("web", "body"), "a body needs method POST or PUT"))
		}
		if w.Body != "" && len(w.JSONBody) > 0 {
			errs = append(errs, field.Forbidden(pp.Child("web", "jsonBody"), "set either body or jsonBody, not both"))
		}
	}
	if m.Provider.Job != nil {
		n++
	}
	if n != 1 {
		errs = append(errs, field.Invalid(pp, n, "set exactly one of meridian, prometheus, web and job"))
	}
	return errs
}

// intOrArg reads an IntOrString limit: a number, a string holding one, or
// an {{args.NAME}} placeholder (resolved when the run is made).
func intOrArg(v *intstr.IntOrString) (n int, ok, placeholder bool) {
	if v.Type == intstr.Int {
		return int(v.IntVal), true, false
	}
	if argRef.MatchString(v.StrVal) {
		return 0, false, true
	}
	n, err := strconv.Atoi(strings.TrimSpace(v.StrVal))
	return n, err == nil, false
}
