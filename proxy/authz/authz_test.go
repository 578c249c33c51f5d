package authz

import (
	"net/netip"
	"strings"
	"testing"
)

func TestPolicies(t *testing.T) {
	meshedIn := Client{ID: "spiffe://cluster.local/ns/shop/sa/web", Addr: netip.MustParseAddr("10.1.2.3")}
	meshedOut := Client{ID: "spiffe://cluster.local/ns/shop/sa/web", Addr: netip.MustParseAddr("203.0.113.9")}
	plainIn := Client{Addr: netip.MustParseAddr("::ffff:192.168.1.9")}
	plainOut := Client{Addr: netip.MustParseAddr("203.0.113.9")}
	for _, c := range []struct {
		policy Policy
		want   [4]bool // meshedIn, meshedOut, plainIn, plainOut
	}{
		{"", [4]bool{true, true, true, true}},
		{AllUnauthenticated, [4]bool{true, true, true, true}},
		{ClusterUnauthenticated, [4]bool{true, false, true, false}},
		{AllAuthenticated, [4]bool{true, true, false, false}},
		{ClusterAuthenticated, [4]bool{true, false, false, false}},
		{Deny, [4]bool{false, false, false, false}},
	} {
		cfg := Config{Default: c.policy}
		for i, cl := range []Client{meshedIn, meshedOut, plainIn, plainOut} {
			if got := cfg.Conn(cl); got != c.want[i] {
				t.Errorf("%q, client %+v: %v, want %v", c.policy, cl, got, c.want[i])
			}
		}
	}
	// Other cluster networks.
	cfg := Config{Default: ClusterUnauthenticated, ClusterNetworks: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}
	if !cfg.Conn(plainOut) || cfg.Conn(plainIn) {
		t.Error("--cluster-networks not followed")
	}
}

func TestProbesAlwaysAllowed(t *testing.T) {
	probes, err := ParseProbes("8080/healthz, 8080/ready,9000/")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Default: Deny, Probes: probes}
	kubelet := Client{Addr: netip.MustParseAddr("10.0.0.1")}
	for _, c := range []struct {
		port uint16
		path string
		want bool
	}{
		{8080, "/healthz", true}, {8080, "/ready", true}, {9000, "/", true},
		{8080, "/healthz/x", false}, {8081, "/healthz", false}, {8080, "/api", false},
	} {
		if got := cfg.HTTP(kubelet, c.port, c.path); got != c.want {
			t.Errorf("%d %s: %v, want %v", c.port, c.path, got, c.want)
		}
	}
	if cfg.Conn(kubelet) {
		t.Error("a probe path does not open the connection to opaque traffic")
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := ParsePolicy("allow"); err == nil || !strings.Contains(err.Error(), "use all-unauthenticated, cluster-unauthenticated, all-authenticated, cluster-authenticated, deny") {
		t.Fatalf("ParsePolicy: %v", err)
	}
	for _, s := range []string{"healthz", "0/x", "http/x", "70000/x"} {
		if _, err := ParseProbes(s); err == nil || !strings.Contains(err.Error(), "want PORT/PATH") {
			t.Errorf("ParseProbes(%q): %v", s, err)
		}
	}
}
