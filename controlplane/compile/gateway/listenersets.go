package gateway

import (
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meridian-mesh/meridian/controlplane/store"
)

// lset is a ListenerSet whose spec.parentRef names this Gateway.
type lset struct {
	obj *gwv1.ListenerSet
	// reason and msg say why it is not attached (NotAllowed: the
	// Gateway's allowedListeners exclude its namespace; ParentNotAccepted);
	// "" when it is, and its listeners are merged into the Gateway's.
	reason, msg string
	ls          []*listener
}

func (s *lset) attached() bool { return s.reason == "" }

// accepted: attached with at least one listener programmed (the spec's
// "at least one valid listener"); counted in the Gateway's
// attachedListenerSets.
func (s *lset) accepted() bool {
	if !s.attached() {
		return false
	}
	for _, l := range s.ls {
		if l.programmed() {
			return true
		}
	}
	return false
}

// ListenerSetStatus is what one ListenerSet naming this Gateway must
// carry.
type ListenerSetStatus struct {
	ListenerSet types.NamespacedName
	Status      gwv1.ListenerSetStatus
}

// ListenerPort is a port a ListenerSet's programmed listener serves (the
// Gateway's Service must expose it).
type ListenerPort struct {
	Port     gwv1.PortNumber
	Protocol gwv1.ProtocolType
}

// indexListenerSets keeps the ListenerSets whose parentRef names this
// Gateway, in the spec's precedence: oldest first, then by
// namespace/name.
func (c *compiler) indexListenerSets(all []*gwv1.ListenerSet) {
	c.setByKey = map[types.NamespacedName]*lset{}
	for _, o := range all {
		if o == nil {
			continue
		}
		k, ok := store.ListenerSetParent(o)
		if !ok || k.Namespace != c.gw.Namespace || k.Name != c.gw.Name {
			continue
		}
		s := &lset{obj: o}
		c.sets = append(c.sets, s)
		c.setByKey[nn(o.Namespace, o.Name)] = s
	}
	sort.Slice(c.sets, func(i, j int) bool {
		a, b := c.sets[i].obj, c.sets[j].obj
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
}

// listenerSets validates the listeners of the ListenerSets the Gateway
// allows and merges them after the Gateway's own. A listener that
// conflicts with one of higher precedence (the Gateway's, then those of
// older ListenerSets, then earlier in its own) is refused with
// Conflicted True; the one of higher precedence keeps serving.
func (c *compiler) listenerSets() {
	var winners []*listener
	holds := func(l *listener) bool { return l.accepted && l.conflict == "" && routeKinds(l.spec.Protocol) != nil }
	for _, l := range c.ls {
		if holds(l) {
			winners = append(winners, l)
		}
	}
	ownOK := c.ownAccepted()
	for _, set := range c.sets {
		o := set.obj
		c.dep("ListenerSet", o.Namespace, o.Name)
		if why := c.allowsListenerSet(o); why != "" {
			set.reason, set.msg = string(gwv1.ListenerSetReasonNotAllowed), why
			c.reject("ListenerSet", o.Namespace, o.Name, set.reason, set.msg)
			continue
		}
		if !ownOK {
			set.reason = string(gwv1.ListenerSetReasonParentNotAccepted)
			set.msg = fmt.Sprintf("ListenerSet %s/%s: its parent Gateway %s/%s is not accepted (none of its listeners is)", o.Namespace, o.Name, c.gw.Namespace, c.gw.Name)
			c.reject("ListenerSet", o.Namespace, o.Name, set.reason, set.msg)
			continue
		}
		for _, e := range o.Spec.Listeners {
			l := c.newListener(gwv1.Listener(e), set)
			if w, reason := conflictWith(l, winners); w != nil {
				what := "serves another protocol"
				if reason == string(gwv1.ListenerReasonHostnameConflict) {
					what = "has the same hostname"
				}
				l.conflict = reason
				l.accepted, l.acceptReason = false, reason
				l.acceptMs = fmt.Sprintf("%s: %s on port %d %s and takes precedence (the Gateway's listeners first, then ListenerSets oldest first, then by namespace/name)", l.field, w.describe(), l.spec.Port, what)
			} else if holds(l) {
				winners = append(winners, l)
			}
			if !l.accepted {
				c.reject("ListenerSet", o.Namespace, o.Name, l.acceptReason, l.acceptMs)
			} else if l.refsReason != "" {
				c.reject("ListenerSet", o.Namespace, o.Name, l.refsReason, l.refsMsg)
			}
			set.ls = append(set.ls, l)
			c.all = append(c.all, l)
		}
	}
}

// conflictWith returns the first listener of winners that l cannot share
// its port with, and why: another protocol family (ProtocolConflict; an
// unsupported protocol is a family of its own), or the same family and
// hostname (HostnameConflict).
func conflictWith(l *listener, winners []*listener) (*listener, string) {
	for _, w := range winners {
		if !samePort(w, l) {
			continue
		}
		if family(w) != family(l) {
			return w, string(gwv1.ListenerReasonProtocolConflict)
		}
		if w.hostname == l.hostname {
			return w, string(gwv1.ListenerReasonHostnameConflict)
		}
	}
	return nil, ""
}

// family: listeners of one family share a port (HTTP, or TLS: HTTPS and
// TLS listeners, told apart by SNI).
func family(l *listener) string {
	switch l.spec.Protocol {
	case gwv1.HTTPProtocolType:
		return "HTTP"
	case gwv1.HTTPSProtocolType, gwv1.TLSProtocolType:
		return "TLS"
	}
	return string(l.spec.Protocol)
}

// samePort: two listeners share a socket when their port numbers and
// transports are the same (UDP, or TCP under every other protocol).
func samePort(a, b *listener) bool {
	return a.spec.Port == b.spec.Port && (a.spec.Protocol == gwv1.UDPProtocolType) == (b.spec.Protocol == gwv1.UDPProtocolType)
}

// describe names a listener for another's message.
func (l *listener) describe() string {
	if l.set == nil {
		return fmt.Sprintf("the Gateway's listener %s", l.spec.Name)
	}
	return fmt.Sprintf("ListenerSet %s/%s's listener %s", l.set.obj.Namespace, l.set.obj.Name, l.spec.Name)
}

// allowsListenerSet says why the Gateway's spec.allowedListeners does not
// allow ListenerSet o, "" when it does. The default is None.
func (c *compiler) allowsListenerSet(o *gwv1.ListenerSet) string {
	from := gwv1.NamespacesFromNone
	var sel *metav1.LabelSelector
	if al := c.gw.Spec.AllowedListeners; al != nil && al.Namespaces != nil {
		if al.Namespaces.From != nil {
			from = *al.Namespaces.From
		}
		sel = al.Namespaces.Selector
	}
	gw := fmt.Sprintf("Gateway %s/%s", c.gw.Namespace, c.gw.Name)
	who := fmt.Sprintf("ListenerSet %s/%s", o.Namespace, o.Name)
	switch from {
	case gwv1.NamespacesFromAll:
		return ""
	case gwv1.NamespacesFromSame:
		if o.Namespace == c.gw.Namespace {
			return ""
		}
		return fmt.Sprintf("%s: %s's spec.allowedListeners.namespaces.from is Same: only ListenerSets in namespace %s may attach", who, gw, c.gw.Namespace)
	case gwv1.NamespacesFromSelector:
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil || sel == nil {
			why := "is missing"
			if err != nil {
				why = "is invalid: " + err.Error()
			}
			return fmt.Sprintf("%s: %s's spec.allowedListeners.namespaces.selector %s (required with from: Selector), so no ListenerSet may attach", who, gw, why)
		}
		c.dep("Namespace", "", o.Namespace)
		if n, ok := c.namespaces[o.Namespace]; ok && s.Matches(labels.Set(n.Labels)) {
			return ""
		}
		return fmt.Sprintf("%s: namespace %s's labels do not match %s's spec.allowedListeners.namespaces.selector (%s)", who, o.Namespace, gw, s)
	case gwv1.NamespacesFromNone:
		return fmt.Sprintf("%s: %s's spec.allowedListeners allows no ListenerSet (namespaces.from is None, the default; allowed: Same, All, Selector)", who, gw)
	}
	return fmt.Sprintf("%s: %s's spec.allowedListeners.namespaces.from %q is not supported (allowed: All, Same, Selector, None)", who, gw, from)
}

// listenerSetStatus: Accepted and Programmed, True (Accepted; or
// ListenersNotValid while some listener is not programmed) when one of
// its listeners is programmed, else False with NotAllowed,
// ParentNotAccepted or ListenersNotValid; and per listener the same
// conditions as the Gateway's.
func (c *compiler) listenerSetStatus(set *lset) ListenerSetStatus {
	o := set.obj
	gen := o.Generation
	out := ListenerSetStatus{ListenerSet: nn(o.Namespace, o.Name)}
	st := &out.Status
	if !set.attached() {
		st.Conditions = []metav1.Condition{
			cond(string(gwv1.ListenerSetConditionAccepted), false, set.reason, set.msg, gen),
			cond(string(gwv1.ListenerSetConditionProgrammed), false, set.reason, set.msg, gen),
		}
		return out
	}
	var bad []string
	for _, l := range set.ls {
		ls := c.listenerStatus(l)
		st.Listeners = append(st.Listeners, gwv1.ListenerEntryStatus(ls))
		switch {
		case !l.accepted:
			bad = append(bad, fmt.Sprintf("%s (%s)", l.spec.Name, l.acceptReason))
		case !l.programmed():
			bad = append(bad, fmt.Sprintf("%s (%s)", l.spec.Name, l.refsReason))
		}
	}
	msg := fmt.Sprintf("ListenerSet %s/%s: listeners not programmed: %s", o.Namespace, o.Name, strings.Join(bad, ", "))
	notValid := string(gwv1.ListenerSetReasonListenersNotValid)
	switch {
	case !set.accepted():
		st.Conditions = []metav1.Condition{
			cond(string(gwv1.ListenerSetConditionAccepted), false, notValid, msg, gen),
			cond(string(gwv1.ListenerSetConditionProgrammed), false, notValid, msg, gen),
		}
	case len(bad) > 0:
		st.Conditions = []metav1.Condition{
			cond(string(gwv1.ListenerSetConditionAccepted), true, notValid, msg, gen),
			cond(string(gwv1.ListenerSetConditionProgrammed), true, string(gwv1.ListenerSetReasonProgrammed), "ListenerSet programmed (some listeners are not: see status.listeners)", gen),
		}
	default:
		st.Conditions = []metav1.Condition{
			cond(string(gwv1.ListenerSetConditionAccepted), true, string(gwv1.ListenerSetReasonAccepted), "ListenerSet accepted by Gateway "+c.gw.Namespace+"/"+c.gw.Name, gen),
			cond(string(gwv1.ListenerSetConditionProgrammed), true, string(gwv1.ListenerSetReasonProgrammed), "ListenerSet programmed", gen),
		}
	}
	return out
}

// listenerSetPorts: the ports of the ListenerSets' programmed listeners,
// each once, in order.
func (c *compiler) listenerSetPorts() []ListenerPort {
	seen := map[gwv1.PortNumber]bool{}
	var out []ListenerPort
	for _, l := range c.all {
		if l.set == nil || !l.programmed() || seen[l.spec.Port] {
			continue
		}
		seen[l.spec.Port] = true
		out = append(out, ListenerPort{Port: l.spec.Port, Protocol: l.spec.Protocol})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out
}
