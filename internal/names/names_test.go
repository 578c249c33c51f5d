package names

import (
	"net/textproto"
	"regexp"
	"strings"
	"testing"
)

// Kubernetes' syntax, written out here because this package imports nothing.
var (
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	keyName      = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	ianaSvcName  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

// TestKeys: every annotation and label key is a qualified name the API
// server accepts (prefix a DNS subdomain of at most 253, name at most 63).
func TestKeys(t *testing.T) {
	for _, k := range []string{
		AnnotationInject, AnnotationProxyVersion, AnnotationSkipInboundPorts, AnnotationSkipOutboundPorts,
		AnnotationOpaquePorts, AnnotationProxyCPURequest, AnnotationProxyCPULimit, AnnotationProxyMemoryRequest,
		AnnotationProxyMemoryLimit, AnnotationProxyLogLevel, AnnotationProxyMaxInFlight, AnnotationDefaultInbound,
		AnnotationCredentialSHA256, AnnotationServices, LabelControlPlaneVersion, LabelName, LabelPartOf,
	} {
		prefix, name, ok := strings.Cut(k, "/")
		if !ok || len(prefix) > 253 || !dnsSubdomain.MatchString(prefix) || len(name) > 63 || !keyName.MatchString(name) {
			t.Errorf("%q is not a qualified annotation or label key", k)
		}
	}
}

func TestObjectAndPortNames(t *testing.T) {
	for _, tc := range []struct {
		what, name string
		re         *regexp.Regexp
		max        int
	}{
		{"container", ProxyContainerName, dnsLabel, 63},
		{"container", GatewayContainerName, dnsLabel, 63},
		{"container", InitContainerName, dnsLabel, 63},
		{"port", InboundPortName, ianaSvcName, 15},
		{"port", AdminPortName, ianaSvcName, 15},
		{"object", ControllerName, dnsSubdomain, 253},
		{"object", IssuerSecretName, dnsSubdomain, 253},
		{"object", WebhookSecretName, dnsSubdomain, 253},
		{"object", WebhookConfigName, dnsSubdomain, 253},
		{"webhook", WebhookName, dnsSubdomain, 253},
	} {
		if len(tc.name) > tc.max || !tc.re.MatchString(tc.name) {
			t.Errorf("%s name %q is not valid (at most %d characters, %s)", tc.what, tc.name, tc.max, tc.re)
		}
	}
	if !strings.Contains(WebhookName, ".") {
		t.Errorf("webhook name %q must be fully qualified", WebhookName)
	}
}

// TestHeaders: header names are in canonical form, so that a Header map
// lookup with the constant finds what net/http stored.
func TestHeaders(t *testing.T) {
	seen := map[string]bool{}
	for _, h := range []string{HeaderDstOverride, HeaderOrigProto, HeaderHop, HeaderProxyError, HeaderExpect, HeaderClientID} {
		if c := textproto.CanonicalMIMEHeaderKey(h); c != h {
			t.Errorf("header %q is not canonical (%q)", h, c)
		}
		if seen[h] {
			t.Errorf("header %q named twice", h)
		}
		seen[h] = true
	}
}

func TestServiceAccountUser(t *testing.T) {
	for _, tc := range []struct {
		user   string
		ns, sa string
		ok     bool
	}{
		{"system:serviceaccount:emojivoto:web", "emojivoto", "web", true},
		{"system:serviceaccount:a:b", "a", "b", true},
		{"system:serviceaccount::web", "", "", false},
		{"system:serviceaccount:ns:", "", "", false},
		{"system:serviceaccount:ns", "", "", false},
		{"system:serviceaccount:ns:sa:extra", "", "", false},
		{"system:node:worker-1", "", "", false},
		{"kubernetes-admin", "", "", false},
		{"", "", "", false},
		{"System:ServiceAccount:ns:sa", "", "", false},
	} {
		ns, sa, ok := ParseServiceAccountUser(tc.user)
		if ns != tc.ns || sa != tc.sa || ok != tc.ok {
			t.Errorf("ParseServiceAccountUser(%q) = %q, %q, %v; want %q, %q, %v", tc.user, ns, sa, ok, tc.ns, tc.sa, tc.ok)
		}
		if ok && ServiceAccountUser(ns, sa) != tc.user {
			t.Errorf("ServiceAccountUser(%q, %q) = %q, want %q", ns, sa, ServiceAccountUser(ns, sa), tc.user)
		}
	}
}
