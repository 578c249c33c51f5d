package compile

import (
	"fmt"
	"regexp"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// MeridianRouted reports whether ro routes its traffic with Meridian's own
// split (`trafficRouting.meridian: {}`, no httpRoute or trafficSplit named):
// the split compiled from its status, with nothing written for the user.
func MeridianRouted(ro *v1alpha1.Rollout) bool {
	c := ro.Spec.Strategy.Canary
	if c == nil || c.TrafficRouting == nil || c.TrafficRouting.Meridian == nil {
		return false
	}
	m := c.TrafficRouting.Meridian
	return m.HTTPRoute == "" && m.TrafficSplit == "" && c.StableService != ""
}

// routingRollouts are the Rollouts routing service k's traffic with
// Meridian's own split (k is their stable Service), by name.
func routingRollouts(r store.Reader, k store.Key) []*v1alpha1.Rollout {
	var out []*v1alpha1.Rollout
	for _, ro := range r.Rollouts(k) {
		if MeridianRouted(ro) {
			out = append(out, ro)
		}
	}
	return out
}

// rolloutSplit is the split a Rollout's status.canary.weights give service
// t's traffic: the pods of the stable hash and those of the canary hash
// behind t (SubsetAuthority), by weight. ok is false when no Rollout
// routes t or the first one has no weights yet: the profile then comes
// from elsewhere.
//
// The invariant it keeps: a side given weight has ready endpoints. A side
// whose subset has none gives its weight to the other (reported), and with
// neither, there is no split and the service itself serves, so a request
// never meets an empty endpoint set because of the split.
//
// hdr is the Rollout's header route (RolloutHeaderRoute): requests whose
// headers match go to the canary subset whatever the weights, while it has
// ready endpoints (else the route is left out, reported: the invariant
// above).
func rolloutSplit(r store.Reader, t Target, o Options, p *DestinationProfile) (backends []weighted, hdr *HTTPRoute, ok bool) {
	ros := routingRollouts(r, t.Service)
	if len(ros) == 0 {
		return nil, nil, false
	}
	for _, x := range ros[1:] {
		p.Warnings = append(p.Warnings, fmt.Sprintf("rollout %s/%s ignored: rollout %s/%s already routes service %s", x.Namespace, x.Name, ros[0].Namespace, ros[0].Name, t.Service))
	}
	ro := ros[0]
	if _, ck := store.RolloutServices(ro); ck.Name != "" {
		p.Deps = appendKey(p.Deps, ck)
	}
	w := ro.Status.Canary.Weights
	if w == nil || w.Stable.PodTemplateHash == "" {
		return nil, nil, false
	}
	if hr := RolloutHeaderRoute(ro); hr != nil {
		m, err := HeaderRouteMatch(hr)
		canary := SubsetAuthority(w.Canary.PodTemplateHash, t.Service, t.Port, o)
		switch {
		case err != nil:
			p.Warnings = append(p.Warnings, fmt.Sprintf("rollout %s/%s: header route left out: %v", ro.Namespace, ro.Name, err))
		case len(Endpoints(r, canary, o).Endpoints) == 0:
			p.Warnings = append(p.Warnings, fmt.Sprintf("rollout %s/%s: the canary pods (%s %s) of service %s have no ready endpoint: header route %q left out", ro.Namespace, ro.Name, PodTemplateHashLabel, w.Canary.PodTemplateHash, t.Service, hr.Name))
		default:
			hdr = &HTTPRoute{Name: "Rollout/" + ro.Namespace + "/" + ro.Name + "/" + hr.Name, Match: m, Backends: []RouteBackend{{Authority: canary, Weight: 1}}}
		}
	}
	type side struct {
		name, hash string
		weight     int64
		ready      bool
	}
	sides := []side{{"stable", w.Stable.PodTemplateHash, int64(w.Stable.Weight), false}, {"canary", w.Canary.PodTemplateHash, int64(w.Canary.Weight), false}}
	for i := range sides {
		s := &sides[i]
		if s.hash == "" || s.weight <= 0 {
			s.weight = 0
			continue
		}
		es := Endpoints(r, SubsetAuthority(s.hash, t.Service, t.Port, o), o)
		s.ready = len(es.Endpoints) > 0
	}
	for i := range sides {
		s, other := &sides[i], &sides[1-i]
		if s.weight > 0 && !s.ready {
			p.Warnings = append(p.Warnings, fmt.Sprintf("rollout %s/%s: the %s pods (%s %s) of service %s have no ready endpoint: their weight %d goes to the %s", ro.Namespace, ro.Name, s.name, PodTemplateHashLabel, s.hash, t.Service, s.weight, other.name))
			if other.ready {
				other.weight += s.weight
			}
			s.weight = 0
		}
	}
	for _, s := range sides {
		if s.weight > 0 {
			backends = append(backends, weighted{authority: SubsetAuthority(s.hash, t.Service, t.Port, o), weight: s.weight})
		}
	}
	if len(backends) == 0 {
		p.Warnings = append(p.Warnings, fmt.Sprintf("rollout %s/%s: neither side of service %s has a ready endpoint: the service itself serves", ro.Namespace, ro.Name, t.Service))
		return nil, hdr, true
	}
	return backends, hdr, true
}

// RolloutHeaderRoute is the setHeaderRoute in effect for a Rollout with
// Meridian's own split, derived from what the reconciler writes, as the
// step machine derives it (controlplane/rollouts/steps): the last
// setHeaderRoute step up to status.currentStepIndex (one with no match
// removes it), while a canary is in progress (status.canary.weights name a
// canary hash other than the stable one) and not aborted. nil: none. So a
// header route appears and goes with the status write that moves the step,
// promotes or aborts, like the weights.
func RolloutHeaderRoute(ro *v1alpha1.Rollout) *v1alpha1.SetHeaderRoute {
	c := ro.Spec.Strategy.Canary
	w := ro.Status.Canary.Weights
	if c == nil || ro.Status.Abort || w == nil || ro.Status.CurrentStepIndex == nil ||
		w.Canary.PodTemplateHash == "" || w.Canary.PodTemplateHash == w.Stable.PodTemplateHash {
		return nil
	}
	var hr *v1alpha1.SetHeaderRoute
	for i := 0; i <= int(*ro.Status.CurrentStepIndex) && i < len(c.Steps); i++ {
		if s := c.Steps[i].SetHeaderRoute; s != nil {
			hr = s
			if len(s.Match) == 0 {
				hr = nil
			}
		}
	}
	return hr
}

// HeaderRouteMatch is a setHeaderRoute's match in the gateway's model:
// every header condition must hold; exact is compared exactly, prefix and
// regex (RE2, anchored) become regular expressions. The error names the
// field and what is allowed.
func HeaderRouteMatch(hr *v1alpha1.SetHeaderRoute) (*gatewaypb.Match, error) {
	m := &gatewaypb.Match{}
	for i, h := range hr.Match {
		field := fmt.Sprintf("setHeaderRoute %q: match[%d]", hr.Name, i)
		if h.HeaderName == "" {
			return nil, fmt.Errorf("%s.headerName: required", field)
		}
		v := h.HeaderValue
		n := 0
		if v != nil {
			for _, x := range []string{v.Exact, v.Prefix, v.Regex} {
				if x != "" {
					n++
				}
			}
		}
		if n != 1 {
			return nil, fmt.Errorf("%s.headerValue: exactly one of exact, prefix and regex is required", field)
		}
		switch {
		case v.Exact != "":
			m.Headers = append(m.Headers, &gatewaypb.HeaderMatch{Name: h.HeaderName, Value: v.Exact})
		case v.Prefix != "":
			m.Headers = append(m.Headers, &gatewaypb.HeaderMatch{Name: h.HeaderName, Regex: true, Value: regexp.QuoteMeta(v.Prefix) + ".*"})
		default:
			if _, err := regexp.Compile(v.Regex); err != nil {
				return nil, fmt.Errorf("%s.headerValue.regex %q is not a valid RE2 regular expression: %v", field, v.Regex, err)
			}
			m.Headers = append(m.Headers, &gatewaypb.HeaderMatch{Name: h.HeaderName, Regex: true, Value: v.Regex})
		}
	}
	return m, nil
}
