package check

import (
	"fmt"
	"time"

	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/meridian-mesh/meridian/cli/kubeclient"
)

// The names docs/kubernetes.md fixes for the chart, the controller, the
// injector and this command.
const (
	DefaultNamespace        = "meridian"
	DestinationPortName     = "grpc"
	installCRDsCommand      = "meridian install --crds | kubectl apply --server-side -f -"
	installCommand          = "meridian install | kubectl apply -f -"
	expiryWarningWindow     = 60 * 24 * time.Hour
	defaultClientTimeout    = 30 * time.Second
	minimumKubernetesMajor  = 1
	minimumKubernetesMinor  = 29
	minimumKubernetesString = "v1.29"
)

// Options are what a run checks and how it reaches the cluster.
type Options struct {
	// Kubeconfig is the kubeconfig file; empty uses $KUBECONFIG, then
	// ~/.kube/config, then the in-cluster config.
	Kubeconfig string
	// Context is the kubeconfig context; empty uses the current one.
	Context string
	// RESTConfig, when set, is used instead of Kubeconfig and Context.
	RESTConfig *rest.Config
	// Namespace is the control plane's namespace (default "meridian").
	Namespace string
	// DataPlaneNamespace limits the data plane checks to one namespace;
	// empty checks every namespace.
	DataPlaneNamespace string
	// ProxyOnly: the data plane checks were asked for explicitly (--proxy),
	// so finding no meshed pod is worth a warning.
	ProxyOnly bool
	// CLIVersion is this CLI's version, compared with the control plane's.
	CLIVersion string
	// Now is the clock the certificate checks use (default time.Now).
	Now func() time.Time
	// LocalAdmin is the admin server (HOST:PORT) of a local-mode controller,
	// for GroupLocalStore (default DefaultLocalAdmin).
	LocalAdmin string
}

// State is what the checks share during a run: the options, the clients,
// and what earlier checks learned.
type State struct {
	Options

	Config        *rest.Config
	Kube          kubernetes.Interface
	APIExt        apiextclient.Interface
	Gateway       gwclient.Interface
	ServerVersion *version.Info

	// Filled by the identity checks for the later ones of their group.
	issuer issuerState
}

// NewState returns the State for a run with these options.
func NewState(o Options) *State {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	return &State{Options: o}
}

func (s *State) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// connect builds the REST config and the clients.
func (s *State) connect() error {
	cfg := s.RESTConfig
	if cfg == nil {
		c, _, err := kubeclient.Load(s.Kubeconfig, s.Context, "")
		if err != nil {
			return err
		}
		cfg = c
	}
	cfg = rest.CopyConfig(cfg)
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultClientTimeout
	}
	// Many small requests (one access review per resource): do not let the
	// client's default rate limit (5/s) slow the run down.
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	cfg.UserAgent = "meridian-check"
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	ext, err := apiextclient.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("apiextensions client: %w", err)
	}
	gw, err := gwclient.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("gateway API client: %w", err)
	}
	s.Config, s.Kube, s.APIExt, s.Gateway = cfg, kube, ext, gw
	return nil
}

// Group names.
const (
	GroupKubernetesAPI     = "kubernetes-api"
	GroupKubernetesVersion = "kubernetes-version"
	GroupPreSetup          = "pre-kubernetes-setup"
	GroupCRDs              = "meridian-crds"
	GroupControlPlane      = "meridian-control-plane"
	GroupIdentity          = "meridian-identity"
	GroupWebhook           = "meridian-webhook"
	GroupDataPlane         = "meridian-data-plane"
	GroupGateway           = "meridian-gateway"
)

// Groups returns the checks of the named groups, in the order given.
func Groups(o Options, names ...string) ([]Check, error) {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	var out []Check
	for _, n := range names {
		var g []Check
		switch n {
		case GroupKubernetesAPI:
			g = kubernetesAPIChecks(o)
		case GroupKubernetesVersion:
			g = kubernetesVersionChecks(o)
		case GroupPreSetup:
			g = preSetupChecks(o)
		case GroupCRDs:
			g = crdChecks(o)
		case GroupControlPlane:
			g = controlPlaneChecks(o)
		case GroupIdentity:
			g = identityChecks(o)
		case GroupWebhook:
			g = webhookChecks(o)
		case GroupDataPlane:
			g = dataPlaneChecks(o)
		case GroupGateway:
			g = gatewayChecks(o)
		case GroupLocalStore:
			g = localStoreChecks(o)
		default:
			return nil, fmt.Errorf("no check group %q", n)
		}
		out = append(out, g...)
	}
	return out, nil
}

// The groups each mode runs.
var (
	// PreGroups: can Meridian be installed?
	PreGroups = []string{GroupKubernetesAPI, GroupKubernetesVersion, GroupPreSetup}
	// PostGroups: is the installed Meridian healthy?
	PostGroups = []string{GroupKubernetesAPI, GroupKubernetesVersion, GroupCRDs, GroupControlPlane, GroupIdentity, GroupWebhook, GroupDataPlane, GroupGateway}
	// ProxyGroups: are the meshed pods healthy?
	ProxyGroups = []string{GroupKubernetesAPI, GroupKubernetesVersion, GroupDataPlane}
)
