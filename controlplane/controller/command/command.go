// Package command is the controller's command line: the one flag set and
// run function that both `meridian-controller` (the control plane image)
// and `meridian controller` (the CLI, local mode and development) use, so
// that the two cannot drift apart.
package command

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/controller"
	"github.com/meridian-mesh/meridian/controlplane/controller/leader"
	"github.com/meridian-mesh/meridian/controlplane/destination"
	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysisrun"
	"github.com/meridian-mesh/meridian/controlplane/store/local"
	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/proxy/authz"
)

// New returns the controller's command, named use ("meridian-controller",
// or "controller" under the CLI). version is the default of
// --control-plane-version.
func New(use, version string) *cobra.Command {
	var o controller.Options
	var logLevel string
	cmd := &cobra.Command{
		Use:   use,
		Short: "Run the control plane: the destination API over a Kubernetes cluster or a directory",
		Long: `Runs Meridian's control plane. Its store is filled from the Kubernetes API
(--store=kube, in-cluster or with --kubeconfig) or from a directory of the same
YAML objects (--store=dir:PATH, local mode, where proxies register the workloads
they front: only the workloads declared in the directory, each with its own
credential; see controlplane/store/local's README). The destination API (gRPC) serves endpoint sets and profiles to
proxies; the admin server serves /metrics, /ready and /live.

With --webhook-addr (kube mode) it also runs the proxy injector, a mutating
admission webhook at /inject: pods created in namespaces or with templates
annotated meridian.io/inject: enabled get the proxy. The controller creates and
renews the webhook's serving certificate itself (Secret --webhook-secret, shared
by the replicas) and writes its CA into the caBundle of --webhook-config.

Run as many replicas as you like: every replica serves the APIs and the
webhook; what writes to the API server (the webhook's certificate and
caBundle) runs only on the replica that holds the Lease
--leader-election-lease in --namespace, and moves to another replica within
--leader-election-lease-duration when it goes. SIGTERM drains it gracefully
(and releases the Lease at once).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)
			}
			o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			if o.StartupGrace == 0 { // the flag's 0 is none; Options' 0 is the default
				o.StartupGrace = -1
			}
			return controller.Run(ctx, o, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Store, "store", "kube", "where objects come from: kube (the Kubernetes API) or dir:PATH (a directory of YAML, local mode)")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig for --store=kube (default: in-cluster config, then $KUBECONFIG)")
	f.StringVar(&o.DestinationAddr, "destination-addr", "", "address of the destination API (gRPC); default "+controller.DefaultKubeDestinationAddr+" with --store=kube, "+controller.DefaultLocalDestinationAddr+" (loopback only) with --store=dir:PATH, where a non-loopback address is warned about")
	f.StringVar(&o.AdminAddr, "admin-addr", ":9996", "address of the admin server (/metrics, /ready, /live; in local mode also /store: the store directory's files, applied or rejected, which meridian check --local reads); empty to disable")
	f.StringVar(&o.ClusterDomain, "cluster-domain", compile.DefaultClusterDomain, "the cluster's DNS domain")
	f.StringVar(&o.TrustDomain, "trust-domain", compile.DefaultTrustDomain, "the SPIFFE trust domain of workload identities")
	f.StringVar(&o.DefaultNamespace, "default-namespace", local.DefaultNamespace, "local mode: the namespace where short names (\"web:80\") are looked up first")
	f.StringVar(&o.DefaultOpaquePorts, "default-opaque-ports", controller.DefaultOpaquePorts, "ports that are opaque unless a service's or namespace's "+names.AnnotationOpaquePorts+" annotation says otherwise")
	f.DurationVar(&o.Resync, "resync", destination.DefaultResync, "how often a stream for an authority that resolves to no service yet (a cluster IP, a short name) tries again")
	f.DurationVar(&o.ShutdownGrace, "shutdown-grace", 5*time.Second, "how long SIGTERM waits for streams to end before closing them")
	f.DurationVar(&o.StartupGrace, "startup-grace", controller.DefaultStartupGrace, "local mode: for this long after the directory is loaded, a service's empty endpoint set is not sent as a stream's first answer, until its workloads have registered again (proxies reconnect within 10s of a restart); 0: none")
	f.StringVar(&o.IdentityIssuerDir, "identity-issuer-dir", "", "the identity issuer (tls.crt, tls.key, ca.crt: a cert-manager Secret mounted); local mode generates one there when missing")
	f.DurationVar(&o.IdentityLifetime, "identity-lifetime", 24*time.Hour, "lifetime of workload certificates")
	f.DurationVar(&o.IdentityIssuerReload, "identity-issuer-reload", time.Minute, "how often --identity-issuer-dir is read again for a renewed issuer (cert-manager's renewal is taken without a restart)")
	f.StringVar(&o.APIIdentity, "api-identity", "", "serve the gRPC API over TLS with a certificate for this SPIFFE ID from the identity issuer (e.g. spiffe://cluster.local/ns/meridian/sa/meridian-controller); empty: plaintext")
	f.StringVar(&o.IdentityAudience, "identity-audience", "identity.meridian.io", "kube mode: the audience of the ServiceAccount tokens proxies present")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	w := &o.Webhook
	f.StringVar(&w.Addr, "webhook-addr", "", "address of the proxy injector, a mutating admission webhook (HTTPS, path /inject; kube mode, needs --identity-issuer-dir); empty to disable")
	f.StringVar(&w.Secret, "webhook-secret", controller.DefaultWebhookSecret, "the Secret in --namespace holding the webhook's serving certificate (created and renewed by the controller)")
	f.StringVar(&w.Config, "webhook-config", controller.DefaultWebhookConfig, "the MutatingWebhookConfiguration whose caBundle the controller keeps")
	f.StringVar(&w.Service, "webhook-service", controller.DefaultWebhookService, "the controller's Service: the webhook certificate's name, and the address injected proxies dial")
	f.StringVar(&w.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "the controller's namespace, where the webhook's Secret and the Lease are (default $POD_NAMESPACE)")
	f.StringVar(&w.ProxyImage, "proxy-image", "", "the injected proxy's image (default "+inject.ProxyImageRepo+":<control-plane-version>)")
	f.StringVar(&w.ProxyInitImage, "proxy-init-image", "", "the injected init container's image (default "+inject.ProxyInitImageRepo+":<control-plane-version>)")
	f.StringVar(&w.DefaultInboundPolicy, "default-inbound-policy", string(authz.AllUnauthenticated), "injected proxies' default inbound policy unless a pod or namespace annotates "+names.AnnotationDefaultInbound+": all-unauthenticated, cluster-unauthenticated, all-authenticated, cluster-authenticated or deny")
	f.StringVar(&w.ClusterNetworks, "cluster-networks", "", "the cluster's pod and node CIDRs (comma-separated) for the cluster-* policies; empty: the proxy's default, the private ranges")
	proxyRes := map[string]*string{}
	for _, r := range []struct{ flag, what string }{
		{"proxy-cpu-request", "CPU request"}, {"proxy-cpu-limit", "CPU limit"},
		{"proxy-memory-request", "memory request"}, {"proxy-memory-limit", "memory limit"},
	} {
		proxyRes[r.flag] = f.String(r.flag, "", "the injected proxies' default "+r.what+" (a Kubernetes quantity; the pod's config.meridian.io/"+r.flag+" annotation wins)")
	}
	cmd.PreRunE = func(*cobra.Command, []string) error {
		var err error
		w.ProxyResources, err = proxyResources(proxyRes)
		return err
	}
	f.BoolVar(&o.Rollouts, "rollouts", true, "kube mode: run the Rollout reconciler (on the replica holding the Lease); false leaves Rollouts to another controller")
	f.IntVar(&o.AnalysisRunWorkers, "analysis-run-workers", analysisrun.DefaultWorkers, "kube mode: AnalysisRuns measured at once by the leader (the runner of Rollouts' analyses: meridian, prometheus, web and job metrics); 0 turns the runner off")
	le := &o.LeaderElection
	f.StringVar(&le.Lease, "leader-election-lease", controller.DefaultLease, "kube mode: the Lease in --namespace whose holder runs the writers (the webhook's certificate and caBundle); the replicas share it")
	f.DurationVar(&le.LeaseDuration, "leader-election-lease-duration", leader.DefaultLeaseDuration, "kube mode: how long a leader that stopped renewing keeps the Lease (a leader that dies is replaced within it)")
	f.DurationVar(&le.RenewDeadline, "leader-election-renew-deadline", leader.DefaultRenewDeadline, "kube mode: how long the leader retries renewing before it stops its writers (below the lease duration)")
	f.DurationVar(&le.RetryPeriod, "leader-election-retry-period", leader.DefaultRetryPeriod, "kube mode: how often replicas try to take, and the leader to renew, the Lease")
	f.StringVar(&w.ControlPlaneVersion, "control-plane-version", version, "the version injected proxies are marked with (meridian.io/proxy-version) and the default image tag")
	return cmd
}

// proxyResources reads the --proxy-{cpu,memory}-{request,limit} flags.
func proxyResources(flags map[string]*string) (corev1.ResourceRequirements, error) {
	var rr corev1.ResourceRequirements
	for flag, v := range flags {
		if *v == "" {
			continue
		}
		q, err := resource.ParseQuantity(*v)
		if err != nil {
			return rr, fmt.Errorf("--%s %q: not a Kubernetes quantity (e.g. 100m, 0.5 for CPU; 64Mi, 1Gi for memory)", flag, *v)
		}
		name := corev1.ResourceCPU
		if strings.Contains(flag, "memory") {
			name = corev1.ResourceMemory
		}
		list := &rr.Requests
		if strings.HasSuffix(flag, "-limit") {
			list = &rr.Limits
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[name] = q
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := rr.Requests[name]
		lim, okLim := rr.Limits[name]
		if okReq && okLim && req.Cmp(lim) > 0 {
			return rr, fmt.Errorf("--proxy-%s-request %s is above --proxy-%s-limit %s", name, req.String(), name, lim.String())
		}
	}
	return rr, nil
}
