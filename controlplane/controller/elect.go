package controller

import (
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"github.com/meridian-mesh/meridian/controlplane/controller/leader"
	"github.com/meridian-mesh/meridian/controlplane/controller/runnable"
)

// LeaderElectionOptions configure the Lease that decides which replica runs
// the writers; the fields mirror the --leader-election-* flags.
type LeaderElectionOptions struct {
	// Lease is the Lease's name (default DefaultLease).
	Lease string
	// Namespace is the Lease's namespace; empty: Webhook.Namespace (both
	// are the controller's, --namespace).
	Namespace string
	// Identity is this replica's holderIdentity; empty: its host name (the
	// pod's name) and a random suffix.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's (zero:
	// 15s, 10s, 2s). A leader that dies is replaced within LeaseDuration;
	// one that stops releases the Lease and is replaced within RetryPeriod.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// DefaultLease is the name of the Lease the controller's replicas share.
const DefaultLease = "meridian-controller"

// electWriters returns what runs the writers: nil when there are none;
// them as they are in local mode (one process, nothing to elect); else a
// leader.Elector over them.
func electWriters(o Options, src source, writers runnable.Group, reg *prometheus.Registry, log *slog.Logger) (runnable.Runnable, error) {
	if len(writers) == 0 {
		return nil, nil
	}
	if src.local {
		return writers, nil
	}
	le := o.LeaderElection
	if le.Namespace == "" {
		le.Namespace = o.Webhook.Namespace
	}
	if le.Namespace == "" {
		return nil, errors.New("leader election: the Lease needs the controller's namespace (--namespace or $POD_NAMESPACE; without writers — no --webhook-addr, --rollouts=false — none is needed)")
	}
	if le.Lease == "" {
		le.Lease = DefaultLease
	}
	cs, err := kubernetes.NewForConfig(o.RestConfig)
	if err != nil {
		return nil, err
	}
	leading := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "meridian_controller_leader",
		Help: "1 while this replica holds the controller's Lease and runs the writers (the injector's certificate and caBundle), else 0.",
	})
	reg.MustRegister(leading)
	e := &leader.Elector{
		Client: cs.CoordinationV1(), Namespace: le.Namespace, Name: le.Lease, Identity: le.Identity,
		LeaseDuration: le.LeaseDuration, RenewDeadline: le.RenewDeadline, RetryPeriod: le.RetryPeriod,
		Writers: writers, Log: log,
		Leading: func(on bool) {
			if on {
				leading.Set(1)
			} else {
				leading.Set(0)
			}
		},
	}
	if err := e.Check(); err != nil {
		return nil, err
	}
	return runnable.Named("leader election", e), nil
}
