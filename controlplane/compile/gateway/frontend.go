package gateway

import (
	"crypto/x509"
	"fmt"
	"strings"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// frontendConfig is the Gateway's spec.tls.frontend entry for a port: its
// perPort entry, which overrides the default whole (even one without
// validation), else the default. field names it for messages.
func (c *compiler) frontendConfig(port gwv1.PortNumber) (cfg *gwv1.TLSConfig, field string) {
	t := c.gw.Spec.TLS
	if t == nil || t.Frontend == nil {
		return nil, ""
	}
	for i := range t.Frontend.PerPort {
		if t.Frontend.PerPort[i].Port == port {
			return &t.Frontend.PerPort[i].TLS, fmt.Sprintf("spec.tls.frontend.perPort[%d].tls", i)
		}
	}
	return &t.Frontend.Default, "spec.tls.frontend.default"
}

// frontend applies client certificate validation to an HTTPS listener (the
// spec applies it to "Listeners handling HTTPS traffic" only): the CA
// certificates of the config for its port, from core ConfigMaps' ca.crt,
// in another namespace only with a ReferenceGrant. A reference that does
// not resolve makes ResolvedRefs False (InvalidCACertificateKind,
// RefNotPermitted or InvalidCACertificateRef); none resolving refuses the
// listener (Accepted False NoValidCACertificate): serving it without the
// validation asked for would let in clients it must refuse.
func (c *compiler) frontend(l *listener) {
	cfg, field := c.frontendConfig(l.spec.Port)
	if cfg == nil || cfg.Validation == nil {
		return
	}
	v := cfg.Validation
	who := fmt.Sprintf("Gateway %s/%s: %s.validation", c.gw.Namespace, c.gw.Name, field)
	cv := &gatewaypb.ClientValidation{}
	switch v.Mode {
	case "", gwv1.AllowValidOnly:
	case gwv1.AllowInsecureFallback:
		cv.InsecureFallback = true
	default:
		l.fail(string(gwv1.ListenerReasonUnsupportedValue), fmt.Sprintf("%s.mode %q is not supported (allowed: AllowValidOnly, AllowInsecureFallback)", who, v.Mode))
		return
	}
	var why []string
	for i, ref := range v.CACertificateRefs {
		f := fmt.Sprintf("%s.caCertificateRefs[%d]", who, i)
		if ref.Group != "" || ref.Kind != "ConfigMap" {
			msg := fmt.Sprintf("%s: %s/%s is not supported (allowed: core ConfigMap)", f, ref.Group, ref.Kind)
			l.unresolved(string(gwv1.ListenerReasonInvalidCACertificateKind), msg)
			why = append(why, msg)
			continue
		}
		ns := c.gw.Namespace
		if ref.Namespace != nil && *ref.Namespace != "" {
			ns = string(*ref.Namespace)
		}
		if ns != c.gw.Namespace && !c.granted(Group, "Gateway", c.gw.Namespace, "", "ConfigMap", ns, string(ref.Name)) {
			msg := fmt.Sprintf("%s: ConfigMap %s/%s is in another namespace and no ReferenceGrant in %s allows Gateways from %s to refer to it", f, ns, ref.Name, ns, c.gw.Namespace)
			l.unresolved(string(gwv1.ListenerReasonRefNotPermitted), msg)
			why = append(why, msg)
			continue
		}
		c.dep("ConfigMap", ns, string(ref.Name))
		cm, ok := c.configMaps[nn(ns, string(ref.Name))]
		if !ok {
			msg := fmt.Sprintf("%s: ConfigMap %s/%s does not exist (or holds no ca.crt)", f, ns, ref.Name)
			l.unresolved(string(gwv1.ListenerReasonInvalidCACertificateRef), msg)
			why = append(why, msg)
			continue
		}
		one := []byte(cm.Data["ca.crt"])
		if !x509.NewCertPool().AppendCertsFromPEM(one) {
			msg := fmt.Sprintf("%s: ConfigMap %s/%s has no PEM certificate under ca.crt", f, ns, ref.Name)
			l.unresolved(string(gwv1.ListenerReasonInvalidCACertificateRef), msg)
			why = append(why, msg)
			continue
		}
		cv.CaCertificates = append(cv.CaCertificates, one...)
		if one[len(one)-1] != '\n' {
			cv.CaCertificates = append(cv.CaCertificates, '\n')
		}
	}
	if len(cv.CaCertificates) == 0 {
		if len(why) == 0 { // the CRD requires one ref; an object that bypassed it
			why = append(why, who+".caCertificateRefs is empty (at least one ConfigMap with ca.crt is needed)")
			l.unresolved(string(gwv1.ListenerReasonInvalidCACertificateRef), why[0])
		}
		l.fail(string(gwv1.ListenerReasonNoValidCACertificate), fmt.Sprintf("listener %s: no CA certificate to validate clients with: %s", l.spec.Name, strings.Join(why, "; ")))
		return
	}
	l.clientValidation = cv
}

// insecureFrontend names the frontend configs that allow insecure
// fallback, for the Gateway's InsecureFrontendValidationMode condition
// (present while one does, removed when none does).
func (c *compiler) insecureFrontend() []string {
	t := c.gw.Spec.TLS
	if t == nil || t.Frontend == nil {
		return nil
	}
	var out []string
	insecure := func(cfg gwv1.TLSConfig) bool {
		return cfg.Validation != nil && cfg.Validation.Mode == gwv1.AllowInsecureFallback
	}
	if insecure(t.Frontend.Default) {
		out = append(out, "spec.tls.frontend.default")
	}
	for i, p := range t.Frontend.PerPort {
		if insecure(p.TLS) {
			out = append(out, fmt.Sprintf("spec.tls.frontend.perPort[%d] (port %d)", i, p.Port))
		}
	}
	return out
}
