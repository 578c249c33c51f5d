// Package reconciler is the gateway's writer: for every Gateway of
// Meridian's GatewayClass it applies what the Gateway runs on
// (gateway/provision) and writes the statuses the compiler decided
// (gateway/status), and it accepts Meridian's GatewayClasses. It runs under
// the controller's leader election: one replica writes.
package reconciler

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/meridian-mesh/meridian/controlplane/compile/gateway"
	"github.com/meridian-mesh/meridian/controlplane/gateway/provision"
	"github.com/meridian-mesh/meridian/controlplane/gateway/status"
	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// Store is what the reconciler reads; *store.Store implements it.
type Store interface {
	gateway.Reader
	store.Notifier
	Gateways() []*gwv1.Gateway
	Service(store.Key) (*corev1.Service, bool)
}

// Options configure a Reconciler.
type Options struct {
	Store   Store
	Kube    kubernetes.Interface
	Gateway gwclient.Interface
	// Proxy is how provisioned gateway proxies are configured (image,
	// controller address and identity, trust anchors).
	Proxy   inject.Config
	Compile gateway.Options
	Log     *slog.Logger
	// Synced, when not nil, is closed once the store is filled: nothing
	// is written before (a Gateway compiled from a store still filling
	// would lose routes that exist).
	Synced <-chan struct{}
	// Pending is how soon a Gateway whose proxies or address are not
	// ready yet is looked at again (default 2s); Resync how often every
	// Gateway is (default 30s), for what the store does not carry (the
	// Deployments' readiness, parameter ConfigMaps).
	Pending, Resync time.Duration
}

// Reconciler is a runnable (Start); see the package doc.
type Reconciler struct {
	o      Options
	status *status.Writer
	// known: the Gateways last reconciled, so that a deleted one's route
	// parent statuses are removed.
	known map[store.Key]bool
	// sets: the ListenerSets whose status the last pass wrote, so that
	// one whose parent Gateway went is put back to Pending.
	sets map[status.Key]bool
	// done: per Gateway, a digest of what its last complete reconcile
	// computed (provisioned objects, statuses, its Service as the store
	// has it). A Gateway whose digest is unchanged costs no API call
	// until the next resync: without it every change anywhere rewrote
	// every Gateway, 5+ API calls each, and a few dozen Gateways took
	// tens of seconds a round under client-go's rate limit.
	done map[store.Key]string
	// cms: ConfigMaps read for provisioning parameters, kept until the
	// next resync (they are not in the store).
	cms map[string]map[string]string
}

// New returns a reconciler.
func New(o Options) *Reconciler {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Pending <= 0 {
		o.Pending = 2 * time.Second
	}
	if o.Resync <= 0 {
		o.Resync = 30 * time.Second
	}
	return &Reconciler{o: o, status: &status.Writer{Client: o.Gateway, Controller: gateway.ControllerName}, known: map[store.Key]bool{}, sets: map[status.Key]bool{}, done: map[store.Key]string{}, cms: map[string]map[string]string{}}
}

const fieldManager = "meridian-gateway"

// Start reconciles every Gateway now, again whenever the store says a
// Gateway (or anything it depends on, or the set of Gateways) changed,
// every Pending while one is not ready, and every Resync; until ctx ends.
func (r *Reconciler) Start(ctx context.Context) error {
	if r.o.Synced != nil {
		select {
		case <-r.o.Synced:
		case <-ctx.Done():
			return nil
		}
	}
	watches := map[store.Topic]func(){}
	defer func() {
		for _, cancel := range watches {
			cancel()
		}
	}()
	wake := make(chan struct{}, 1)
	follow := func(t store.Topic) {
		if _, ok := watches[t]; ok {
			return
		}
		ch, cancel := r.o.Store.Watch(t)
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-ch:
					select {
					case wake <- struct{}{}:
					default:
					}
				}
			}
		}()
		watches[t] = func() { cancel(); close(stop) }
	}
	follow(store.GatewaysTopic)
	for {
		// Follow exactly the topics of the Gateways there are: a deleted
		// Gateway's watches stop.
		want := map[store.Topic]bool{store.GatewaysTopic: true}
		pending := r.reconcileAll(ctx, func(t store.Topic) { want[t] = true; follow(t) })
		for t, cancel := range watches {
			if !want[t] {
				cancel()
				delete(watches, t)
			}
		}
		wait := r.o.Resync
		if pending {
			wait = r.o.Pending
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-wake:
		case <-t.C:
			if !pending {
				// A resync looks again at what the store does not
				// carry: Deployments, parameters, statuses others wrote.
				clear(r.done)
				clear(r.cms)
			}
		}
		t.Stop()
	}
}

// reconcileAll reconciles every class and Gateway; pending reports whether
// one is waiting for its proxies or address.
func (r *Reconciler) reconcileAll(ctx context.Context, follow func(store.Topic)) (pending bool) {
	for _, gc := range r.o.Store.GatewayClasses() {
		if ours, conds := gateway.ClassConditions(gc); ours {
			ck := store.Key{Name: "GatewayClass/" + gc.Name}
			d := digestOf(conds)
			if r.done[ck] == d {
				continue
			}
			if _, err := r.status.GatewayClass(ctx, gc.Name, conds); err != nil {
				r.o.Log.Warn("gateway: writing a GatewayClass status", "gatewayclass", gc.Name, "err", err)
				pending = true
				continue
			}
			r.done[ck] = d
		}
	}
	owned := map[store.Key]bool{}
	sets := map[status.Key]bool{} // the ListenerSets naming an owned Gateway
	for _, g := range r.o.Store.Gateways() {
		k := store.Key{Namespace: g.Namespace, Name: g.Name}
		follow(store.GatewayTopic(k))
		follow(store.ServiceTopic(store.Key{Namespace: g.Namespace, Name: provision.Name(g.Name)}))
		ok, p, owner, err := r.reconcile(ctx, g)
		for _, s := range owner.ListenerSets {
			sets[s] = true
		}
		if err != nil || p || !ok {
			delete(r.done, k)
		}
		if err != nil {
			r.o.Log.Warn("gateway: reconciling", "gateway", k.String(), "err", err)
			pending = true
		}
		pending = pending || p
		if ok {
			owned[k] = true
		}
	}
	// Route parent and policy ancestor statuses of ours for Gateways that
	// are gone (or no longer ours) are removed.
	for k := range r.known {
		if !owned[k] {
			r.clearRoutes(ctx, status.Key{Namespace: k.Namespace, Name: k.Name}, nil)
			r.clearPolicies(ctx, k, nil)
		}
	}
	r.known = owned
	r.clearListenerSetParents(ctx, sets)
	for k := range r.sets {
		if sets[k] {
			continue
		}
		if _, err := r.status.ResetListenerSet(ctx, k, "no Gateway of a Meridian GatewayClass is this ListenerSet's parent (spec.parentRef): its Gateway was deleted or moved to another class"); err != nil {
			r.o.Log.Warn("gateway: resetting a ListenerSet's status", "listenerset", k.Namespace+"/"+k.Name, "err", err)
			sets[k] = true // tried again next pass
			pending = true
		}
	}
	r.sets = sets
	return pending
}

// reconcile provisions Gateway g and writes its statuses; owned reports
// whether g is of Meridian's class, pending whether it is not yet ready,
// owner g and the ListenerSets naming it.
func (r *Reconciler) reconcile(ctx context.Context, g *gwv1.Gateway) (owned, pending bool, owner status.Owner, err error) {
	k := types.NamespacedName{Namespace: g.Namespace, Name: g.Name}
	res := gateway.Compile(gateway.InputFrom(r.o.Store, k), k, r.o.Compile)
	if !res.Owned {
		return false, false, owner, nil
	}
	owner.Gateway = status.Key{Namespace: g.Namespace, Name: g.Name}
	for _, ls := range res.ListenerSets {
		owner.ListenerSets = append(owner.ListenerSets, status.Key{Namespace: ls.ListenerSet.Namespace, Name: ls.ListenerSet.Name})
	}
	gst := res.Gateway
	params, perr := r.params(ctx, g)
	var objs provision.Objects
	if perr == nil {
		var extra []provision.Port
		for _, p := range res.ListenerSetPorts {
			extra = append(extra, provision.Port{Port: p.Port, Protocol: p.Protocol})
		}
		objs, perr = provision.Render(g, params, r.o.Proxy, extra...)
	}
	gk := store.Key{Namespace: g.Namespace, Name: g.Name}
	digest := r.digest(gk, objs, perr, gst, res)
	if r.done[gk] == digest {
		return true, false, owner, nil
	}
	var addrs []gwv1.GatewayStatusAddress
	ready := false
	var unsupported *provision.UnsupportedAddressError
	refused := false
	switch {
	case errors.As(perr, &unsupported):
		setCondition(&gst.Conditions, string(gwv1.GatewayConditionAccepted), metav1.ConditionFalse, string(gwv1.GatewayReasonUnsupportedAddress), perr.Error(), g.Generation)
		setCondition(&gst.Conditions, string(gwv1.GatewayConditionProgrammed), metav1.ConditionFalse, string(gwv1.GatewayReasonInvalid), "not provisioned: "+perr.Error(), g.Generation)
	case perr != nil:
		setCondition(&gst.Conditions, string(gwv1.GatewayConditionAccepted), metav1.ConditionFalse, string(gwv1.GatewayReasonInvalidParameters), perr.Error(), g.Generation)
		setCondition(&gst.Conditions, string(gwv1.GatewayConditionProgrammed), metav1.ConditionFalse, string(gwv1.GatewayReasonInvalid), "not provisioned: "+perr.Error(), g.Generation)
	default:
		svc, dep, err := r.apply(ctx, objs)
		var notUsable *addressNotUsable
		if errors.As(err, &notUsable) {
			// The API server refused the Service the address: the Gateway
			// stays accepted, not programmed, and is looked at again when
			// it changes or at the next resync (an address "already
			// allocated" may be released), not every Pending.
			refused = true
			setCondition(&gst.Conditions, string(gwv1.GatewayConditionProgrammed), metav1.ConditionFalse, string(gwv1.GatewayReasonAddressNotUsable), strings.Join(append([]string{notUsable.Error()}, objs.Addresses.Unusable...), "; "), g.Generation)
			break
		}
		if err != nil {
			return true, true, owner, err
		}
		var missing []string
		addrs, missing = addresses(svc, objs.Addresses)
		ready = dep.Status.ReadyReplicas > 0
		switch {
		case len(objs.Addresses.Unusable) > 0:
			setCondition(&gst.Conditions, string(gwv1.GatewayConditionProgrammed), metav1.ConditionFalse, string(gwv1.GatewayReasonAddressNotUsable), strings.Join(objs.Addresses.Unusable, "; "), g.Generation)
		case len(missing) > 0 && svc.Spec.Type == corev1.ServiceTypeLoadBalancer && len(svc.Status.LoadBalancer.Ingress) > 0:
			// The provider gave the load balancer other addresses: it
			// ignored spec.loadBalancerIP, or could not use it.
			setCondition(&gst.Conditions, string(gwv1.GatewayConditionProgrammed), metav1.ConditionFalse, string(gwv1.GatewayReasonAddressNotUsable), fmt.Sprintf("Service %s/%s: the load balancer has %s, not the requested %s (spec.loadBalancerIP): its provider ignored it or cannot use it", svc.Namespace, svc.Name, ingressOf(svc), strings.Join(missing, ", ")), g.Generation)
		case len(addrs) == 0 || len(missing) > 0:
			setCondition(&gst.Conditions, string(gwv1.GatewayConditionProgrammed), metav1.ConditionFalse, string(gwv1.GatewayReasonAddressNotAssigned), fmt.Sprintf("Service %s/%s has no address yet", svc.Namespace, svc.Name), g.Generation)
		case !ready:
			setCondition(&gst.Conditions, string(gwv1.GatewayConditionProgrammed), metav1.ConditionFalse, string(gwv1.GatewayReasonPending), fmt.Sprintf("Deployment %s/%s has no ready proxy yet", dep.Namespace, dep.Name), g.Generation)
		}
		if len(missing) > 0 {
			addrs = nil // the status lists the requested addresses once they all are the Service's
		}
	}
	if perr != nil {
		zero := int32(0)
		gst.AttachedListenerSets = &zero // nothing is served
	}
	if _, err := r.status.Gateway(ctx, status.Key{Namespace: g.Namespace, Name: g.Name}, gst, addrs); err != nil {
		return true, true, owner, fmt.Errorf("writing the status: %w", err)
	}
	for _, ls := range res.ListenerSets {
		st := parentState(ls.Status, g, perr, len(addrs) > 0 && ready)
		if _, err := r.status.ListenerSet(ctx, status.Key{Namespace: ls.ListenerSet.Namespace, Name: ls.ListenerSet.Name}, st); err != nil {
			return true, true, owner, fmt.Errorf("writing ListenerSet %s's status: %w", ls.ListenerSet, err)
		}
	}
	written := map[string]bool{}
	for _, rs := range res.Routes {
		written[rs.Kind+"/"+rs.Route.String()] = true
		if _, err := r.status.Route(ctx, rs.Kind, rs.Route.Namespace, rs.Route.Name, owner, rs.Parents); err != nil {
			return true, true, owner, fmt.Errorf("writing %s %s's status: %w", rs.Kind, rs.Route, err)
		}
	}
	r.clearRoutes(ctx, owner, written)
	applied := map[store.Key]bool{}
	for _, ps := range res.Policies {
		applied[store.Key{Namespace: ps.Policy.Namespace, Name: ps.Policy.Name}] = true
		anc := ps.Ancestor
		if _, err := r.status.BackendTLSPolicy(ctx, ps.Policy.Namespace, ps.Policy.Name, status.Key{Namespace: g.Namespace, Name: g.Name}, &anc); err != nil {
			if errors.Is(err, status.ErrAncestorsFull) {
				// Not retried: only another controller's or Gateway's
				// entry going away makes room.
				r.o.Log.Warn("gateway: a BackendTLSPolicy's status is full", "gateway", k.String(), "err", err)
				continue
			}
			return true, true, owner, fmt.Errorf("writing BackendTLSPolicy %s's status: %w", ps.Policy, err)
		}
	}
	r.clearPolicies(ctx, store.Key{Namespace: g.Namespace, Name: g.Name}, applied)
	pending = perr == nil && !refused && (len(addrs) == 0 || !ready)
	if !pending {
		r.done[gk] = digest
	}
	return true, pending, owner, nil
}

// parentState is a ListenerSet's status as its Gateway's provisioning
// leaves it: the Gateway not accepted (its parameters are invalid, nothing
// is applied) makes it ParentNotAccepted; the Gateway not programmed yet
// (no address, no ready proxy) turns a Programmed True False with
// ParentNotProgrammed. A ListenerSet not allowed stays as it is.
func parentState(st gwv1.ListenerSetStatus, g *gwv1.Gateway, perr error, programmed bool) gwv1.ListenerSetStatus {
	acc := meta.FindStatusCondition(st.Conditions, string(gwv1.ListenerSetConditionAccepted))
	if acc == nil || acc.Reason == string(gwv1.ListenerSetReasonNotAllowed) {
		return st
	}
	gen := acc.ObservedGeneration
	conds := slices.Clone(st.Conditions)
	switch {
	case perr != nil:
		msg := fmt.Sprintf("its parent Gateway %s/%s is not accepted: %v", g.Namespace, g.Name, perr)
		setCondition(&conds, string(gwv1.ListenerSetConditionAccepted), metav1.ConditionFalse, string(gwv1.ListenerSetReasonParentNotAccepted), msg, gen)
		setCondition(&conds, string(gwv1.ListenerSetConditionProgrammed), metav1.ConditionFalse, string(gwv1.ListenerSetReasonParentNotAccepted), msg, gen)
	case !programmed:
		if p := meta.FindStatusCondition(conds, string(gwv1.ListenerSetConditionProgrammed)); p != nil && p.Status == metav1.ConditionTrue {
			// The spec lists the reason; the API has no constant for it.
			setCondition(&conds, string(gwv1.ListenerSetConditionProgrammed), metav1.ConditionFalse, "ParentNotProgrammed", fmt.Sprintf("its parent Gateway %s/%s is not programmed yet (no address or no ready proxy)", g.Namespace, g.Name), gen)
		}
	}
	st.Conditions = conds
	return st
}

// digest sums what reconciling Gateway gk would write, and its Service as
// the store has it (its addresses; the store follows it).
func (r *Reconciler) digest(gk store.Key, objs provision.Objects, perr error, gst gwv1.GatewayStatus, res gateway.Result) string {
	perrs := ""
	if perr != nil {
		perrs = perr.Error()
	}
	var addrs []any
	if svc, ok := r.o.Store.Service(store.Key{Namespace: gk.Namespace, Name: provision.Name(gk.Name)}); ok {
		addrs = []any{svc.Spec.ClusterIPs, svc.Status.LoadBalancer.Ingress}
	}
	return digestOf(objs, perrs, gst, res.Routes, res.ListenerSets, res.Policies, addrs)
}

func digestOf(vs ...any) string {
	h := sha256.New()
	enc := json.NewEncoder(h)
	for _, v := range vs {
		_ = enc.Encode(v) // typed API objects always marshal
	}
	return string(h.Sum(nil))
}

// clearPolicies removes Gateway gw's ancestor statuses (ours) from the
// BackendTLSPolicies that carry one and are not in keep: the policy no
// longer applies to gw's backends, or gw is gone.
func (r *Reconciler) clearPolicies(ctx context.Context, gw store.Key, keep map[store.Key]bool) {
	sk := status.Key{Namespace: gw.Namespace, Name: gw.Name}
	for _, p := range r.o.Store.BackendTLSPolicies() {
		pk := store.Key{Namespace: p.Namespace, Name: p.Name}
		if keep[pk] {
			continue
		}
		for _, a := range p.Status.Ancestors {
			if a.ControllerName == gateway.ControllerName && status.ForGateway(a.AncestorRef, p.Namespace, sk) {
				if _, err := r.status.BackendTLSPolicy(ctx, p.Namespace, p.Name, sk, nil); err != nil {
					r.o.Log.Warn("gateway: clearing a BackendTLSPolicy's status", "policy", pk.String(), "gateway", gw.String(), "err", err)
				}
				break
			}
		}
	}
}

// clearRoutes removes the parent statuses (ours) of gw (a Gateway, or a
// Gateway and its ListenerSets) from the routes that carry one and are
// not in keep (kind/namespace/name).
func (r *Reconciler) clearRoutes(ctx context.Context, gw status.Parents, keep map[string]bool) {
	has := func(ns string, ps []gwv1.RouteParentStatus) bool {
		for _, p := range ps {
			if p.ControllerName == gateway.ControllerName && gw.Owns(p.ParentRef, ns) {
				return true
			}
		}
		return false
	}
	clear := func(kind, ns, name string) {
		if keep[kind+"/"+ns+"/"+name] {
			return
		}
		if _, err := r.status.Route(ctx, kind, ns, name, gw, nil); err != nil {
			r.o.Log.Warn("gateway: clearing a route's status", "kind", kind, "route", ns+"/"+name, "parents", fmt.Sprint(gw), "err", err)
		}
	}
	for _, o := range r.o.Store.HTTPRoutes() {
		if has(o.Namespace, o.Status.Parents) {
			clear("HTTPRoute", o.Namespace, o.Name)
		}
	}
	for _, o := range r.o.Store.GRPCRoutes() {
		if has(o.Namespace, o.Status.Parents) {
			clear("GRPCRoute", o.Namespace, o.Name)
		}
	}
	for _, o := range r.o.Store.TLSRoutes() {
		if has(o.Namespace, o.Status.Parents) {
			clear("TLSRoute", o.Namespace, o.Name)
		}
	}
	for _, o := range r.o.Store.TCPRoutes() {
		if has(o.Namespace, o.Status.Parents) {
			clear("TCPRoute", o.Namespace, o.Name)
		}
	}
	for _, o := range r.o.Store.UDPRoutes() {
		if has(o.Namespace, o.Status.Parents) {
			clear("UDPRoute", o.Namespace, o.Name)
		}
	}
}

// clearListenerSetParents removes our route parent statuses for
// ListenerSets that no Gateway of ours has among its own (live): the
// ListenerSet is gone, or now names a Gateway that is gone or not ours.
func (r *Reconciler) clearListenerSetParents(ctx context.Context, live map[status.Key]bool) {
	stale := func(ns string, ps []gwv1.RouteParentStatus) []status.Key {
		var out []status.Key
		for _, p := range ps {
			if k, ok := status.ListenerSetOf(p.ParentRef, ns); ok && p.ControllerName == gateway.ControllerName && !live[k] {
				out = append(out, k)
			}
		}
		return out
	}
	clear := func(kind, ns, name string, sets []status.Key) {
		if len(sets) == 0 {
			return
		}
		if _, err := r.status.Route(ctx, kind, ns, name, status.Owner{ListenerSets: sets}, nil); err != nil {
			r.o.Log.Warn("gateway: clearing a route's ListenerSet parent status", "kind", kind, "route", ns+"/"+name, "err", err)
		}
	}
	for _, o := range r.o.Store.HTTPRoutes() {
		clear("HTTPRoute", o.Namespace, o.Name, stale(o.Namespace, o.Status.Parents))
	}
	for _, o := range r.o.Store.GRPCRoutes() {
		clear("GRPCRoute", o.Namespace, o.Name, stale(o.Namespace, o.Status.Parents))
	}
	for _, o := range r.o.Store.TLSRoutes() {
		clear("TLSRoute", o.Namespace, o.Name, stale(o.Namespace, o.Status.Parents))
	}
	for _, o := range r.o.Store.TCPRoutes() {
		clear("TCPRoute", o.Namespace, o.Name, stale(o.Namespace, o.Status.Parents))
	}
	for _, o := range r.o.Store.UDPRoutes() {
		clear("UDPRoute", o.Namespace, o.Name, stale(o.Namespace, o.Status.Parents))
	}
}

// params are g's provisioning parameters: its class's ConfigMap, then its
// namespace's default inbound policy annotation (as for injected pods),
// then its own ConfigMap, key by key: the more specific wins.
func (r *Reconciler) params(ctx context.Context, g *gwv1.Gateway) (provision.Params, error) {
	var p provision.Params
	for _, gc := range r.o.Store.GatewayClasses() {
		if gc.Name != string(g.Spec.GatewayClassName) || gc.Spec.ParametersRef == nil {
			continue
		}
		ref := gc.Spec.ParametersRef
		if ref.Namespace == nil {
			return p, fmt.Errorf("GatewayClass %s: spec.parametersRef: a ConfigMap needs its namespace", gc.Name)
		}
		data, err := r.configMap(ctx, string(*ref.Namespace), ref.Name, "GatewayClass "+gc.Name+": spec.parametersRef")
		if err != nil {
			return p, err
		}
		if p, err = p.Merge(data, fmt.Sprintf("ConfigMap %s/%s (GatewayClass %s's parameters)", *ref.Namespace, ref.Name, gc.Name)); err != nil {
			return p, err
		}
	}
	ns, _ := r.o.Store.Namespace(g.Namespace)
	policy, err := provision.NamespacePolicy(ns)
	if err != nil {
		return p, err
	}
	if policy != "" {
		p.DefaultInboundPolicy = policy
	}
	if inf := g.Spec.Infrastructure; inf != nil && inf.ParametersRef != nil {
		ref := inf.ParametersRef
		if ref.Group != "" || ref.Kind != "ConfigMap" {
			return p, fmt.Errorf("Gateway %s/%s: spec.infrastructure.parametersRef: %s/%s is not supported (allowed: a core ConfigMap)", g.Namespace, g.Name, ref.Group, ref.Kind)
		}
		data, err := r.configMap(ctx, g.Namespace, ref.Name, "Gateway "+g.Namespace+"/"+g.Name+": spec.infrastructure.parametersRef")
		if err != nil {
			return p, err
		}
		return p.Merge(data, fmt.Sprintf("ConfigMap %s/%s (Gateway %s/%s's parameters)", g.Namespace, ref.Name, g.Namespace, g.Name))
	}
	return p, nil
}

func (r *Reconciler) configMap(ctx context.Context, ns, name, where string) (map[string]string, error) {
	if data, ok := r.cms[ns+"/"+name]; ok {
		return data, nil
	}
	cm, err := r.o.Kube.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%s: ConfigMap %s/%s not found", where, ns, name)
	}
	if err != nil {
		return nil, err
	}
	r.cms[ns+"/"+name] = cm.Data
	return cm.Data, nil
}

// apply server-side applies the objects (forcing: the controller owns
// them) and returns the Service and Deployment as stored.
func (r *Reconciler) apply(ctx context.Context, o provision.Objects) (*corev1.Service, *appsv1.Deployment, error) {
	opts := metav1.PatchOptions{FieldManager: fieldManager, Force: ptrTrue()}
	patch := func(v any) []byte {
		b, _ := json.Marshal(v) // typed objects always marshal
		return b
	}
	if _, err := r.o.Kube.CoreV1().ServiceAccounts(o.ServiceAccount.Namespace).Patch(ctx, o.ServiceAccount.Name, types.ApplyPatchType, patch(o.ServiceAccount), opts); err != nil {
		return nil, nil, fmt.Errorf("applying ServiceAccount %s/%s: %w", o.ServiceAccount.Namespace, o.ServiceAccount.Name, err)
	}
	svc, svcErr := r.service(ctx, o, opts, patch(o.Service))
	if svcErr != nil && !errors.As(svcErr, new(*addressNotUsable)) {
		return nil, nil, svcErr
	}
	dep, err := r.o.Kube.AppsV1().Deployments(o.Deployment.Namespace).Patch(ctx, o.Deployment.Name, types.ApplyPatchType, patch(o.Deployment), opts)
	if err != nil {
		return nil, nil, fmt.Errorf("applying Deployment %s/%s: %w", o.Deployment.Namespace, o.Deployment.Name, err)
	}
	return svc, dep, svcErr
}

// addressNotUsable: the API server refused the Service the addresses the
// Gateway asks for (its own reason in the message).
type addressNotUsable struct{ msg string }

func (e *addressNotUsable) Error() string { return e.msg }

// service applies the Service. Cluster IPs are immutable: when the Gateway
// asks for others than the Service has, it is deleted and created again,
// once a dry run says the API server would give them.
// A refusal of the requested addresses (not in the Service range, already
// allocated, a family the cluster does not have) is an *addressNotUsable.
func (r *Reconciler) service(ctx context.Context, o provision.Objects, opts metav1.PatchOptions, body []byte) (*corev1.Service, error) {
	services := r.o.Kube.CoreV1().Services(o.Service.Namespace)
	where := fmt.Sprintf("Service %s/%s", o.Service.Namespace, o.Service.Name)
	if len(o.Addresses.Pinned) > 0 && o.Service.Spec.Type != corev1.ServiceTypeLoadBalancer {
		old, err := services.Get(ctx, o.Service.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("reading %s: %w", where, err)
		default:
			if why := o.Addresses.Mismatch(old, o.Service.Spec.Type); why != "" {
				// Asked first (a dry run, which allocates nothing): an
				// address the cluster cannot give leaves the Service, and
				// its clients, on the address it has.
				// Only the addresses the Service does not hold: those it
				// holds are "already allocated" until it is deleted.
				var fresh []string
				for _, ip := range o.Service.Spec.ClusterIPs {
					if !slices.Contains(old.Spec.ClusterIPs, ip) {
						fresh = append(fresh, ip)
					}
				}
				if len(fresh) > 0 {
					probe := o.Service.DeepCopy()
					probe.Name, probe.GenerateName, probe.OwnerReferences = "", o.Service.Name+"-", nil
					probe.Spec.ClusterIP, probe.Spec.ClusterIPs = fresh[0], fresh
					if len(fresh) == 1 {
						probe.Spec.IPFamilyPolicy = nil // one family (dual-stack needs both)
					}
					if _, err := services.Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldManager: fieldManager}); err != nil {
						if addressRefused(err) {
							return nil, r.notUsable(where, o, err)
						}
						return nil, fmt.Errorf("creating %s again (%s), a dry run: %w", where, why, err)
					}
				}
				r.o.Log.Info("gateway: creating the Service again for the requested addresses", "service", o.Service.Namespace+"/"+o.Service.Name, "why", why)
				pre := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &old.UID}}
				if err := services.Delete(ctx, old.Name, pre); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
					return nil, fmt.Errorf("deleting %s (%s): %w", where, why, err)
				}
			}
		}
	}
	svc, err := services.Patch(ctx, o.Service.Name, types.ApplyPatchType, body, opts)
	if err != nil && len(o.Addresses.Pinned) > 0 && addressRefused(err) {
		return nil, r.notUsable(where, o, err)
	}
	if err != nil {
		return nil, fmt.Errorf("applying %s: %w", where, err)
	}
	return svc, nil
}

func (r *Reconciler) notUsable(where string, o provision.Objects, err error) error {
	var ips []string
	for _, ip := range o.Addresses.Pinned {
		ips = append(ips, ip.String())
	}
	return &addressNotUsable{msg: fmt.Sprintf("%s cannot have the requested address %s: %v", where, strings.Join(ips, ", "), err)}
}

// addressRefused: the API server refused a Service for one of the address
// fields the Gateway's addresses set (an Invalid naming spec.clusterIP(s),
// spec.ipFamilies or spec.loadBalancerIP).
func addressRefused(err error) bool {
	if !apierrors.IsInvalid(err) {
		return false
	}
	var st apierrors.APIStatus
	if !errors.As(err, &st) || st.Status().Details == nil {
		return false
	}
	for _, c := range st.Status().Details.Causes {
		for _, f := range []string{"spec.clusterIP", "spec.ipFamil", "spec.loadBalancerIP"} {
			if strings.HasPrefix(c.Field, f) {
				return true
			}
		}
	}
	return false
}

func ptrTrue() *bool { t := true; return &t }

// addresses are where clients reach the Gateway: its Service's load
// balancer ingress, else its cluster IPs. With static addresses (req) they
// are the requested ones the Service has (and the Service's others only
// when an entry without a value asks for any); missing are the requested
// ones it does not have (yet).
func addresses(svc *corev1.Service, req provision.Addresses) (out []gwv1.GatewayStatusAddress, missing []string) {
	var have []gwv1.GatewayStatusAddress
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		have = ingress(svc)
	}
	// No load balancer (yet): the cluster IP still reaches it; a requested
	// load balancer address is not the cluster IP.
	if len(have) == 0 && !(svc.Spec.Type == corev1.ServiceTypeLoadBalancer && len(req.Pinned) > 0) {
		ip := gwv1.IPAddressType
		for _, c := range svc.Spec.ClusterIPs {
			if c != "" && c != corev1.ClusterIPNone {
				have = append(have, gwv1.GatewayStatusAddress{Type: &ip, Value: c})
			}
		}
	}
	if !req.Requested() {
		return have, nil
	}
	same := func(ip netip.Addr) func(gwv1.GatewayStatusAddress) bool {
		return func(a gwv1.GatewayStatusAddress) bool {
			b, err := netip.ParseAddr(a.Value)
			return err == nil && b.Unmap() == ip
		}
	}
	for _, ip := range req.Pinned {
		if i := slices.IndexFunc(have, same(ip)); i >= 0 {
			out = append(out, have[i])
		} else {
			missing = append(missing, ip.String())
		}
	}
	if req.Any {
		for _, a := range have {
			if !slices.ContainsFunc(out, func(b gwv1.GatewayStatusAddress) bool { return b.Value == a.Value }) {
				out = append(out, a)
			}
		}
	}
	return out, missing
}

// ingress are a Service's load balancer addresses.
func ingress(svc *corev1.Service) []gwv1.GatewayStatusAddress {
	ip, host := gwv1.IPAddressType, gwv1.HostnameAddressType
	var out []gwv1.GatewayStatusAddress
	for _, in := range svc.Status.LoadBalancer.Ingress {
		switch {
		case in.IP != "":
			out = append(out, gwv1.GatewayStatusAddress{Type: &ip, Value: in.IP})
		case in.Hostname != "":
			out = append(out, gwv1.GatewayStatusAddress{Type: &host, Value: in.Hostname})
		}
	}
	return out
}

// ingressOf names a Service's load balancer addresses, for a message.
func ingressOf(svc *corev1.Service) string {
	var s []string
	for _, a := range ingress(svc) {
		s = append(s, a.Value)
	}
	return strings.Join(s, ", ")
}

// setCondition replaces (or adds) the condition of type typ.
func setCondition(cs *[]metav1.Condition, typ string, s metav1.ConditionStatus, reason, msg string, gen int64) {
	c := metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen}
	for i := range *cs {
		if (*cs)[i].Type == typ {
			(*cs)[i] = c
			return
		}
	}
	*cs = append(*cs, c)
}
