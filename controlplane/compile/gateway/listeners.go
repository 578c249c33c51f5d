package gateway

import (
	"crypto/tls"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// listener is one of the Gateway's listeners as validated, with the routes
// attached to it.
type listener struct {
	spec     gwv1.Listener
	hostname string
	mode     gatewaypb.Listener_Mode
	// set: the ListenerSet the listener comes from, nil for the Gateway's
	// own; ns its owner's namespace (allowedRoutes Same, certificateRefs);
	// field names it in messages.
	set   *lset
	ns    string
	field string

	// Accepted (False: the listener serves nothing).
	accepted               bool
	acceptReason, acceptMs string
	conflict               string // ProtocolConflict, HostnameConflict or ""
	// ResolvedRefs.
	refsReason, refsMsg string // "" when resolved
	kinds               []gwv1.RouteGroupKind
	certs               []string // names in the snapshot's certificates
	// clientValidation: the Gateway's frontend TLS validation for the
	// listener's port (HTTPS), nil when none applies.
	clientValidation *gatewaypb.ClientValidation
	selector         labels.Selector
	nsFrom           gwv1.FromNamespaces

	attached  map[string]struct{} // routes attached ("kind/ns/name")
	claims    map[string][]string // HTTPRoute, GRPCRoute → hostnames attached
	hosts     map[string][]*rule  // effective hostname → rules
	tlsRoutes []*tlsRoute
	l4Routes  []*l4Route // TCP, UDP
}

// programmed: the listener is in the snapshot.
func (l *listener) programmed() bool {
	return l.accepted && (!l.terminates() || len(l.certs) > 0)
}

// terminates: the listener completes TLS handshakes with its certificates.
func (l *listener) terminates() bool {
	return l.mode == gatewaypb.Listener_HTTPS || l.mode == gatewaypb.Listener_TLS_TERMINATE
}

func (l *listener) allowsKind(kind string) bool {
	for _, k := range l.kinds {
		if string(k.Kind) == kind {
			return true
		}
	}
	return false
}

func (l *listener) allowsNamespace(c *compiler, ns string) bool {
	switch l.nsFrom {
	case gwv1.NamespacesFromAll:
		return true
	case gwv1.NamespacesFromSame:
		return ns == l.ns
	case gwv1.NamespacesFromSelector:
		c.dep("Namespace", "", ns)
		n, ok := c.namespaces[ns]
		return ok && l.selector != nil && l.selector.Matches(labels.Set(n.Labels))
	}
	return false
}

// routeKinds: the kinds each protocol serves.
func routeKinds(p gwv1.ProtocolType) []string {
	switch p {
	case gwv1.HTTPProtocolType, gwv1.HTTPSProtocolType:
		return []string{"HTTPRoute", "GRPCRoute"}
	case gwv1.TLSProtocolType:
		return []string{"TLSRoute"}
	case gwv1.TCPProtocolType:
		return []string{"TCPRoute"}
	case gwv1.UDPProtocolType:
		return []string{"UDPRoute"}
	}
	return nil
}

// listeners validates the Gateway's listeners (protocol and TLS mode,
// conflicts on a port, allowedRoutes, certificates), then those of the
// ListenerSets it allows (listenersets.go), which yield to it.
func (c *compiler) listeners() {
	for i := range c.gw.Spec.Listeners {
		c.ls = append(c.ls, c.newListener(c.gw.Spec.Listeners[i], nil))
	}
	c.conflicts()
	for _, l := range c.ls {
		if !l.accepted {
			c.reject("Gateway", c.gw.Namespace, c.gw.Name, l.acceptReason, l.acceptMs)
		} else if l.refsReason != "" {
			c.reject("Gateway", c.gw.Namespace, c.gw.Name, l.refsReason, l.refsMsg)
		}
	}
	c.all = append(c.all, c.ls...)
	c.listenerSets()
}

// newListener validates one listener of the Gateway (set nil) or of
// ListenerSet set, but not its conflicts with the others.
func (c *compiler) newListener(s gwv1.Listener, set *lset) *listener {
	l := &listener{spec: s, set: set, ns: c.gw.Namespace, accepted: true, attached: map[string]struct{}{}, claims: map[string][]string{}, hosts: map[string][]*rule{}, kinds: []gwv1.RouteGroupKind{}}
	l.field = fmt.Sprintf("Gateway %s/%s: spec.listeners[%s]", c.gw.Namespace, c.gw.Name, s.Name)
	if set != nil {
		l.ns = set.obj.Namespace
		l.field = fmt.Sprintf("ListenerSet %s/%s: spec.listeners[%s]", set.obj.Namespace, set.obj.Name, s.Name)
	}
	if s.Hostname != nil {
		l.hostname = strings.ToLower(string(*s.Hostname))
	}
	field := l.field
	switch s.Protocol {
	case gwv1.HTTPProtocolType:
		l.mode = gatewaypb.Listener_HTTP
	case gwv1.HTTPSProtocolType:
		l.mode = gatewaypb.Listener_HTTPS
		if s.TLS != nil && s.TLS.Mode != nil && *s.TLS.Mode != gwv1.TLSModeTerminate {
			l.fail(string(gwv1.ListenerReasonUnsupportedValue), fmt.Sprintf("%s.tls.mode %q is not supported for protocol HTTPS (allowed: Terminate)", field, *s.TLS.Mode))
		}
	case gwv1.TLSProtocolType:
		// Terminate is the field's default (the CRD sets it).
		l.mode = gatewaypb.Listener_TLS_TERMINATE
		if s.TLS != nil && s.TLS.Mode != nil {
			switch *s.TLS.Mode {
			case gwv1.TLSModePassthrough:
				l.mode = gatewaypb.Listener_TLS_PASSTHROUGH
			case gwv1.TLSModeTerminate:
			default:
				l.mode = gatewaypb.Listener_MODE_UNSPECIFIED // neither: no certificates to judge
				l.fail(string(gwv1.ListenerReasonUnsupportedValue), fmt.Sprintf("%s.tls.mode %q is not supported for protocol TLS (allowed: Terminate, Passthrough)", field, *s.TLS.Mode))
			}
		}
	case gwv1.TCPProtocolType:
		// A TCP connection names no host: the field is ignored (the
		// spec), so two TCP listeners on a port conflict whatever theirs.
		l.mode = gatewaypb.Listener_TCP
		l.hostname = ""
	case gwv1.UDPProtocolType:
		// As TCP: a datagram names no host. A UDP port is a family of its
		// own (family), so a TCP or HTTP listener on the same port number
		// conflicts with it, though the kernel would allow both sockets:
		// the snapshot has one protocol per port number.
		l.mode = gatewaypb.Listener_UDP
		l.hostname = ""
	default:
		l.fail(string(gwv1.ListenerReasonUnsupportedProtocol), fmt.Sprintf("%s.protocol %q is not supported (allowed: HTTP, HTTPS, TLS, TCP, UDP)", field, s.Protocol))
		return l
	}
	c.allowedRoutes(l, field)
	if l.terminates() {
		c.certificates(l, field)
	}
	if l.mode == gatewaypb.Listener_HTTPS {
		c.frontend(l)
	}
	return l
}

func (l *listener) fail(reason, msg string) {
	if !l.accepted {
		return
	}
	l.accepted, l.acceptReason, l.acceptMs = false, reason, msg
}

func (l *listener) unresolved(reason, msg string) {
	if l.refsReason == "" {
		l.refsReason, l.refsMsg = reason, msg
	}
}

func (c *compiler) allowedRoutes(l *listener, field string) {
	valid := routeKinds(l.spec.Protocol)
	l.nsFrom = gwv1.NamespacesFromSame
	ar := l.spec.AllowedRoutes
	if ar != nil && ar.Namespaces != nil && ar.Namespaces.From != nil {
		l.nsFrom = *ar.Namespaces.From
	}
	switch l.nsFrom {
	case gwv1.NamespacesFromAll, gwv1.NamespacesFromSame, gwv1.NamespacesFromNone:
	case gwv1.NamespacesFromSelector:
		var sel *metav1.LabelSelector
		if ar.Namespaces.Selector != nil {
			sel = ar.Namespaces.Selector
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil || sel == nil {
			why := "is missing"
			if err != nil {
				why = "is invalid: " + err.Error()
			}
			l.fail(string(gwv1.ListenerReasonUnsupportedValue), fmt.Sprintf("%s.allowedRoutes.namespaces.selector %s (required with from: Selector)", field, why))
		}
		l.selector = s
	default:
		l.fail(string(gwv1.ListenerReasonUnsupportedValue), fmt.Sprintf("%s.allowedRoutes.namespaces.from %q is not supported (allowed: All, Same, Selector, None)", field, l.nsFrom))
	}
	if ar == nil || len(ar.Kinds) == 0 {
		for _, k := range valid {
			l.kinds = append(l.kinds, gwv1.RouteGroupKind{Group: groupPtr(Group), Kind: gwv1.Kind(k)})
		}
		return
	}
	for _, k := range ar.Kinds {
		g := Group
		if k.Group != nil {
			g = string(*k.Group)
		}
		ok := false
		if g == Group {
			for _, v := range valid {
				ok = ok || string(k.Kind) == v
			}
		}
		if !ok {
			l.unresolved(string(gwv1.ListenerReasonInvalidRouteKinds), fmt.Sprintf("%s.allowedRoutes.kinds: %s/%s is not a route kind of protocol %s (allowed: %s)", field, g, k.Kind, l.spec.Protocol, strings.Join(valid, ", ")))
			continue
		}
		dup := false
		for _, have := range l.kinds {
			dup = dup || have.Kind == k.Kind
		}
		if !dup {
			l.kinds = append(l.kinds, gwv1.RouteGroupKind{Group: groupPtr(Group), Kind: k.Kind})
		}
	}
}

func groupPtr(g string) *gwv1.Group { x := gwv1.Group(g); return &x }

// certificates resolves the certificateRefs of a listener that terminates
// TLS (HTTPS, or TLS with mode Terminate). A ref that is
// not a Secret, is not permitted, is missing or holds no valid key pair
// makes ResolvedRefs False; the listener is programmed with the valid ones
// and is not programmed without any.
func (c *compiler) certificates(l *listener, field string) {
	if l.spec.TLS == nil || len(l.spec.TLS.CertificateRefs) == 0 {
		l.unresolved(string(gwv1.ListenerReasonInvalidCertificateRef), fmt.Sprintf("%s.tls.certificateRefs is empty (a listener of protocol %s that terminates TLS needs at least one kubernetes.io/tls Secret)", field, l.spec.Protocol))
		return
	}
	for i, ref := range l.spec.TLS.CertificateRefs {
		f := fmt.Sprintf("%s.tls.certificateRefs[%d]", field, i)
		group, kind := "", "Secret"
		if ref.Group != nil {
			group = string(*ref.Group)
		}
		if ref.Kind != nil {
			kind = string(*ref.Kind)
		}
		if group != "" || kind != "Secret" {
			l.unresolved(string(gwv1.ListenerReasonInvalidCertificateRef), fmt.Sprintf("%s: %s/%s is not supported (allowed: core Secret)", f, group, kind))
			continue
		}
		// A ListenerSet's references are its own: a grant to its
		// Gateway does not extend to it (nor the other way round).
		ns, from := l.ns, "Gateway"
		if l.set != nil {
			from = "ListenerSet"
		}
		if ref.Namespace != nil && *ref.Namespace != "" {
			ns = string(*ref.Namespace)
		}
		if ns != l.ns && !c.granted(Group, from, l.ns, "", "Secret", ns, string(ref.Name)) {
			l.unresolved(string(gwv1.ListenerReasonRefNotPermitted), fmt.Sprintf("%s: Secret %s/%s is in another namespace and no ReferenceGrant in %s allows %ss from %s to refer to it", f, ns, ref.Name, ns, from, l.ns))
			continue
		}
		c.dep("Secret", ns, string(ref.Name))
		sec, ok := c.secrets[nn(ns, string(ref.Name))]
		if !ok {
			l.unresolved(string(gwv1.ListenerReasonInvalidCertificateRef), fmt.Sprintf("%s: Secret %s/%s does not exist", f, ns, ref.Name))
			continue
		}
		crt, key := sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]
		if _, err := tls.X509KeyPair(crt, key); err != nil {
			l.unresolved(string(gwv1.ListenerReasonInvalidCertificateRef), fmt.Sprintf("%s: Secret %s/%s holds no valid certificate and key in tls.crt and tls.key: %v", f, ns, ref.Name, err))
			continue
		}
		name := ns + "/" + string(ref.Name)
		c.certs[name] = &gatewaypb.Certificate{Name: name, CertChain: crt, PrivateKey: key}
		l.certs = append(l.certs, name)
	}
}

// conflicts marks listeners that cannot share their port: a TCP port
// serves one protocol family (HTTP; TLS: HTTPS, TLS Terminate and TLS
// Passthrough listeners, chosen per connection by SNI, so they may mix:
// the TLSRouteModeMixed feature; or TCP), a UDP port of the same number is
// another port (the spec's distinct listeners: a unique port and
// protocol; DNS serves 53 over both), and two listeners on a port must not
// claim the same hostname, whatever their TLS settings (the spec: listeners
// that differ only in TLS config conflict). All the listeners of a conflict
// are refused: none wins.
func (c *compiler) conflicts() {
	for i, a := range c.ls {
		for j, b := range c.ls {
			if i == j || !samePort(a, b) || routeKinds(a.spec.Protocol) == nil || routeKinds(b.spec.Protocol) == nil {
				continue // an unsupported protocol is refused as such
			}
			switch {
			case family(a) != family(b):
				a.conflict = string(gwv1.ListenerReasonProtocolConflict)
			case a.hostname == b.hostname && a.conflict == "":
				a.conflict = string(gwv1.ListenerReasonHostnameConflict)
			}
		}
	}
	for _, l := range c.ls {
		if l.conflict == "" {
			continue
		}
		what := "another listener on port %d serves a different protocol"
		if l.conflict == string(gwv1.ListenerReasonHostnameConflict) {
			what = "another listener on port %d has the same hostname"
		}
		// A conflict takes precedence over other reasons: it is what the
		// user must fix first.
		l.accepted = false
		l.acceptReason = l.conflict
		l.acceptMs = fmt.Sprintf("Gateway %s/%s: spec.listeners[%s]: "+what+" (listeners on one port must share a protocol family and have distinct hostnames)", c.gw.Namespace, c.gw.Name, l.spec.Name, l.spec.Port)
	}
}

// listenerStatus is the listener's status.
func (c *compiler) listenerStatus(l *listener) gwv1.ListenerStatus {
	gen := c.gw.Generation
	if l.set != nil {
		gen = l.set.obj.Generation
	}
	st := gwv1.ListenerStatus{Name: l.spec.Name, SupportedKinds: l.kinds, AttachedRoutes: int32(len(l.attached))}
	if l.accepted {
		st.Conditions = append(st.Conditions, cond(string(gwv1.ListenerConditionAccepted), true, string(gwv1.ListenerReasonAccepted), "listener accepted", gen))
	} else {
		st.Conditions = append(st.Conditions, cond(string(gwv1.ListenerConditionAccepted), false, l.acceptReason, l.acceptMs, gen))
	}
	if l.conflict != "" {
		st.Conditions = append(st.Conditions, cond(string(gwv1.ListenerConditionConflicted), true, l.conflict, l.acceptMs, gen))
	} else {
		st.Conditions = append(st.Conditions, cond(string(gwv1.ListenerConditionConflicted), false, string(gwv1.ListenerReasonNoConflicts), "no conflicts", gen))
	}
	if l.refsReason == "" {
		st.Conditions = append(st.Conditions, cond(string(gwv1.ListenerConditionResolvedRefs), true, string(gwv1.ListenerReasonResolvedRefs), "all references resolved", gen))
	} else {
		st.Conditions = append(st.Conditions, cond(string(gwv1.ListenerConditionResolvedRefs), false, l.refsReason, l.refsMsg, gen))
	}
	if l.programmed() {
		st.Conditions = append(st.Conditions, cond(string(gwv1.ListenerConditionProgrammed), true, string(gwv1.ListenerReasonProgrammed), "listener programmed", gen))
	} else {
		msg := l.acceptMs
		if l.accepted {
			msg = l.refsMsg
		}
		// A conflict is the reason it is not programmed either (the
		// ListenerSet conformance tests read it there).
		reason := string(gwv1.ListenerReasonInvalid)
		if l.conflict != "" {
			reason = l.conflict
		}
		st.Conditions = append(st.Conditions, cond(string(gwv1.ListenerConditionProgrammed), false, reason, msg, gen))
	}
	return st
}

// ownAccepted: the Gateway is accepted as far as its listeners go (one of
// them is, as gatewayStatus says).
func (c *compiler) ownAccepted() bool {
	for _, l := range c.ls {
		if l.accepted {
			return true
		}
	}
	return len(c.ls) == 0
}

// gatewayStatus: Accepted (ListenersNotValid when some listener is not
// accepted: True while one is, False when none is), Programmed (True
// when at least one listener is programmed) and ResolvedRefs (the
// Gateway's own references, spec.tls.backend's, then a summary of the
// listeners' ResolvedRefs; it does not change the other two).
func (c *compiler) gatewayStatus() gwv1.GatewayStatus {
	gen := c.gw.Generation
	var st gwv1.GatewayStatus
	var bad, unresolved []string
	programmed := 0
	for _, l := range c.ls {
		if l.refsReason != "" {
			unresolved = append(unresolved, fmt.Sprintf("%s (%s)", l.spec.Name, l.refsReason))
		}
		st.Listeners = append(st.Listeners, c.listenerStatus(l))
		if !l.accepted {
			bad = append(bad, fmt.Sprintf("%s (%s)", l.spec.Name, l.acceptReason))
		}
	}
	for _, l := range c.all {
		if l.programmed() {
			programmed++
		}
	}
	switch {
	case len(bad) == 0:
		st.Conditions = append(st.Conditions, cond(string(gwv1.GatewayConditionAccepted), true, string(gwv1.GatewayReasonAccepted), "Gateway accepted", gen))
	default:
		msg := fmt.Sprintf("Gateway %s/%s: listeners not accepted: %s", c.gw.Namespace, c.gw.Name, strings.Join(bad, ", "))
		st.Conditions = append(st.Conditions, cond(string(gwv1.GatewayConditionAccepted), len(bad) < len(c.ls), string(gwv1.GatewayReasonListenersNotValid), msg, gen))
	}
	if programmed > 0 {
		st.Conditions = append(st.Conditions, cond(string(gwv1.GatewayConditionProgrammed), true, string(gwv1.GatewayReasonProgrammed), "Gateway programmed", gen))
	} else {
		st.Conditions = append(st.Conditions, cond(string(gwv1.GatewayConditionProgrammed), false, string(gwv1.GatewayReasonInvalid), fmt.Sprintf("Gateway %s/%s: no listener is programmed", c.gw.Namespace, c.gw.Name), gen))
	}
	attached := int32(0)
	for _, set := range c.sets {
		if set.accepted() {
			attached++
		}
	}
	st.AttachedListenerSets = &attached
	if in := c.insecureFrontend(); len(in) > 0 {
		msg := fmt.Sprintf("Gateway %s/%s: validation.mode AllowInsecureFallback in %s: clients without a valid certificate are served (AllowValidOnly refuses them)", c.gw.Namespace, c.gw.Name, strings.Join(in, ", "))
		st.Conditions = append(st.Conditions, cond(string(gwv1.GatewayConditionInsecureFrontendValidationMode), true, string(gwv1.GatewayReasonConfigurationChanged), msg, gen))
	}
	switch {
	case c.refsReason != "":
		st.Conditions = append(st.Conditions, cond(string(gwv1.GatewayConditionResolvedRefs), false, c.refsReason, c.refsMsg, gen))
	case len(unresolved) > 0:
		msg := fmt.Sprintf("Gateway %s/%s: listeners with unresolved references: %s", c.gw.Namespace, c.gw.Name, strings.Join(unresolved, ", "))
		st.Conditions = append(st.Conditions, cond(string(gwv1.GatewayConditionResolvedRefs), false, string(gwv1.GatewayReasonListenersNotResolved), msg, gen))
	default:
		st.Conditions = append(st.Conditions, cond(string(gwv1.GatewayConditionResolvedRefs), true, string(gwv1.GatewayReasonResolvedRefs), "all references resolved", gen))
	}
	return st
}
