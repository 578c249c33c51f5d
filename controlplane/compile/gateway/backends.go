package gateway

import (
	"crypto/x509"
	"fmt"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// PolicyStatus is a BackendTLSPolicy's status for this Gateway (its
// ancestor): the writer merges it into status.ancestors.
type PolicyStatus struct {
	Policy   types.NamespacedName
	Ancestor gwv1.PolicyAncestorStatus
}

// backend resolves one backendRef. An unresolved one keeps its weight and
// has no authority (its share of the requests gets 500); ResolvedRefs says
// why.
func (c *compiler) backend(cr *compiled, fromKind, ns, field string, ref gwv1.BackendRef, grpc bool) *gatewaypb.Backend {
	w := uint32(1)
	if ref.Weight != nil {
		w = uint32(max(*ref.Weight, 0))
	}
	b := &gatewaypb.Backend{Weight: w}
	if grpc {
		b.Protocol = gatewaypb.Backend_H2C
	}
	group, kind := "", "Service"
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	if ref.Kind != nil {
		kind = string(*ref.Kind)
	}
	if group != "" || kind != "Service" {
		cr.unresolved(string(gwv1.RouteReasonInvalidKind), fmt.Sprintf("%s: kind %s/%s is not supported (allowed: core Service)", field, group, kind))
		return b
	}
	svcNS := ns
	if ref.Namespace != nil && *ref.Namespace != "" {
		svcNS = string(*ref.Namespace)
	}
	if svcNS != ns && !c.granted(Group, fromKind, ns, "", "Service", svcNS, string(ref.Name)) {
		cr.unresolved(string(gwv1.RouteReasonRefNotPermitted), fmt.Sprintf("%s: Service %s/%s is in another namespace and no ReferenceGrant in %s allows %ss from %s to refer to it", field, svcNS, ref.Name, svcNS, fromKind, ns))
		return b
	}
	c.dep("Service", svcNS, string(ref.Name))
	svc, ok := c.services[nn(svcNS, string(ref.Name))]
	if !ok {
		cr.unresolved(string(gwv1.RouteReasonBackendNotFound), fmt.Sprintf("%s: Service %s/%s does not exist", field, svcNS, ref.Name))
		return b
	}
	if ref.Port == nil {
		cr.unresolved(string(gwv1.RouteReasonBackendNotFound), fmt.Sprintf("%s.port is required for a Service", field))
		return b
	}
	var port *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == *ref.Port {
			port = &svc.Spec.Ports[i]
		}
	}
	if port == nil {
		cr.unresolved(string(gwv1.RouteReasonBackendNotFound), fmt.Sprintf("%s: Service %s/%s has no port %d", field, svcNS, ref.Name, *ref.Port))
		return b
	}
	if port.AppProtocol != nil {
		switch *port.AppProtocol {
		case "kubernetes.io/h2c":
			b.Protocol = gatewaypb.Backend_H2C
		case "kubernetes.io/ws":
			if grpc {
				cr.unresolved(string(gwv1.RouteReasonUnsupportedProtocol), fmt.Sprintf("%s: Service %s/%s port %d has appProtocol kubernetes.io/ws, which gRPC cannot use", field, svcNS, ref.Name, *ref.Port))
				return b
			}
			b.Protocol = gatewaypb.Backend_WEBSOCKET
		case "kubernetes.io/wss":
			cr.unresolved(string(gwv1.RouteReasonUnsupportedProtocol), fmt.Sprintf("%s: Service %s/%s port %d appProtocol kubernetes.io/wss is not supported (allowed: kubernetes.io/h2c, kubernetes.io/ws, http, or none)", field, svcNS, ref.Name, *ref.Port))
			return b
		}
	}
	tls, ok := c.backendTLS(svc, port)
	if !ok {
		// The policy's own status says why; the backend answers 500
		// rather than falling back to plaintext.
		return b
	}
	b.Tls = tls
	b.Authority = svc.Name + "." + svc.Namespace + ".svc." + c.opts.ClusterDomain + ":" + strconv.Itoa(int(port.Port))
	b.Name = svc.Namespace + "/" + svc.Name + ":" + strconv.Itoa(int(port.Port))
	return b
}

// backendTLS finds the BackendTLSPolicy of a Service port: one that names
// the port (sectionName) over one that names the whole Service, then the
// oldest, then by name; the others of the winner's kind (port or whole
// Service) are Conflicted. ok is false when that policy is invalid (requests
// get 500 rather than plaintext).
func (c *compiler) backendTLS(svc *corev1.Service, port *corev1.ServicePort) (*gatewaypb.BackendTLS, bool) {
	type cand struct {
		p       *gwv1.BackendTLSPolicy
		section bool
	}
	var cands []cand
	for _, p := range c.in.BackendTLSPolicies {
		if p == nil || p.Namespace != svc.Namespace {
			continue
		}
		for _, t := range p.Spec.TargetRefs {
			if t.Group != "" || t.Kind != "Service" || string(t.Name) != svc.Name {
				continue
			}
			if t.SectionName != nil && *t.SectionName != "" {
				if string(*t.SectionName) == port.Name {
					cands = append(cands, cand{p, true})
				}
				continue
			}
			cands = append(cands, cand{p, false})
		}
	}
	if len(cands) == 0 {
		return nil, true
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if a.section != b.section {
			return a.section
		}
		if !a.p.CreationTimestamp.Equal(&b.p.CreationTimestamp) {
			return a.p.CreationTimestamp.Before(&b.p.CreationTimestamp)
		}
		return a.p.Name < b.p.Name
	})
	p := cands[0].p
	c.dep("BackendTLSPolicy", p.Namespace, p.Name)
	for _, other := range cands[1:] {
		// A policy for the whole Service is not in conflict with one for
		// this port: it still serves the Service's other ports.
		if other.p != p && other.section == cands[0].section {
			// Its references are still judged: ResolvedRefs says what
			// to fix should it take over.
			_, badReason, bad := c.caCertificates(other.p)
			c.policyStatus(other.p, false, string(gwv1.PolicyReasonConflicted), fmt.Sprintf("BackendTLSPolicy %s/%s: Service %s/%s port %d is targeted by the older or more specific BackendTLSPolicy %s", other.p.Namespace, other.p.Name, svc.Namespace, svc.Name, port.Port, p.Name), badReason, bad)
		}
	}
	v := p.Spec.Validation
	pb := &gatewaypb.BackendTLS{ServerName: string(v.Hostname)}
	for _, san := range v.SubjectAltNames {
		switch san.Type {
		case gwv1.HostnameSubjectAltNameType:
			pb.SubjectAltNames = append(pb.SubjectAltNames, string(san.Hostname))
		case gwv1.URISubjectAltNameType:
			pb.SubjectAltNames = append(pb.SubjectAltNames, string(san.URI))
		}
	}
	who := fmt.Sprintf("BackendTLSPolicy %s/%s", p.Namespace, p.Name)
	if v.WellKnownCACertificates != nil {
		if *v.WellKnownCACertificates != gwv1.WellKnownCACertificatesSystem {
			msg := fmt.Sprintf("%s: spec.validation.wellKnownCACertificates %q is not supported (allowed: System)", who, *v.WellKnownCACertificates)
			// Accepted False with Invalid is the spec's answer to an
			// unrecognized value; there is no reference to resolve.
			c.policyStatus(p, false, string(gwv1.PolicyReasonInvalid), msg, "", "")
			return nil, false
		}
		c.policyStatus(p, true, "", "", "", "")
		return pb, true
	}
	var badReason, bad string
	pb.CaCertificates, badReason, bad = c.caCertificates(p)
	if len(pb.CaCertificates) == 0 {
		if bad == "" {
			bad, badReason = who+": spec.validation needs caCertificateRefs or wellKnownCACertificates", string(gwv1.BackendTLSPolicyReasonInvalidCACertificateRef)
		}
		c.policyStatus(p, false, string(gwv1.BackendTLSPolicyReasonNoValidCACertificate), bad, badReason, bad)
		return nil, false
	}
	c.policyStatus(p, true, "", "", badReason, bad)
	return pb, true
}

// caCertificates reads policy p's CA certificates (caCertificateRefs), and
// says why a reference does not resolve (the last one that does not, its
// ResolvedRefs reason and message), if one does not.
func (c *compiler) caCertificates(p *gwv1.BackendTLSPolicy) (pem []byte, badReason, bad string) {
	who := fmt.Sprintf("BackendTLSPolicy %s/%s", p.Namespace, p.Name)
	for i, ref := range p.Spec.Validation.CACertificateRefs {
		f := fmt.Sprintf("%s: spec.validation.caCertificateRefs[%d]", who, i)
		if ref.Group != "" || ref.Kind != "ConfigMap" {
			bad, badReason = fmt.Sprintf("%s: %s/%s is not supported (allowed: core ConfigMap)", f, ref.Group, ref.Kind), string(gwv1.BackendTLSPolicyReasonInvalidKind)
			continue
		}
		c.dep("ConfigMap", p.Namespace, string(ref.Name))
		cm, ok := c.configMaps[nn(p.Namespace, string(ref.Name))]
		if !ok {
			bad, badReason = fmt.Sprintf("%s: ConfigMap %s/%s does not exist", f, p.Namespace, ref.Name), string(gwv1.BackendTLSPolicyReasonInvalidCACertificateRef)
			continue
		}
		one := []byte(cm.Data["ca.crt"])
		if !x509.NewCertPool().AppendCertsFromPEM(one) {
			bad, badReason = fmt.Sprintf("%s: ConfigMap %s/%s has no PEM certificate under ca.crt", f, p.Namespace, ref.Name), string(gwv1.BackendTLSPolicyReasonInvalidCACertificateRef)
			continue
		}
		pem = append(pem, one...)
		if one[len(one)-1] != '\n' {
			pem = append(pem, '\n')
		}
	}
	return pem, badReason, bad
}

// policyStatus records a BackendTLSPolicy's conditions for this Gateway
// (once per policy: the first decision stands).
func (c *compiler) policyStatus(p *gwv1.BackendTLSPolicy, accepted bool, reason, msg, refsReason, refsMsg string) {
	k := nn(p.Namespace, p.Name)
	for _, s := range c.policies {
		if s.Policy == k {
			return
		}
	}
	gen := p.Generation
	if accepted {
		reason, msg = string(gwv1.PolicyReasonAccepted), "accepted"
	}
	acc := cond(string(gwv1.PolicyConditionAccepted), accepted, reason, msg, gen)
	refs := cond(string(gwv1.BackendTLSPolicyConditionResolvedRefs), true, string(gwv1.BackendTLSPolicyReasonResolvedRefs), "all references resolved", gen)
	if refsReason != "" {
		refs = cond(string(gwv1.BackendTLSPolicyConditionResolvedRefs), false, refsReason, refsMsg, gen)
	}
	ns := gwv1.Namespace(c.gw.Namespace)
	c.policies = append(c.policies, PolicyStatus{Policy: k, Ancestor: gwv1.PolicyAncestorStatus{
		AncestorRef:    gwv1.ParentReference{Group: groupPtr(Group), Kind: kindPtr("Gateway"), Namespace: &ns, Name: gwv1.ObjectName(c.gw.Name)},
		ControllerName: ControllerName,
		Conditions:     []metav1.Condition{acc, refs},
	}})
	if !accepted {
		c.reject("BackendTLSPolicy", p.Namespace, p.Name, reason, msg)
	}
}

func kindPtr(k string) *gwv1.Kind { x := gwv1.Kind(k); return &x }
