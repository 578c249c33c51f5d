// Package status merges what the gateway compiler says an object's status
// must be with what the object carries, as the Gateway API asks of a
// controller: conditions keep their lastTransitionTime while their status
// does not change; a route's parent statuses written by other controllers,
// or by this controller for other Gateways, are kept; and an update is made
// only when something changed. Merging is pure; kube.go writes.
package status

import (
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Conditions returns computed with each condition's lastTransitionTime
// taken from stored when stored has the same type with the same status,
// and now otherwise. Stored conditions of other types are dropped: the
// controller owns the whole list.
func Conditions(stored, computed []metav1.Condition, now time.Time) []metav1.Condition {
	out := make([]metav1.Condition, len(computed))
	for i, c := range computed {
		c.LastTransitionTime = metav1.NewTime(now.Truncate(time.Second))
		for _, s := range stored {
			if s.Type == c.Type && s.Status == c.Status && !s.LastTransitionTime.IsZero() {
				c.LastTransitionTime = s.LastTransitionTime
				break
			}
		}
		out[i] = c
	}
	return out
}

// Gateway returns the Gateway's new status: computed, with addresses, and
// the transition times kept from stored.
func Gateway(stored, computed gwv1.GatewayStatus, addresses []gwv1.GatewayStatusAddress, now time.Time) gwv1.GatewayStatus {
	out := gwv1.GatewayStatus{Addresses: addresses, Conditions: Conditions(stored.Conditions, computed.Conditions, now), AttachedListenerSets: computed.AttachedListenerSets}
	for _, l := range computed.Listeners {
		var old []metav1.Condition
		for _, s := range stored.Listeners {
			if s.Name == l.Name {
				old = s.Conditions
				break
			}
		}
		l.Conditions = Conditions(old, l.Conditions, now)
		out.Listeners = append(out.Listeners, l)
	}
	return out
}

// ListenerSet returns a ListenerSet's new status: computed, with the
// transition times kept from stored.
func ListenerSet(stored, computed gwv1.ListenerSetStatus, now time.Time) gwv1.ListenerSetStatus {
	out := gwv1.ListenerSetStatus{Conditions: Conditions(stored.Conditions, computed.Conditions, now)}
	for _, l := range computed.Listeners {
		var old []metav1.Condition
		for _, s := range stored.Listeners {
			if s.Name == l.Name {
				old = s.Conditions
				break
			}
		}
		l.Conditions = Conditions(old, l.Conditions, now)
		out.Listeners = append(out.Listeners, l)
	}
	return out
}

// Parents says which route parent entries one Gateway's compile writes.
// A Key is a Gateway's own parentRefs; Owner adds its ListenerSets'.
type Parents interface {
	Owns(parent gwv1.ParentReference, routeNS string) bool
}

// Owns: parent names Gateway gw.
func (gw Key) Owns(parent gwv1.ParentReference, routeNS string) bool {
	return ForGateway(parent, routeNS, gw)
}

// Owner is a Gateway and the ListenerSets whose parentRef names it: a
// route's entries for a parentRef naming any of them are that Gateway's
// compile's to write.
type Owner struct {
	Gateway      Key
	ListenerSets []Key
}

// Owns: parent names o's Gateway or one of its ListenerSets.
func (o Owner) Owns(parent gwv1.ParentReference, routeNS string) bool {
	if ForGateway(parent, routeNS, o.Gateway) {
		return true
	}
	if k, ok := ListenerSetOf(parent, routeNS); ok {
		for _, s := range o.ListenerSets {
			if s == k {
				return true
			}
		}
	}
	return false
}

// ListenerSetOf is the ListenerSet parent names, if it names one.
func ListenerSetOf(parent gwv1.ParentReference, routeNS string) (Key, bool) {
	if parent.Group != nil && *parent.Group != gwv1.GroupName {
		return Key{}, false
	}
	if parent.Kind == nil || *parent.Kind != "ListenerSet" {
		return Key{}, false
	}
	ns := routeNS
	if parent.Namespace != nil {
		ns = string(*parent.Namespace)
	}
	return Key{Namespace: ns, Name: string(parent.Name)}, true
}

// RouteParents returns a route's new status.parents: stored, without the
// entries of controller for the parents gw owns, plus ours (which are all
// for those), each keeping the transition times of the stored entry for
// the same parentRef. Entries of other controllers, and of this controller
// for other parents, are kept as they are and where they are.
func RouteParents(stored, ours []gwv1.RouteParentStatus, controller gwv1.GatewayController, routeNS string, gw Parents, now time.Time) []gwv1.RouteParentStatus {
	out := []gwv1.RouteParentStatus{} // not nil: status.parents is required, [] when empty
	var mine []gwv1.RouteParentStatus
	for _, s := range stored {
		if s.ControllerName == controller && gw.Owns(s.ParentRef, routeNS) {
			s.ParentRef = defaulted(s.ParentRef)
			mine = append(mine, s)
			continue
		}
		out = append(out, s)
	}
	for _, p := range ours {
		p.ParentRef = defaulted(p.ParentRef)
		var old []metav1.Condition
		for _, s := range mine {
			if equality.Semantic.DeepEqual(s.ParentRef, p.ParentRef) {
				old = s.Conditions
				break
			}
		}
		p.Conditions = Conditions(old, p.Conditions, now)
		out = append(out, p)
	}
	return out
}

// defaulted is r with the group and kind the API server's defaults fill
// in, so that a computed parentRef equals the stored one.
func defaulted(r gwv1.ParentReference) gwv1.ParentReference {
	if r.Group == nil {
		g := gwv1.Group(gwv1.GroupName)
		r.Group = &g
	}
	if r.Kind == nil {
		k := gwv1.Kind("Gateway")
		r.Kind = &k
	}
	return r
}

// Key names a Gateway.
type Key struct{ Namespace, Name string }

// ForGateway reports whether parent, in a route of namespace routeNS,
// names Gateway gw.
func ForGateway(parent gwv1.ParentReference, routeNS string, gw Key) bool {
	if parent.Group != nil && *parent.Group != gwv1.GroupName {
		return false
	}
	if parent.Kind != nil && *parent.Kind != "Gateway" {
		return false
	}
	ns := routeNS
	if parent.Namespace != nil {
		ns = string(*parent.Namespace)
	}
	return ns == gw.Namespace && string(parent.Name) == gw.Name
}

// Same reports whether a and b say the same, lastTransitionTimes aside:
// when they do, nothing is written.
func Same[T any](a, b T, times func(*T) []*metav1.Time) bool {
	a2, b2 := clearTimes(a, times), clearTimes(b, times)
	return equality.Semantic.DeepEqual(a2, b2)
}

func clearTimes[T any](v T, times func(*T) []*metav1.Time) T {
	for _, t := range times(&v) {
		*t = metav1.Time{}
	}
	return v
}

// GatewayTimes lists a GatewayStatus's transition times (for Same).
func GatewayTimes(s *gwv1.GatewayStatus) []*metav1.Time {
	s.Conditions = slices.Clone(s.Conditions)
	s.Listeners = slices.Clone(s.Listeners)
	var ts []*metav1.Time
	for i := range s.Conditions {
		ts = append(ts, &s.Conditions[i].LastTransitionTime)
	}
	for i := range s.Listeners {
		s.Listeners[i].Conditions = slices.Clone(s.Listeners[i].Conditions)
		for j := range s.Listeners[i].Conditions {
			ts = append(ts, &s.Listeners[i].Conditions[j].LastTransitionTime)
		}
	}
	return ts
}

// ListenerSetTimes lists a ListenerSetStatus's transition times (for
// Same).
func ListenerSetTimes(s *gwv1.ListenerSetStatus) []*metav1.Time {
	s.Conditions = slices.Clone(s.Conditions)
	s.Listeners = slices.Clone(s.Listeners)
	var ts []*metav1.Time
	for i := range s.Conditions {
		ts = append(ts, &s.Conditions[i].LastTransitionTime)
	}
	for i := range s.Listeners {
		s.Listeners[i].Conditions = slices.Clone(s.Listeners[i].Conditions)
		for j := range s.Listeners[i].Conditions {
			ts = append(ts, &s.Listeners[i].Conditions[j].LastTransitionTime)
		}
	}
	return ts
}

// ParentsTimes lists route parent statuses' transition times (for Same).
func ParentsTimes(ps *[]gwv1.RouteParentStatus) []*metav1.Time {
	*ps = slices.Clone(*ps)
	var ts []*metav1.Time
	for i := range *ps {
		(*ps)[i].Conditions = slices.Clone((*ps)[i].Conditions)
		for j := range (*ps)[i].Conditions {
			ts = append(ts, &(*ps)[i].Conditions[j].LastTransitionTime)
		}
	}
	return ts
}

// ConditionsTimes lists conditions' transition times (for Same).
func ConditionsTimes(cs *[]metav1.Condition) []*metav1.Time {
	*cs = slices.Clone(*cs)
	ts := make([]*metav1.Time, len(*cs))
	for i := range *cs {
		ts[i] = &(*cs)[i].LastTransitionTime
	}
	return ts
}

// MaxAncestors is the most entries a policy's status.ancestors may hold
// (the CRD's maxItems).
const MaxAncestors = 16

// PolicyAncestors returns a policy's new status.ancestors: stored, without
// the entry of controller for Gateway gw, plus ours when not nil (its
// ancestorRef names gw), keeping the transition times of the entry it
// replaces. The list is a map keyed by ancestorRef and controllerName:
// other controllers' entries, and this controller's for other Gateways,
// are kept as they are and where they are. full reports that ours was
// not added because the list already holds MaxAncestors entries (the
// spec's "MUST NOT add further entries").
func PolicyAncestors(stored []gwv1.PolicyAncestorStatus, ours *gwv1.PolicyAncestorStatus, controller gwv1.GatewayController, policyNS string, gw Key, now time.Time) (out []gwv1.PolicyAncestorStatus, full bool) {
	out = []gwv1.PolicyAncestorStatus{} // status.ancestors is required: [] when empty
	var old []metav1.Condition
	had := false
	for _, s := range stored {
		if s.ControllerName == controller && ForGateway(s.AncestorRef, policyNS, gw) {
			old, had = s.Conditions, true
			continue
		}
		out = append(out, s)
	}
	if ours == nil {
		return out, false
	}
	if !had && len(out) >= MaxAncestors {
		return out, true
	}
	p := *ours
	p.AncestorRef = defaulted(p.AncestorRef)
	p.Conditions = Conditions(old, p.Conditions, now)
	return append(out, p), false
}

// AncestorsTimes lists policy ancestor statuses' transition times (for
// Same).
func AncestorsTimes(as *[]gwv1.PolicyAncestorStatus) []*metav1.Time {
	*as = slices.Clone(*as)
	var ts []*metav1.Time
	for i := range *as {
		(*as)[i].Conditions = slices.Clone((*as)[i].Conditions)
		for j := range (*as)[i].Conditions {
			ts = append(ts, &(*as)[i].Conditions[j].LastTransitionTime)
		}
	}
	return ts
}
