package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-mesh/meridian/cli/kubeclient"
	"github.com/meridian-mesh/meridian/viz/golden"
	"github.com/meridian-mesh/meridian/viz/stat"
)

// vizFlags are the flags `viz routes` and `viz edges` share with stat.
type vizFlags struct {
	kf     kubeclient.Flags
	window time.Duration
	output string
}

func (f *vizFlags) register(cmd *cobra.Command) {
	f.kf.Register(cmd)
	cmd.Flags().DurationVar(&f.window, "window", 10*time.Second, "how long to measure (the proxies are read at its start and its end)")
	cmd.Flags().StringVarP(&f.output, "output", "o", "table", "table or json")
}

// measure checks the flags, resolves args to rows (one kind of workload
// in Kubernetes, or proxies' admin addresses) and reads their proxies over
// the window.
func (f *vizFlags) measure(cmd *cobra.Command, args []string) ([]*statRow, error) {
	if f.output != "table" && f.output != "json" {
		return nil, fmt.Errorf("--output %q: use table or json", f.output)
	}
	if f.window < time.Second {
		return nil, fmt.Errorf("--window %s: use 1s or more", f.window)
	}
	rows, err := adminRows(args)
	if err != nil {
		return nil, err
	}
	if rows != nil {
		adminNamespaces(cmd.Context(), rows)
	}
	if rows == nil {
		if len(args) != 1 {
			return nil, fmt.Errorf("name one kind of workload (e.g. deploy, or deploy/web), or proxies' admin addresses; not %q", args)
		}
		c, err := f.kf.Connect()
		if err != nil {
			return nil, err
		}
		if rows, err = statRows(cmd.Context(), c, args[0]); err != nil {
			return nil, err
		}
		podSources(rows, c)
	}
	scrapeRows(cmd.Context(), rows, f.window)
	warnRows(cmd.ErrOrStderr(), rows)
	return rows, nil
}

// adminRows reads [NAME=]ADMIN_ADDR arguments (local mode: the proxies
// 'meridian demo' prints), one row each; nil when the arguments are not
// addresses.
func adminRows(args []string) ([]*statRow, error) {
	var rows []*statRow
	for _, a := range args {
		name, addr, named := strings.Cut(a, "=")
		if !named {
			name, addr = a, a
		}
		if !isAdminAddr(addr) {
			if rows != nil || named {
				return nil, fmt.Errorf("%q: want NAME=HOST:PORT or HOST:PORT, a proxy's admin address, like the others", a)
			}
			return nil, nil
		}
		rows = append(rows, &statRow{Kind: "proxy", Name: name, total: 1, sources: []golden.Source{adminSource(addr)}})
	}
	return rows, nil
}

// adminNamespaces gives local-mode rows the namespace of their proxy's
// identity (its SPIFFE ID names it), so that `viz edges` and `viz stat -o
// json` say where a workload is, as they do in Kubernetes. A proxy without
// an identity keeps none ("-").
func adminNamespaces(ctx context.Context, rows []*statRow) {
	for _, r := range rows {
		b, err := adminGet(ctx, r.sources[0].Name(), "identity")
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if id, ok := strings.CutPrefix(l, "# SPIFFE ID: "); ok {
				if ns, _, ok := stat.ServiceAccountOf(strings.TrimSpace(id)); ok {
					r.Namespace = ns
				}
				break
			}
		}
	}
}

// needArgs is cobra.MinimumNArgs(1) that shows how to call the command: the
// root command silences usage on errors, so a bare "requires at least 1
// arg(s)" left the user guessing.
func needArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return nil
	}
	return fmt.Errorf("%s needs a workload or proxies' admin addresses\n\nUsage:\n  %s\n\nExamples:\n%s", cmd.CommandPath(), cmd.UseLine(), cmd.Example)
}

func newVizRoutesCmd() *cobra.Command {
	var (
		f   vizFlags
		dir string
	)
	cmd := &cobra.Command{
		Use:   "routes ((deploy|sts|ds|pod)/NAME | ADMIN_ADDR...)",
		Short: "Golden metrics per route of a workload (the routes of its ServiceProfiles)",
		Long: `Shows the golden metrics of a workload's requests per route: the routes of the
ServiceProfile of the service called, [DEFAULT] for requests no route matched.
Inbound (the default): the requests the workload served, by route. Outbound:
the requests it made, by service (AUTHORITY) and route. Read from the proxies
like 'viz stat', over --window.`,
		Example: `  meridian viz routes deploy/web -n emojivoto
  meridian viz routes deploy/web -n emojivoto --direction outbound`,
		Args: needArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir != "inbound" && dir != "outbound" {
				return fmt.Errorf("--direction %q: use inbound or outbound", dir)
			}
			if len(args) == 1 && !strings.Contains(args[0], "/") && !isAdminAddr(args[0]) && !strings.Contains(args[0], "=") {
				return fmt.Errorf("%q: name one workload, e.g. deploy/web", args[0])
			}
			rows, err := f.measure(cmd, args)
			if err != nil {
				return err
			}
			var pairs []stat.Pair
			for _, r := range rows {
				pairs = append(pairs, r.pairs...)
			}
			return writeRoutes(cmd.OutOrStdout(), stat.Group(pairs, dir, "authority", "route"), f.output)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&dir, "direction", "inbound", "inbound (requests the workload served) or outbound (requests it made)")
	return cmd
}

type routeJSON struct {
	Route       string   `json:"route"`
	Authority   string   `json:"authority"`
	Requests    float64  `json:"requests"`
	SuccessRate *float64 `json:"successRate"`
	RPS         float64  `json:"rps"`
	LatencyP50  *float64 `json:"latencyMsP50"`
	LatencyP95  *float64 `json:"latencyMsP95"`
	LatencyP99  *float64 `json:"latencyMsP99"`
}

func writeRoutes(w io.Writer, groups map[string]*stat.Golden, output string) error {
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range groups {
			if !yield(k) {
				return
			}
		}
	})
	var out []routeJSON
	for _, k := range keys {
		g := groups[k]
		authority, route, _ := strings.Cut(k, "|")
		if route == "" {
			route = "[DEFAULT]"
		}
		j := routeJSON{Route: route, Authority: authority, Requests: g.Requests, SuccessRate: stat.Known(g.SuccessRate()), RPS: g.RPS()}
		j.LatencyP50, j.LatencyP95, j.LatencyP99 = stat.Known(g.Quantile(0.5)), stat.Known(g.Quantile(0.95)), stat.Known(g.Quantile(0.99))
		out = append(out, j)
	}
	if output == "json" {
		if out == nil {
			out = []routeJSON{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(out) == 0 {
		_, err := fmt.Fprintln(w, "No requests in the window.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "ROUTE\tAUTHORITY\tSUCCESS\tRPS\tLATENCY_P50\tLATENCY_P95\tLATENCY_P99\t")
	for _, k := range keys {
		g := groups[k]
		authority, route, _ := strings.Cut(k, "|")
		if route == "" {
			route = "[DEFAULT]"
		}
		args := append([]any{route, authority, stat.Percent(g.SuccessRate()), fmt.Sprintf("%.1frps", g.RPS())}, latencies(g)...)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", args...)
	}
	return tw.Flush()
}

func newVizEdgesCmd() *cobra.Command {
	var f vizFlags
	cmd := &cobra.Command{
		Use:   "edges ((deploy|sts|ds|pod|ns)[/NAME] | [NAME=]ADMIN_ADDR...)",
		Short: "Who calls whom, and whether the connection is mutual TLS",
		Long: `Shows the edges into the workloads named: for each client seen by their proxies
in the window, the client (the service account of its SPIFFE ID, with its
namespace) and whether the hop was mutual TLS (SECURED), else why not, as the
inbound proxy's tls label says (not_provided_by_remote: an unmeshed client).
The kubelet's probes of the pods are shown as probes (SRC kubelet, SECURED
"- (probe)"); 'viz stat' leaves them out of the workload's figures.
Read from the proxies like 'viz stat', over --window.`,
		Example: `  meridian viz edges deploy -n emojivoto`,
		Args:    needArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rows, err := f.measure(cmd, args)
			if err != nil {
				return err
			}
			return writeEdges(cmd.OutOrStdout(), rows, f.output)
		},
	}
	f.register(cmd)
	return cmd
}

func writeEdges(w io.Writer, rows []*statRow, output string) error {
	edges := []stat.Edge{}
	for _, r := range rows {
		edges = append(edges, stat.Edges(r.Namespace, r.Name, r.pairs)...)
	}
	stat.SortEdges(edges)
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(edges)
	}
	if len(edges) == 0 {
		_, err := fmt.Fprintln(w, "No requests in the window.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "SRC\tSRC_NS\tDST\tDST_NS\tSECURED\tRPS")
	for _, e := range edges {
		secured := "√"
		switch {
		case e.Probe:
			secured = "- (probe)" // the kubelet probes in plaintext: not a fault
		case !e.Secured:
			secured = "× (" + e.TLS + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.1frps\n", e.Src, e.SrcNS, e.Dst, e.DstNS, secured, e.RPS)
	}
	return tw.Flush()
}

// latencies formats the p50, p95 and p99 columns.
func latencies(g *stat.Golden) []any {
	var cols []any
	for _, q := range []float64{0.5, 0.95, 0.99} {
		cols = append(cols, stat.Millis(g.Quantile(q)))
	}
	return cols
}
