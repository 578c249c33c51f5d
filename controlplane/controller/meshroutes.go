package controller

import (
	"context"
	"log/slog"

	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/controller/runnable"
	"github.com/meridian-mesh/meridian/controlplane/meshroute"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// meshRouteWriter writes the parent statuses of the mesh's GAMMA routes
// (HTTPRoutes and GRPCRoutes with a Service parent), once the store has
// synced (kube mode, leader only).
func meshRouteWriter(o Options, copts compile.Options, st *store.Store, synced <-chan struct{}, log *slog.Logger) (runnable.Runnable, error) {
	gc, err := gwclient.NewForConfig(o.RestConfig)
	if err != nil {
		return nil, err
	}
	w := meshroute.New(meshroute.Options{Store: st, Client: gc, Synced: synced, Log: log, Compile: copts})
	return runnable.Func(func(ctx context.Context) error { return w.Start(ctx) }), nil
}
