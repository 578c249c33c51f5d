package provision

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// UnsupportedAddressError is a Gateway spec.addresses entry of a type
// Meridian does not support (anything but IPAddress): the Gateway is not
// accepted (reason UnsupportedAddress).
type UnsupportedAddressError struct{ Msg string }

func (e *UnsupportedAddressError) Error() string { return e.Msg }

// Addresses are the static addresses a Gateway's spec.addresses asks for,
// as its Service is given them.
type Addresses struct {
	// Pinned are the requested IP addresses the Service is asked for: at
	// most one of each IP family, in the Gateway's order (for a
	// LoadBalancer Service at most one in all).
	Pinned []netip.Addr
	// Unusable says, per requested address the Service cannot be asked
	// for (a second one of a family, a second one for a load balancer),
	// why: the Gateway is not programmed (AddressNotUsable).
	Unusable []string
	// Any: an IPAddress entry without a value asks for an address the
	// cluster chooses; the status lists the Service's own besides the
	// pinned ones.
	Any bool
}

// Requested reports whether spec.addresses asks for anything: without it
// the status lists every address the Service has.
func (a Addresses) Requested() bool { return len(a.Pinned) > 0 || len(a.Unusable) > 0 }

// addresses reads gw's spec.addresses for a Service of type t. IPAddress
// entries are pinned: ClusterIP and NodePort Services get them as their
// cluster IPs (one per IP family, the API server allows no more), a
// LoadBalancer Service as its spec.loadBalancerIP (one: the only field
// every provider may read). Any other type (Hostname: a Service has no
// name a client could be given; implementation-specific ones) is an
// UnsupportedAddressError naming the entry.
func addresses(gw *gatewayv1.Gateway, t corev1.ServiceType) (Addresses, error) {
	var out Addresses
	for i, a := range gw.Spec.Addresses {
		typ := gatewayv1.IPAddressType
		if a.Type != nil {
			typ = *a.Type
		}
		field := fmt.Sprintf("Gateway %s/%s: spec.addresses[%d]", gw.Namespace, gw.Name, i)
		if typ != gatewayv1.IPAddressType {
			return Addresses{}, &UnsupportedAddressError{Msg: fmt.Sprintf("%s: type %q is not supported (allowed: %s)", field, typ, gatewayv1.IPAddressType)}
		}
		if a.Value == "" {
			out.Any = true
			continue
		}
		ip, err := netip.ParseAddr(a.Value)
		if err != nil || ip.Zone() != "" {
			return Addresses{}, &UnsupportedAddressError{Msg: fmt.Sprintf("%s: value %q is not an IP address", field, a.Value)}
		}
		ip = ip.Unmap()
		switch {
		case t == corev1.ServiceTypeLoadBalancer && len(out.Pinned) > 0:
			out.Unusable = append(out.Unusable, fmt.Sprintf("%s: %s: a LoadBalancer Service is given one requested address (spec.loadBalancerIP), %s already", field, ip, out.Pinned[0]))
		case slices.ContainsFunc(out.Pinned, func(p netip.Addr) bool { return p.Is4() == ip.Is4() }):
			out.Unusable = append(out.Unusable, fmt.Sprintf("%s: %s: a Service has one cluster IP per IP family, %s already", field, ip, family(ip)))
		default:
			out.Pinned = append(out.Pinned, ip)
		}
	}
	return out, nil
}

func family(ip netip.Addr) string {
	if ip.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// pin sets the Service's fields for the pinned addresses.
func (a Addresses) pin(svc *corev1.Service) {
	if len(a.Pinned) == 0 {
		return
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		svc.Spec.LoadBalancerIP = a.Pinned[0].String()
		return
	}
	for _, ip := range a.Pinned {
		svc.Spec.ClusterIPs = append(svc.Spec.ClusterIPs, ip.String())
	}
	svc.Spec.ClusterIP = svc.Spec.ClusterIPs[0]
	if len(a.Pinned) == 2 {
		p := corev1.IPFamilyPolicyRequireDualStack
		svc.Spec.IPFamilyPolicy = &p
	}
}

// Mismatch says why the existing Service old cannot be updated to have
// the pinned cluster IPs ("" when it can): cluster IPs are immutable, so
// it has to be created again.
func (a Addresses) Mismatch(old *corev1.Service, t corev1.ServiceType) string {
	if len(a.Pinned) == 0 || t == corev1.ServiceTypeLoadBalancer {
		return ""
	}
	var have []string
	for _, c := range old.Spec.ClusterIPs {
		if c != "" && c != corev1.ClusterIPNone {
			have = append(have, c)
		}
	}
	var want []string
	for _, ip := range a.Pinned {
		want = append(want, ip.String())
	}
	if slices.Equal(have, want) {
		return ""
	}
	return fmt.Sprintf("cluster IPs %s, requested %s", strings.Join(have, ", "), strings.Join(want, ", "))
}
