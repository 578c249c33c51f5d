package gateway

import (
	"slices"
	"testing"

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
		return add(in, tlsSecret(t, infra, "tls-validity-checks-certificate"))
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
		{"TLSRouteListenerMixedTerminationNotSupported", []string{"conformance/tlsroute-listener-mixed-termination-not-supported.yaml"}, "gateway-tlsroute-mixed-termination-not-supported", func(t *testing.T, r Result) {
			for _, n := range []string{"tls-terminate", "tls-passthrough"} {
				l := listenerStatus(t, r, n)
				wantCond(t, n, l.Conditions, "Accepted", false, "ProtocolConflict")
				wantCond(t, n, l.Conditions, "Conflicted", true, "ProtocolConflict")
				if l.AttachedRoutes != 0 {
					t.Errorf("%s: attachedRoutes %d", n, l.AttachedRoutes)
				}
			}
			wantCond(t, "gateway", r.Gateway.Conditions, "Accepted", false, "ListenersNotValid")
			if len(r.Snapshot.Ports) != 0 {
				t.Errorf("conflicted listeners programmed: %v", r.Snapshot.Ports)
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
