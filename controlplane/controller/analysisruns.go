package controller

import (
	"log/slog"

	"github.com/meridian-mesh/meridian/controlplane/controller/runnable"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysisrun"
)

// analysisRunner is the AnalysisRun runner (controlplane/rollouts/analysisrun),
// a writer: kube mode with --analysis-run-workers > 0 and a namespace for
// the Lease only; nil otherwise.
func analysisRunner(o Options, log *slog.Logger) (runnable.Runnable, error) {
	if o.Store != "kube" || o.AnalysisRunWorkers <= 0 {
		return nil, nil
	}
	if o.LeaderElection.Namespace == "" && o.Webhook.Namespace == "" {
		// Writers run under the Lease, which needs a namespace: a controller
		// run by hand without one keeps serving, without the runner.
		log.Warn("the AnalysisRun runner is off: it runs under the Lease, which needs --namespace (or $POD_NAMESPACE)")
		return nil, nil
	}
	c, err := analysisrun.New(o.RestConfig, analysisrun.Options{Workers: o.AnalysisRunWorkers, Log: log.With("component", "analysisrun")})
	if err != nil {
		return nil, err
	}
	return runnable.Named("analysisrun runner", c), nil
}
