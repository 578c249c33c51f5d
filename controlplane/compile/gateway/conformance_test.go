package gateway

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

const infra = "gateway-conformance-infra"

// TestConformanceManifests compiles the manifests of the upstream
// conformance suite (v1.6.3, copied under testdata/conformance) and checks
// what its tests check of status, plus the snapshot the requests would
// meet.
func TestConformanceManifests(t *testing.T) {
	base := "conformance/manifests.yaml"
	withCert := func(t *testing.T, in Input) Input {
		// The suite creates these Secrets itself.
		return add(in, tlsSecret(t, infra, "tls-validity-checks-certificate"), tlsSecret(t, infra, "tls-terminate-checks-certificate"))
	}
	tests := []struct {
		name  string
		files []string
		gw    string
		check func(t *testing.T, r Result)
	}{
		{"HTTPRouteSimpleSameNamespace", []string{"conformance/httproute-simple-same-namespace.yaml"}, "same-namespace", func(t *testing.T, r Result) {
			p := parent(t, r, "HTTPRoute", infra, "gateway-conformance-infra-test")
			wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
			wantCond(t, "route", p.Conditions, "ResolvedRefs", true, "ResolvedRefs")
			if p.ControllerName != ControllerName {
				t.Errorf("controllerName %q", p.ControllerName)
			}
			if got := listenerStatus(t, r, "http").AttachedRoutes; got != 1 {
				t.Errorf("attachedRoutes %d, want 1", got)
			}
			h := host(t, r.Snapshot, "http", "")
			if len(h.Rules) != 1 || h.Rules[0].Backends[0].Authority != "infra-backend-v1.gateway-conformance-infra.svc.cluster.local:8080" {
				t.Errorf("rules %v", h.Rules)
			}
			wantCond(t, "gateway", r.Gateway.Conditions, "Accepted", true, "Accepted")
			wantCond(t, "gateway", r.Gateway.Conditions, "Programmed", true, "Programmed")
		}},
		{"HTTPRouteMatchingAcrossRoutes", []string{"conformance/httproute-matching-across-routes.yaml"}, "same-namespace", func(t *testing.T, r Result) {
			got := routesOf(host(t, r.Snapshot, "http", "example.com"))
			want := []string{"matching-part2/0 PREFIX /v2", "matching-part1/0 PREFIX /", "matching-part2/0 PREFIX /", "matching-part1/0 PREFIX /"}
			if !slices.Equal(got, want) {
				t.Errorf("example.com rules\n got %q\nwant %q", got, want)
			}
			h := host(t, r.Snapshot, "http", "example.com")
			if h.Rules[1].Match.Headers[0].Value != "one" || h.Rules[2].Match.Headers[0].Value != "two" || len(h.Rules[3].Match.Headers) != 0 {
				t.Errorf("header matches must come before the bare prefix, older route first: %v", h.Rules)
			}
			if got := routesOf(host(t, r.Snapshot, "http", "example.net")); len(got) != 2 {
				t.Errorf("example.net: %q", got)
			}
		}},
		{"GatewayInvalidRouteKind/only-invalid", []string{"conformance/gateway-invalid-route-kind.yaml"}, "gateway-only-invalid-route-kind", func(t *testing.T, r Result) {
			l := listenerStatus(t, r, "http")
			wantCond(t, "listener", l.Conditions, "ResolvedRefs", false, "InvalidRouteKinds")
			if l.SupportedKinds == nil || len(l.SupportedKinds) != 0 {
				t.Errorf("supportedKinds %v, want empty", l.SupportedKinds)
			}
		}},
		{"GatewayInvalidRouteKind/supported-and-invalid", []string{"conformance/gateway-invalid-route-kind.yaml"}, "gateway-supported-and-invalid-route-kind", func(t *testing.T, r Result) {
			l := listenerStatus(t, r, "http")
			wantCond(t, "listener", l.Conditions, "ResolvedRefs", false, "InvalidRouteKinds")
			if len(l.SupportedKinds) != 1 || l.SupportedKinds[0].Kind != "HTTPRoute" || *l.SupportedKinds[0].Group != Group {
				t.Errorf("supportedKinds %v", l.SupportedKinds)
			}
		}},
		// With TLSRouteModeMixed supported, the upstream test is skipped and
		// its Gateway is served: listeners of both modes share a port, by
		// hostname.
		{"TLSRouteListenerMixedTerminationNotSupported/mixed-supported", []string{"conformance/tlsroute-listener-mixed-termination-not-supported.yaml"}, "gateway-tlsroute-mixed-termination-not-supported", func(t *testing.T, r Result) {
			for _, n := range []string{"tls-terminate", "tls-passthrough"} {
				l := listenerStatus(t, r, n)
				wantCond(t, n, l.Conditions, "Accepted", true, "Accepted")
				wantCond(t, n, l.Conditions, "Conflicted", false, "NoConflicts")
				wantCond(t, n, l.Conditions, "Programmed", true, "Programmed")
			}
			wantCond(t, "gateway", r.Gateway.Conditions, "Accepted", true, "Accepted")
			if len(r.Snapshot.Ports) != 1 || r.Snapshot.Ports[0].Protocol != gatewaypb.Port_TLS || len(r.Snapshot.Ports[0].Listeners) != 2 {
				t.Errorf("ports %v, want one TLS port with both listeners", r.Snapshot.Ports)
			}
		}},
		{"TLSRouteListenerTerminateSupportedKinds", []string{"conformance/tlsroute-listener-terminate-supported-kinds.yaml"}, "gateway-tlsroute-terminate-supported", func(t *testing.T, r Result) {
			l := listenerStatus(t, r, "tls-terminate")
			wantCond(t, "listener", l.Conditions, "Accepted", true, "Accepted")
			wantCond(t, "listener", l.Conditions, "ResolvedRefs", true, "ResolvedRefs")
			wantCond(t, "listener", l.Conditions, "Programmed", true, "Programmed")
			if len(l.SupportedKinds) != 1 || l.SupportedKinds[0].Kind != "TLSRoute" || *l.SupportedKinds[0].Group != Group || l.AttachedRoutes != 0 {
				t.Errorf("supportedKinds %v, attachedRoutes %d", l.SupportedKinds, l.AttachedRoutes)
			}
			sl := snapListener(t, r.Snapshot, "tls-terminate")
			if sl.Mode != gatewaypb.Listener_TLS_TERMINATE || !slices.Equal(sl.Certificates, []string{infra + "/tls-terminate-checks-certificate"}) {
				t.Errorf("listener %v", sl)
			}
		}},
		{"TLSRouteTerminateSimpleSameNamespace", []string{"conformance/tlsroute-terminate-simple-same-namespace.yaml"}, "gateway-tlsroute-terminate", func(t *testing.T, r Result) {
			p := parent(t, r, "TLSRoute", infra, "tlsroute-terminated-test")
			wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
			wantCond(t, "route", p.Conditions, "ResolvedRefs", true, "ResolvedRefs")
			wantCond(t, "gateway", r.Gateway.Conditions, "Programmed", true, "Programmed")
			if n := listenerStatus(t, r, "tlsterminate").AttachedRoutes; n != 1 {
				t.Errorf("attachedRoutes %d", n)
			}
			l := snapListener(t, r.Snapshot, "tlsterminate")
			if l.Mode != gatewaypb.Listener_TLS_TERMINATE || l.Hostname != "tls.example.com" || len(l.Certificates) != 1 || len(l.TlsRoutes) != 1 || len(l.Hosts) != 0 {
				t.Fatalf("listener %v", l)
			}
			tr := l.TlsRoutes[0]
			// The plaintext port: the gateway sends the decrypted bytes.
			if !slices.Equal(tr.Hostnames, []string{"tls.example.com"}) || len(tr.Backends) != 1 || tr.Backends[0].Authority != "tcp-backend.gateway-conformance-infra.svc.cluster.local:3000" || tr.Backends[0].Tls != nil {
				t.Errorf("tls route %v", tr)
			}
		}},
		{"TLSRouteMixedTerminationSameNamespace", []string{"conformance/tlsroute-mixed-termination-same-namespace.yaml"}, "gateway-tlsroute-mixed-termination", func(t *testing.T, r Result) {
			for _, rt := range []string{"gateway-conformance-mixed-terminateroute", "gateway-conformance-mixed-passthroughroute"} {
				wantCond(t, rt, parent(t, r, "TLSRoute", infra, rt).Conditions, "Accepted", true, "Accepted")
			}
			for _, n := range []string{"tls-terminate", "tls-passthrough"} {
				l := listenerStatus(t, r, n)
				wantCond(t, n, l.Conditions, "Accepted", true, "Accepted")
				if l.AttachedRoutes != 1 || len(l.SupportedKinds) != 1 || l.SupportedKinds[0].Kind != "TLSRoute" {
					t.Errorf("%s: attachedRoutes %d, supportedKinds %v", n, l.AttachedRoutes, l.SupportedKinds)
				}
			}
			if len(r.Snapshot.Ports) != 1 || r.Snapshot.Ports[0].Port != 8883 || r.Snapshot.Ports[0].Protocol != gatewaypb.Port_TLS {
				t.Fatalf("ports %v", r.Snapshot.Ports)
			}
			term, pass := snapListener(t, r.Snapshot, "tls-terminate"), snapListener(t, r.Snapshot, "tls-passthrough")
			if term.Mode != gatewaypb.Listener_TLS_TERMINATE || len(term.TlsRoutes) != 1 || term.TlsRoutes[0].Backends[0].Authority != "tcp-backend.gateway-conformance-infra.svc.cluster.local:3000" {
				t.Errorf("terminate listener %v", term)
			}
			if pass.Mode != gatewaypb.Listener_TLS_PASSTHROUGH || len(pass.Certificates) != 0 || len(pass.TlsRoutes) != 1 || pass.TlsRoutes[0].Backends[0].Authority != "tcp-backend.gateway-conformance-infra.svc.cluster.local:8443" {
				t.Errorf("passthrough listener %v", pass)
			}
		}},
		{"HTTPRouteInvalidReferenceGrant", []string{"conformance/httproute-invalid-reference-grant.yaml"}, "same-namespace", func(t *testing.T, r Result) {
			p := parent(t, r, "HTTPRoute", infra, "reference-grant")
			wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
			wantCond(t, "route", p.Conditions, "ResolvedRefs", false, "RefNotPermitted")
			b := host(t, r.Snapshot, "http", "").Rules[0].Backends
			if len(b) != 1 || b[0].Authority != "" || b[0].Weight != 1 {
				t.Errorf("an unpermitted backend keeps its weight and has no authority (500): %v", b)
			}
		}},
		{"HTTPRouteReferenceGrant", []string{"conformance/httproute-reference-grant.yaml"}, "same-namespace", func(t *testing.T, r Result) {
			p := parent(t, r, "HTTPRoute", infra, "reference-grant")
			wantCond(t, "route", p.Conditions, "ResolvedRefs", true, "ResolvedRefs")
			b := host(t, r.Snapshot, "http", "").Rules[0].Backends
			if b[0].Authority != "web-backend.gateway-conformance-web-backend.svc.cluster.local:8080" {
				t.Errorf("granted backend: %v", b)
			}
		}},
		{"HTTPRouteInvalidCrossNamespaceBackendRef", []string{"conformance/httproute-invalid-cross-namespace-backend-ref.yaml"}, "same-namespace", func(t *testing.T, r Result) {
			p := parent(t, r, "HTTPRoute", infra, "invalid-cross-namespace-backend-ref")
			wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
			wantCond(t, "route", p.Conditions, "ResolvedRefs", false, "RefNotPermitted")
		}},
		{"HTTPRouteInvalidBackendRefUnknownKind", []string{"conformance/httproute-invalid-backendref-unknown-kind.yaml"}, "same-namespace", func(t *testing.T, r Result) {
			p := parent(t, r, "HTTPRoute", infra, "invalid-backend-ref-unknown-kind")
			wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
			wantCond(t, "route", p.Conditions, "ResolvedRefs", false, "InvalidKind")
		}},
		{"HTTPRouteInvalidNonExistentBackendRef", []string{"conformance/httproute-invalid-nonexistent-backendref.yaml"}, "same-namespace", func(t *testing.T, r Result) {
			p := parent(t, r, "HTTPRoute", infra, "invalid-nonexistent-backend-ref")
			wantCond(t, "route", p.Conditions, "ResolvedRefs", false, "BackendNotFound")
			if !rejected(r.Snapshot, "HTTPRoute", infra, "invalid-nonexistent-backend-ref", "BackendNotFound") {
				t.Errorf("not in snapshot.rejected: %v", r.Snapshot.Rejected)
			}
		}},
		{"HTTPRouteInvalidParentRefNotMatchingSectionName", []string{"conformance/httproute-invalid-parentref-not-matching-section-name.yaml"}, "same-namespace", func(t *testing.T, r Result) {
			p := parent(t, r, "HTTPRoute", infra, "httproute-listener-not-matching-section-name")
			wantCond(t, "route", p.Conditions, "Accepted", false, "NoMatchingParent")
			if got := listenerStatus(t, r, "http").AttachedRoutes; got != 0 {
				t.Errorf("attachedRoutes %d", got)
			}
		}},
		{"HTTPRouteInvalidParentRefNotMatchingListenerPort", []string{"conformance/httproute-invalid-parentref-not-matching-listener-port.yaml"}, "same-namespace", func(t *testing.T, r Result) {
			p := parent(t, r, "HTTPRoute", infra, "httproute-listener-not-matching-route-port")
			wantCond(t, "route", p.Conditions, "Accepted", false, "NoMatchingParent")
		}},
		{"HTTPRouteDisallowedKind", []string{"conformance/httproute-disallowed-kind.yaml"}, "tlsroutes-only", func(t *testing.T, r Result) {
			p := parent(t, r, "HTTPRoute", infra, "disallowed-kind")
			wantCond(t, "route", p.Conditions, "Accepted", false, "NotAllowedByListeners")
		}},
		{"HTTPRouteInvalidCrossNamespaceParentRef", []string{"conformance/httproute-invalid-cross-namespace-parent-ref.yaml"}, "same-namespace", func(t *testing.T, r Result) {
			p := parent(t, r, "HTTPRoute", "gateway-conformance-web-backend", "invalid-cross-namespace-parent-ref")
			wantCond(t, "route", p.Conditions, "Accepted", false, "NotAllowedByListeners")
		}},
		{"HTTPRouteHostnameIntersection", []string{"conformance/httproute-hostname-intersection.yaml"}, "httproute-hostname-intersection", func(t *testing.T, r Result) {
			if got := routesOf(host(t, r.Snapshot, "listener-1", "very.specific.com")); !slices.Equal(got, []string{"specific-host-matches-listener-specific-host/0 PREFIX /s1", "wildcard-host-matches-listener-specific-host/0 PREFIX /s3"}) {
				t.Errorf("very.specific.com: %q", got)
			}
			for _, h := range []string{"foo.wildcard.io", "bar.wildcard.io", "foo.bar.wildcard.io"} {
				host(t, r.Snapshot, "listener-2", h)
			}
			for _, l := range r.Snapshot.Ports[0].Listeners {
				for _, h := range l.Hosts {
					if h.Hostname == "non.matching.com" || h.Hostname == "wildcard.io" || h.Hostname == "*.nonmatchingwildcard.io" {
						t.Errorf("listener %s serves non-intersecting %s", l.Name, h.Hostname)
					}
				}
			}
			p := parent(t, r, "HTTPRoute", infra, "no-intersecting-hosts")
			wantCond(t, "route", p.Conditions, "Accepted", false, "NoMatchingListenerHostname")
		}},
		{"HTTPRouteListenerHostnameMatching", []string{"conformance/httproute-listener-hostname-matching.yaml"}, "httproute-listener-hostname-matching", func(t *testing.T, r Result) {
			ls := r.Snapshot.Ports[0].Listeners
			var names []string
			for _, l := range ls {
				names = append(names, l.Hostname)
			}
			want := []string{"bar.com", "foo.bar.com", "*.foo.com", "*.bar.com"}
			slices.SortFunc(want, func(a, b string) int {
				if hostBefore(a, b) {
					return -1
				}
				return 1
			})
			if !slices.Equal(names, want) {
				t.Errorf("listener order %q, want %q", names, want)
			}
		}},
		{"GatewayInvalidTLSConfiguration", []string{"conformance/gateway-invalid-tls-configuration.yaml"}, "", func(t *testing.T, r Result) {}},
		{"GRPCExactMethodMatching", []string{"conformance/grpcroute-exact-method-matching.yaml"}, "same-namespace", func(t *testing.T, r Result) {
			h := host(t, r.Snapshot, "http", "")
			for _, rl := range h.Rules {
				if !rl.Grpc || rl.Backends[0].Protocol != gatewaypb.Backend_H2C {
					t.Errorf("gRPC rule %v: grpc and H2C backends expected", rl)
				}
			}
			var paths []string
			for _, rl := range h.Rules {
				paths = append(paths, rl.Match.Path.Type.String()+" "+rl.Match.Path.Value)
			}
			// The longer method first (more characters of a matching method).
			want := []string{"EXACT /gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/EchoTwo", "EXACT /gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo"}
			if !slices.Equal(paths, want) {
				t.Errorf("paths %q, want %q", paths, want)
			}
		}},
		{"TLSRouteSimpleSameNamespace", []string{"conformance/tlsroute-simple-same-namespace.yaml"}, "gateway-tlsroute", func(t *testing.T, r Result) {
			l := snapListener(t, r.Snapshot, "https")
			if l.Mode != gatewaypb.Listener_TLS_PASSTHROUGH || len(l.TlsRoutes) != 1 {
				t.Fatalf("listener %v", l)
			}
			tr := l.TlsRoutes[0]
			if !slices.Equal(tr.Hostnames, []string{"abc.example.com"}) || tr.Backends[0].Authority == "" {
				t.Errorf("tls route %v", tr)
			}
			p := parent(t, r, "TLSRoute", infra, "gateway-conformance-infra-test")
			wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := withCert(t, load(t, append([]string{base}, tc.files...)...))
			if tc.gw == "" {
				return
			}
			r := Compile(in, key(infra, tc.gw), Options{})
			if !r.Owned {
				t.Fatalf("gateway %s not owned", tc.gw)
			}
			tc.check(t, r)
		})
	}
}

func TestConformanceInvalidTLSConfiguration(t *testing.T) {
	in := add(load(t, "conformance/manifests.yaml", "conformance/gateway-invalid-tls-configuration.yaml"), tlsSecret(t, infra, "tls-validity-checks-certificate"))
	for _, gw := range []string{"gateway-certificate-nonexistent-secret", "gateway-certificate-unsupported-group", "gateway-certificate-unsupported-kind", "gateway-certificate-malformed-secret"} {
		r := Compile(in, key(infra, gw), Options{})
		l := listenerStatus(t, r, "https")
		wantCond(t, gw, l.Conditions, "ResolvedRefs", false, "InvalidCertificateRef")
		wantCond(t, gw, l.Conditions, "Programmed", false, "Invalid")
		if len(r.Snapshot.Ports) != 0 {
			t.Errorf("%s: a listener without a valid certificate is programmed", gw)
		}
	}
	// The base manifests' HTTPS gateway, with its certificate, is programmed.
	r := Compile(in, key(infra, "same-namespace-with-https-listener"), Options{})
	l := listenerStatus(t, r, "https")
	wantCond(t, "https", l.Conditions, "ResolvedRefs", true, "ResolvedRefs")
	wantCond(t, "https", l.Conditions, "Programmed", true, "Programmed")
	sl := snapListener(t, r.Snapshot, "https")
	if sl.Mode != gatewaypb.Listener_HTTPS || !slices.Equal(sl.Certificates, []string{infra + "/tls-validity-checks-certificate"}) || len(r.Snapshot.Certificates) != 1 {
		t.Errorf("https listener %v, certificates %d", sl, len(r.Snapshot.Certificates))
	}
}

func rejected(s *gatewaypb.Snapshot, kind, ns, name, reason string) bool {
	for _, r := range s.Rejected {
		if r.Kind == kind && r.Namespace == ns && r.Name == name && r.Reason == reason {
			return true
		}
	}
	return false
}

func TestConformanceGatewayStatus(t *testing.T) {
	web := "gateway-conformance-web-backend"
	// Each test's manifests apart, as the suite applies them.
	inputs := map[string]Input{}
	for _, f := range []string{
		"gateway-invalid-listeners-unsupported-protocol.yaml",
		"gateway-with-attached-routes.yaml",
		"gateway-secret-missing-reference-grant.yaml",
		"gateway-secret-reference-grant-specific.yaml",
	} {
		in := add(load(t, "conformance/manifests.yaml", "conformance/"+f),
			tlsSecret(t, infra, "tls-validity-checks-certificate"), tlsSecret(t, web, "certificate"))
		// The namespaces carry kubernetes.io/metadata.name in a cluster.
		for _, n := range in.Namespaces {
			n.Labels["kubernetes.io/metadata.name"] = n.Name
		}
		for _, g := range in.Gateways {
			if _, ok := inputs[g.Name]; !ok {
				inputs[g.Name] = in
			}
		}
	}
	compileGW := func(name string) Result { return Compile(inputs[name], key(infra, name), Options{}) }

	t.Run("GatewayInvalidListenersUnsupportedProtocol", func(t *testing.T) {
		r := compileGW("gateway-only-unsupported-protocols")
		wantCond(t, "gw", r.Gateway.Conditions, "Accepted", false, "ListenersNotValid")
		l := listenerStatus(t, r, "invalid")
		wantCond(t, "invalid", l.Conditions, "Accepted", false, "UnsupportedProtocol")
		if l.SupportedKinds == nil || len(l.SupportedKinds) != 0 {
			t.Errorf("supportedKinds %v", l.SupportedKinds)
		}
		r = compileGW("gateway-supported-and-unsupported-protocols")
		wantCond(t, "gw", r.Gateway.Conditions, "Accepted", true, "ListenersNotValid")
		wantCond(t, "http", listenerStatus(t, r, "http").Conditions, "Accepted", true, "Accepted")
		wantCond(t, "invalid", listenerStatus(t, r, "invalid").Conditions, "Accepted", false, "UnsupportedProtocol")
	})
	t.Run("GatewayWithAttachedRoutes", func(t *testing.T) {
		if n := listenerStatus(t, compileGW("gateway-with-one-attached-route"), "http").AttachedRoutes; n != 1 {
			t.Errorf("one: attachedRoutes %d", n)
		}
		r := compileGW("gateway-with-two-attached-routes")
		if n := listenerStatus(t, r, "http").AttachedRoutes; n != 2 {
			t.Errorf("two: attachedRoutes %d", n)
		}
		wantCond(t, "route", parent(t, r, "HTTPRoute", infra, "http-route-not-accepted").Conditions, "Accepted", false, "NoMatchingListenerHostname")
		r = compileGW("unresolved-gateway-with-one-attached-unresolved-route")
		l := listenerStatus(t, r, "tls")
		if l.AttachedRoutes != 1 {
			t.Errorf("unresolved: attachedRoutes %d", l.AttachedRoutes)
		}
		wantCond(t, "tls", l.Conditions, "Programmed", false, "Invalid")
		wantCond(t, "tls", l.Conditions, "ResolvedRefs", false, "InvalidCertificateRef")
		for _, rs := range r.Routes {
			for _, p := range rs.Parents {
				wantCond(t, rs.Route.String(), p.Conditions, "ResolvedRefs", false, "BackendNotFound")
			}
		}
	})
	t.Run("GatewaySecretMissingReferenceGrant", func(t *testing.T) {
		r := compileGW("gateway-secret-missing-reference-grant")
		l := listenerStatus(t, r, "https")
		wantCond(t, "https", l.Conditions, "ResolvedRefs", false, "RefNotPermitted")
		// The Gateway's ResolvedRefs sums up its listeners'.
		wantCond(t, "gateway", r.Gateway.Conditions, "ResolvedRefs", false, "ListenersNotResolved")
		if len(l.SupportedKinds) != 2 {
			t.Errorf("supportedKinds %v", l.SupportedKinds)
		}
	})
	t.Run("GatewaySecretReferenceGrantSpecific", func(t *testing.T) {
		r := compileGW("gateway-secret-reference-grant-specific")
		l := listenerStatus(t, r, "https")
		wantCond(t, "https", l.Conditions, "ResolvedRefs", true, "ResolvedRefs")
		wantCond(t, "https", l.Conditions, "Programmed", true, "Programmed")
		if c := snapListener(t, r.Snapshot, "https").Certificates; len(c) != 1 || c[0] != web+"/certificate" {
			t.Errorf("certificates %v", c)
		}
	})
}

func TestConformancePartiallyInvalidViaInvalidReferenceGrant(t *testing.T) {
	in := load(t, "conformance/manifests.yaml", "conformance/httproute-partially-invalid-via-invalid-reference-grant.yaml")
	r := Compile(in, key(infra, "same-namespace"), Options{})
	p := parent(t, r, "HTTPRoute", infra, "invalid-reference-grant")
	wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
	wantCond(t, "route", p.Conditions, "ResolvedRefs", false, "RefNotPermitted")
	// The granted backend serves; the other rule answers 500.
	var ok, bad int
	for _, rl := range host(t, r.Snapshot, "http", "").Rules {
		for _, b := range rl.Backends {
			if b.Authority == "" {
				bad++
			} else {
				ok++
			}
		}
	}
	if ok != 1 || bad != 1 {
		t.Errorf("backends: %d valid, %d invalid; want 1 and 1", ok, bad)
	}
}

func TestConformanceTLSRoutes(t *testing.T) {
	cert := func(in Input) Input { return add(in, tlsSecret(t, infra, "tls-validity-checks-certificate")) }
	t.Run("TLSRouteInvalidNoMatchingListener", func(t *testing.T) {
		in := cert(load(t, "conformance/manifests.yaml", "conformance/tlsroute-invalid-no-matching-listener.yaml"))
		for _, tc := range []struct{ gw, route, reason string }{
			{"gateway-tlsroute-http-only", "tlsroute-not-allowed-protocol-http", "NotAllowedByListeners"},
			{"gateway-tlsroute-https-only", "tlsroute-not-allowed-protocol-https", "NotAllowedByListeners"},
			{"gateway-tlsroute-tls-passthrough-only", "tlsroute-no-matching-section-name", "NoMatchingParent"},
		} {
			r := Compile(in, key(infra, tc.gw), Options{})
			wantCond(t, tc.route, parent(t, r, "TLSRoute", infra, tc.route).Conditions, "Accepted", false, tc.reason)
		}
	})
	t.Run("TLSRouteListenerPassthroughSupportedKinds", func(t *testing.T) {
		in := load(t, "conformance/manifests.yaml", "conformance/tlsroute-listener-passthrough-supported-kinds.yaml")
		l := listenerStatus(t, Compile(in, key(infra, "gateway-tlsroute-passthrough-supported-kind"), Options{}), "tls-passthrough")
		wantCond(t, "listener", l.Conditions, "ResolvedRefs", false, "InvalidRouteKinds")
		if len(l.SupportedKinds) != 1 || l.SupportedKinds[0].Kind != "TLSRoute" {
			t.Errorf("supportedKinds %v", l.SupportedKinds)
		}
	})
	t.Run("TLSRouteInvalidBackendRefUnknownKind", func(t *testing.T) {
		in := load(t, "conformance/manifests.yaml", "conformance/tlsroute-invalid-backendref-unknown-kind.yaml")
		r := Compile(in, key(infra, "gateway-tlsroute-invalid-backend-ref-unknown-kind"), Options{})
		p := parent(t, r, "TLSRoute", infra, "invalid-backend-ref-unknown-kind")
		wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
		wantCond(t, "route", p.Conditions, "ResolvedRefs", false, "InvalidKind")
	})
}

func TestConformanceBackendTLSPolicyConflictResolution(t *testing.T) {
	crt, _ := certPEM(t, "abc.example.com")
	ca := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: infra, Name: "tls-checks-ca-certificate"}, Data: map[string]string{"ca.crt": string(crt)}}
	in := add(load(t, "conformance/manifests.yaml", "conformance/backendtlspolicy-conflict-resolution.yaml"), ca)
	// The suite creates the policies in manifest order: the first is older.
	for i, p := range in.BackendTLSPolicies {
		p.CreationTimestamp = metav1.Unix(int64(100+i), 0)
	}
	r := Compile(in, key(infra, "same-namespace"), Options{})
	got := map[string]string{}
	for _, ps := range r.Policies {
		c := find(t, ps.Ancestor.Conditions, "Accepted")
		got[ps.Policy.Name] = string(c.Status) + "/" + c.Reason
	}
	want := map[string]string{
		"conflicted-without-section-name-1":   "True/Accepted",
		"conflicted-without-section-name-2":   "False/Conflicted",
		"conflicted-with-section-name-1":      "True/Accepted",
		"conflicted-with-section-name-2":      "False/Conflicted",
		"not-conflicted-with-section-name":    "True/Accepted",
		"not-conflicted-without-section-name": "True/Accepted",
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: %s, want %s", name, got[name], w)
		}
	}
	p := parent(t, r, "HTTPRoute", infra, "backendtlspolicy-conflict-resolution")
	wantCond(t, "route", p.Conditions, "ResolvedRefs", true, "ResolvedRefs")
	for _, rl := range host(t, r.Snapshot, "http", "abc.example.com").Rules {
		for _, b := range rl.Backends {
			if b.Authority == "" || b.Tls == nil || len(b.Tls.CaCertificates) == 0 {
				t.Errorf("backend %s without the accepted policy's TLS: %v", b.Name, b)
			}
		}
	}
}

// GatewayTLSBackendClientCertificate: the Gateway's client certificate
// (spec.tls.backend) resolves, the Gateway says ResolvedRefs, and the
// snapshot carries it for the BackendTLSPolicy's backend.
func TestConformanceGatewayTLSBackendClientCertificate(t *testing.T) {
	crt, _ := certPEM(t, "abc.example.com")
	ca := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: infra, Name: "tls-checks-ca-certificate"}, Data: map[string]string{"ca.crt": string(crt)}}
	// The suite creates the client certificate's Secret itself.
	client := tlsSecret(t, infra, "tls-checks-client-certificate")
	in := add(load(t, "conformance/manifests.yaml", "conformance/gateway-tls-backend-client-certificate.yaml"), ca, client)
	r := Compile(in, key(infra, "gateway-tls-backend-client-certificate"), Options{})
	wantCond(t, "gateway", r.Gateway.Conditions, "Accepted", true, "Accepted")
	wantCond(t, "gateway", r.Gateway.Conditions, "ResolvedRefs", true, "ResolvedRefs")
	p := parent(t, r, "HTTPRoute", infra, "gateway-tls-backend-client-certificate")
	wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
	wantCond(t, "route", p.Conditions, "ResolvedRefs", true, "ResolvedRefs")
	if len(r.Policies) != 1 {
		t.Fatalf("policies %v", r.Policies)
	}
	wantCond(t, "policy", r.Policies[0].Ancestor.Conditions, "Accepted", true, "Accepted")
	cc := r.Snapshot.BackendClientCertificate
	if cc == nil || cc.Name != infra+"/tls-checks-client-certificate" || !bytes.Equal(cc.CertChain, client.Data["tls.crt"]) || !bytes.Equal(cc.PrivateKey, client.Data["tls.key"]) {
		t.Errorf("backend client certificate %v, want the Secret's", cc)
	}
	b := host(t, r.Snapshot, "http", "abc.example.com").Rules[0].Backends[0]
	if b.Tls == nil || b.Tls.ServerName != "abc.example.com" {
		t.Errorf("backend %v without the policy's TLS", b)
	}
	if !slices.Contains(r.Dependencies, Dependency{Kind: "Secret", Key: key(infra, "tls-checks-client-certificate")}) {
		t.Errorf("dependencies %v do not follow the client certificate's Secret", r.Dependencies)
	}
}

// GatewayInvalidTLSBackendConfiguration: each bad clientCertificateRef
// makes the Gateway's ResolvedRefs False with the spec's reason, keeps it
// accepted and programmed, and leaves the snapshot without a client
// certificate.
func TestConformanceGatewayInvalidTLSBackendConfiguration(t *testing.T) {
	in := add(load(t, "conformance/manifests.yaml", "conformance/gateway-invalid-tls-backend-configuration.yaml"),
		// The suite creates these Secrets itself: the references fail
		// for their kind or grant, not for a missing Secret.
		tlsSecret(t, infra, "tls-validity-checks-certificate"), tlsSecret(t, "gateway-conformance-web-backend", "certificate"))
	for _, tc := range []struct{ gw, reason, msg string }{
		{"gateway-client-certificate-nonexistent-secret", "InvalidClientCertificateRef", "Secret gateway-conformance-infra/nonexistent-certificate does not exist"},
		{"gateway-client-certificate-unsupported-group", "InvalidClientCertificateRef", "wrong.group.company.io/Secret is not supported (allowed: core Secret)"},
		{"gateway-client-certificate-unsupported-kind", "InvalidClientCertificateRef", "/WrongKind is not supported (allowed: core Secret)"},
		{"gateway-client-certificate-malformed-secret", "InvalidClientCertificateRef", "holds no valid certificate and key in tls.crt and tls.key"},
		{"gateway-client-certificate-missing-reference-grant", "RefNotPermitted", "no ReferenceGrant in gateway-conformance-web-backend allows Gateways from gateway-conformance-infra"},
	} {
		t.Run(tc.gw, func(t *testing.T) {
			r := Compile(in, key(infra, tc.gw), Options{})
			wantCond(t, "gateway", r.Gateway.Conditions, "ResolvedRefs", false, tc.reason)
			wantCond(t, "gateway", r.Gateway.Conditions, "Accepted", true, "Accepted")
			wantCond(t, "gateway", r.Gateway.Conditions, "Programmed", true, "Programmed")
			c := find(t, r.Gateway.Conditions, "ResolvedRefs")
			if want := "Gateway " + infra + "/" + tc.gw + ": spec.tls.backend.clientCertificateRef: "; !strings.HasPrefix(c.Message, want) || !strings.Contains(c.Message, tc.msg) {
				t.Errorf("message %q, want %q ... %q", c.Message, want, tc.msg)
			}
			if r.Snapshot.BackendClientCertificate != nil {
				t.Errorf("snapshot has client certificate %s", r.Snapshot.BackendClientCertificate.Name)
			}
		})
	}
	// A ReferenceGrant makes the other namespace's Secret usable.
	grant := &gwv1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: "gateway-conformance-web-backend", Name: "client-cert"},
		Spec: gwv1.ReferenceGrantSpec{
			From: []gwv1.ReferenceGrantFrom{{Group: Group, Kind: "Gateway", Namespace: infra}},
			To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Secret"}},
		},
	}
	r := Compile(add(in, grant), key(infra, "gateway-client-certificate-missing-reference-grant"), Options{})
	wantCond(t, "gateway", r.Gateway.Conditions, "ResolvedRefs", true, "ResolvedRefs")
	if cc := r.Snapshot.BackendClientCertificate; cc == nil || cc.Name != "gateway-conformance-web-backend/certificate" {
		t.Errorf("granted client certificate %v", cc)
	}
}

// The upstream TCPRoute tests' manifests (GATEWAY-TCP profile): what they
// check of status, and the snapshot their connections would meet.
func TestConformanceTCPRoutes(t *testing.T) {
	tcpListener := func(t *testing.T, s *gatewaypb.Snapshot, port uint32) *gatewaypb.Listener {
		t.Helper()
		for _, p := range s.GetPorts() {
			if p.GetPort() == port {
				if p.GetProtocol() != gatewaypb.Port_TCP || len(p.GetListeners()) != 1 || p.GetListeners()[0].GetMode() != gatewaypb.Listener_TCP {
					t.Fatalf("port %d: %v", port, p)
				}
				return p.GetListeners()[0]
			}
		}
		t.Fatalf("no port %d in the snapshot", port)
		return nil
	}
	backends := func(r *gatewaypb.TCPRoute) []string {
		var out []string
		for _, b := range r.GetBackends() {
			out = append(out, fmt.Sprintf("%s=%d", b.GetAuthority(), b.GetWeight()))
		}
		return out
	}
	const suffix = ".gateway-conformance-infra.svc.cluster.local:3000"

	t.Run("TCPRouteWeightedRouting", func(t *testing.T) {
		r := Compile(load(t, "conformance/manifests.yaml", "conformance/tcproute-weighted-routing.yaml"), key(infra, "tcp-weighted-gateway"), Options{})
		p := parent(t, r, "TCPRoute", infra, "tcp-weighted-route")
		wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
		wantCond(t, "route", p.Conditions, "ResolvedRefs", true, "ResolvedRefs")
		wantCond(t, "gateway", r.Gateway.Conditions, "Programmed", true, "Programmed")
		got := backends(tcpListener(t, r.Snapshot, 9300).GetTcpRoute())
		want := []string{"tcp-backend-v1" + suffix + "=70", "tcp-backend-v2" + suffix + "=30", "tcp-backend-v3" + suffix + "=0"}
		if !slices.Equal(got, want) {
			t.Errorf("backends %q, want %q", got, want)
		}
		if l := listenerStatus(t, r, "tcp"); l.AttachedRoutes != 1 || len(l.SupportedKinds) != 1 || l.SupportedKinds[0].Kind != "TCPRoute" {
			t.Errorf("listener %+v", l)
		}
	})
	t.Run("TCPRouteMultipleRoutesAttachment", func(t *testing.T) {
		in := load(t, "conformance/manifests.yaml", "conformance/tcproute-multiple-routes-attachment.yaml")
		older := in.TCPRoutes[0]
		older.CreationTimestamp = metav1.Unix(1000, 0)
		newer := older.DeepCopy()
		newer.Name, newer.CreationTimestamp = "tcproute-attach-newer", metav1.Unix(1001, 0)
		newer.Spec.Rules[0].BackendRefs[0].Name = "tcp-attach-backend-2"
		in = add(in, newer)
		r := Compile(in, key(infra, "tcp-multi-route-attach-gateway"), Options{})
		for _, name := range []string{"tcproute-attach-older", "tcproute-attach-newer"} {
			wantCond(t, name, parent(t, r, "TCPRoute", infra, name).Conditions, "Accepted", true, "Accepted")
		}
		l := listenerStatus(t, r, "tcp")
		wantCond(t, "listener", l.Conditions, "Accepted", true, "Accepted")
		if l.AttachedRoutes != 2 {
			t.Errorf("attachedRoutes %d, want 2", l.AttachedRoutes)
		}
		// The older route takes the connections, whatever the input's order.
		for _, order := range [][]*gwv1.TCPRoute{{older, newer}, {newer, older}} {
			in.TCPRoutes = order
			got := backends(tcpListener(t, Compile(in, key(infra, "tcp-multi-route-attach-gateway"), Options{}).Snapshot, 9310).GetTcpRoute())
			if len(got) != 1 || !strings.HasPrefix(got[0], "tcp-attach-backend-1.") {
				t.Errorf("served %q, want the older route's tcp-attach-backend-1", got)
			}
		}
	})
	t.Run("TCPRouteInvalidNonTCPListener", func(t *testing.T) {
		r := Compile(load(t, "conformance/manifests.yaml", "conformance/tcproute-invalid-non-tcp-listener.yaml"), key(infra, "tcp-mixed-protocol-gateway"), Options{})
		wantCond(t, "route", parent(t, r, "TCPRoute", infra, "tcp-route").Conditions, "Accepted", false, "NotAllowedByListeners")
		if n := listenerStatus(t, r, "only-allow-http-routes").AttachedRoutes; n != 0 {
			t.Errorf("attachedRoutes %d, want 0", n)
		}
	})
	t.Run("TCPRouteInvalidBackendRefNonexistent", func(t *testing.T) {
		in := load(t, "conformance/manifests.yaml", "conformance/tcproute-invalid-backendref-nonexistent.yaml")
		r := Compile(in, key(infra, "tcp-gateway-invalid-backend"), Options{})
		p := parent(t, r, "TCPRoute", infra, "tcp-route-invalid-backend-ref-nonexistent")
		wantCond(t, "route", p.Conditions, "ResolvedRefs", false, "BackendNotFound")
	})
	t.Run("TCPRouteInvalidCrossNamespaceBackendRef", func(t *testing.T) {
		in := load(t, "conformance/manifests.yaml", "conformance/tcproute-invalid-cross-namespace-backend-ref.yaml")
		r := Compile(in, key(infra, "tcp-invalid-cross-namespace-backend-ref-gateway"), Options{})
		p := parent(t, r, "TCPRoute", infra, "tcp-invalid-cross-namespace-backend-ref")
		wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
		wantCond(t, "route", p.Conditions, "ResolvedRefs", false, "RefNotPermitted")
	})
	t.Run("TCPRouteReferenceGrant", func(t *testing.T) {
		in := load(t, "conformance/manifests.yaml", "conformance/tcproute-reference-grant.yaml")
		r := Compile(in, key(infra, "tcp-reference-grant-gateway"), Options{})
		p := parent(t, r, "TCPRoute", infra, "tcp-reference-grant")
		wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
		wantCond(t, "route", p.Conditions, "ResolvedRefs", true, "ResolvedRefs")
		in.ReferenceGrants = nil // the test deletes it
		r = Compile(in, key(infra, "tcp-reference-grant-gateway"), Options{})
		wantCond(t, "route", parent(t, r, "TCPRoute", infra, "tcp-reference-grant").Conditions, "ResolvedRefs", false, "RefNotPermitted")
	})
	t.Run("TCPRouteParentRefPortAndSectionName", func(t *testing.T) {
		r := Compile(load(t, "conformance/manifests.yaml", "conformance/tcproute-parentref-port-and-section-name.yaml"), key(infra, "tcp-multi-listener-gateway"), Options{})
		for port, want := range map[uint32]string{9300: "tcp-echo-one", 9301: "tcp-echo-two", 9302: "tcp-echo-three"} {
			got := backends(tcpListener(t, r.Snapshot, port).GetTcpRoute())
			if len(got) != 1 || !strings.HasPrefix(got[0], want+".") {
				t.Errorf("port %d serves %q, want %s", port, got, want)
			}
		}
		for _, name := range []string{"tcp-route-by-port", "tcp-route-by-section", "tcp-route-by-section-and-port"} {
			wantCond(t, name, parent(t, r, "TCPRoute", infra, name).Conditions, "Accepted", true, "Accepted")
		}
	})
	t.Run("TCPRouteParentRefAttachAll", func(t *testing.T) {
		r := Compile(load(t, "conformance/manifests.yaml", "conformance/tcproute-parentref-attach-all.yaml"), key(infra, "tcp-attach-all-gateway"), Options{})
		wantCond(t, "route", parent(t, r, "TCPRoute", infra, "tcp-route-attach-all").Conditions, "Accepted", true, "Accepted")
		if len(r.Snapshot.GetPorts()) != 4 {
			t.Fatalf("ports %v, want the four listeners'", r.Snapshot.GetPorts())
		}
		for _, p := range r.Snapshot.GetPorts() {
			if got := backends(tcpListener(t, r.Snapshot, p.GetPort()).GetTcpRoute()); len(got) != 1 || !strings.HasPrefix(got[0], "tcp-echo-attach-all.") {
				t.Errorf("port %d serves %q", p.GetPort(), got)
			}
		}
	})
}

// TCP listeners: a TCP and an HTTP listener on one port conflict, as two
// TCP listeners on one port do whatever their hostnames (a connection
// names none); a TCP listener allows TCPRoutes only.
func TestTCPListeners(t *testing.T) {
	hn := gwv1.Hostname("a.example.com")
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "g", Generation: 1}, Spec: gwv1.GatewaySpec{GatewayClassName: "meridian",
		Listeners: []gwv1.Listener{
			{Name: "tcp-a", Port: 9000, Protocol: gwv1.TCPProtocolType, Hostname: &hn},
			{Name: "tcp-b", Port: 9000, Protocol: gwv1.TCPProtocolType},
			{Name: "tcp", Port: 9001, Protocol: gwv1.TCPProtocolType},
			{Name: "http", Port: 9001, Protocol: gwv1.HTTPProtocolType},
			{Name: "alone", Port: 9002, Protocol: gwv1.TCPProtocolType, AllowedRoutes: &gwv1.AllowedRoutes{Kinds: []gwv1.RouteGroupKind{{Kind: "HTTPRoute"}}}},
		}}}
	r := Compile(Input{GatewayClasses: []*gwv1.GatewayClass{class()}, Gateways: []*gwv1.Gateway{gw}}, key("gw", "g"), Options{})
	for name, reason := range map[string]string{"tcp-a": "HostnameConflict", "tcp-b": "HostnameConflict", "tcp": "ProtocolConflict", "http": "ProtocolConflict"} {
		wantCond(t, name, listenerStatus(t, r, name).Conditions, "Accepted", false, reason)
	}
	l := listenerStatus(t, r, "alone")
	wantCond(t, "alone", l.Conditions, "ResolvedRefs", false, "InvalidRouteKinds")
	if len(l.SupportedKinds) != 0 {
		t.Errorf("supportedKinds %v, want none", l.SupportedKinds)
	}
}

// The upstream UDPRoute tests' manifests (GATEWAY-UDP profile): what they
// check of status, and the snapshot their datagrams would meet.
func TestConformanceUDPRoutes(t *testing.T) {
	udpListener := func(t *testing.T, s *gatewaypb.Snapshot, port uint32) *gatewaypb.Listener {
		t.Helper()
		for _, p := range s.GetPorts() {
			if p.GetPort() == port {
				if p.GetProtocol() != gatewaypb.Port_UDP || len(p.GetListeners()) != 1 || p.GetListeners()[0].GetMode() != gatewaypb.Listener_UDP {
					t.Fatalf("port %d: %v", port, p)
				}
				return p.GetListeners()[0]
			}
		}
		t.Fatalf("no port %d in the snapshot", port)
		return nil
	}
	backends := func(r *gatewaypb.UDPRoute) []string {
		var out []string
		for _, b := range r.GetBackends() {
			out = append(out, fmt.Sprintf("%s=%d", b.GetAuthority(), b.GetWeight()))
		}
		return out
	}
	const suffix = ".gateway-conformance-infra.svc.cluster.local:8080"

	t.Run("UDPRoute", func(t *testing.T) {
		r := Compile(load(t, "conformance/manifests.yaml", "conformance/udproute-simple.yaml"), key(infra, "udp-gateway"), Options{})
		p := parent(t, r, "UDPRoute", infra, "udp-coredns")
		wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
		wantCond(t, "route", p.Conditions, "ResolvedRefs", true, "ResolvedRefs")
		wantCond(t, "gateway", r.Gateway.Conditions, "Programmed", true, "Programmed")
		got := backends(udpListener(t, r.Snapshot, 5300).GetUdpRoute())
		if want := []string{"coredns.gateway-conformance-infra.svc.cluster.local:53=1"}; !slices.Equal(got, want) {
			t.Errorf("backends %q, want %q", got, want)
		}
		if l := listenerStatus(t, r, "coredns"); l.AttachedRoutes != 1 || len(l.SupportedKinds) != 1 || l.SupportedKinds[0].Kind != "UDPRoute" {
			t.Errorf("listener %+v", l)
		}
	})
	t.Run("UDPRouteWeightedRouting", func(t *testing.T) {
		r := Compile(load(t, "conformance/manifests.yaml", "conformance/udproute-weighted-routing.yaml"), key(infra, "udp-weighted-gateway"), Options{})
		p := parent(t, r, "UDPRoute", infra, "udp-weighted-route")
		wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
		wantCond(t, "route", p.Conditions, "ResolvedRefs", true, "ResolvedRefs")
		got := backends(udpListener(t, r.Snapshot, 5300).GetUdpRoute())
		want := []string{"udp-backend-v1" + suffix + "=70", "udp-backend-v2" + suffix + "=30", "udp-backend-v3" + suffix + "=0"}
		if !slices.Equal(got, want) {
			t.Errorf("backends %q, want %q", got, want)
		}
	})
	t.Run("UDPRouteMultipleRoutesAttachment", func(t *testing.T) {
		in := load(t, "conformance/manifests.yaml", "conformance/udproute-multiple-routes-attachment.yaml")
		older := in.UDPRoutes[0]
		older.CreationTimestamp = metav1.Unix(1000, 0)
		newer := older.DeepCopy()
		newer.Name, newer.CreationTimestamp = "udproute-attach-newer", metav1.Unix(1001, 0)
		newer.Spec.Rules[0].BackendRefs[0].Name = "udp-attach-backend-2"
		in = add(in, newer)
		r := Compile(in, key(infra, "udp-multi-route-attach-gateway"), Options{})
		for _, name := range []string{"udproute-attach-older", "udproute-attach-newer"} {
			wantCond(t, name, parent(t, r, "UDPRoute", infra, name).Conditions, "Accepted", true, "Accepted")
		}
		l := listenerStatus(t, r, "udp")
		wantCond(t, "listener", l.Conditions, "Accepted", true, "Accepted")
		if l.AttachedRoutes != 2 {
			t.Errorf("attachedRoutes %d, want 2", l.AttachedRoutes)
		}
		// The older route takes the datagrams, whatever the input's order.
		for _, order := range [][]*gwv1.UDPRoute{{older, newer}, {newer, older}} {
			in.UDPRoutes = order
			got := backends(udpListener(t, Compile(in, key(infra, "udp-multi-route-attach-gateway"), Options{}).Snapshot, 5301).GetUdpRoute())
			if len(got) != 1 || !strings.HasPrefix(got[0], "udp-attach-backend-1.") {
				t.Errorf("served %q, want the older route's udp-attach-backend-1", got)
			}
		}
	})
	t.Run("UDPRouteNotAllowedByListeners", func(t *testing.T) {
		r := Compile(load(t, "conformance/manifests.yaml", "conformance/udproute-not-allowed-by-listeners.yaml"), key(infra, "udproute-tls-only-gateway"), Options{})
		wantCond(t, "route", parent(t, r, "UDPRoute", infra, "udproute-not-allowed-by-listeners").Conditions, "Accepted", false, "NotAllowedByListeners")
		for _, l := range r.Gateway.Listeners {
			if l.AttachedRoutes != 0 {
				t.Errorf("listener %s: attachedRoutes %d, want 0", l.Name, l.AttachedRoutes)
			}
		}
	})
	t.Run("UDPRouteInvalidBackendRefNonexistent", func(t *testing.T) {
		r := Compile(load(t, "conformance/manifests.yaml", "conformance/udproute-invalid-backendref-nonexistent.yaml"), key(infra, "udp-gateway-invalid-backend"), Options{})
		p := parent(t, r, "UDPRoute", infra, "udp-route-invalid-backend-ref-nonexistent")
		wantCond(t, "route", p.Conditions, "ResolvedRefs", false, "BackendNotFound")
		if got := udpListener(t, r.Snapshot, 5300).GetUdpRoute().GetBackends(); len(got) != 1 || got[0].GetAuthority() != "" {
			t.Errorf("backends %v, want one without an authority (its datagrams dropped)", got)
		}
	})
	t.Run("UDPRouteInvalidCrossNamespaceBackendRef", func(t *testing.T) {
		r := Compile(load(t, "conformance/manifests.yaml", "conformance/udproute-invalid-cross-namespace-backend-ref.yaml"), key(infra, "udp-gateway-invalid-cross-namespace-backend-ref"), Options{})
		p := parent(t, r, "UDPRoute", infra, "udp-route-invalid-cross-namespace-backend-ref")
		wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
		wantCond(t, "route", p.Conditions, "ResolvedRefs", false, "RefNotPermitted")
	})
	t.Run("UDPRouteReferenceGrant", func(t *testing.T) {
		in := load(t, "conformance/manifests.yaml", "conformance/udproute-reference-grant.yaml")
		r := Compile(in, key(infra, "udp-gateway-reference-grant"), Options{})
		p := parent(t, r, "UDPRoute", infra, "udp-route-reference-grant")
		wantCond(t, "route", p.Conditions, "Accepted", true, "Accepted")
		wantCond(t, "route", p.Conditions, "ResolvedRefs", true, "ResolvedRefs")
		if got := backends(udpListener(t, r.Snapshot, 5300).GetUdpRoute()); len(got) != 1 || got[0] != "udp-echo-reference-grant.gateway-conformance-app-backend.svc.cluster.local:8080=1" {
			t.Errorf("backends %q", got)
		}
		in.ReferenceGrants = nil // the test deletes it
		r = Compile(in, key(infra, "udp-gateway-reference-grant"), Options{})
		wantCond(t, "route", parent(t, r, "UDPRoute", infra, "udp-route-reference-grant").Conditions, "ResolvedRefs", false, "RefNotPermitted")
	})
	t.Run("UDPRouteParentRefPortAndSectionName", func(t *testing.T) {
		r := Compile(load(t, "conformance/manifests.yaml", "conformance/udproute-parentref-port-and-section-name.yaml"), key(infra, "udp-multi-listener-gateway"), Options{})
		for port, want := range map[uint32]string{5300: "udp-echo-by-port", 5301: "udp-echo-by-section", 5302: "udp-echo-by-section-and-port"} {
			got := backends(udpListener(t, r.Snapshot, port).GetUdpRoute())
			if len(got) != 1 || !strings.HasPrefix(got[0], want+".") {
				t.Errorf("port %d serves %q, want %s", port, got, want)
			}
		}
		for _, name := range []string{"udp-route-by-port", "udp-route-by-section", "udp-route-by-section-and-port"} {
			wantCond(t, name, parent(t, r, "UDPRoute", infra, name).Conditions, "Accepted", true, "Accepted")
		}
	})
	t.Run("UDPRouteParentRefAttachAllListeners", func(t *testing.T) {
		r := Compile(load(t, "conformance/manifests.yaml", "conformance/udproute-parentref-attach-all-listeners.yaml"), key(infra, "udp-attach-all-listeners-gateway"), Options{})
		wantCond(t, "route", parent(t, r, "UDPRoute", infra, "udp-route-attach-all").Conditions, "Accepted", true, "Accepted")
		if len(r.Snapshot.GetPorts()) != 3 {
			t.Fatalf("ports %v, want the three listeners'", r.Snapshot.GetPorts())
		}
		for _, p := range r.Snapshot.GetPorts() {
			if got := backends(udpListener(t, r.Snapshot, p.GetPort()).GetUdpRoute()); len(got) != 1 || !strings.HasPrefix(got[0], "udp-echo-attach-all.") {
				t.Errorf("port %d serves %q", p.GetPort(), got)
			}
		}
		for _, name := range []string{"udp-1", "udp-2", "udp-3"} {
			l := listenerStatus(t, r, name)
			wantCond(t, name, l.Conditions, "Accepted", true, "Accepted")
			wantCond(t, name, l.Conditions, "ResolvedRefs", true, "ResolvedRefs")
			if l.AttachedRoutes != 1 {
				t.Errorf("listener %s: attachedRoutes %d, want 1", name, l.AttachedRoutes)
			}
		}
	})
}

// UDP listeners: a UDP port is another port than the TCP one of its
// number (the spec's distinct listeners: a unique port and protocol; DNS
// serves 53 over both), so a UDP listener shares its number with a TCP or
// HTTP one, each Accepted and in the snapshot as a port of its own; two
// UDP listeners on a port conflict whatever their hostnames; a UDP
// listener allows UDPRoutes only.
func TestUDPListeners(t *testing.T) {
	hn := gwv1.Hostname("a.example.com")
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "g", Generation: 1}, Spec: gwv1.GatewaySpec{GatewayClassName: "meridian",
		Listeners: []gwv1.Listener{
			{Name: "udp-a", Port: 9000, Protocol: gwv1.UDPProtocolType, Hostname: &hn},
			{Name: "udp-b", Port: 9000, Protocol: gwv1.UDPProtocolType},
			{Name: "udp", Port: 9001, Protocol: gwv1.UDPProtocolType},
			{Name: "tcp", Port: 9001, Protocol: gwv1.TCPProtocolType},
			{Name: "udp2", Port: 9002, Protocol: gwv1.UDPProtocolType},
			{Name: "http", Port: 9002, Protocol: gwv1.HTTPProtocolType},
			{Name: "alone", Port: 9003, Protocol: gwv1.UDPProtocolType, AllowedRoutes: &gwv1.AllowedRoutes{Kinds: []gwv1.RouteGroupKind{{Kind: "TCPRoute"}}}},
			{Name: "fine", Port: 9004, Protocol: gwv1.UDPProtocolType, Hostname: &hn},
		}}}
	r := Compile(Input{GatewayClasses: []*gwv1.GatewayClass{class()}, Gateways: []*gwv1.Gateway{gw}}, key("gw", "g"), Options{})
	for name, reason := range map[string]string{"udp-a": "HostnameConflict", "udp-b": "HostnameConflict"} {
		wantCond(t, name, listenerStatus(t, r, name).Conditions, "Accepted", false, reason)
	}
	for _, name := range []string{"udp", "tcp", "udp2", "http"} {
		wantCond(t, name, listenerStatus(t, r, name).Conditions, "Accepted", true, "Accepted")
		wantCond(t, name, listenerStatus(t, r, name).Conditions, "Conflicted", false, "NoConflicts")
	}
	var got []string
	for _, p := range r.Snapshot.GetPorts() {
		got = append(got, fmt.Sprintf("%d/%v", p.GetPort(), p.GetProtocol()))
	}
	if want := []string{"9001/TCP", "9001/UDP", "9002/HTTP", "9002/UDP", "9003/UDP", "9004/UDP"}; !slices.Equal(got, want) {
		t.Errorf("snapshot ports %v, want %v (9000's listeners conflict)", got, want)
	}
	l := listenerStatus(t, r, "alone")
	wantCond(t, "alone", l.Conditions, "ResolvedRefs", false, "InvalidRouteKinds")
	if len(l.SupportedKinds) != 0 {
		t.Errorf("supportedKinds %v, want none", l.SupportedKinds)
	}
	wantCond(t, "fine", listenerStatus(t, r, "fine").Conditions, "Accepted", true, "Accepted")
	for _, p := range r.Snapshot.GetPorts() {
		if p.GetPort() == 9004 && p.GetListeners()[0].GetHostname() != "" {
			t.Errorf("port 9004: %v, want the hostname ignored", p)
		}
	}
}
