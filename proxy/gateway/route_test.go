package gateway

import (
	"net/http"
	"strings"
	"testing"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// Requests go to the listener their Host selects, then the host (exact,
// longest wildcard, any), then the first rule that matches, as given.
func TestRoutingPrecedence(t *testing.T) {
	names := []string{"exact", "prefix", "prefix-foo", "regex", "header", "query", "method", "wild", "wild-long", "any", "other-listener"}
	m := map[string][]string{}
	for _, n := range names {
		m[n+".svc:80"] = []string{startEcho(t, n, nil).addr}
	}
	pn := freePort(t)
	s := snap("v1", httpPort(pn,
		httpListener("main", "",
			hostOf("exact.example.com",
				ruleTo("exact", &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_EXACT, Value: "/exact"}}, to("exact.svc:80", 1)),
				ruleTo("header", &gatewaypb.Match{Headers: []*gatewaypb.HeaderMatch{{Name: "x-version", Value: "v2"}}}, to("header.svc:80", 1)),
				ruleTo("query", &gatewaypb.Match{QueryParams: []*gatewaypb.QueryMatch{{Name: "q", Regex: true, Value: "[0-9]+"}}}, to("query.svc:80", 1)),
				ruleTo("method", &gatewaypb.Match{Method: "DELETE"}, to("method.svc:80", 1)),
				ruleTo("regex", &gatewaypb.Match{Path: &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_REGEX, Value: "/r/[a-z]+"}}, to("regex.svc:80", 1)),
				ruleTo("prefix-foo", prefix("/foo"), to("prefix-foo.svc:80", 1)),
				ruleTo("prefix", prefix("/"), to("prefix.svc:80", 1)),
			),
			// given out of order: the proxy matches the longest wildcard first
			hostOf("*.example.com", ruleTo("wild", nil, to("wild.svc:80", 1))),
			hostOf("", ruleTo("any", prefix("/"), to("any.svc:80", 1))),
			hostOf("*.a.example.com", ruleTo("wild-long", nil, to("wild-long.svc:80", 1))),
		),
		httpListener("other", "other.test", hostOf("", ruleTo("other", nil, to("other-listener.svc:80", 1)))),
	))
	startGateway(t, dsts(t, m), s)
	for _, c := range []struct {
		host, method, path string
		hdr                []string
		want               string // backend, or "404"
	}{
		{"exact.example.com", "GET", "/exact", nil, "exact"},
		{"exact.example.com", "GET", "/exact/", nil, "prefix"},
		{"exact.example.com", "GET", "/foo", nil, "prefix-foo"},
		{"exact.example.com", "GET", "/foo/bar", nil, "prefix-foo"},
		{"exact.example.com", "GET", "/foobar", nil, "prefix"}, // path elements, not characters
		{"exact.example.com", "GET", "/r/abc", nil, "regex"},
		{"exact.example.com", "GET", "/r/ABC", nil, "prefix"}, // anchored, case-sensitive
		{"exact.example.com", "GET", "/x", []string{"X-Version", "v2"}, "header"},
		{"exact.example.com", "GET", "/x", []string{"X-Version", "v3"}, "prefix"},
		{"exact.example.com", "GET", "/x?q=42", nil, "query"},
		{"exact.example.com", "GET", "/x?q=4a", nil, "prefix"},
		{"exact.example.com", "DELETE", "/x", nil, "method"},
		{"EXACT.example.com:" + "80", "GET", "/exact", nil, "exact"}, // case and port do not matter
		{"b.example.com", "GET", "/", nil, "wild"},
		{"c.b.example.com", "GET", "/", nil, "wild"},
		{"x.a.example.com", "GET", "/", nil, "wild-long"},
		{"example.com", "GET", "/", nil, "any"}, // a wildcard needs a label before its suffix
		{"nothing.test", "GET", "/", nil, "any"},
		{"other.test", "GET", "/", nil, "other-listener"},
	} {
		req, _ := http.NewRequest(c.method, "http://127.0.0.1:"+itoa(pn)+c.path, nil)
		req.Host = c.host
		for i := 0; i+1 < len(c.hdr); i += 2 {
			req.Header.Set(c.hdr[i], c.hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get("X-Backend")
		if got == "" {
			got = resp.Status[:3]
		}
		if got != c.want {
			t.Errorf("%s %s%s %v: served by %q, want %q", c.method, c.host, c.path, c.hdr, got, c.want)
		}
	}
}

// No listener, host or rule for a request: 404, and to a gRPC client
// UNIMPLEMENTED.
func TestNoRoute404(t *testing.T) {
	e := startEcho(t, "web", nil)
	pn := freePort(t)
	startGateway(t, dsts(t, map[string][]string{"web.svc:80": {e.addr}}), snap("v1", httpPort(pn,
		httpListener("l", "only.test", hostOf("", ruleTo("web", prefix("/app"), to("web.svc:80", 1)))))))
	for _, c := range []struct{ host, path string }{{"only.test", "/other"}, {"else.test", "/app"}} {
		resp, _ := get(t, nil, pn, c.host, c.path)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s%s: %s, want 404", c.host, c.path, resp.Status)
		}
	}
	resp, _ := get(t, nil, pn, "only.test", "/other", "Content-Type", "application/grpc")
	if g := resp.Header.Get("Grpc-Status"); g != "12" {
		t.Errorf("gRPC without a route: grpc-status %q, want 12 (UNIMPLEMENTED)", g)
	}
}

// A rule without a valid backend answers 500 (gRPC: UNAVAILABLE), for the
// share of the traffic that goes to invalid backends.
func TestInvalidBackend500(t *testing.T) {
	e := startEcho(t, "web", nil)
	pn := freePort(t)
	startGateway(t, dsts(t, map[string][]string{"web.svc:80": {e.addr}}), snap("v1", httpPort(pn,
		httpListener("l", "", hostOf("",
			ruleTo("none", prefix("/none")),
			ruleTo("zero", prefix("/zero"), to("web.svc:80", 0)),
			ruleTo("invalid", prefix("/invalid"), &gatewaypb.Backend{Weight: 1, Name: "ns/missing:80"}),
			ruleTo("unknown", prefix("/unknown"), to("unknown.svc:80", 1)),
			ruleTo("half", prefix("/half"), to("web.svc:80", 1), &gatewaypb.Backend{Weight: 1, Name: "ns/missing:80"}),
		)))))
	for _, p := range []string{"/none", "/zero", "/invalid", "/unknown"} {
		resp, _ := get(t, nil, pn, "x.test", p)
		if resp.StatusCode != 500 {
			t.Errorf("%s: %s, want 500", p, resp.Status)
		}
		resp, _ = get(t, nil, pn, "x.test", p, "Content-Type", "application/grpc")
		if g := resp.Header.Get("Grpc-Status"); g != "14" {
			t.Errorf("%s, gRPC: grpc-status %q, want 14 (UNAVAILABLE)", p, g)
		}
	}
	codes := map[int]int{}
	for range 200 {
		resp, _ := get(t, nil, pn, "x.test", "/half")
		codes[resp.StatusCode]++
	}
	if codes[200] < 60 || codes[500] < 60 || codes[200]+codes[500] != 200 {
		t.Errorf("half the backends invalid: %v, want about 100 each of 200 and 500", codes)
	}
}

// Backends share a rule's traffic by weight; weight 0 gets none.
func TestWeights(t *testing.T) {
	a, b, c := startEcho(t, "a", nil), startEcho(t, "b", nil), startEcho(t, "c", nil)
	pn := freePort(t)
	startGateway(t, dsts(t, map[string][]string{"a.svc:80": {a.addr}, "b.svc:80": {b.addr}, "c.svc:80": {c.addr}}), snap("v1", httpPort(pn,
		httpListener("l", "", hostOf("", ruleTo("split", nil, to("a.svc:80", 1), to("b.svc:80", 3), to("c.svc:80", 0)))))))
	n := map[string]int{}
	const total = 800
	for range total {
		resp, _ := get(t, nil, pn, "x.test", "/")
		n[resp.Header.Get("X-Backend")]++
	}
	// 200 and 600 expected; binomial σ ≈ 12: these bounds are > 6σ.
	if n["a"] < 120 || n["a"] > 280 || n["b"] < 520 || n["b"] > 680 || n["c"] != 0 {
		t.Errorf("weights 1:3:0 over %d requests: %v", total, n)
	}
}

// X-Forwarded-For gets the client appended; what a client sent is kept
// only as far as trusted_hops proxies in front vouch for it. Forwarding
// headers the client made up are replaced, and no Meridian-* or l5d-*
// header from outside reaches the mesh (an override would make the
// gateway an open relay), nor a client certificate header (nothing was
// verified on plaintext).
func TestForwardedHeaders(t *testing.T) {
	web, evil := startEcho(t, "web", nil), startEcho(t, "evil", nil)
	for _, c := range []struct {
		name       string
		hops       uint32
		xff, proto string
		wantXFF    string
		wantProto  string
	}{
		{"no trusted hop, none sent", 0, "", "", "127.0.0.1", "http"},
		{"no trusted hop, forged", 0, "6.6.6.6", "https", "127.0.0.1", "http"},
		{"one trusted hop", 1, "6.6.6.6, 10.0.0.1", "https", "10.0.0.1, 127.0.0.1", "https"},
		{"two trusted hops", 2, "6.6.6.6, 1.2.3.4, 10.0.0.1", "", "1.2.3.4, 10.0.0.1, 127.0.0.1", "http"},
		{"more hops trusted than sent", 3, "10.0.0.1", "", "10.0.0.1, 127.0.0.1", "http"},
	} {
		t.Run(c.name, func(t *testing.T) {
			pn := freePort(t)
			s := snap("v1", httpPort(pn, httpListener("l", "", hostOf("", ruleTo("web", nil, to("web.svc:80", 1))))))
			s.TrustedHops = c.hops
			startGateway(t, dsts(t, map[string][]string{"web.svc:80": {web.addr}, "evil.svc:80": {evil.addr}}), s)
			hdr := []string{"Meridian-Dst-Override", "evil.svc:80", "L5d-Dst-Override", "evil.svc:80", "Meridian-Client-Id", "spiffe://x/forged",
				"X-Forwarded-Client-Cert", "Hash=00;Subject=\"CN=admin\"", "Client-Cert", ":AAAA:", "Client-Cert-Chain", ":AAAA:"}
			if c.xff != "" {
				hdr = append(hdr, "X-Forwarded-For", c.xff)
			}
			if c.proto != "" {
				hdr = append(hdr, "X-Forwarded-Proto", c.proto)
			}
			resp, _ := get(t, nil, pn, "app.test", "/", hdr...)
			if b := resp.Header.Get("X-Backend"); b != "web" {
				t.Fatalf("served by %q, want web: an override header from outside was obeyed", b)
			}
			if got := strings.Join(resp.Header.Values("X-Got-X-Forwarded-For"), ","); got != c.wantXFF {
				t.Errorf("X-Forwarded-For %q, want %q", got, c.wantXFF)
			}
			if got := resp.Header.Get("X-Got-X-Forwarded-Proto"); got != c.wantProto {
				t.Errorf("X-Forwarded-Proto %q, want %q", got, c.wantProto)
			}
			if got := resp.Header.Get("X-Got-X-Forwarded-Host"); got != "app.test" {
				t.Errorf("X-Forwarded-Host %q, want app.test", got)
			}
			for k := range resp.Header {
				if (strings.HasPrefix(k, "X-Got-Meridian-") && k != "X-Got-Meridian-Hop") || strings.HasPrefix(k, "X-Got-L5d-") ||
					strings.HasPrefix(k, "X-Got-Client-Cert") || k == "X-Got-X-Forwarded-Client-Cert" {
					t.Errorf("the backend got %s from outside", strings.TrimPrefix(k, "X-Got-"))
				}
			}
			if hop := resp.Header.Values("X-Got-Meridian-Hop"); len(hop) != 1 || len(hop[0]) != 16 {
				t.Errorf("Meridian-Hop %q, want the gateway's instance ID alone", hop)
			}
		})
	}
}

// A request head larger than max_request_header_bytes is answered 431,
// over HTTP/1 and h2c, not dropped.
func TestHeaderLimit431(t *testing.T) {
	e := startEcho(t, "web", nil)
	for _, c := range []struct {
		limit uint32
		size  int
		want  int
	}{
		{0, 60 << 10, 200}, // the default, 64 KiB
		{0, 70 << 10, 431}, // over the default
		{1024, 1000, 431},  // over a configured limit
		{1024, 500, 200},
		{200 << 10, 150 << 10, 200}, // over the default but within the configured one
	} {
		pn := freePort(t)
		s := snap("v1", httpPort(pn, httpListener("l", "", hostOf("", ruleTo("web", nil, to("web.svc:80", 1))))))
		s.MaxRequestHeaderBytes = c.limit
		g := startGateway(t, dsts(t, map[string][]string{"web.svc:80": {e.addr}}), s)
		for _, client := range []*http.Client{http.DefaultClient, h2cClient()} {
			resp, _ := get(t, client, pn, "x.test", "/", "X-Big", strings.Repeat("a", c.size))
			if resp.StatusCode != c.want {
				t.Errorf("limit %d, %d bytes, %s: %s, want %d", c.limit, c.size, resp.Proto, resp.Status, c.want)
			}
		}
		_ = g
	}
}

// A backend that leads back to the gateway is refused at once (508), not
// forwarded until the file descriptors run out; so is a loop through a
// second gateway.
func TestLoopRefused(t *testing.T) {
	p1, p2 := freePort(t), freePort(t)
	self := map[string][]string{"self.svc:80": {"127.0.0.1:" + itoa(p1)}, "other.svc:80": {"127.0.0.1:" + itoa(p2)}}
	startGateway(t, dsts(t, self), snap("v1", httpPort(p1, httpListener("l", "", hostOf("",
		ruleTo("self", prefix("/self"), to("self.svc:80", 1)),
		ruleTo("other", prefix("/other"), to("other.svc:80", 1)))))))
	startGateway(t, dsts(t, self), snap("v1", httpPort(p2, httpListener("l", "", hostOf("",
		ruleTo("back", prefix("/"), to("self.svc:80", 1)))))))
	for _, path := range []string{"/self", "/other"} {
		resp, _ := get(t, nil, p1, "x.test", path)
		if resp.StatusCode != http.StatusLoopDetected || resp.Header.Get("Meridian-Proxy-Error") != "loop" {
			t.Errorf("%s: %s (%s), want 508 loop", path, resp.Status, resp.Header.Get("Meridian-Proxy-Error"))
		}
	}
}
