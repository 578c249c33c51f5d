package controller

import (
	"context"
	"log/slog"

	"github.com/meridian-mesh/meridian/controlplane/controller/runnable"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/reconciler"
)

// rolloutsReconciler is the Rollouts' writer (kube mode, leader only): it
// carries out what the step machine decides for every Rollout.
func rolloutsReconciler(o Options, log *slog.Logger) (runnable.Runnable, error) {
	r, err := reconciler.New(reconciler.Options{
		Config:  o.RestConfig,
		Routers: o.RolloutRouters,
		Log:     log,
	})
	if err != nil {
		return nil, err
	}
	return runnable.Func(func(ctx context.Context) error { return r.Start(ctx) }), nil
}
