package gateway

import (
	"crypto/tls"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// backendClientCertificate resolves the Gateway's
// spec.tls.backend.clientCertificateRef: the certificate its proxies present
// when they originate a BackendTLSPolicy's TLS. A reference that is not a
// core Secret, is missing or malformed, or is in another namespace without
// a ReferenceGrant makes the Gateway's ResolvedRefs False (the spec's
// reasons); the Gateway stays accepted and its proxies present no client
// certificate.
func (c *compiler) backendClientCertificate() {
	if c.gw.Spec.TLS == nil || c.gw.Spec.TLS.Backend == nil || c.gw.Spec.TLS.Backend.ClientCertificateRef == nil {
		return
	}
	ref := c.gw.Spec.TLS.Backend.ClientCertificateRef
	f := fmt.Sprintf("Gateway %s/%s: spec.tls.backend.clientCertificateRef", c.gw.Namespace, c.gw.Name)
	bad := func(reason gwv1.GatewayConditionReason, msg string) {
		c.refsReason, c.refsMsg = string(reason), msg
		c.reject("Gateway", c.gw.Namespace, c.gw.Name, string(reason), msg)
	}
	group, kind := "", "Secret"
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	if ref.Kind != nil {
		kind = string(*ref.Kind)
	}
	if group != "" || kind != "Secret" {
		bad(gwv1.GatewayReasonInvalidClientCertificateRef, fmt.Sprintf("%s: %s/%s is not supported (allowed: core Secret)", f, group, kind))
		return
	}
	ns := c.gw.Namespace
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	if ns != c.gw.Namespace && !c.granted(Group, "Gateway", c.gw.Namespace, "", "Secret", ns, string(ref.Name)) {
		bad(gwv1.GatewayReasonRefNotPermitted, fmt.Sprintf("%s: Secret %s/%s is in another namespace and no ReferenceGrant in %s allows Gateways from %s to refer to it", f, ns, ref.Name, ns, c.gw.Namespace))
		return
	}
	c.dep("Secret", ns, string(ref.Name))
	sec, ok := c.secrets[nn(ns, string(ref.Name))]
	if !ok {
		// The store keeps kubernetes.io/tls Secrets only: one of another
		// type is missing here.
		bad(gwv1.GatewayReasonInvalidClientCertificateRef, fmt.Sprintf("%s: Secret %s/%s does not exist (or is not of type kubernetes.io/tls)", f, ns, ref.Name))
		return
	}
	crt, key := sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]
	if _, err := tls.X509KeyPair(crt, key); err != nil {
		bad(gwv1.GatewayReasonInvalidClientCertificateRef, fmt.Sprintf("%s: Secret %s/%s holds no valid certificate and key in tls.crt and tls.key: %v", f, ns, ref.Name, err))
		return
	}
	c.clientCert = &gatewaypb.Certificate{Name: ns + "/" + string(ref.Name), CertChain: crt, PrivateKey: key}
}
