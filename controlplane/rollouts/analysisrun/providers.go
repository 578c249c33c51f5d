package analysisrun

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/types"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysis"
)

// Providers takes each metric's measurements with the provider its spec
// names: one analysis.Provider (and Terminator) for the runner.
type Providers struct {
	Meridian, Prometheus, Web, Job analysis.Provider
}

var (
	_ analysis.Provider   = Providers{}
	_ analysis.Terminator = Providers{}
)

// For is the provider of a metric.
func (p Providers) For(metric *v1alpha1.Metric) (analysis.Provider, error) {
	var pr analysis.Provider
	var name string
	switch mp := metric.Provider; {
	case mp.Meridian != nil:
		pr, name = p.Meridian, "meridian"
	case mp.Prometheus != nil:
		pr, name = p.Prometheus, "prometheus"
	case mp.Web != nil:
		pr, name = p.Web, "web"
	case mp.Job != nil:
		pr, name = p.Job, "job"
	default:
		return nil, fmt.Errorf("metric %s: provider: set one of meridian, prometheus, web, job", metric.Name)
	}
	if pr == nil {
		return nil, fmt.Errorf("metric %s: the %s provider is not available in this controller", metric.Name, name)
	}
	return pr, nil
}

// Measure takes a measurement with the metric's provider.
func (p Providers) Measure(ctx context.Context, run *v1alpha1.AnalysisRun, metric v1alpha1.Metric, inFlight *v1alpha1.Measurement) (analysis.Result, error) {
	pr, err := p.For(&metric)
	if err != nil {
		return analysis.Result{}, err
	}
	return pr.Measure(ctx, run, metric, inFlight)
}

// Terminate cleans up an in-flight measurement, when its provider has
// anything to clean up.
func (p Providers) Terminate(ctx context.Context, run *v1alpha1.AnalysisRun, metric v1alpha1.Metric, inFlight *v1alpha1.Measurement) error {
	pr, err := p.For(&metric)
	if err != nil {
		return err
	}
	if t, ok := pr.(analysis.Terminator); ok {
		return t.Terminate(ctx, run, metric, inFlight)
	}
	return nil
}

// finisher is a provider that can tell, cheaply, that an in-flight
// measurement is ready to be taken before its resumeAt (a Job finished).
type finisher interface {
	Finished(ctx context.Context, run *v1alpha1.AnalysisRun, inFlight *v1alpha1.Measurement) bool
}

// forgetter is a provider that keeps state per run (the meridian
// provider's first reads), dropped when the run completes or goes.
type forgetter interface {
	Forget(run types.UID)
}

func (p Providers) forget(uid types.UID) {
	for _, pr := range []analysis.Provider{p.Meridian, p.Prometheus, p.Web, p.Job} {
		if f, ok := pr.(forgetter); ok {
			f.Forget(uid)
		}
	}
}

// collector is a provider that leaves objects behind its measurements (a
// Job each), deleted beyond the metric's measurement retention.
type collector interface {
	GarbageCollect(ctx context.Context, run *v1alpha1.AnalysisRun, metric string, limit int) error
}
