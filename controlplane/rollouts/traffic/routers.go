package traffic

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/controlplane/store/kube"
)

// Options configure the routers.
type Options struct {
	// Client writes TrafficSplits and HTTPRoutes. Its scheme needs
	// meridian.io/v1alpha1 and gateway.networking.k8s.io/v1 (TrafficSplits
	// are written unstructured, in the version the API server serves).
	Client client.Client
	// Store is the controller's store, the input of the destination API:
	// Verify compiles from it what proxies are told. Nil: Verify checks
	// the objects written only (and, for `meridian: {}`, cannot verify:
	// it reports false).
	Store store.Reader
	// Compile are the destination API's compile options (cluster domain).
	Compile compile.Options
}

// Routers gives each Rollout the Router of its trafficRouting.
type Routers struct {
	own          *ownRouter
	smi          *smiRouter
	trafficSplit *userSplitRouter
	httpRoute    *httpRouteRouter
}

// New returns the routers over o.
func New(o Options) *Routers {
	return &Routers{
		own:          &ownRouter{o: o},
		smi:          &smiRouter{o: o},
		trafficSplit: &userSplitRouter{o: o},
		httpRoute:    &httpRouteRouter{o: o},
	}
}

// For returns ro's Router (the reconciler's Options.Routers): `meridian:
// {}` → Meridian's own split, `meridian: {trafficSplit}`, `meridian:
// {httpRoute}`, `smi`. Anything else is an error naming the field.
func (rs *Routers) For(ro *v1alpha1.Rollout) (Router, error) {
	c := ro.Spec.Strategy.Canary
	if c == nil || c.TrafficRouting == nil {
		return nil, errors.New("spec.strategy.canary.trafficRouting is not set")
	}
	tr := c.TrafficRouting
	if c.StableService == "" || c.CanaryService == "" {
		return nil, errors.New("spec.strategy.canary: trafficRouting needs both canaryService and stableService")
	}
	switch {
	case tr.Meridian != nil && tr.SMI != nil:
		return nil, errors.New("spec.strategy.canary.trafficRouting: meridian and smi are both set; set one")
	case tr.Meridian != nil && tr.Meridian.HTTPRoute != "" && tr.Meridian.TrafficSplit != "":
		return nil, errors.New("spec.strategy.canary.trafficRouting.meridian: httpRoute and trafficSplit are both set; set one")
	case tr.Meridian != nil && tr.Meridian.HTTPRoute != "":
		return rs.httpRoute, nil
	case tr.Meridian != nil && tr.Meridian.TrafficSplit != "":
		return rs.trafficSplit, nil
	case tr.Meridian != nil:
		return rs.own, nil
	case tr.SMI != nil:
		return rs.smi, nil
	case len(tr.Plugins) > 0:
		return nil, errors.New("spec.strategy.canary.trafficRouting.plugins: Meridian runs no traffic-router plugins; use meridian: {} (or smi)")
	}
	return nil, errors.New("spec.strategy.canary.trafficRouting: no router set; allowed: meridian ({}, {httpRoute}, {trafficSplit}) or smi")
}

// names of a Rollout's canary Services.
func services(ro *v1alpha1.Rollout) (canary, stable string) {
	c := ro.Spec.Strategy.Canary
	return c.CanaryService, c.StableService
}

// sameShares reports whether got splits in the proportions of want (the
// weights of one split are only relative: v1alpha1's are thousandths),
// over the same non-zero backends.
func sameShares(got, want map[string]int64) bool {
	var gs, ws int64
	for k, v := range got {
		if v > 0 {
			gs += v
			if want[k] <= 0 {
				return false
			}
		}
	}
	for k, v := range want {
		if v > 0 {
			ws += v
			if got[k] <= 0 {
				return false
			}
		}
	}
	for k, v := range want {
		if v > 0 && got[k]*ws != v*gs {
			return false
		}
	}
	return true
}

// profileShares compiles service k's profile from the store (what every
// proxy is told) and returns its split by backend host (the port left
// out), for the first TCP port of the Service. ok is false when the
// Service is not in the store.
func profileShares(o Options, k store.Key) (map[string]int64, bool) {
	svc, ok := o.Store.Service(k)
	if !ok {
		return nil, false
	}
	port := int32(80)
	for _, p := range svc.Spec.Ports {
		if p.Protocol == "" || p.Protocol == "TCP" {
			port = p.Port
			break
		}
	}
	p := compile.Profile(o.Store, fmt.Sprintf("%s:%d", compile.FQDN(k, o.Compile), port), o.Compile)
	out := map[string]int64{}
	for _, d := range p.DstOverrides {
		host := d.Authority
		if i := lastColon(host); i >= 0 {
			host = host[:i]
		}
		out[host] += int64(d.Weight)
	}
	return out, true
}

func lastColon(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ':' {
			return i
		}
	}
	return -1
}

// splitGK is SMI's TrafficSplit.
var splitGK = schema.GroupKind{Group: "split.smi-spec.io", Kind: "TrafficSplit"}

// splitVersion is the TrafficSplit version to write: v1alpha2 when the API
// server serves it, else v1alpha1 (Argo Rollouts' choices).
func splitVersion(_ context.Context, c client.Client) (schema.GroupVersionKind, error) {
	return pickSplitVersion(c.RESTMapper())
}

func pickSplitVersion(mapper meta.RESTMapper) (schema.GroupVersionKind, error) {
	ms, err := mapper.RESTMappings(splitGK)
	if err != nil {
		if meta.IsNoMatchError(err) {
			return schema.GroupVersionKind{}, errors.New("the TrafficSplit CRD (trafficsplits.split.smi-spec.io) is not installed")
		}
		return schema.GroupVersionKind{}, err
	}
	served := map[string]bool{}
	for _, m := range ms {
		served[m.GroupVersionKind.Version] = true
	}
	for _, v := range []string{"v1alpha2", "v1alpha1"} {
		if served[v] {
			return splitGK.WithVersion(v), nil
		}
	}
	return schema.GroupVersionKind{}, fmt.Errorf("TrafficSplit is served in none of v1alpha2, v1alpha1 (what Meridian writes)")
}

// isNotFound sees through the errors wrapped with the object's name.
func isNotFound(err error) bool { return err != nil && apierrors.IsNotFound(err) }

// NewForConfig returns the routers with a client for cfg (the Kubernetes
// store's scheme: meridian.io, split.smi-spec.io, the Gateway API), over
// the controller's store st.
func NewForConfig(cfg *rest.Config, st store.Reader, co compile.Options) (*Routers, error) {
	scheme, err := kube.Scheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("traffic routers: %w", err)
	}
	return New(Options{Client: c, Store: st, Compile: co}), nil
}
