package redirect

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/internal/ports"
)

func TestParseCIDRs(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "[]"},
		{"10.0.0.0/8", "[10.0.0.0/8]"},
		{"10.1.2.3/8, fd00::1/8", "[10.0.0.0/8 fd00::/8]"},
		{"192.0.2.7,2001:db8::7", "[192.0.2.7/32 2001:db8::7/128]"},
		{"0.0.0.0/0", "[0.0.0.0/0]"},
		{"10.0.0.0/33", `error: "10.0.0.0/33" is not a CIDR (like 10.0.0.0/8 or fd00::/8)`},
		{"10.0.0.0/8,nope", `error: "nope" is not a CIDR (like 10.0.0.0/8 or fd00::/8)`},
		{"fe80::1%eth0", `error: "fe80::1%eth0" is not a CIDR (like 10.0.0.0/8 or fd00::/8)`},
		{"10.0.0/8", `error: "10.0.0/8" is not a CIDR (like 10.0.0.0/8 or fd00::/8)`},
	} {
		got, err := ParseCIDRs(tc.in)
		s := fmt.Sprint(got)
		if err != nil {
			s = "error: " + err.Error()
		}
		if s != tc.want {
			t.Errorf("ParseCIDRs(%q) = %s, want %s", tc.in, s, tc.want)
		}
	}
}

func TestMergePorts(t *testing.T) {
	in := []ports.Range{{First: 4191, Last: 4191}, {First: 25, Last: 25}, {First: 4190, Last: 4190}, {First: 4000, Last: 4010}, {First: 4005, Last: 4020}, {First: 26, Last: 26}, {First: 4143, Last: 4143}}
	if got, want := fmt.Sprint(mergePorts(in)), "[25-26 4000-4020 4143 4190-4191]"; got != want {
		t.Errorf("mergePorts = %s, want %s", got, want)
	}
	if got := fmt.Sprint(in[0]); got != "4191" {
		t.Errorf("mergePorts changed its argument: %v", in)
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("the default configuration: %v", err)
	}
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.InboundPort = 0 }, "inbound port must be 1-65535"},
		{func(c *Config) { c.OutboundPort = 0 }, "outbound port must be 1-65535"},
		{func(c *Config) { c.OutboundPort = c.InboundPort }, "inbound and outbound ports are both 4143"},
		{func(c *Config) { c.SkipInboundPorts = []ports.Range{{First: 10, Last: 5}} }, "invalid port range 10-5"},
		{func(c *Config) { c.SkipOutboundPorts = []ports.Range{{First: 0, Last: 5}} }, "invalid port range 0-5"},
		{func(c *Config) { c.SkipOutboundCIDRs = []netip.Prefix{{}} }, "invalid CIDR"},
	} {
		c := DefaultConfig()
		tc.change(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
		}
	}
}

// The default rules, as --dry-run prints them and nft lists them (the
// namespace test checks the latter against the kernel).
func TestString(t *testing.T) {
	want := `table inet meridian {
	chain inbound {
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport 4143 return
		tcp dport 4190-4191 return
		meta l4proto tcp redirect to :4143
	}

	chain outbound {
		type nat hook output priority -100; policy accept;
		meta skuid 2102 return
		oifname "lo" return
		meta l4proto tcp redirect to :4140
	}
}
`
	if got := DefaultConfig().String(); got != want {
		t.Errorf("DefaultConfig().String() =\n%s\nwant\n%s", got, want)
	}

	c := Config{InboundPort: 15006, OutboundPort: 15001, ProxyUID: 1337,
		SkipInboundPorts:  []ports.Range{{First: 4191, Last: 4191}, {First: 22, Last: 22}},
		SkipOutboundPorts: []ports.Range{{First: 5432, Last: 5432}, {First: 3306, Last: 3306}},
		SkipOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("fd00::/8")},
	}
	got := c.Rules()
	wantRules := []string{
		"inbound: tcp dport 22 return",
		"inbound: tcp dport 4190-4191 return",
		"inbound: tcp dport 15006 return",
		"inbound: meta l4proto tcp redirect to :15006",
		"outbound: meta skuid 1337 return",
		`outbound: oifname "lo" return`,
		"outbound: ip daddr 169.254.169.254 return",
		"outbound: ip6 daddr fd00::/8 return",
		"outbound: tcp dport 3306 return",
		"outbound: tcp dport 5432 return",
		"outbound: meta l4proto tcp redirect to :15001",
	}
	if strings.Join(got, "\n") != strings.Join(wantRules, "\n") {
		t.Errorf("Rules() =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantRules, "\n"))
	}
}
