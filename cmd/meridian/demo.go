package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-mesh/meridian/cli/rollout"
	"github.com/meridian-mesh/meridian/demo/launch"
	"github.com/meridian-mesh/meridian/viz/dashboard"
)

func newDemoCmd() *cobra.Command {
	var o launch.Options
	var every time.Duration
	var logLevel, dashAddr, rollout string
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
request and record golden metrics.

With --rollout=bad (the default) or good, voting is the Rollout voting of the
served directory (voting-rollout.yaml): --rollout-delay after start its
template changes to a voting v2 that fails 40% more votes (bad) or none more
(good), and the local rollout driver, the same step machine and analysis as on
a cluster, moves 20% of voting's traffic to v2, pauses, judges v2's success rate
from its own proxy, then goes on to 50% and promotes it, or aborts and sends
every proxy's traffic back to v1 at once. Its progress is printed as it goes;
'meridian rollout get voting --watch --demo[=DASHBOARD-ADDR]' shows it as a tree. --rollout=off
runs voting as a plain workload. Ctrl-C stops everything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)
			}
			o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			switch rollout {
			case "bad", "good":
				o.Rollout.Version = rollout
			case "off":
			default:
				return fmt.Errorf("--rollout %q: use bad, good or off", rollout)
			}
			if o.Manifests != "" && o.Rollout.Version != launch.RolloutOff && !cmd.Flags().Changed("rollout") {
				// A directory of one's own without the demo's Rollout: the
				// demo as it was, rather than an error for a flag not given.
				if _, err := os.Stat(filepath.Join(o.Manifests, launch.RolloutFile)); err != nil {
					o.Rollout.Version = launch.RolloutOff
				}
			}
			out := &lockedWriter{w: cmd.OutOrStdout()}
			started := make(chan struct{})
			var early []string
			o.Rollout.Progress = func(line string) {
				line = time.Now().Format("15:04:05") + "  " + line
				select {
				case <-started:
					fmt.Fprintln(out, line)
				default:
					out.mu.Lock() // before the summary: kept for after it
					early = append(early, line)
					out.mu.Unlock()
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			d, err := launch.Start(ctx, o)
			if err != nil {
				return err
			}
			d.PrintSummary(out)
			var dashHost string
			if dashAddr != "" {
				url, err := serveDemoDashboard(ctx, d, dashAddr)
				if err != nil {
					d.Stop()
					return err
				}
				dashHost = strings.TrimPrefix(url, "http://")
				fmt.Fprintf(out, "  Dashboard:       %s\n", url)
			}
			if d.Rollout != nil {
				watchCmd := "(with --dashboard-addr, meridian rollout get voting --watch --demo=ADDR shows it)"
				if dashAddr != "" {
					watchCmd = "meridian rollout get voting --watch --demo=" + dashHost
				}
				fmt.Fprintf(out, "  Rollout:         voting v2 (%s) applied %s after start; %s\n", o.Rollout.Version, o.Rollout.Delay, watchCmd)
			}
			fmt.Fprintln(out)
			out.mu.Lock()
			for _, l := range early {
				fmt.Fprintln(out.w, l)
			}
			close(started)
			out.mu.Unlock()
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
	cmd.Flags().StringVar(&rollout, "rollout", "bad", "roll out a voting v2 with the Rollout voting: bad (fails 40% more votes: the analysis aborts it), good (promoted to 100%) or off (voting is a plain workload)")
	cmd.Flags().DurationVar(&o.Rollout.Delay, "rollout-delay", 15*time.Second, "how long after start voting v2 is applied to the Rollout")
	return cmd
}

// serveDemoDashboard serves the viz dashboard of the demo's services until
// ctx ends, and returns its URL.
func serveDemoDashboard(ctx context.Context, d *launch.Demo, addr string) (string, error) {
	// Listed at every refresh: the Rollout's instances come and go.
	list := func(context.Context) ([]dashboard.Workload, error) {
		var ws []dashboard.Workload
		for _, p := range d.Proxies() {
			admin := p.Admin.String()
			ws = append(ws, dashboard.Workload{Namespace: launch.Namespace, Kind: "proxy", Name: p.Name, Total: 1, Proxies: []dashboard.Proxy{{Key: admin,
				Read: func(ctx context.Context) ([]byte, error) { return adminGet(ctx, admin, "metrics") }}}})
		}
		return ws, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("--dashboard-addr: %w", err)
	}
	// The Rollout view: the local driver's Rollouts with their instances'
	// proxies, the same fields the cluster's dashboard reads.
	rollouts := func(ctx context.Context) ([]dashboard.Rollout, error) {
		rs, err := d.Rollouts(ctx)
		out := make([]dashboard.Rollout, 0, len(rs))
		for _, r := range rs {
			out = append(out, dashboard.Rollout{Rollout: r.Rollout, Stable: r.Stable, Canary: r.Canary, Runs: r.Runs})
		}
		return out, err
	}
	dash := dashboard.New(dashboard.Options{List: list, Rollouts: rollouts, Refresh: 2 * time.Second})
	// Beside the dashboard, the Rollouts as `meridian rollout get --demo`
	// reads them (local mode has no API server).
	mux := http.NewServeMux()
	mux.Handle(rollout.DemoPath, d.ObjectsHandler())
	mux.Handle("POST "+rollout.DemoPath+"/{namespace}/{name}/{action}", d.ActHandler())
	mux.Handle("/", dash)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go dash.Run(ctx)
	go srv.Serve(ln)
	go func() { <-ctx.Done(); srv.Close() }()
	return "http://" + ln.Addr().String(), nil
}

// lockedWriter serializes the demo's output lines (the stats and the
// rollout's progress come from different goroutines).
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *lockedWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
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
