package install

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
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

// IsGatewayAPI reports whether m is one of the Gateway API CRDs the chart
// carries (in crds/gateway-api/).
func IsGatewayAPI(m Manifest) bool {
	_, rest, _ := strings.Cut(m.Source, "/")
	return strings.HasPrefix(rest, gatewayAPIDir)
}

// PrintedCRDs returns the CRDs `meridian install --crds` prints: the
// chart's own, and the Gateway API's as o.GatewayAPICRDs says. In auto mode
// it asks o.GatewayAPIInstalled (nil: no cluster to ask, they are printed);
// when the cluster has Gateway API CRDs they are left out and o.Log is
// told which; when it cannot be asked, o.Log gets a warning and they are
// printed.
func (o Options) PrintedCRDs(ctx context.Context) ([]Manifest, error) {
	all, err := o.CRDs()
	if err != nil {
		return nil, err
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
				fmt.Fprintf(log, "meridian install: the cluster already has Gateway API CRDs (%s): leaving out Meridian's (%s standard channel); --gateway-api-crds=always prints them\n", found, GatewayAPIBundleVersion)
			}
		}
	default:
		return nil, fmt.Errorf("gateway API CRDs %q: allowed are auto, always and never", o.GatewayAPICRDs)
	}
	if include {
		return all, nil
	}
	return slices.DeleteFunc(all, IsGatewayAPI), nil
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
