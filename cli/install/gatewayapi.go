package install

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/meridian-mesh/meridian/charts"
)

// GatewayAPIGroup is the API group of the Gateway API's kinds.
const GatewayAPIGroup = "gateway.networking.k8s.io"

// gatewayAPIDir is where the chart keeps the Gateway API's CRDs
// (hack/gengatewaycrds.sh copies them from the module).
const gatewayAPIDir = "crds/gateway-api/"

// GatewayAPIMode says whether `meridian install --crds` prints the Gateway
// API's CRDs.
type GatewayAPIMode string

const (
	// GatewayAPIAuto prints them unless the cluster already has Gateway
	// API CRDs (another implementation installed them, maybe of another
	// version, which Meridian's must not replace); without a cluster to
	// ask, it prints them.
	GatewayAPIAuto GatewayAPIMode = "auto"
	// GatewayAPIAlways prints them whatever the cluster has.
	GatewayAPIAlways GatewayAPIMode = "always"
	// GatewayAPINever leaves them out.
	GatewayAPINever GatewayAPIMode = "never"
)

// String, Set and Type make a GatewayAPIMode a pflag.Value.
func (m *GatewayAPIMode) String() string {
	if *m == "" {
		return string(GatewayAPIAuto)
	}
	return string(*m)
}

// Set accepts auto, always and never.
func (m *GatewayAPIMode) Set(s string) error {
	switch GatewayAPIMode(s) {
	case GatewayAPIAuto, GatewayAPIAlways, GatewayAPINever:
		*m = GatewayAPIMode(s)
		return nil
	}
	return fmt.Errorf("gateway API CRDs %q: allowed are auto, always and never", s)
}

// Type is the flag's type in usage lines.
func (*GatewayAPIMode) Type() string { return "auto|always|never" }

// GatewayAPIChannel is the Gateway API release channel whose CRDs
// `meridian install --crds` prints.
type GatewayAPIChannel string

const (
	// GatewayAPIStandard is the standard channel: the chart's
	// crds/gateway-api/, what Helm installs.
	GatewayAPIStandard GatewayAPIChannel = "standard"
	// GatewayAPIExperimental is the experimental channel: the same kinds
	// with the experimental fields (HTTPRoute's rules[].retry,
	// sessionPersistence, ...), which the standard CRDs prune, and the
	// gateway.networking.x-k8s.io kinds.
	GatewayAPIExperimental GatewayAPIChannel = "experimental"
)

// String, Set and Type make a GatewayAPIChannel a pflag.Value.
func (c *GatewayAPIChannel) String() string {
	if *c == "" {
		return string(GatewayAPIStandard)
	}
	return string(*c)
}

// Set accepts standard and experimental.
func (c *GatewayAPIChannel) Set(s string) error {
	switch GatewayAPIChannel(s) {
	case GatewayAPIStandard, GatewayAPIExperimental:
		*c = GatewayAPIChannel(s)
		return nil
	}
	return fmt.Errorf("gateway API channel %q: allowed are standard and experimental", s)
}

// Type is the flag's type in usage lines.
func (*GatewayAPIChannel) Type() string { return "standard|experimental" }

// IsGatewayAPI reports whether m is one of the Gateway API CRDs Meridian
// carries: the chart's crds/gateway-api/ (standard channel) or
// charts/gateway-api-experimental/.
func IsGatewayAPI(m Manifest) bool {
	first, rest, _ := strings.Cut(m.Source, "/")
	return strings.HasPrefix(rest, gatewayAPIDir) || first == charts.GatewayAPIExperimental
}

// GatewayAPIExperimentalCRDs returns the Gateway API's experimental-channel
// CRDs (charts/gateway-api-experimental, embedded by package charts), as
// they are, by file name; each Source is gateway-api-experimental/<file>.
func GatewayAPIExperimentalCRDs() ([]Manifest, error) {
	ents, err := fs.ReadDir(charts.FS, charts.GatewayAPIExperimental)
	if err != nil {
		return nil, fmt.Errorf("gateway API experimental CRDs: %w", err)
	}
	var out []Manifest
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		p := path.Join(charts.GatewayAPIExperimental, e.Name())
		b, err := fs.ReadFile(charts.FS, p)
		if err != nil {
			return nil, fmt.Errorf("gateway API experimental CRDs: %w", err)
		}
		content := strings.TrimSpace(string(b))
		content = strings.TrimSpace(strings.TrimPrefix(content, "---"))
		out = append(out, Manifest{Source: p, Kind: "CustomResourceDefinition", Content: content})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("gateway API experimental CRDs: none in %s (run hack/gengatewaycrds.sh)", charts.GatewayAPIExperimental)
	}
	return out, nil
}

// PrintedCRDs returns the CRDs `meridian install --crds` prints: the
// chart's own, and the Gateway API's as o.GatewayAPICRDs says, of the
// channel o.GatewayAPIChannel names (standard: the chart's; experimental:
// GatewayAPIExperimentalCRDs, in their place, first). In auto mode
// it asks o.GatewayAPIInstalled (nil: no cluster to ask, they are printed);
// when the cluster has Gateway API CRDs they are left out and o.Log is
// told which; when it cannot be asked, o.Log gets a warning and they are
// printed.
func (o Options) PrintedCRDs(ctx context.Context) ([]Manifest, error) {
	all, err := o.CRDs()
	if err != nil {
		return nil, err
	}
	channel := o.GatewayAPIChannel
	switch channel {
	case "":
		channel = GatewayAPIStandard
	case GatewayAPIStandard, GatewayAPIExperimental:
	default:
		return nil, fmt.Errorf("gateway API channel %q: allowed are standard and experimental", channel)
	}
	if channel == GatewayAPIExperimental && o.GatewayAPICRDs == GatewayAPINever {
		return nil, fmt.Errorf("gateway API channel %s with gateway API CRDs %s: no Gateway API CRDs are printed, of any channel", channel, GatewayAPINever)
	}
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	include := true
	switch o.GatewayAPICRDs {
	case GatewayAPINever:
		include = false
	case GatewayAPIAlways:
	case GatewayAPIAuto, "":
		if o.GatewayAPIInstalled != nil {
			found, err := o.GatewayAPIInstalled(ctx)
			switch {
			case err != nil:
				fmt.Fprintf(log, "meridian install: warning: %v; printing the Gateway API CRDs (--gateway-api-crds=never leaves them out)\n", err)
			case found != "":
				include = false
				fmt.Fprintf(log, "meridian install: the cluster already has Gateway API CRDs (%s): leaving out Meridian's (%s %s channel); --gateway-api-crds=always prints them\n", found, GatewayAPIBundleVersion, channel)
			}
		}
	default:
		return nil, fmt.Errorf("gateway API CRDs %q: allowed are auto, always and never", o.GatewayAPICRDs)
	}
	own := slices.DeleteFunc(slices.Clone(all), IsGatewayAPI)
	switch {
	case !include:
		return own, nil
	case channel == GatewayAPIExperimental:
		exp, err := GatewayAPIExperimentalCRDs()
		if err != nil {
			return nil, err
		}
		return append(exp, own...), nil
	}
	return all, nil
}

// GatewayAPIBundleVersion is the Gateway API release whose CRDs the chart
// carries (hack/gengatewaycrds.sh).
const GatewayAPIBundleVersion = "v1.6.3"

// GatewayAPIChecker returns an Options.GatewayAPIInstalled that asks the
// cluster cfg reaches, within timeout, whether it serves the Gateway API
// group (discovery: open to every authenticated user). When it does, the
// answer names the group's versions and, when the CRDs may be read, the
// bundle and channel of the Gateway CRD (gateway.networking.k8s.io/
// bundle-version and channel annotations).
func GatewayAPIChecker(cfg *rest.Config, timeout time.Duration) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		cfg := rest.CopyConfig(cfg)
		cfg.Timeout = timeout
		dc, err := discovery.NewDiscoveryClientForConfig(cfg)
		if err != nil {
			return "", fmt.Errorf("asking the cluster for Gateway API CRDs: %w", err)
		}
		groups, err := dc.ServerGroups()
		if err != nil {
			return "", fmt.Errorf("asking the cluster for Gateway API CRDs: %w", err)
		}
		var versions []string
		for _, g := range groups.Groups {
			if g.Name == GatewayAPIGroup {
				for _, v := range g.Versions {
					versions = append(versions, v.Version)
				}
			}
		}
		if len(versions) == 0 {
			return "", nil
		}
		found := GatewayAPIGroup + " " + strings.Join(versions, ", ")
		if bundle := bundleOf(ctx, cfg, timeout); bundle != "" {
			found += "; " + bundle
		}
		return found, nil
	}
}

// bundleOf reads the bundle annotations of the installed Gateway CRD, or
// of any of the group's ("" when none may be read).
func bundleOf(ctx context.Context, cfg *rest.Config, timeout time.Duration) string {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	for _, name := range []string{"gateways", "gatewayclasses", "httproutes"} {
		u, err := crds.Get(ctx, name+"."+GatewayAPIGroup, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return ""
		}
		a := u.GetAnnotations()
		v, ch := a[GatewayAPIGroup+"/bundle-version"], a[GatewayAPIGroup+"/channel"]
		if v == "" {
			return "bundle version not annotated"
		}
		if ch != "" {
			v += " " + ch + " channel"
		}
		return "bundle " + v
	}
	return ""
}
