package status

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
)

// Writer writes the merged statuses through the API server: read, merge,
// and update only when something changed, again on a conflict (another
// controller wrote a route's status meanwhile). An object that is gone is
// not an error: its status went with it.
type Writer struct {
	Client     gwclient.Interface
	Controller gwv1.GatewayController
	// Now stamps changed conditions; nil is time.Now.
	Now func() time.Time
}

func (w *Writer) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// GatewayClass sets a GatewayClass's conditions; wrote reports whether an
// update was made.
func (w *Writer) GatewayClass(ctx context.Context, name string, conds []metav1.Condition) (wrote bool, err error) {
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		gc, err := w.Client.GatewayV1().GatewayClasses().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		next := Conditions(gc.Status.Conditions, conds, w.now())
		if Same(gc.Status.Conditions, next, ConditionsTimes) {
			return nil
		}
		gc.Status.Conditions = next
		_, err = w.Client.GatewayV1().GatewayClasses().UpdateStatus(ctx, gc, metav1.UpdateOptions{FieldManager: fieldManager})
		wrote = err == nil
		return err
	})
	return wrote, ignoreGone(err)
}

const fieldManager = "meridian-gateway"

// Gateway sets a Gateway's status.
func (w *Writer) Gateway(ctx context.Context, gw Key, computed gwv1.GatewayStatus, addresses []gwv1.GatewayStatusAddress) (wrote bool, err error) {
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		g, err := w.Client.GatewayV1().Gateways(gw.Namespace).Get(ctx, gw.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		next := Gateway(g.Status, computed, addresses, w.now())
		if Same(g.Status, next, GatewayTimes) {
			return nil
		}
		g.Status = next
		_, err = w.Client.GatewayV1().Gateways(gw.Namespace).UpdateStatus(ctx, g, metav1.UpdateOptions{FieldManager: fieldManager})
		wrote = err == nil
		return err
	})
	return wrote, ignoreGone(err)
}

// ListenerSet sets a ListenerSet's status (its parent Gateway's compile
// decides it).
func (w *Writer) ListenerSet(ctx context.Context, k Key, computed gwv1.ListenerSetStatus) (wrote bool, err error) {
	return w.listenerSet(ctx, k, func(*gwv1.ListenerSet) gwv1.ListenerSetStatus { return computed })
}

// ResetListenerSet puts a ListenerSet this controller managed back in the
// state no controller has reconciled (Accepted and Programmed Unknown,
// Pending; no listeners): its parent Gateway is gone or no longer of
// this class, and a status saying Accepted/Programmed would claim
// listeners nothing serves. Another controller of the new parent
// writes its own from there.
func (w *Writer) ResetListenerSet(ctx context.Context, k Key, why string) (wrote bool, err error) {
	return w.listenerSet(ctx, k, func(ls *gwv1.ListenerSet) gwv1.ListenerSetStatus {
		pending := func(t gwv1.ListenerSetConditionType) metav1.Condition {
			return metav1.Condition{Type: string(t), Status: metav1.ConditionUnknown, Reason: string(gwv1.ListenerSetReasonPending), Message: why, ObservedGeneration: ls.Generation}
		}
		return gwv1.ListenerSetStatus{Conditions: []metav1.Condition{pending(gwv1.ListenerSetConditionAccepted), pending(gwv1.ListenerSetConditionProgrammed)}}
	})
}

// listenerSet writes the status computed from the ListenerSet as read,
// keeping transition times, unless it is the same.
func (w *Writer) listenerSet(ctx context.Context, k Key, computed func(*gwv1.ListenerSet) gwv1.ListenerSetStatus) (wrote bool, err error) {
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		ls, err := w.Client.GatewayV1().ListenerSets(k.Namespace).Get(ctx, k.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		next := ListenerSet(ls.Status, computed(ls), w.now())
		if Same(ls.Status, next, ListenerSetTimes) {
			return nil
		}
		ls.Status = next
		_, err = w.Client.GatewayV1().ListenerSets(k.Namespace).UpdateStatus(ctx, ls, metav1.UpdateOptions{FieldManager: fieldManager})
		wrote = err == nil
		return err
	})
	return wrote, ignoreGone(err)
}

// Route sets the parent statuses of the parents gw owns (a Gateway, or a
// Gateway and its ListenerSets) in a route of kind (HTTPRoute, GRPCRoute,
// TLSRoute, TCPRoute or UDPRoute); ours empty removes them (the route no longer names them).
func (w *Writer) Route(ctx context.Context, kind string, ns, name string, gw Parents, ours []gwv1.RouteParentStatus) (wrote bool, err error) {
	var get func() (*[]gwv1.RouteParentStatus, func() error, error)
	v1 := w.Client.GatewayV1()
	switch kind {
	case "HTTPRoute":
		get = func() (*[]gwv1.RouteParentStatus, func() error, error) {
			r, err := v1.HTTPRoutes(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return nil, nil, err
			}
			return &r.Status.Parents, func() error {
				_, err := v1.HTTPRoutes(ns).UpdateStatus(ctx, r, metav1.UpdateOptions{FieldManager: fieldManager})
				return err
			}, nil
		}
	case "GRPCRoute":
		get = func() (*[]gwv1.RouteParentStatus, func() error, error) {
			r, err := v1.GRPCRoutes(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return nil, nil, err
			}
			return &r.Status.Parents, func() error {
				_, err := v1.GRPCRoutes(ns).UpdateStatus(ctx, r, metav1.UpdateOptions{FieldManager: fieldManager})
				return err
			}, nil
		}
	case "TLSRoute":
		get = func() (*[]gwv1.RouteParentStatus, func() error, error) {
			r, err := v1.TLSRoutes(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return nil, nil, err
			}
			return &r.Status.Parents, func() error {
				_, err := v1.TLSRoutes(ns).UpdateStatus(ctx, r, metav1.UpdateOptions{FieldManager: fieldManager})
				return err
			}, nil
		}
	case "TCPRoute":
		get = func() (*[]gwv1.RouteParentStatus, func() error, error) {
			r, err := v1.TCPRoutes(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return nil, nil, err
			}
			return &r.Status.Parents, func() error {
				_, err := v1.TCPRoutes(ns).UpdateStatus(ctx, r, metav1.UpdateOptions{FieldManager: fieldManager})
				return err
			}, nil
		}
	case "UDPRoute":
		get = func() (*[]gwv1.RouteParentStatus, func() error, error) {
			r, err := v1.UDPRoutes(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return nil, nil, err
			}
			return &r.Status.Parents, func() error {
				_, err := v1.UDPRoutes(ns).UpdateStatus(ctx, r, metav1.UpdateOptions{FieldManager: fieldManager})
				return err
			}, nil
		}
	default:
		return false, fmt.Errorf("route kind %q: the kinds are HTTPRoute, GRPCRoute, TLSRoute, TCPRoute and UDPRoute", kind)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		parents, update, err := get()
		if err != nil {
			return err
		}
		next := RouteParents(*parents, ours, w.Controller, ns, gw, w.now())
		if Same(*parents, next, ParentsTimes) {
			return nil
		}
		*parents = next
		err = update()
		wrote = err == nil
		return err
	})
	return wrote, ignoreGone(err)
}

func ignoreGone(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// ErrAncestorsFull is returned by BackendTLSPolicy when the policy's
// status.ancestors already holds MaxAncestors entries of other Gateways or
// controllers: the spec forbids adding one, and the policy is
// unimplementable for this Gateway.
var ErrAncestorsFull = fmt.Errorf("status.ancestors holds %d entries, the most allowed: no entry for this Gateway can be added", MaxAncestors)

// BackendTLSPolicy sets Gateway gw's entry (ours) in a BackendTLSPolicy's
// status.ancestors; nil removes it (the policy no longer applies to gw's
// backends).
func (w *Writer) BackendTLSPolicy(ctx context.Context, ns, name string, gw Key, ours *gwv1.PolicyAncestorStatus) (wrote bool, err error) {
	v1 := w.Client.GatewayV1()
	full := false
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p, err := v1.BackendTLSPolicies(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		var next []gwv1.PolicyAncestorStatus
		next, full = PolicyAncestors(p.Status.Ancestors, ours, w.Controller, ns, gw, w.now())
		if Same(p.Status.Ancestors, next, AncestorsTimes) {
			return nil
		}
		p.Status.Ancestors = next
		_, err = v1.BackendTLSPolicies(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{FieldManager: fieldManager})
		wrote = err == nil
		return err
	})
	if err == nil && full {
		return wrote, fmt.Errorf("BackendTLSPolicy %s/%s: %w", ns, name, ErrAncestorsFull)
	}
	return wrote, ignoreGone(err)
}
