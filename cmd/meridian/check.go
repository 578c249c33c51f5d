package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meridian-mesh/meridian/cli/check"
)

// errChecksFailed is returned when a check failed; the report says which.
var errChecksFailed = errors.New("some checks failed")

func newCheckCmd() *cobra.Command {
	var (
		o      check.Options
		pre    bool
		proxy  bool
		local  string
		wait   time.Duration
		output string
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that Meridian can be installed, or that the installed Meridian is healthy",
		Long: `Runs groups of health checks and prints each with √ (passed), ‼ (warning) or ×
(failed), and under a failure what went wrong and how to fix it ("see: ...").

  meridian check --pre     before installing: the Kubernetes API is reachable, its
                           version is recent enough (v1.29+, for native sidecars),
                           and you may create everything the install creates
  meridian check           after installing: CRDs, control plane, identity, proxy
                           injector webhook and data plane; with the Gateway API
                           installed, Meridian's GatewayClasses, Gateways and the
                           routes attached to them (each rejected one named)
  meridian check --proxy   only the data plane (meshed pods: their proxies and
                           every container ready), optionally in -n NS
  meridian check --local   a controller in local mode (--store=dir:PATH), through
                           its admin server (default 127.0.0.1:9996; another one:
                           --local=HOST:PORT): is every file of its store
                           directory applied, or which are rejected and why

After an install, failing checks that can become true by themselves (pods
starting, the controller writing certificates) are retried for up to --wait
(default 5m; 0 does not wait). A failing check that later checks depend on
(the API is unreachable, the control plane namespace is missing) stops the run.
The exit status is non-zero when a check failed; warnings do not fail.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pre && proxy {
				return errors.New("--pre and --proxy do not go together")
			}
			if local != "" && (pre || proxy) {
				return errors.New("--local does not go with --pre or --proxy")
			}
			if output != "table" && output != "json" {
				return fmt.Errorf("--output %q: want table or json", output)
			}
			groups := check.PostGroups
			switch {
			case pre:
				groups = check.PreGroups
			case proxy:
				groups = check.ProxyGroups
			case local != "":
				groups = check.LocalGroups
				o.LocalAdmin = local
			}
			o.ProxyOnly = proxy
			o.CLIVersion = cliVersion() // install.go: what `meridian install` tags the control plane with
			checks, err := check.Groups(o, groups...)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()

			out := cmd.OutOrStdout()
			r := &check.Runner{Wait: wait}
			var table *check.Table
			if output == "table" {
				table = &check.Table{W: out}
				r.Observer = table
			} else {
				r.Observer = check.WaitNotices{W: cmd.ErrOrStderr()}
			}
			rep := r.Run(ctx, checks, check.NewState(o))
			if table != nil {
				table.Summary(rep)
			} else if err := rep.WriteJSON(out); err != nil {
				return err
			}
			if !rep.Success() {
				return errChecksFailed
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&pre, "pre", false, "check whether Meridian can be installed (instead of checking an installed Meridian)")
	f.BoolVar(&proxy, "proxy", false, "check only the data plane: the meshed pods, their proxies and every other container ready (waits up to --wait)")
	f.StringVar(&local, "local", "", "check a controller in local mode through its admin server: --local (at "+check.DefaultLocalAdmin+") or --local=HOST:PORT")
	f.Lookup("local").NoOptDefVal = check.DefaultLocalAdmin
	f.DurationVar(&wait, "wait", 5*time.Minute, "retry failing checks that may still become true for this long (0: no retries)")
	f.StringVarP(&output, "output", "o", "table", "output format: table or json")
	f.StringVar(&o.Namespace, "controller-namespace", check.DefaultNamespace, "the control plane's namespace")
	f.StringVarP(&o.DataPlaneNamespace, "namespace", "n", "", "limit the data plane checks to this namespace (default: all namespaces)")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then the in-cluster config)")
	f.StringVar(&o.Context, "context", "", "kubeconfig context (default: the current context)")
	return cmd
}
