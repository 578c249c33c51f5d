package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-mesh/meridian/demo/launch"
	"github.com/meridian-mesh/meridian/viz/dashboard"
)

func newDemoCmd() *cobra.Command {
	var o launch.Options
	var every time.Duration
	var logLevel, dashAddr string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the emojivoto demo meshed on this machine, no cluster needed",
		Long: `Starts the control plane in local mode and the emojivoto demo application on
loopback with a Meridian sidecar proxy beside every service, the edge gateway
in front of web (HTTPS on --gateway-addr with a self-signed certificate made
for the run, written as the Secret edge-cert into the served directory; HTTP on
--gateway-http-addr redirects to it), and a bot that votes steadily through the
gateway. Proxies register their workloads and follow the control plane,
over TLS with the controller's identity; each workload is declared in the
served directory (demo-workloads.yaml, written for the run) with a credential
generated for it and given only to its proxy, so no other process can register
or obtain its identity;
services reach each other only through their proxies, which balance every
request and record golden metrics. Ctrl-C stops everything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)
			}
			o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			d, err := launch.Start(ctx, o)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			d.PrintSummary(out)
			if dashAddr != "" {
				url, err := serveDemoDashboard(ctx, d, dashAddr)
				if err != nil {
					d.Stop()
					return err
				}
				fmt.Fprintf(out, "  Dashboard:       %s\n", url)
			}
			fmt.Fprintln(out)
			err = watch(ctx, d, every, out)
			fmt.Fprintln(out, "stopping...")
			d.Stop()
			return err
		},
	}
	cmd.Flags().StringVar(&o.GatewayAddr, "gateway-addr", "127.0.0.1:8443", "address of the web UI: the edge gateway's HTTPS listener (the Gateway's port 8443)")
	cmd.Flags().StringVar(&o.GatewayHTTPAddr, "gateway-http-addr", "127.0.0.1:8080", "address of the gateway's HTTP listener (the Gateway's port 8080), which redirects to HTTPS")
	cmd.Flags().StringVar(&o.WebAddr, "web-addr", "127.0.0.1:0", "address of the web service's proxy's inbound listener (plaintext, beside the gateway)")
	cmd.Flags().Float64Var(&o.VoteRate, "vote-rate", 5, "votes per second from the vote bot (0 to disable)")
	cmd.Flags().DurationVar(&every, "stats-every", 10*time.Second, "how often to print each service's success rate and request rate (0 to disable)")
	cmd.Flags().StringVar(&o.Manifests, "manifests", "", "directory of objects for the control plane (default: the demo's own, in a temporary directory); edits apply live; it needs the Gateway emojivoto/edge of the demo's own; the demo writes demo-workloads.yaml and demo-gateway-cert.yaml (the gateway's certificate) there for the run and removes them at exit")
	cmd.Flags().StringVar(&logLevel, "log-level", "warn", "proxy and controller log level: debug, info, warn or error")
	cmd.Flags().StringVar(&dashAddr, "dashboard-addr", "127.0.0.1:50750", "address of the viz dashboard (empty: none)")
	return cmd
}

// serveDemoDashboard serves the viz dashboard of the demo's services until
// ctx ends, and returns its URL.
func serveDemoDashboard(ctx context.Context, d *launch.Demo, addr string) (string, error) {
	var ws []dashboard.Workload
	for _, p := range d.Proxies() {
		admin := p.Admin.String()
		ws = append(ws, dashboard.Workload{Namespace: launch.Namespace, Kind: "proxy", Name: p.Name, Total: 1, Proxies: []dashboard.Proxy{{Key: admin,
			Read: func(ctx context.Context) ([]byte, error) { return adminGet(ctx, admin, "metrics") }}}})
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("--dashboard-addr: %w", err)
	}
	dash := dashboard.New(dashboard.Options{List: func(context.Context) ([]dashboard.Workload, error) { return ws, nil }, Refresh: 2 * time.Second})
	srv := &http.Server{Handler: dash, ReadHeaderTimeout: 10 * time.Second}
	go dash.Run(ctx)
	go srv.Serve(ln)
	go func() { <-ctx.Done(); srv.Close() }()
	return "http://" + ln.Addr().String(), nil
}

// watch prints golden metrics per service until ctx ends or a component fails.
func watch(ctx context.Context, d *launch.Demo, every time.Duration, out interface{ Write([]byte) (int, error) }) error {
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	prev, _ := d.Inbound()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-d.Errors():
			return err
		case <-tick:
			cur, err := d.Inbound()
			if err != nil {
				return err
			}
			names := make([]string, 0, len(cur))
			for n := range cur {
				names = append(names, n)
			}
			sort.Strings(names)
			line := time.Now().Format("15:04:05")
			for _, n := range names {
				ok := cur[n].Success - prev[n].Success
				bad := cur[n].Failure - prev[n].Failure
				rate := "-"
				if ok+bad > 0 {
					rate = fmt.Sprintf("%.1f%%", 100*ok/(ok+bad))
				}
				line += fmt.Sprintf("  %s: %.1f rps, %s success", n, (ok+bad)/every.Seconds(), rate)
			}
			fmt.Fprintln(out, line)
			prev = cur
		}
	}
}
