package controller

import (
	"context"
	"log/slog"

	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/controller/runnable"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/reconciler"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/traffic"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// rolloutsReconciler is the Rollouts' writer (kube mode, leader only): it
// carries out what the step machine decides for every Rollout. Without
// Options.RolloutRouters the traffic routers are Meridian's own, verified
// against st, the store the destination API compiles from with copts.
func rolloutsReconciler(o Options, st store.Reader, copts compile.Options, log *slog.Logger) (runnable.Runnable, error) {
	routers := o.RolloutRouters
	if routers == nil {
		rs, err := traffic.NewForConfig(o.RestConfig, st, copts)
		if err != nil {
			return nil, err
		}
		routers = rs.For
	}
	r, err := reconciler.New(reconciler.Options{
		Config:  o.RestConfig,
		Routers: routers,
		Log:     log,
	})
	if err != nil {
		return nil, err
	}
	return runnable.Func(func(ctx context.Context) error { return r.Start(ctx) }), nil
}
