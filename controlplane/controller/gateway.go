package controller

import (
	"context"
	"log/slog"

	"k8s.io/client-go/kubernetes"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	compilegateway "github.com/meridian-mesh/meridian/controlplane/compile/gateway"
	"github.com/meridian-mesh/meridian/controlplane/controller/runnable"
	"github.com/meridian-mesh/meridian/controlplane/gateway/reconciler"
	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// gatewayReconciler is the gateway's writer (kube mode): it provisions the
// Gateways of Meridian's class with proxies configured as proxy says and
// writes the Gateway API statuses, once the store has synced.
func gatewayReconciler(o Options, st *store.Store, synced <-chan struct{}, proxy inject.Config, log *slog.Logger) (runnable.Runnable, error) {
	cs, err := kubernetes.NewForConfig(o.RestConfig)
	if err != nil {
		return nil, err
	}
	gc, err := gwclient.NewForConfig(o.RestConfig)
	if err != nil {
		return nil, err
	}
	r := reconciler.New(reconciler.Options{
		Store: st, Kube: cs, Gateway: gc, Proxy: proxy, Log: log, Synced: synced,
		Compile: compilegateway.Options{ClusterDomain: o.ClusterDomain},
	})
	return runnable.Func(func(ctx context.Context) error { return r.Start(ctx) }), nil
}
