package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-mesh/meridian/cli/kubeclient"
	"github.com/meridian-mesh/meridian/viz/dashboard"
)

func newVizDashboardCmd() *cobra.Command {
	var (
		kf      kubeclient.Flags
		addr    string
		refresh time.Duration
		window  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "dashboard ((deploy|sts|ds|pod|ns)[/NAME] | [NAME=]ADMIN_ADDR...)",
		Short: "Serve a web page with the workloads' golden metrics and edges, live",
		Long: `Serves, on --addr, a page that shows what 'viz stat' and 'viz edges' show for
the workloads named, refreshed every --refresh: the proxies are read at each
refresh (through the API server's pod proxy, or at their admin addresses
without a cluster) and the figures are over the last --window (30s: a failure
now and then stays in view), shown on the page.
The workloads' pods are looked up again at each refresh. Ctrl-C stops it.`,
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
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("--addr: %w", err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if window < refresh {
				return fmt.Errorf("--window %s: use --refresh (%s) or more", window, refresh)
			}
			d := dashboard.New(dashboard.Options{List: list, Refresh: refresh, Window: window})
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
