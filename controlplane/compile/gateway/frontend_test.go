package gateway

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// frontendInput loads an upstream frontend validation test's manifests
// with the objects the suite creates itself: the server certificate and
// the CA ConfigMaps (each its own CA, as MustCreateCACertConfigMap makes).
func frontendInput(t *testing.T, file string) (in Input, cas map[string][]byte) {
	t.Helper()
	cas = map[string][]byte{}
	in = add(load(t, "conformance/manifests.yaml", "conformance/"+file), tlsSecret(t, infra, "tls-validity-checks-certificate"))
	for _, cm := range []struct{ ns, name string }{
		{infra, "tls-validity-checks-ca-certificate"},
		{infra, "tls-validity-checks-per-port-ca-certificate"},
		{"gateway-conformance-web-backend", "web-backend-cm"},
	} {
		crt, _ := certPEM(t, cm.name)
		cas[cm.name] = crt
		in = add(in, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: cm.ns, Name: cm.name}, Data: map[string]string{"ca.crt": string(crt)}})
	}
	return in, cas
}

// TestConformanceFrontendClientCertificateValidation: the default applies
// to the HTTPS listener on 443, the perPort entry to the one on 8443, each
// with its own CA; AllowValidOnly by default.
func TestConformanceFrontendClientCertificateValidation(t *testing.T) {
	for _, tc := range []struct {
		file, gw string
		insecure bool
		routes   []string
	}{
		{"gateway-with-clientcertificate-validation.yaml", "client-validation-default", false, []string{"client-certificate-validation-https-test", "client-certificate-validation-https-test-no-hostname"}},
		{"gateway-with-clientcertificate-validation-insecure-fallback.yaml", "client-validation-insecure-fallback", true, []string{"client-cert-validation-insecure-fallback-test", "client-cert-validation-insecure-fallback-test-no-hostname"}},
	} {
		t.Run(tc.gw, func(t *testing.T) {
			in, cas := frontendInput(t, tc.file)
			r := Compile(in, key(infra, tc.gw), Options{})
			wantCond(t, "gateway", r.Gateway.Conditions, "Accepted", true, "Accepted")
			wantCond(t, "gateway", r.Gateway.Conditions, "Programmed", true, "Programmed")
			for _, rt := range tc.routes {
				p := parent(t, r, "HTTPRoute", infra, rt)
				wantCond(t, rt, p.Conditions, "Accepted", true, "Accepted")
				wantCond(t, rt, p.Conditions, "ResolvedRefs", true, "ResolvedRefs")
			}
			for name, ca := range map[string]string{"https": "tls-validity-checks-ca-certificate", "https-with-hostname": "tls-validity-checks-per-port-ca-certificate"} {
				ls := listenerStatus(t, r, name)
				wantCond(t, name, ls.Conditions, "Accepted", true, "Accepted")
				wantCond(t, name, ls.Conditions, "ResolvedRefs", true, "ResolvedRefs")
				wantCond(t, name, ls.Conditions, "Programmed", true, "Programmed")
				cv := snapListener(t, r.Snapshot, name).ClientValidation
				if cv == nil || !bytes.Equal(cv.CaCertificates, cas[ca]) || cv.InsecureFallback != tc.insecure {
					t.Errorf("%s: client validation %v, want the CA of %s, insecure fallback %v", name, cv, ca, tc.insecure)
				}
			}
			var insecure *metav1.Condition
			for i, c := range r.Gateway.Conditions {
				if c.Type == string(gwv1.GatewayConditionInsecureFrontendValidationMode) {
					insecure = &r.Gateway.Conditions[i]
				}
			}
			switch {
			case tc.insecure && (insecure == nil || insecure.Status != metav1.ConditionTrue || insecure.Reason != string(gwv1.GatewayReasonConfigurationChanged)):
				t.Errorf("InsecureFrontendValidationMode %v, want True ConfigurationChanged", insecure)
			case !tc.insecure && insecure != nil:
				t.Errorf("InsecureFrontendValidationMode %v with AllowValidOnly: the spec removes it", insecure)
			}
			dep := false
			for _, d := range r.Dependencies {
				dep = dep || d.Kind == "ConfigMap" && d.Key == key(infra, "tls-validity-checks-per-port-ca-certificate")
			}
			if !dep {
				t.Errorf("dependencies %v lack the per-port CA ConfigMap", r.Dependencies)
			}
		})
	}
}

// TestConformanceFrontendInvalidDefault: an unresolvable default refuses
// the HTTPS listener only; a perPort entry for the HTTP listener's port
// does not touch it (validation is for HTTPS listeners).
func TestConformanceFrontendInvalidDefault(t *testing.T) {
	in, _ := frontendInput(t, "gateway-invalid-default-frontend-client-certificate-validation.yaml")
	r := Compile(in, key(infra, "invalid-default-client-validation-config"), Options{})
	h := listenerStatus(t, r, "http")
	wantCond(t, "http", h.Conditions, "Accepted", true, "Accepted")
	wantCond(t, "http", h.Conditions, "ResolvedRefs", true, "ResolvedRefs")
	wantCond(t, "http", h.Conditions, "Programmed", true, "Programmed")
	if l := snapListener(t, r.Snapshot, "http"); l.ClientValidation != nil {
		t.Errorf("http listener with client validation %v", l.ClientValidation)
	}
	s := listenerStatus(t, r, "https")
	wantCond(t, "https", s.Conditions, "ResolvedRefs", false, "InvalidCACertificateRef")
	wantCond(t, "https", s.Conditions, "Accepted", false, "NoValidCACertificate")
	wantCond(t, "https", s.Conditions, "Programmed", false, "Invalid")
	if m := find(t, s.Conditions, "ResolvedRefs").Message; !strings.Contains(m, "spec.tls.frontend.default.validation.caCertificateRefs[0]") || !strings.Contains(m, "does-not-exist") {
		t.Errorf("message %q does not name the field and the ConfigMap", m)
	}
	for _, p := range r.Snapshot.Ports {
		if p.Port == 443 {
			t.Errorf("port 443 programmed without its validation: %v", p)
		}
	}
	wantCond(t, "gateway", r.Gateway.Conditions, "Accepted", true, "ListenersNotValid")
	if !rejected(r.Snapshot, "Gateway", infra, "invalid-default-client-validation-config", "NoValidCACertificate") {
		t.Errorf("rejected %v", r.Snapshot.Rejected)
	}
}

// TestConformanceFrontendInvalidRefs: each broken perPort reference fails
// its own listener with the reason the upstream test expects; the default
// still serves 443.
func TestConformanceFrontendInvalidRefs(t *testing.T) {
	in, _ := frontendInput(t, "gateway-with-invalid-clientcertificate-validation.yaml")
	gw := "gateway-with-invalid-client-cert-validation"
	r := Compile(in, key(infra, gw), Options{})
	ok := listenerStatus(t, r, "https")
	wantCond(t, "https", ok.Conditions, "Accepted", true, "Accepted")
	wantCond(t, "https", ok.Conditions, "ResolvedRefs", true, "ResolvedRefs")
	wantCond(t, "https", ok.Conditions, "Programmed", true, "Programmed")
	for name, reason := range map[string]string{
		"https-unresolved":    "InvalidCACertificateRef",
		"https-invalid-kind":  "InvalidCACertificateKind",
		"https-grant-missing": "RefNotPermitted",
	} {
		s := listenerStatus(t, r, name)
		wantCond(t, name, s.Conditions, "ResolvedRefs", false, reason)
		wantCond(t, name, s.Conditions, "Accepted", false, "NoValidCACertificate")
		wantCond(t, name, s.Conditions, "Programmed", false, "Invalid")
	}
	if len(r.Snapshot.Ports) != 1 || r.Snapshot.Ports[0].Port != 443 {
		t.Errorf("ports %v, want 443 only", r.Snapshot.Ports)
	}

	// With a ReferenceGrant from Gateways in infra, the cross-namespace
	// ConfigMap resolves.
	web := gwv1.Namespace("gateway-conformance-web-backend")
	grant := &gwv1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: string(web), Name: "cm"},
		Spec: gwv1.ReferenceGrantSpec{
			From: []gwv1.ReferenceGrantFrom{{Group: Group, Kind: "Gateway", Namespace: infra}},
			To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "ConfigMap"}},
		},
	}
	r = Compile(add(in, grant), key(infra, gw), Options{})
	s := listenerStatus(t, r, "https-grant-missing")
	wantCond(t, "granted", s.Conditions, "ResolvedRefs", true, "ResolvedRefs")
	wantCond(t, "granted", s.Conditions, "Programmed", true, "Programmed")
	if cv := snapListener(t, r.Snapshot, "https-grant-missing").ClientValidation; cv == nil || len(cv.CaCertificates) == 0 {
		t.Errorf("granted listener's validation %v", cv)
	}
}

// TestFrontendRules: what the upstream tests leave open.
func TestFrontendRules(t *testing.T) {
	ca, _ := certPEM(t, "ca")
	base := func() Input {
		in := add(load(t, "conformance/manifests.yaml"), tlsSecret(t, infra, "cert"),
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: infra, Name: "ca"}, Data: map[string]string{"ca.crt": string(ca)}},
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: infra, Name: "junk"}, Data: map[string]string{"ca.crt": "not a certificate"}})
		return in
	}
	gateway := func(tlsCfg *gwv1.GatewayTLSConfig, ls ...gwv1.Listener) *gwv1.Gateway {
		return &gwv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: infra, Name: "fe", Generation: 3},
			Spec:       gwv1.GatewaySpec{GatewayClassName: "meridian", TLS: tlsCfg, Listeners: ls},
		}
	}
	https := func(name string, port gwv1.PortNumber, mode gwv1.ProtocolType) gwv1.Listener {
		l := gwv1.Listener{Name: gwv1.SectionName(name), Port: port, Protocol: mode, TLS: &gwv1.ListenerTLSConfig{CertificateRefs: []gwv1.SecretObjectReference{{Name: "cert"}}}}
		if mode == gwv1.TLSProtocolType {
			l.Hostname = ptr(gwv1.Hostname("tls.example.com"))
		}
		return l
	}
	validation := func(mode gwv1.FrontendValidationModeType, names ...string) gwv1.TLSConfig {
		v := &gwv1.FrontendTLSValidation{Mode: mode}
		for _, n := range names {
			v.CACertificateRefs = append(v.CACertificateRefs, gwv1.ObjectReference{Kind: "ConfigMap", Name: gwv1.ObjectName(n)})
		}
		return gwv1.TLSConfig{Validation: v}
	}

	t.Run("partly valid refs serve the valid CAs, ResolvedRefs False", func(t *testing.T) {
		in := add(base(), gateway(&gwv1.GatewayTLSConfig{Frontend: &gwv1.FrontendTLSConfig{Default: validation("", "junk", "ca")}}, https("a", 443, gwv1.HTTPSProtocolType)))
		r := Compile(in, key(infra, "fe"), Options{})
		s := listenerStatus(t, r, "a")
		wantCond(t, "a", s.Conditions, "Accepted", true, "Accepted")
		wantCond(t, "a", s.Conditions, "ResolvedRefs", false, "InvalidCACertificateRef")
		wantCond(t, "a", s.Conditions, "Programmed", true, "Programmed")
		if cv := snapListener(t, r.Snapshot, "a").ClientValidation; cv == nil || !bytes.Equal(cv.CaCertificates, ca) || cv.InsecureFallback {
			t.Errorf("validation %v", cv)
		}
	})
	t.Run("a perPort entry without validation turns it off on its port", func(t *testing.T) {
		in := add(base(), gateway(&gwv1.GatewayTLSConfig{Frontend: &gwv1.FrontendTLSConfig{
			Default: validation(gwv1.AllowValidOnly, "ca"),
			PerPort: []gwv1.TLSPortConfig{{Port: 8443}},
		}}, https("a", 443, gwv1.HTTPSProtocolType), https("b", 8443, gwv1.HTTPSProtocolType)))
		r := Compile(in, key(infra, "fe"), Options{})
		if snapListener(t, r.Snapshot, "a").ClientValidation == nil || snapListener(t, r.Snapshot, "b").ClientValidation != nil {
			t.Errorf("a %v, b %v", snapListener(t, r.Snapshot, "a").ClientValidation, snapListener(t, r.Snapshot, "b").ClientValidation)
		}
	})
	t.Run("TLS terminate listeners are not HTTPS: untouched", func(t *testing.T) {
		in := add(base(), gateway(&gwv1.GatewayTLSConfig{Frontend: &gwv1.FrontendTLSConfig{Default: validation("", "missing")}}, https("t", 443, gwv1.TLSProtocolType)))
		r := Compile(in, key(infra, "fe"), Options{})
		s := listenerStatus(t, r, "t")
		wantCond(t, "t", s.Conditions, "Accepted", true, "Accepted")
		wantCond(t, "t", s.Conditions, "ResolvedRefs", true, "ResolvedRefs")
		if l := snapListener(t, r.Snapshot, "t"); l.Mode != gatewaypb.Listener_TLS_TERMINATE || l.ClientValidation != nil {
			t.Errorf("listener %v", l)
		}
	})
	t.Run("unknown mode", func(t *testing.T) {
		in := add(base(), gateway(&gwv1.GatewayTLSConfig{Frontend: &gwv1.FrontendTLSConfig{Default: validation("Sometimes", "ca")}}, https("a", 443, gwv1.HTTPSProtocolType)))
		r := Compile(in, key(infra, "fe"), Options{})
		s := listenerStatus(t, r, "a")
		wantCond(t, "a", s.Conditions, "Accepted", false, "UnsupportedValue")
		if m := find(t, s.Conditions, "Accepted").Message; !strings.Contains(m, "spec.tls.frontend.default.validation.mode") || !strings.Contains(m, "AllowInsecureFallback") {
			t.Errorf("message %q", m)
		}
	})
	t.Run("InsecureFrontendValidationMode from a perPort entry, observedGeneration", func(t *testing.T) {
		in := add(base(), gateway(&gwv1.GatewayTLSConfig{Frontend: &gwv1.FrontendTLSConfig{
			Default: validation("", "ca"),
			PerPort: []gwv1.TLSPortConfig{{Port: 8443, TLS: validation(gwv1.AllowInsecureFallback, "ca")}},
		}}, https("a", 443, gwv1.HTTPSProtocolType), https("b", 8443, gwv1.HTTPSProtocolType)))
		r := Compile(in, key(infra, "fe"), Options{})
		c := find(t, r.Gateway.Conditions, "InsecureFrontendValidationMode")
		if c.Status != metav1.ConditionTrue || c.Reason != "ConfigurationChanged" || c.ObservedGeneration != 3 || !strings.Contains(c.Message, "perPort[0]") {
			t.Errorf("condition %+v", c)
		}
		if !snapListener(t, r.Snapshot, "b").ClientValidation.InsecureFallback || snapListener(t, r.Snapshot, "a").ClientValidation.InsecureFallback {
			t.Error("insecure fallback on the wrong port")
		}
	})
}
