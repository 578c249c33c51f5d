// Package gateway compiles Gateway API objects into one gatewaypb.Snapshot
// per Gateway and into the status every object involved must get. It is
// pure: no I/O, no clock, no client; equal inputs give equal results.
package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"google.golang.org/protobuf/proto"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/internal/names"
)

// ControllerName is the GatewayClass controllerName Meridian serves.
const ControllerName gwv1.GatewayController = names.GatewayController

// Group is the Gateway API's group.
const Group = gwv1.GroupName

// Input is everything the compiler reads. Objects are read, never
// modified. Only the objects that matter for the Gateway are used; the
// rest are ignored, so a caller may pass whole kinds.
type Input struct {
	GatewayClasses []*gwv1.GatewayClass
	Gateways       []*gwv1.Gateway
	HTTPRoutes     []*gwv1.HTTPRoute
	GRPCRoutes     []*gwv1.GRPCRoute
	TLSRoutes      []*gwv1.TLSRoute
	TCPRoutes      []*gwv1.TCPRoute
	UDPRoutes      []*gwv1.UDPRoute
	// ListenerSets: those whose spec.parentRef names the Gateway are
	// judged against its spec.allowedListeners and merged into it.
	ListenerSets       []*gwv1.ListenerSet
	ReferenceGrants    []*gwv1.ReferenceGrant
	BackendTLSPolicies []*gwv1.BackendTLSPolicy
	Services           []*corev1.Service
	// Secrets: certificate Secrets (type kubernetes.io/tls, keys tls.crt
	// and tls.key).
	Secrets []*corev1.Secret
	// Namespaces: their labels decide allowedRoutes selectors.
	Namespaces []*corev1.Namespace
	// ConfigMaps: CA certificates (key ca.crt) of BackendTLSPolicies and
	// of the Gateway's frontend client certificate validation.
	ConfigMaps []*corev1.ConfigMap
}

// Options tune what the compiler writes.
type Options struct {
	// ClusterDomain completes backend authorities
	// (<svc>.<ns>.svc.<ClusterDomain>:<port>); "" means cluster.local.
	ClusterDomain string
	// TrustedHops and MaxRequestHeaderBytes are copied into the snapshot
	// (the proxy's X-Forwarded-For trust and its 431 limit; 0: defaults).
	TrustedHops           uint32
	MaxRequestHeaderBytes uint32
}

// Result is one compile of one Gateway.
type Result struct {
	// Owned: the Gateway exists and its GatewayClass names ControllerName.
	// When false nothing else is set and nothing may be written.
	Owned bool
	// Snapshot is what the Gateway's proxies apply.
	Snapshot *gatewaypb.Snapshot
	// Gateway is the Gateway's status without addresses (provisioning
	// assigns them, and may turn Programmed False with AddressNotAssigned
	// until it has). Conditions carry observedGeneration and no
	// lastTransitionTime: the writer keeps the stored time when a
	// condition's status is unchanged and stamps it otherwise.
	Gateway gwv1.GatewayStatus
	// Routes: for each route naming this Gateway, or a ListenerSet whose
	// parentRef names it, in a parentRef, the parent statuses of those
	// parentRefs (one per parentRef, in spec order). Other parents'
	// entries are not this compile's.
	Routes []RouteStatus
	// ListenerSets: the status of every ListenerSet whose parentRef names
	// this Gateway (allowed or not), by namespace/name.
	ListenerSets []ListenerSetStatus
	// ListenerSetPorts: the ports the ListenerSets' programmed listeners
	// add to the Gateway's (its Service must expose them).
	ListenerSetPorts []ListenerPort
	// Policies: the BackendTLSPolicies this Gateway's backends use, with
	// their conditions for this Gateway as ancestor.
	Policies []PolicyStatus
	// Dependencies: the objects this compile read beyond the Gateway's
	// own namespace's routes, so that a watcher knows what to follow.
	Dependencies []Dependency
}

// RouteStatus is what one route must carry for this Gateway and its
// ListenerSets.
type RouteStatus struct {
	Kind    string // "HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "UDPRoute"
	Route   types.NamespacedName
	Parents []gwv1.RouteParentStatus
}

// Dependency is an object kind and key a compile read.
type Dependency struct {
	Kind string // "Service", "Secret", "ConfigMap", "Namespace", "ReferenceGrant", "BackendTLSPolicy", "ListenerSet"
	Key  types.NamespacedName
}

// ClassConditions returns a GatewayClass's conditions when it names
// ControllerName (ours true), else ours false and nothing: another
// controller owns its status. Acceptance here is the controller name's;
// parametersRef is judged by provisioning.
func ClassConditions(gc *gwv1.GatewayClass) (ours bool, conds []metav1.Condition) {
	if gc == nil || gc.Spec.ControllerName != ControllerName {
		return false, nil
	}
	c := metav1.Condition{
		Type:               string(gwv1.GatewayClassConditionStatusAccepted),
		Status:             metav1.ConditionTrue,
		Reason:             string(gwv1.GatewayClassReasonAccepted),
		Message:            "accepted by " + string(ControllerName),
		ObservedGeneration: gc.Generation,
	}
	// spec.parametersRef is provisioning's to resolve (it knows its kind
	// and reads the object): it turns this False with InvalidParameters
	// when it cannot.
	return true, []metav1.Condition{c}
}

// Compile compiles Gateway gw.
func Compile(in Input, gw types.NamespacedName, opts Options) Result {
	if opts.ClusterDomain == "" {
		opts.ClusterDomain = "cluster.local"
	}
	var g *gwv1.Gateway
	for _, o := range in.Gateways {
		if o != nil && o.Namespace == gw.Namespace && o.Name == gw.Name {
			g = o
			break
		}
	}
	if g == nil {
		return Result{}
	}
	var class *gwv1.GatewayClass
	for _, c := range in.GatewayClasses {
		if c != nil && c.Name == string(g.Spec.GatewayClassName) {
			class = c
		}
	}
	if ours, _ := ClassConditions(class); !ours {
		return Result{}
	}
	c := newCompiler(in, g, opts)
	c.indexListenerSets(in.ListenerSets)
	c.listeners()
	c.backendClientCertificate()
	c.routes()
	snap := c.snapshot()
	// The input's order (a store's map) must not show in the result.
	sort.Slice(c.routeStatuses, func(i, j int) bool {
		a, b := c.routeStatuses[i], c.routeStatuses[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Route.String() < b.Route.String()
	})
	sort.Slice(c.policies, func(i, j int) bool { return c.policies[i].Policy.String() < c.policies[j].Policy.String() })
	var sets []ListenerSetStatus
	for _, s := range c.sets {
		sets = append(sets, c.listenerSetStatus(s))
	}
	sort.Slice(sets, func(i, j int) bool { return sets[i].ListenerSet.String() < sets[j].ListenerSet.String() })
	return Result{
		Owned:            true,
		Snapshot:         snap,
		Gateway:          c.gatewayStatus(),
		Routes:           c.routeStatuses,
		ListenerSets:     sets,
		ListenerSetPorts: c.listenerSetPorts(),
		Policies:         c.policies,
		Dependencies:     c.dependencies(),
	}
}

// compiler is one Compile's state.
type compiler struct {
	in   Input
	gw   *gwv1.Gateway
	opts Options

	services   map[types.NamespacedName]*corev1.Service
	secrets    map[types.NamespacedName]*corev1.Secret
	configMaps map[types.NamespacedName]*corev1.ConfigMap
	namespaces map[string]*corev1.Namespace
	grants     map[string][]*gwv1.ReferenceGrant // by namespace

	// ls: the Gateway's own listeners; all: those and the attached
	// ListenerSets' (in precedence order), which the snapshot serves.
	ls            []*listener
	all           []*listener
	sets          []*lset // ListenerSets naming the Gateway, in precedence order
	setByKey      map[types.NamespacedName]*lset
	routeStatuses []RouteStatus
	policies      []PolicyStatus
	rejected      []*gatewaypb.Rejected
	certs         map[string]*gatewaypb.Certificate
	deps          map[Dependency]struct{}
	// clientCert: spec.tls.backend's, when it resolves; refsReason and
	// refsMsg say why it does not.
	clientCert          *gatewaypb.Certificate
	refsReason, refsMsg string
}

func newCompiler(in Input, g *gwv1.Gateway, opts Options) *compiler {
	c := &compiler{
		in: in, gw: g, opts: opts,
		services:   map[types.NamespacedName]*corev1.Service{},
		secrets:    map[types.NamespacedName]*corev1.Secret{},
		configMaps: map[types.NamespacedName]*corev1.ConfigMap{},
		namespaces: map[string]*corev1.Namespace{},
		grants:     map[string][]*gwv1.ReferenceGrant{},
		certs:      map[string]*gatewaypb.Certificate{},
		deps:       map[Dependency]struct{}{},
	}
	for _, o := range in.Services {
		if o != nil {
			c.services[nn(o.Namespace, o.Name)] = o
		}
	}
	for _, o := range in.Secrets {
		if o != nil {
			c.secrets[nn(o.Namespace, o.Name)] = o
		}
	}
	for _, o := range in.ConfigMaps {
		if o != nil {
			c.configMaps[nn(o.Namespace, o.Name)] = o
		}
	}
	for _, o := range in.Namespaces {
		if o != nil {
			c.namespaces[o.Name] = o
		}
	}
	for _, o := range in.ReferenceGrants {
		if o != nil {
			c.grants[o.Namespace] = append(c.grants[o.Namespace], o)
		}
	}
	return c
}

func nn(ns, name string) types.NamespacedName { return types.NamespacedName{Namespace: ns, Name: name} }

func (c *compiler) dep(kind, ns, name string) {
	c.deps[Dependency{Kind: kind, Key: nn(ns, name)}] = struct{}{}
}

func (c *compiler) dependencies() []Dependency {
	out := make([]Dependency, 0, len(c.deps))
	for d := range c.deps {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Key.String() < out[j].Key.String()
	})
	return out
}

func (c *compiler) reject(kind, ns, name, reason, msg string) {
	c.rejected = append(c.rejected, &gatewaypb.Rejected{Kind: kind, Namespace: ns, Name: name, Reason: reason, Message: msg})
}

// granted reports whether a ReferenceGrant in toNS lets objects of
// fromGroup/fromKind in fromNS refer to toGroup/toKind toName.
func (c *compiler) granted(fromGroup, fromKind, fromNS, toGroup, toKind, toNS, toName string) bool {
	for _, g := range c.grants[toNS] {
		c.dep("ReferenceGrant", g.Namespace, g.Name)
		from := false
		for _, f := range g.Spec.From {
			if string(f.Group) == fromGroup && string(f.Kind) == fromKind && string(f.Namespace) == fromNS {
				from = true
				break
			}
		}
		if !from {
			continue
		}
		for _, t := range g.Spec.To {
			if string(t.Group) == toGroup && string(t.Kind) == toKind && (t.Name == nil || *t.Name == "" || string(*t.Name) == toName) {
				return true
			}
		}
	}
	return false
}

// version is a hash of the snapshot's content: equal content, equal version.
func version(s *gatewaypb.Snapshot) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		// Marshal fails only on invalid UTF-8 in a string field; the hash
		// of the text form still tells contents apart.
		b = []byte(s.String())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

func cond(typ string, ok bool, reason, msg string, gen int64) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen}
}
