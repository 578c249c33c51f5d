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
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meridian-mesh/meridian/cli/kubeclient"
	"github.com/meridian-mesh/meridian/viz/golden"
	"github.com/meridian-mesh/meridian/viz/stat"
)

func newVizCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "viz",
		Short: "Observe the mesh: golden metrics of meshed workloads",
	}
	cmd.AddCommand(newVizStatCmd(), newVizRoutesCmd(), newVizEdgesCmd(), newVizDashboardCmd())
	return cmd
}

func newVizStatCmd() *cobra.Command {
	var (
		f   vizFlags
		dir string
	)
	cmd := &cobra.Command{
		Use:   "stat ((deploy|sts|ds|pod|ns)[/NAME] | [NAME=]ADMIN_ADDR...)",
		Short: "Golden metrics of workloads: success rate, requests per second, latency, connections",
		Long: `Shows, for each workload of a kind (or the one named), the golden metrics of the
requests it served over a window: success rate, requests per second, latency
percentiles to the response headers, and the TCP connections open to it.

The figures come from the workload's own proxies: each meshed pod's proxy
metrics are read twice, --window apart, through the API server's pod proxy (the
right to get pods/proxy is all it needs; no Prometheus), and the difference is
computed as Prometheus's rate() and histogram_quantile() would. MESHED counts
the running pods with a proxy against all the workload's pods.

--direction outbound shows the requests the workload made instead.

Without a cluster ('meridian demo'), name the proxies by their admin addresses,
each optionally with a name for its row: web=127.0.0.1:4191.`,
		Example: `  meridian viz stat deploy -n emojivoto
  meridian viz stat deploy/web -n emojivoto --window 30s
  meridian viz stat ns/emojivoto -o json
  meridian viz stat web=127.0.0.1:4191 emoji=127.0.0.1:4192`,
		Args: needArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir != "inbound" && dir != "outbound" {
				return fmt.Errorf("--direction %q: use inbound or outbound", dir)
			}
			rows, err := f.measure(cmd, args)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return writeStatJSON(cmd.OutOrStdout(), rows, dir)
			}
			return writeStatTable(cmd.OutOrStdout(), rows, dir)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&dir, "direction", "inbound", "inbound (requests the workload served) or outbound (requests it made)")
	return cmd
}

// statRow is one line of `viz stat`: a workload, its pods, and what their
// proxies did over the window.
type statRow struct {
	Namespace, Kind, Name string
	pods                  []corev1.Pod
	total                 int             // the workload's pods
	sources               []golden.Source // its meshed, running pods' proxies
	pairs                 []stat.Pair     // one per source read at both ends of the window
	errs                  []error
}

// statRows resolves TYPE or TYPE/NAME to one row per workload, with its pods.
func statRows(ctx context.Context, c *kubeclient.Client, arg string) ([]*statRow, error) {
	kind, name, _ := strings.Cut(arg, "/")
	if k := strings.ToLower(kind); k == "ns" || k == "namespace" || k == "namespaces" {
		names := []string{name}
		if name == "" {
			l, err := c.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
			if err != nil {
				return nil, fmt.Errorf("listing namespaces: %w", err)
			}
			names = names[:0]
			for _, n := range l.Items {
				names = append(names, n.Name)
			}
		}
		var rows []*statRow
		for _, n := range names {
			if name != "" {
				if err := namespaceExists(ctx, c, n); err != nil {
					return nil, err
				}
			}
			l, err := c.Kube.CoreV1().Pods(n).List(ctx, metav1.ListOptions{})
			if err != nil {
				return nil, fmt.Errorf("listing the pods of namespace %s: %w", n, err)
			}
			rows = append(rows, &statRow{Namespace: n, Kind: "namespace", Name: n, pods: l.Items})
		}
		return rows, nil
	}
	k, ok := kubeclient.ParseKind(kind)
	if !ok || strings.Contains(name, "/") {
		return nil, fmt.Errorf("%q: want deploy, sts, ds, pod or ns, optionally /NAME", arg)
	}
	rows, err := workloadRows(ctx, c, k)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		// Listing in a namespace that does not exist finds nothing, as
		// kubectl does; say so rather than "No resources found." (a typo
		// in -n looked like an idle namespace).
		if err := namespaceExists(ctx, c, c.Namespace); err != nil {
			return nil, err
		}
	}
	if name == "" {
		return rows, nil
	}
	for _, r := range rows {
		if r.Name == name {
			return []*statRow{r}, nil
		}
	}
	return nil, fmt.Errorf("%s %s/%s not found", k, c.Namespace, name)
}

// namespaceExists fails when ns does not exist; a client not allowed to
// get namespaces is not stopped (it can still list what it may).
func namespaceExists(ctx context.Context, c *kubeclient.Client, ns string) error {
	_, err := c.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("namespace %s does not exist", ns)
	}
	return nil
}

// workloadRows lists every workload of kind in the client's namespace.
func workloadRows(ctx context.Context, c *kubeclient.Client, kind string) ([]*statRow, error) {
	ns := c.Namespace
	all, err := c.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing the pods of namespace %s: %w", ns, err)
	}
	type workload struct {
		name string
		sel  *metav1.LabelSelector
	}
	var ws []workload
	switch kind {
	case kubeclient.KindPod:
		var rows []*statRow
		for _, p := range all.Items {
			rows = append(rows, &statRow{Namespace: ns, Kind: kind, Name: p.Name, pods: []corev1.Pod{p}})
		}
		return rows, nil
	case kubeclient.KindDeployment:
		l, err := c.Kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("listing deployments in %s: %w", ns, err)
		}
		for _, d := range l.Items {
			ws = append(ws, workload{d.Name, d.Spec.Selector})
		}
	case kubeclient.KindStatefulSet:
		l, err := c.Kube.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("listing statefulsets in %s: %w", ns, err)
		}
		for _, s := range l.Items {
			ws = append(ws, workload{s.Name, s.Spec.Selector})
		}
	case kubeclient.KindDaemonSet:
		l, err := c.Kube.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("listing daemonsets in %s: %w", ns, err)
		}
		for _, d := range l.Items {
			ws = append(ws, workload{d.Name, d.Spec.Selector})
		}
	}
	var rows []*statRow
	for _, w := range ws {
		r := &statRow{Namespace: ns, Kind: kind, Name: w.name}
		sel, err := metav1.LabelSelectorAsSelector(w.sel)
		if err != nil || sel.Empty() {
			r.errs = append(r.errs, fmt.Errorf("%s %s/%s: no usable selector", kind, ns, w.name))
		} else {
			for _, p := range all.Items {
				if sel.Matches(labels.Set(p.Labels)) {
					r.pods = append(r.pods, p)
				}
			}
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// podSource reads a meshed pod's proxy through the API server's pod proxy
// (the right to get pods/proxy is all it needs).
type podSource struct {
	c   *kubeclient.Client
	pod *corev1.Pod
}

func (s podSource) Name() string { return "pod " + s.pod.Namespace + "/" + s.pod.Name }

func (s podSource) Metrics(ctx context.Context) ([]byte, error) {
	return s.c.ProxyGet(ctx, s.pod, "metrics")
}

// adminSource reads a proxy at its admin address: local mode, without a
// cluster (the proxies 'meridian demo' prints).
type adminSource string

func (a adminSource) Name() string { return string(a) }

func (a adminSource) Metrics(ctx context.Context) ([]byte, error) {
	return adminGet(ctx, string(a), "metrics")
}

// podSources makes a source of each meshed, running pod of each row.
func podSources(rows []*statRow, c *kubeclient.Client) {
	for _, r := range rows {
		r.total = len(r.pods)
		for i := range r.pods {
			p := &r.pods[i]
			if _, err := kubeclient.ProxyAdminPort(p); err != nil || p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
				continue
			}
			r.sources = append(r.sources, podSource{c: c, pod: p})
		}
	}
}

// scrapeRows reads every source's proxy metrics twice, window apart, into
// each row's pairs (viz/golden).
func scrapeRows(ctx context.Context, rows []*statRow, window time.Duration) {
	var srcs []golden.Source
	for _, r := range rows {
		srcs = append(srcs, r.sources...)
	}
	results := golden.Measure(ctx, srcs, window)
	for _, r := range rows {
		for _, res := range results[:len(r.sources)] {
			if res.Err != nil {
				r.errs = append(r.errs, res.Err)
				continue
			}
			r.pairs = append(r.pairs, res.Pair)
		}
		results = results[len(r.sources):]
	}
}

// warnRows names, on stderr, the pods that could not be read.
func warnRows(w io.Writer, rows []*statRow) {
	for _, r := range rows {
		for _, e := range r.errs {
			fmt.Fprintln(w, "warning:", e)
		}
	}
}

func writeStatTable(w io.Writer, rows []*statRow, direction string) error {
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "No resources found.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "NAME\tMESHED\tSUCCESS\tRPS\tLATENCY_P50\tLATENCY_P95\tLATENCY_P99\tTCP_CONN\t")
	for _, r := range sortedRows(rows) {
		row := stat.Summarize(r.Namespace, r.Kind, r.Name, len(r.sources), r.total, direction, r.pairs)
		rps, tcp := "-", "-"
		if row.RPS != nil {
			rps, tcp = fmt.Sprintf("%.1frps", *row.RPS), fmt.Sprintf("%.0f", *row.TCPConns)
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Name, row.MeshedPods, row.TotalPods, stat.Percent(value(row.SuccessRate)), rps,
			stat.Millis(value(row.LatencyP50)), stat.Millis(value(row.LatencyP95)), stat.Millis(value(row.LatencyP99)), tcp)
	}
	return tw.Flush()
}

// value reads a figure that may be unknown (nil).
func value(p *float64) (float64, bool) {
	if p == nil {
		return 0, false
	}
	return *p, true
}

func writeStatJSON(w io.Writer, rows []*statRow, direction string) error {
	out := []stat.Row{}
	for _, r := range sortedRows(rows) {
		j := stat.Summarize(r.Namespace, r.Kind, r.Name, len(r.sources), r.total, direction, r.pairs)
		for _, e := range r.errs {
			j.Errors = append(j.Errors, e.Error())
		}
		out = append(out, j)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func sortedRows(rows []*statRow) []*statRow {
	s := slices.Clone(rows)
	slices.SortFunc(s, func(a, b *statRow) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return s
}
