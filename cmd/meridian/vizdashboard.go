package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"

	"github.com/meridian-mesh/meridian/cli/kubeclient"
	"github.com/meridian-mesh/meridian/cli/rollout"
	"github.com/meridian-mesh/meridian/viz/dashboard"
)

func newVizDashboardCmd() *cobra.Command {
	var (
		kf       kubeclient.Flags
		addr     string
		refresh  time.Duration
		window   time.Duration
		rollouts bool
	)
	cmd := &cobra.Command{
		Use:   "dashboard ((deploy|sts|ds|pod|ns)[/NAME] | [NAME=]ADMIN_ADDR...)",
		Short: "Serve a web page with the workloads' golden metrics and edges, live",
		Long: `Serves, on --addr, a page that shows what 'viz stat' and 'viz edges' show for
the workloads named, refreshed every --refresh: the proxies are read at each
refresh (through the API server's pod proxy, or at their admin addresses
without a cluster) and the figures are over the last --window (30s: a failure
now and then stays in view), shown on the page.
The workloads' pods are looked up again at each refresh. Ctrl-C stops it.

With --rollouts (the default), the page also shows the Rollouts of the
namespace (every namespace for 'ns', the one named for 'ns/NAME'): their
steps, weights, pause and latest AnalysisRun, and what their stable's and
canary's pods (by rollouts-pod-template-hash) served, side by side. Without
the Rollout CRD installed, that view is skipped.`,
		Example: `  meridian viz dashboard deploy -n emojivoto
  meridian viz dashboard web=127.0.0.1:4191 emoji=127.0.0.1:4192`,
		Args: needArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if refresh < time.Second {
				return fmt.Errorf("--refresh %s: use 1s or more", refresh)
			}
			list, err := dashboardList(kf, args)
			if err != nil {
				return err
			}
			var ros func(context.Context) ([]dashboard.Rollout, error)
			if rollouts {
				if ros, err = dashboardRollouts(kf, args, cmd.ErrOrStderr()); err != nil {
					return err
				}
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("--addr: %w", err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if window < refresh {
				return fmt.Errorf("--window %s: use --refresh (%s) or more", window, refresh)
			}
			d := dashboard.New(dashboard.Options{List: list, Rollouts: ros, Refresh: refresh, Window: window})
			srv := &http.Server{Handler: d, ReadHeaderTimeout: 10 * time.Second}
			go d.Run(ctx)
			go func() { <-ctx.Done(); srv.Close() }()
			fmt.Fprintf(cmd.OutOrStdout(), "viz dashboard on http://%s (Ctrl-C to stop)\n", ln.Addr())
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	kf.Register(cmd)
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:50750", "address to serve the dashboard on")
	cmd.Flags().DurationVar(&refresh, "refresh", 5*time.Second, "how often the proxies are read")
	cmd.Flags().DurationVar(&window, "window", dashboard.DefaultWindow, "how far back the figures go (at least --refresh)")
	cmd.Flags().BoolVar(&rollouts, "rollouts", true, "show the namespace's Rollouts, their stable and canary side by side (skipped when the Rollout CRD is not installed)")
	return cmd
}

// dashboardList resolves the arguments as `viz stat` does, into the
// dashboard's list of workloads: fixed for admin addresses, looked up again
// at each refresh in Kubernetes.
func dashboardList(kf kubeclient.Flags, args []string) (func(context.Context) ([]dashboard.Workload, error), error) {
	fixed, err := adminRows(args)
	if err != nil {
		return nil, err
	}
	if fixed != nil {
		ws := dashboardWorkloads(fixed)
		return func(context.Context) ([]dashboard.Workload, error) { return ws, nil }, nil
	}
	if len(args) != 1 {
		return nil, fmt.Errorf("name one kind of workload (e.g. deploy, or deploy/web), or proxies' admin addresses; not %q", args)
	}
	c, err := kf.Connect()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]dashboard.Workload, error) {
		rows, err := statRows(ctx, c, args[0])
		if err != nil {
			return nil, err
		}
		podSources(rows, c)
		return dashboardWorkloads(rows), nil
	}, nil
}

func dashboardWorkloads(rows []*statRow) []dashboard.Workload {
	var ws []dashboard.Workload
	for _, r := range rows {
		w := dashboard.Workload{Namespace: r.Namespace, Kind: r.Kind, Name: r.Name, Total: r.total}
		for _, s := range r.sources {
			w.Proxies = append(w.Proxies, dashboard.Proxy{Key: s.Name(), Read: s.Metrics})
		}
		ws = append(ws, w)
	}
	return ws
}

// dashboardRollouts is the dashboard's Rollouts in Kubernetes: at each
// refresh, the Rollouts of the namespace the arguments show (all of them
// for "ns", the one named for "ns/NAME"), read as `meridian rollout` reads
// them (cli/rollout), with the proxies of their stable's and canary's pods
// (the pods of the ReplicaSets they own whose rollouts-pod-template-hash is
// status.stableRS / status.currentPodHash), read as the workloads' are. Nil
// for admin addresses (no cluster). Without the Rollout CRD it logs one line
// to log and shows none.
func dashboardRollouts(kf kubeclient.Flags, args []string, log io.Writer) (func(context.Context) ([]dashboard.Rollout, error), error) {
	if fixed, err := adminRows(args); err != nil || fixed != nil || len(args) != 1 {
		return nil, err
	}
	cfg, ns, err := kubeclient.Load(kf.Kubeconfig, kf.Context, kf.Namespace)
	if err != nil {
		return nil, err
	}
	all := false
	if kind, name, _ := strings.Cut(args[0], "/"); slices.Contains([]string{"ns", "namespace", "namespaces"}, strings.ToLower(kind)) {
		if name == "" {
			all = true
		} else {
			ns = name
		}
	}
	kc, err := kubeclient.NewClient(cfg, ns)
	if err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	rc, err := rollout.NewClient(cfg, ns)
	if err != nil {
		return nil, err
	}
	var missing sync.Once
	return func(ctx context.Context) ([]dashboard.Rollout, error) {
		owned, err := rc.ListOwned(ctx, all)
		if errors.Is(err, rollout.ErrNotInstalled) {
			// Not an error of the page: a cluster without Rollouts. Said
			// once; looked up again at each refresh, so a CRD installed
			// later shows.
			missing.Do(func() { fmt.Fprintln(log, "viz dashboard: no rollouts view:", err) })
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		var out []dashboard.Rollout
		for _, o := range owned {
			st := o.Rollout.Status
			r := dashboard.Rollout{Rollout: o.Rollout, Runs: o.Runs, Stable: rolloutProxies(kc, o.Pods[st.StableRS])}
			if st.CurrentPodHash != st.StableRS {
				r.Canary = rolloutProxies(kc, o.Pods[st.CurrentPodHash])
			}
			out = append(out, r)
		}
		return out, nil
	}, nil
}

// rolloutProxies are the proxies of the meshed, running pods among pods,
// read through the API server's pod proxy as the workloads' are (the same
// keys, so a pod shown twice is read once).
func rolloutProxies(c *kubeclient.Client, pods []corev1.Pod) []dashboard.Proxy {
	if len(pods) == 0 {
		return nil
	}
	rows := []*statRow{{pods: pods}}
	podSources(rows, c)
	return dashboardWorkloads(rows)[0].Proxies
}
