package compile

import (
	"fmt"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// Retry budget defaults, as Linkerd's: retries may add 20% to the request
// rate, at least 10 retries per second are always allowed, and requests are
// counted over a 10 s window.
const (
	DefaultRetryRatio          = 0.2
	DefaultMinRetriesPerSecond = 10
	DefaultRetryTTL            = 10 * time.Second
)

// DestinationProfile is how a client proxy treats requests to an authority.
type DestinationProfile struct {
	// Exists is false when the authority names no known service; the
	// profile is then the default one (no routes, default retry budget).
	Exists bool
	Target Target
	// FullyQualifiedName is the service's FQDN; empty when !Exists.
	FullyQualifiedName string
	// Routes are the ServiceProfile's valid routes, in its order (the first
	// matching route wins).
	Routes      []Route
	RetryBudget RetryBudget
	// DstOverrides split the authority's traffic over other authorities by
	// weight. Empty: everything goes to the authority itself. Backends of
	// weight 0 are dropped (they would receive nothing), as are backends
	// whose service does not exist.
	DstOverrides []WeightedDst
	// OpaqueProtocol: never detect the protocol on this port.
	OpaqueProtocol bool
	// HTTPRoutes route requests by what they are, in precedence order
	// (the first whose Match holds): a Rollout's header route, or the
	// GAMMA routes' rules, one per match, then a last route answering 404
	// (the Gateway API's answer when no rule matches). A request none
	// matches goes by DstOverrides.
	HTTPRoutes []HTTPRoute
	// Deps are the services whose changes can change this profile: the
	// apex and every backend named, existing or not.
	Deps []store.Key
	// Warnings explain what was skipped and why.
	Warnings []string
}

// Route is a class of requests.
type Route struct {
	Name            string
	Condition       RequestMatch
	ResponseClasses []ResponseClass
	IsRetryable     bool
	// Timeout bounds the whole request including retries; 0: none.
	Timeout time.Duration
}

// RequestMatch matches a request when every field that is set matches
// (PathRegex is anchored at both ends; Method is compared exactly).
type RequestMatch struct {
	All       []RequestMatch
	Any       []RequestMatch
	Not       *RequestMatch
	PathRegex string
	Method    string
}

// ResponseClass classifies responses matching Condition.
type ResponseClass struct {
	Condition ResponseMatch
	IsFailure bool
}

// ResponseMatch matches a response when every field that is set matches.
type ResponseMatch struct {
	All    []ResponseMatch
	Any    []ResponseMatch
	Not    *ResponseMatch
	Status *StatusRange
}

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Min, Max uint32 }

// RetryBudget limits retries to a fraction of requests.
type RetryBudget struct {
	RetryRatio          float32
	MinRetriesPerSecond uint32
	TTL                 time.Duration
}

// DefaultRetryBudget is the budget of a profile that names none.
func DefaultRetryBudget() RetryBudget {
	return RetryBudget{RetryRatio: DefaultRetryRatio, MinRetriesPerSecond: DefaultMinRetriesPerSecond, TTL: DefaultRetryTTL}
}

// HTTPRoute is one match of a route rule, with the rule's backends,
// header filters and timeout: the gateway's route model (gatewaypb.Match,
// gatewaypb.HeaderModifier) for a mesh authority.
type HTTPRoute struct {
	// Name is the route's metrics label: <kind>/<namespace>/<name>/<rule>.
	Name string
	// Match is nil for every request.
	Match *gatewaypb.Match
	// Backends share the route's requests by weight; empty: the authority
	// itself serves them.
	Backends        []RouteBackend
	RequestHeaders  *gatewaypb.HeaderModifier
	ResponseHeaders *gatewaypb.HeaderModifier
	// Redirect answers the route's requests (RequestRedirect); Rewrite
	// changes them before they go (URLRewrite). At most one is set.
	Redirect *gatewaypb.Redirect
	Rewrite  *gatewaypb.Rewrite
	// Timeout bounds the wait for the response's headers; 0: none.
	Timeout time.Duration
	// Status, when not 0, answers the route's requests with it and
	// forwards nothing (404: after GAMMA routes, no rule matched).
	Status uint32
}

// RouteBackend is a weighted backend of an HTTPRoute. An empty Authority
// is an invalid backendRef: its share is answered 500.
type RouteBackend struct {
	Authority       string
	Weight          uint32
	RequestHeaders  *gatewaypb.HeaderModifier
	ResponseHeaders *gatewaypb.HeaderModifier
}

// WeightedDst is a weighted backend authority.
type WeightedDst struct {
	Authority string
	Weight    uint32
}

// Profile compiles authority's profile from its ServiceProfile, the
// Rollout routing its service (Meridian's own split), the GAMMA routes
// whose parent it is, and the SMI TrafficSplits whose apex it is.
//
// Traffic split: when a TrafficSplit names the service as apex, its backends
// (as <backend>.<ns>.svc.<cluster-domain>:<port>) replace the
// ServiceProfile's dstOverrides. With several splits for one apex the first
// by name is used and the others are reported. A backend whose service does
// not exist is reported and skipped; a backend of weight 0 is dropped. If no
// backend is left, the profile has no dstOverrides and traffic goes to the
// apex itself: a broken split is never an outage.
func Profile(r store.Reader, authority string, o Options) DestinationProfile {
	p := DestinationProfile{RetryBudget: DefaultRetryBudget()}
	t, deps, err := resolve(r, authority, o)
	p.Target, p.Deps = t, deps
	if err != nil {
		p.Warnings = append(p.Warnings, err.Error())
		return p
	}
	p.Exists = true
	p.FullyQualifiedName = FQDN(t.Service, o)
	p.OpaqueProtocol = OpaquePort(r, t, o)

	var overrides []weighted // the ServiceProfile's, as written
	if sp, ok := r.ServiceProfile(t.Service); ok && sp != nil {
		spec := fromServiceProfile(sp, &p.Warnings)
		p.Routes = spec.routes
		if spec.budget != nil {
			p.RetryBudget = *spec.budget
		}
		overrides = spec.dstOverrides
	}

	// The split, from the first source that has one: a Rollout routing the
	// service with Meridian's own split, a GAMMA mesh route, an SMI
	// TrafficSplit, the ServiceProfile's dstOverrides (README: precedence).
	splits := r.TrafficSplits(t.Service)
	var backends []weighted
	fromRollout, fromRoute := false, false
	if t.Subset != "" {
		// A Rollout subset is a split's backend: it is never split again.
		splits, overrides, fromRollout = nil, nil, true
	} else {
		var hdr *HTTPRoute
		backends, hdr, fromRollout = rolloutSplit(r, t, o, &p)
		if hdr != nil {
			p.HTTPRoutes = append(p.HTTPRoutes, *hdr)
		}
	}
	if !fromRollout {
		p.HTTPRoutes, backends, fromRoute = meshRoutes(r, t, o, &p)
	} else if t.Subset == "" {
		for _, m := range meshRoutesOf(r, t.Service) {
			if m.appliesTo(t) {
				p.Warnings = append(p.Warnings, fmt.Sprintf("%s %s ignored: a rollout routes %s", strings.ToLower(m.kind), m.key(), t.Service))
			}
		}
	}
	switch {
	case fromRollout || fromRoute:
		what := "a mesh route"
		if fromRollout {
			what = "a rollout"
		}
		for _, ts := range splits {
			p.Warnings = append(p.Warnings, fmt.Sprintf("trafficsplit %s ignored: %s splits %s", ts.Key, what, t.Service))
		}
		if len(overrides) > 0 {
			p.Warnings = append(p.Warnings, fmt.Sprintf("%s replaces the serviceprofile's dstOverrides", what))
		}
	case len(splits) > 0:
		splits = append([]store.TrafficSplit(nil), splits...)
		sort.Slice(splits, func(i, j int) bool { return splits[i].Key.String() < splits[j].Key.String() })
		for _, ts := range splits[1:] {
			p.Warnings = append(p.Warnings, fmt.Sprintf("trafficsplit %s ignored: %s already splits %s", ts.Key, splits[0].Key, t.Service))
		}
		ts := splits[0]
		if len(overrides) > 0 {
			p.Warnings = append(p.Warnings, fmt.Sprintf("trafficsplit %s replaces the serviceprofile's dstOverrides", ts.Key))
		}
		port := strconv.FormatUint(uint64(t.Port), 10)
		for _, b := range ts.Backends {
			k := store.Key{Namespace: t.Service.Namespace, Name: b.Service}
			p.Deps = appendKey(p.Deps, k)
			if b.Weight < 0 {
				p.Warnings = append(p.Warnings, fmt.Sprintf("trafficsplit %s: backend %s has negative weight %d: skipped", ts.Key, b.Service, b.Weight))
				continue
			}
			if !serviceExists(r, k, o) {
				p.Warnings = append(p.Warnings, fmt.Sprintf("trafficsplit %s: backend service %s does not exist: skipped", ts.Key, k))
				continue
			}
			backends = append(backends, weighted{authority: net.JoinHostPort(FQDN(k, o), port), weight: b.Weight})
		}
	default:
		for _, d := range overrides {
			bt, bdeps, err := resolve(r, d.authority, o)
			for _, k := range bdeps {
				p.Deps = appendKey(p.Deps, k)
			}
			if err != nil {
				p.Warnings = append(p.Warnings, fmt.Sprintf("serviceprofile dstOverride %q skipped: %v", d.authority, err))
				continue
			}
			if d.weight < 0 {
				p.Warnings = append(p.Warnings, fmt.Sprintf("serviceprofile dstOverride %q has a negative weight: skipped", d.authority))
				continue
			}
			// The FQDN form, whatever form the profile used.
			backends = append(backends, weighted{authority: net.JoinHostPort(FQDN(bt.Service, o), strconv.FormatUint(uint64(bt.Port), 10)), weight: d.weight})
		}
	}
	p.DstOverrides = scaleWeights(backends)
	if len(backends) > 0 && len(p.DstOverrides) == 0 {
		p.Warnings = append(p.Warnings, "every backend has weight 0: traffic goes to the apex service")
	}
	return p
}

// weighted is a backend before its weight is scaled to 32 bits.
type weighted struct {
	authority string
	weight    int64
}

// scaleWeights drops zero weights, merges backends listed twice, and scales
// the weights down proportionally when the largest does not fit in uint32
// (keeping every non-zero weight at least 1).
func scaleWeights(ws []weighted) []WeightedDst {
	var maxW int64
	sum := map[string]int64{}
	var order []string
	for _, w := range ws {
		if w.weight <= 0 {
			continue
		}
		if _, ok := sum[w.authority]; !ok {
			order = append(order, w.authority)
		}
		if sum[w.authority] > math.MaxInt64-w.weight {
			sum[w.authority] = math.MaxInt64
		} else {
			sum[w.authority] += w.weight
		}
		if sum[w.authority] > maxW {
			maxW = sum[w.authority]
		}
	}
	out := make([]WeightedDst, 0, len(order))
	for _, a := range order {
		w := sum[a]
		if maxW > math.MaxUint32 {
			w = int64(float64(w) / float64(maxW) * math.MaxUint32)
			if w < 1 {
				w = 1
			}
		}
		out = append(out, WeightedDst{Authority: a, Weight: uint32(w)})
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func serviceExists(r store.Reader, k store.Key, o Options) bool {
	if svc, ok := r.Service(k); ok {
		return svc.Spec.Type != "ExternalName"
	}
	return o.Local && len(r.Workloads(k)) > 0
}

func appendKey(ks []store.Key, k store.Key) []store.Key {
	for _, x := range ks {
		if x == k {
			return ks
		}
	}
	return append(ks, k)
}
