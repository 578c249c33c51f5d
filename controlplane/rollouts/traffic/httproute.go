package traffic

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/steps"
)

// httpRouteRouter is `meridian: {httpRoute: NAME}`: the weights of the
// canary and stable backendRefs of a Gateway API HTTPRoute the user owns,
// in every rule that has both (other backends and rules are left as they
// are). The route may have Gateway parents (the edge) or a Service parent
// (the mesh, GAMMA). Header routes are rules of their own, named
// rollout-<rollout>-<managed route>, sending matching requests to the
// canary.
type httpRouteRouter struct{ o Options }

const httpRouteField = "spec.strategy.canary.trafficRouting.meridian.httpRoute"

func (r *httpRouteRouter) get(ctx context.Context, ro *v1alpha1.Rollout) (*gwv1.HTTPRoute, error) {
	name := ro.Spec.Strategy.Canary.TrafficRouting.Meridian.HTTPRoute
	var hr gwv1.HTTPRoute
	if err := r.o.Client.Get(ctx, types.NamespacedName{Namespace: ro.Namespace, Name: name}, &hr); err != nil {
		return nil, fmt.Errorf("%s: HTTPRoute %s/%s: %w", httpRouteField, ro.Namespace, name, err)
	}
	return &hr, nil
}

// isService reports whether a backendRef names core Service name in the
// route's namespace.
func isService(b gwv1.BackendObjectReference, routeNS, ns, name string) bool {
	if (b.Group != nil && *b.Group != "") || (b.Kind != nil && *b.Kind != "Service") || string(b.Name) != name {
		return false
	}
	bns := routeNS
	if b.Namespace != nil && *b.Namespace != "" {
		bns = string(*b.Namespace)
	}
	return bns == ns
}

// setRouteWeights sets the weights of the canary and stable backendRefs in
// every rule that has both, header-route rules aside.
func setRouteWeights(hr *gwv1.HTTPRoute, ns, canary, stable string, wc, ws int32) error {
	n := 0
	for i := range hr.Spec.Rules {
		rule := &hr.Spec.Rules[i]
		if managedRule(rule) {
			continue
		}
		ci, si := -1, -1
		for j, b := range rule.BackendRefs {
			switch {
			case isService(b.BackendObjectReference, hr.Namespace, ns, canary):
				ci = j
			case isService(b.BackendObjectReference, hr.Namespace, ns, stable):
				si = j
			}
		}
		if ci < 0 || si < 0 {
			continue
		}
		n++
		rule.BackendRefs[ci].Weight = &wc
		rule.BackendRefs[si].Weight = &ws
	}
	if n == 0 {
		return fmt.Errorf("HTTPRoute %s/%s: no rule has backendRefs to both the canaryService %q and the stableService %q (spec.rules[].backendRefs): add both to the rules the Rollout should split", hr.Namespace, hr.Name, canary, stable)
	}
	return nil
}

func (r *httpRouteRouter) SetWeights(ctx context.Context, ro *v1alpha1.Rollout, w steps.Weights) error {
	return r.update(ctx, ro, func(hr *gwv1.HTTPRoute) error {
		canary, stable := services(ro)
		return setRouteWeights(hr, ro.Namespace, canary, stable, w.Canary, w.Stable)
	})
}

// update reads the route, applies f and writes it if it changed.
// Again on a conflict: the route's status writers update it meanwhile.
func (r *httpRouteRouter) update(ctx context.Context, ro *v1alpha1.Rollout, f func(*gwv1.HTTPRoute) error) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		hr, err := r.get(ctx, ro)
		if err != nil {
			return err
		}
		before := hr.Spec.DeepCopy()
		if err := f(hr); err != nil {
			return fmt.Errorf("%s: %w", httpRouteField, err)
		}
		if equality.Semantic.DeepEqual(before, &hr.Spec) {
			return nil
		}
		if err := r.o.Client.Update(ctx, hr); err != nil {
			return fmt.Errorf("%s: updating HTTPRoute %s/%s: %w", httpRouteField, hr.Namespace, hr.Name, err)
		}
		return nil
	})
}

// managedPrefix starts the names of the header-route rules Meridian adds.
const managedPrefix = "rollout-"

func managedName(ro *v1alpha1.Rollout, route string) gwv1.SectionName {
	return gwv1.SectionName(managedPrefix + ro.Name + "-" + route)
}

func managedRule(rule *gwv1.HTTPRouteRule) bool {
	return rule.Name != nil && strings.HasPrefix(string(*rule.Name), managedPrefix)
}

func ownsRule(rule *gwv1.HTTPRouteRule, ro *v1alpha1.Rollout) bool {
	return rule.Name != nil && strings.HasPrefix(string(*rule.Name), managedPrefix+ro.Name+"-")
}

// SetHeaderRoute adds (or replaces) the rule named for hr: requests whose
// headers match go to the canary Service (on the port of the route's
// canary backendRef). hr nil removes every header route the Rollout added;
// hr with no match removes that one.
func (r *httpRouteRouter) SetHeaderRoute(ctx context.Context, ro *v1alpha1.Rollout, hdr *v1alpha1.SetHeaderRoute) error {
	return r.update(ctx, ro, func(hr *gwv1.HTTPRoute) error {
		if hdr == nil {
			hr.Spec.Rules = deleteRules(hr.Spec.Rules, func(rule *gwv1.HTTPRouteRule) bool { return ownsRule(rule, ro) })
			return nil
		}
		name := managedName(ro, hdr.Name)
		hr.Spec.Rules = deleteRules(hr.Spec.Rules, func(rule *gwv1.HTTPRouteRule) bool { return rule.Name != nil && *rule.Name == name })
		if len(hdr.Match) == 0 {
			return nil
		}
		canary, _ := services(ro)
		var port *gwv1.PortNumber
		for _, rule := range hr.Spec.Rules {
			for _, b := range rule.BackendRefs {
				if isService(b.BackendObjectReference, hr.Namespace, ro.Namespace, canary) && b.Port != nil {
					port = b.Port
				}
			}
		}
		if port == nil {
			return fmt.Errorf("HTTPRoute %s/%s: no backendRef to the canaryService %q with a port: the header route needs one to copy the port from", hr.Namespace, hr.Name, canary)
		}
		match := gwv1.HTTPRouteMatch{}
		for i, m := range hdr.Match {
			hm, err := headerMatch(m)
			if err != nil {
				return fmt.Errorf("setHeaderRoute %q match[%d]: %w", hdr.Name, i, err)
			}
			match.Headers = append(match.Headers, hm)
		}
		one := int32(1)
		hr.Spec.Rules = append(hr.Spec.Rules, gwv1.HTTPRouteRule{
			Name:    &name,
			Matches: []gwv1.HTTPRouteMatch{match},
			BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{
				BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(canary), Port: port}, Weight: &one}}},
		})
		return nil
	})
}

func headerMatch(m v1alpha1.HeaderRoutingMatch) (gwv1.HTTPHeaderMatch, error) {
	exact, re := gwv1.HeaderMatchExact, gwv1.HeaderMatchRegularExpression
	out := gwv1.HTTPHeaderMatch{Name: gwv1.HTTPHeaderName(m.HeaderName)}
	v := m.HeaderValue
	switch {
	case v == nil:
		return out, fmt.Errorf("headerValue is required")
	case v.Exact != "":
		out.Type, out.Value = &exact, v.Exact
	case v.Prefix != "":
		out.Type, out.Value = &re, "^"+regexp.QuoteMeta(v.Prefix)+".*"
	case v.Regex != "":
		if _, err := regexp.Compile(v.Regex); err != nil {
			return out, fmt.Errorf("headerValue.regex %q: %w", v.Regex, err)
		}
		out.Type, out.Value = &re, v.Regex
	default:
		return out, fmt.Errorf("headerValue: one of exact, prefix, regex is required")
	}
	return out, nil
}

func deleteRules(rules []gwv1.HTTPRouteRule, drop func(*gwv1.HTTPRouteRule) bool) []gwv1.HTTPRouteRule {
	out := rules[:0]
	for i := range rules {
		if !drop(&rules[i]) {
			out = append(out, rules[i])
		}
	}
	return out
}

// Verify: the route has the weights, and every parent status reports the
// route Accepted at its current generation (the controllers serving it
// have compiled this version).
func (r *httpRouteRouter) Verify(ctx context.Context, ro *v1alpha1.Rollout, w steps.Weights) (bool, error) {
	hr, err := r.get(ctx, ro)
	if err != nil {
		return false, err
	}
	canary, stable := services(ro)
	want := hr.DeepCopy()
	if err := setRouteWeights(want, ro.Namespace, canary, stable, w.Canary, w.Stable); err != nil {
		return false, err
	}
	if !equality.Semantic.DeepEqual(want.Spec, hr.Spec) {
		return false, nil
	}
	if len(hr.Status.Parents) == 0 {
		return false, nil
	}
	for _, p := range hr.Status.Parents {
		c := findCondition(p.Conditions, string(gwv1.RouteConditionAccepted))
		if c == nil || c.ObservedGeneration < hr.Generation {
			return false, nil
		}
	}
	return true, nil
}

func findCondition(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

// Remove returns the route to all-stable and removes the Rollout's header
// routes.
func (r *httpRouteRouter) Remove(ctx context.Context, ro *v1alpha1.Rollout) error {
	err := r.update(ctx, ro, func(hr *gwv1.HTTPRoute) error {
		hr.Spec.Rules = deleteRules(hr.Spec.Rules, func(rule *gwv1.HTTPRouteRule) bool { return ownsRule(rule, ro) })
		canary, stable := services(ro)
		return setRouteWeights(hr, ro.Namespace, canary, stable, 0, 100)
	})
	if isNotFound(err) {
		return nil
	}
	return err
}
