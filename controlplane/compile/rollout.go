package compile

import (
	"fmt"

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
func rolloutSplit(r store.Reader, t Target, o Options, p *DestinationProfile) (backends []weighted, ok bool) {
	ros := routingRollouts(r, t.Service)
	if len(ros) == 0 {
		return nil, false
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
		return nil, false
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
		return nil, true
	}
	return backends, true
}
