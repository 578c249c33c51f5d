package sidecar

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/authz"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// The admin port follows the pod's default inbound policy, as Linkerd's
// does: under a policy that requires authentication, a plaintext client
// gets 403 on /metrics and /identity (and is counted), while /live and
// /ready stay open for the kubelet; a meshed client over mTLS reads
// /metrics. cluster-unauthenticated admits plaintext clients from the
// cluster's networks only; the default admits everyone.
func TestAdminPortFollowsInboundPolicy(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	elsewhere := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	plain := &http.Client{Timeout: 10 * time.Second}
	status := func(t *testing.T, c *http.Client, url string) int {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusForbidden && resp.Header.Get(httpproxy.ErrorHeader) != "unauthorized" {
			t.Errorf("GET %s: 403 without %s: unauthorized", url, httpproxy.ErrorHeader)
		}
		return resp.StatusCode
	}
	for _, c := range []struct {
		name        string
		pol         authz.Config
		plainSecret bool // a plaintext client reads /metrics and /identity
		meshed      int  // what a meshed client gets on /metrics
	}{
		{"all-unauthenticated", authz.Config{}, true, http.StatusOK},
		{"cluster-unauthenticated, client in the cluster", authz.Config{Default: authz.ClusterUnauthenticated, ClusterNetworks: loopback}, true, http.StatusOK},
		{"cluster-unauthenticated, client outside", authz.Config{Default: authz.ClusterUnauthenticated, ClusterNetworks: elsewhere}, false, http.StatusForbidden},
		{"all-authenticated", authz.Config{Default: authz.AllAuthenticated}, false, http.StatusOK},
		{"cluster-authenticated", authz.Config{Default: authz.ClusterAuthenticated, ClusterNetworks: loopback}, false, http.StatusOK},
		{"deny (meshed clients still read the admin port)", authz.Config{Default: authz.Deny}, false, http.StatusOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := startProxy(t, Config{Identity: svc.Identity(t, "emojivoto", "web"), Authz: c.pol})
			base := "http://" + p.admin
			eventually(t, "/ready", func() bool { return status(t, plain, base+"/ready") == http.StatusOK })
			if got := status(t, plain, base+"/live"); got != http.StatusOK {
				t.Errorf("plaintext /live: %d, want 200 (the kubelet's probe)", got)
			}
			want := http.StatusForbidden
			if c.plainSecret {
				want = http.StatusOK
			}
			for _, path := range []string{"/metrics", "/identity"} {
				if got := status(t, plain, base+path); got != want {
					t.Errorf("plaintext %s: %d, want %d", path, got, want)
				}
			}
			if c.plainSecret {
				return
			}
			// A meshed scraper: mTLS with an identity of the mesh. (Under
			// cluster-authenticated the client is in the cluster's networks.)
			meshed := meshedScraper(t, svc, p, "monitoring", "prometheus")
			if got := status(t, meshed, "https://"+p.admin+"/metrics"); got != c.meshed {
				t.Fatalf("meshed /metrics: %d, want %d", got, c.meshed)
			}
			if c.meshed != http.StatusOK {
				return
			}
			_, port, _ := net.SplitHostPort(p.admin)
			expectMetric(t, p.admin, "inbound_authz_deny_total",
				labels("protocol", "http", "policy", p.cfg.Authz.Name(), "target_port", port, "tls", "not_provided_by_remote"), 2)
		})
	}
}

// A client that connects to the admin port and sends nothing does not
// stop others from being served (detection runs per connection).
func TestAdminPortSilentClient(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	p := startProxy(t, Config{Identity: svc.Identity(t, "emojivoto", "web"), Authz: authz.Config{Default: authz.AllAuthenticated}})
	silent, err := net.Dial("tcp", p.admin)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + p.admin + "/live")
	if err != nil {
		t.Fatalf("/live behind a silent connection: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/live: %d", resp.StatusCode)
	}
}
