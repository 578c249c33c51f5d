package launch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The edge gateway in front of web: the printed HTTPS address answers
// through gateway → web's proxy (mTLS with the gateway's own identity),
// with the certificate generated for the run (for 127.0.0.1 and
// localhost), HTTP is redirected to HTTPS, and the vote-bot's traffic is in
// the gateway's golden metrics with its gateway, listener, route and
// backend labels.
func TestDemoGateway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := Start(ctx, testOptions(50))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	gw := d.Gateway
	if d.URL != "https://"+gw.HTTPS.String() {
		t.Fatalf("URL %q, want the gateway's HTTPS listener %s", d.URL, gw.HTTPS)
	}
	c := gw.Client(10 * time.Second)

	resp, err := c.Get(d.URL + "/api/list")
	if err != nil {
		t.Fatal(err)
	}
	var list []map[string]string
	err = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(list) < 10 {
		t.Fatalf("GET %s/api/list: status %d, %d emojis, err %v", d.URL, resp.StatusCode, len(list), err)
	}
	if resp.TLS == nil || len(resp.TLS.VerifiedChains) == 0 {
		t.Fatalf("GET %s/api/list: no verified TLS", d.URL)
	}

	// The certificate names localhost too; a client without it as a
	// trust anchor refuses it.
	conn, err := tls.Dial("tcp", gw.HTTPS.String(), &tls.Config{ServerName: "localhost", RootCAs: gw.Roots})
	if err != nil {
		t.Fatalf("TLS to the gateway as localhost: %v", err)
	}
	conn.Close()
	_, err = (&http.Client{Timeout: 5 * time.Second}).Get(d.URL + "/")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("GET %s/ trusting only the system's roots: %v, want an unknown authority", d.URL, err)
	}

	// Plain HTTP: a permanent redirect to the HTTPS listener's port (the
	// Gateway's 8443, since the test's address is the system's choice).
	resp, err = c.Get("http://" + gw.HTTP.String() + "/api/list?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusMovedPermanently || loc != "https://127.0.0.1:8443/api/list?x=1" {
		t.Errorf("GET over HTTP: %d Location %q, want 301 to https://127.0.0.1:8443/api/list?x=1", resp.StatusCode, loc)
	}
	if diag := gw.Proxy.Diagnostics(); len(diag.Rejected) > 0 || len(diag.Refused) > 0 || diag.Gateway == "" {
		t.Errorf("the demo's Gateway: %+v", diag)
	}

	// The bot's traffic, through the gateway: in its metrics (bounded wait).
	var web *Service
	for _, s := range d.Services {
		if s.Name == "web" {
			web = s
		}
	}
	for {
		c, err := d.Inbound()
		if err != nil {
			t.Fatal(err)
		}
		if c[GatewayWorkload].Success >= 20 && c["web"].Success >= 20 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the bot's traffic did not pass through the gateway: %+v", c)
		}
		time.Sleep(50 * time.Millisecond)
	}
	metrics := func(addr net.Addr) string {
		resp, err := http.Get("http://" + addr.String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	gwm := metrics(gw.Admin)
	n := 0
	for _, l := range strings.Split(gwm, "\n") {
		if !strings.HasPrefix(l, "response_total{") {
			continue
		}
		n++
		// Every request went to web's proxy (the gateway is no endpoint
		// of web-svc), over mTLS with web's identity.
		for _, want := range []string{`backend="emojivoto/web-svc:80"`, `direction="outbound"`, `gateway="emojivoto/edge"`, `listener="https"`,
			`route="HTTPRoute/emojivoto/web/0"`, `server_id="spiffe://cluster.local/ns/emojivoto/sa/web"`, `tls="true"`,
			`target_addr="` + web.Inbound.String() + `"`} {
			if !strings.Contains(l, want) {
				t.Errorf("gateway series without %s: %s", want, l)
			}
		}
	}
	if n == 0 {
		t.Errorf("the gateway's /metrics has no response_total:\n%s", gwm)
	}
	if wm := metrics(web.Admin); !strings.Contains(wm, `client_id="spiffe://cluster.local/ns/emojivoto/sa/edge-meridian",direction="inbound"`) {
		t.Errorf("web's proxy saw no mTLS client edge-meridian:\n%s", wm)
	}

	d.Stop()
	sent, failed := d.Bot.Stats()
	if sent == 0 || float64(failed) > 0.2*float64(sent) {
		t.Errorf("bot sent %d requests through the gateway, %d failed", sent, failed)
	}
}

// The redirect of the demo's own manifests follows --gateway-addr's port.
func TestRedirectPort(t *testing.T) {
	b, err := manifests.ReadFile("manifests/emojivoto.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{
		"127.0.0.1:9443": "port: 9443, statusCode: 301", "127.0.0.1:8443": "port: 8443, statusCode: 301",
		"127.0.0.1:0": "port: 8443, statusCode: 301", "localhost:9443": "port: 9443, statusCode: 301",
	} {
		got, err := redirectPort(b, addr)
		if err != nil || !strings.Contains(string(got), want) {
			t.Errorf("%s: %v, want %q", addr, err, want)
		}
	}
	for _, addr := range []string{"127.0.0.1", "127.0.0.1:https4", "127.0.0.1:70000"} {
		if _, err := redirectPort(b, addr); err == nil || !strings.Contains(err.Error(), addr) {
			t.Errorf("%s: %v, want an error naming it", addr, err)
		}
	}
}
