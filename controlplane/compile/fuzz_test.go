package compile_test

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/controlplane/compile"
)

// FuzzParseAuthority: authorities reach the destination API from proxies,
// which take them from requests' Host and :authority headers: untrusted.
// A refusal is ErrNotFound; what is accepted is a lower-case host without
// a trailing dot and a port within 1-65535, and host:port parses back to
// the same name.
func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"web", "web:8080", "Web.Shop.svc.cluster.local.:80", "web.shop.svc", "web.shop", "pod-0.web.shop.svc.cluster.local",
		"10.0.0.1:80", "[::1]:80", "[::1]", "::1", "", " ", ":80", "web:0", "web:65536", "a..b", "[fe80::1%eth0]:80", "web.shop.svc.example.org"} {
		f.Add(s, "")
	}
	f.Add("web.shop.svc.example.org", "example.org")
	f.Fuzz(func(t *testing.T, a, domain string) {
		o := compile.Options{ClusterDomain: domain}
		n, err := compile.ParseAuthority(a, o)
		if err != nil {
			if !errors.Is(err, compile.ErrNotFound) {
				t.Fatalf("ParseAuthority(%q) = %v, not ErrNotFound", a, err)
			}
			return
		}
		if n.Host == "" || n.Host != strings.ToLower(n.Host) || strings.HasSuffix(n.Host, ".") {
			t.Fatalf("ParseAuthority(%q).Host = %q", a, n.Host)
		}
		if n.Port < 1 || n.Port > 65535 {
			t.Fatalf("ParseAuthority(%q).Port = %d", a, n.Port)
		}
		if n.Service.Name == "" && !n.IP.IsValid() {
			t.Fatalf("ParseAuthority(%q) = %+v: neither a service nor an IP", a, n)
		}
		again, err := compile.ParseAuthority(net.JoinHostPort(n.Host, strconv.Itoa(int(n.Port))), o)
		if err != nil || again != n {
			t.Fatalf("ParseAuthority(%q) = %+v, but its host:port gives %+v, %v", a, n, again, err)
		}
	})
}

// FuzzParsePorts: the opaque-ports annotation of a Service, a Pod or a
// Namespace. Each refused item is named in its error; what is kept writes
// back (String) to a list that parses to the same set.
func FuzzParsePorts(f *testing.F) {
	for _, s := range []string{"", "25,4000-4010,mysql", " 25, 4000-4010,mysql,bad-range,0,70000-70001,3306", "http-alt", "+25", "1-", "٣"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, errs := compile.ParsePorts(s)
		for _, err := range errs {
			if !strings.Contains(err.Error(), "port") || !strings.Contains(err.Error(), `"`) {
				t.Fatalf("ParsePorts(%q): error %v does not name the item", s, err)
			}
		}
		again, errs := compile.ParsePorts(p.String())
		if len(errs) != 0 || again.String() != p.String() {
			t.Fatalf("ParsePorts(%q).String() = %q parses to %q, %v", s, p.String(), again.String(), errs)
		}
	})
}
