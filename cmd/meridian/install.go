package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meridian-mesh/meridian/cli/install"
)

// cliVersion is the version the CLI was stamped with, or install's default
// ("dev"): the tag of the images `meridian install` points at.
func cliVersion() string {
	if version == "" {
		return install.DefaultVersion
	}
	return version
}

// addValueFlags adds helm's value flags (-f, --set, --set-string,
// --set-file) and the identity file flags to fs.
func addValueFlags(fs *pflag.FlagSet, o *install.Options) {
	fs.StringArrayVarP(&o.Values.ValueFiles, "values", "f", nil, "values file (YAML) for the chart charts/meridian; may be repeated, later files win")
	fs.StringArrayVar(&o.Values.Values, "set", nil, "set a chart value, helm style: key=value[,key=value] (e.g. controller.replicas=3)")
	fs.StringArrayVar(&o.Values.StringValues, "set-string", nil, "set a chart value as a string: key=value[,key=value]")
	fs.StringArrayVar(&o.Values.FileValues, "set-file", nil, "set a chart value to a file's contents: key=path[,key=path]")
	fs.StringVar(&o.TrustAnchorsFile, "identity-trust-anchors-file", "", "PEM trust anchors (ca.crt) of the identity issuer")
	fs.StringVar(&o.IssuerCertFile, "identity-issuer-certificate-file", "", "PEM certificate (tls.crt) of the identity issuer, signed by a trust anchor")
	fs.StringVar(&o.IssuerKeyFile, "identity-issuer-key-file", "", "PEM private key (tls.key) of the identity issuer")
}

func newInstallCmd() *cobra.Command {
	var o install.Options
	var crds, ignoreCluster bool
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Print the Kubernetes manifests of Meridian's control plane (or, with --crds, its CRDs)",
		Long: `Renders Meridian's Helm chart (charts/meridian, built into this binary) with
Helm's own template engine and prints the objects as YAML, in Helm's install
order: no helm binary and no cluster are needed. Apply them in two steps, the
CRDs first, as Helm installs a chart's crds/ before its templates (server-side:
the HTTPRoute CRD is too large for a client-side apply's annotation):

    meridian install --crds | kubectl apply --server-side -f -
    meridian install | kubectl apply -f -

The images' tag is this CLI's version unless --set image.tag=... says
otherwise. Values are given as with helm (-f, --set, --set-file; see the
chart's README for the table). Without an identity issuer (the three
--identity-*-file flags, or the identity.* values, or
identity.externalIssuer=true) install generates one: a trust anchor (ECDSA
P-256, 10 years) and an issuer (1 year) for the trust domain, and says so on
standard error. Given the same issuer, the output is the same every time.

Before generating an issuer, install looks in the cluster of the current
kubeconfig, if there is one, for the issuer of an earlier install and stops
if it finds one (a new trust anchor would break mTLS between meshed pods);
--ignore-cluster skips that look.

--crds also prints the Gateway API's standard-channel CRDs (v1.6.3:
GatewayClass, Gateway, HTTPRoute, GRPCRoute, ReferenceGrant, BackendTLSPolicy,
ListenerSet, TLSRoute, TCPRoute, UDPRoute) unless the cluster of the current
kubeconfig already has Gateway API CRDs (another implementation's, perhaps of
another version, which Meridian's would replace): then it leaves them out and
says so on standard error. Without a cluster to ask (no kubeconfig, or
--ignore-cluster) it prints them. --gateway-api-crds=always or never decides
without asking.

--gateway-api-channel=experimental prints the Gateway API's
experimental-channel CRDs of the same release instead: the same kinds with
the experimental fields, which the standard CRDs prune (HTTPRoute's
rules[].retry, which the gateway implements, among them), and the
gateway.networking.x-k8s.io kinds. To replace installed standard-channel
CRDs with them, add --gateway-api-crds=always (the upstream's
safe-upgrades ValidatingAdmissionPolicy, if installed, refuses that:
Meridian does not install it).`,
		Example: `  meridian install --crds | kubectl apply --server-side -f -
  meridian install --crds --gateway-api-crds=never | kubectl apply --server-side -f -
  meridian install --crds --gateway-api-channel=experimental --gateway-api-crds=always | kubectl apply --server-side -f -
  meridian install | kubectl apply -f -
  meridian install --set controller.replicas=3 -f my-values.yaml \
    --identity-trust-anchors-file ca.crt --identity-issuer-certificate-file issuer.crt \
    --identity-issuer-key-file issuer.key | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Version = cliVersion()
			o.Log = cmd.ErrOrStderr()
			if crds {
				if o.GatewayAPIChannel == install.GatewayAPIExperimental && o.GatewayAPICRDs == install.GatewayAPINever {
					return errors.New("--gateway-api-channel=experimental with --gateway-api-crds=never: never prints no Gateway API CRDs of any channel")
				}
				if !ignoreCluster {
					o.GatewayAPIInstalled = gatewayAPICheck()
				}
				ms, err := o.PrintedCRDs(cmd.Context())
				if err != nil {
					return err
				}
				return install.Write(cmd.OutOrStdout(), ms)
			}
			for _, f := range []string{"gateway-api-crds", "gateway-api-channel"} {
				if cmd.Flags().Changed(f) {
					return fmt.Errorf("--%s goes with --crds: the control plane has no CRDs", f)
				}
			}
			if !ignoreCluster {
				o.CheckCluster = clusterCheck(cmd.ErrOrStderr())
			}
			ms, err := install.Install(cmd.Context(), o)
			if err != nil {
				return err
			}
			return install.Write(cmd.OutOrStdout(), ms)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&crds, "crds", false, "print the CRDs (the chart's crds/) instead of the control plane")
	f.Var(&o.GatewayAPICRDs, "gateway-api-crds", "with --crds, whether to print the Gateway API CRDs: auto (unless the cluster has Gateway API CRDs already), always or never")
	f.Var(&o.GatewayAPIChannel, "gateway-api-channel", "with --crds, the release channel of the Gateway API CRDs printed: standard (what the Helm chart installs) or experimental (adds the experimental fields, such as HTTPRoute rules[].retry, and kinds)")
	f.BoolVar(&ignoreCluster, "ignore-cluster", false, "do not look in the current kubeconfig's cluster for an earlier install before generating an identity issuer (nor, with --crds, for Gateway API CRDs)")
	addValueFlags(f, &o)
	return cmd
}

func newUninstallCmd() *cobra.Command {
	var o install.Options
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Print the control plane's objects for kubectl delete",
		Long: `Prints every object that 'meridian install' makes (apiVersion, kind, name and
namespace), in Helm's uninstall order, for:

    meridian uninstall | kubectl delete --ignore-not-found -f -

Give the same values as to install where they change names (--set namespace=...).
The CRDs are not included, since deleting a CRD deletes every object of its
kind (every ServiceProfile and TrafficSplit): remove them, when you mean to,
with

    meridian install --crds | kubectl delete -f -

(which leaves installed Gateway API CRDs alone unless --gateway-api-crds=always
is given).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Version = cliVersion()
			ms, err := install.Uninstall(cmd.Context(), o)
			if err != nil {
				return err
			}
			if err := install.Write(cmd.OutOrStdout(), ms); err != nil {
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "meridian uninstall: the CRDs are left in place; to delete them and every object of their kinds: meridian install --crds | kubectl delete -f -")
			return nil
		},
	}
	addValueFlags(cmd.Flags(), &o)
	return cmd
}

// gatewayAPICheck asks the cluster of the current kubeconfig whether it has
// Gateway API CRDs; with no kubeconfig it returns nil: nothing to ask.
func gatewayAPICheck() func(ctx context.Context) (string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil
	}
	return install.GatewayAPIChecker(cfg, 5*time.Second)
}

// clusterCheck looks for an earlier install in the cluster of the current
// kubeconfig ($KUBECONFIG or ~/.kube/config). With no kubeconfig it does
// nothing; when the cluster cannot be asked it warns on stderr and lets
// install go on, since install itself needs no cluster.
func clusterCheck(stderr io.Writer) func(ctx context.Context, namespace string) error {
	return func(ctx context.Context, namespace string) error {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil // no cluster configured: nothing to look at
		}
		err = install.ClusterChecker(cfg, 5*time.Second)(ctx, namespace)
		if err != nil && !errors.Is(err, install.ErrInstalled) {
			fmt.Fprintf(stderr, "meridian install: warning: %v\n", err)
			return nil
		}
		return err
	}
}
