package launch

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/demo/voting"
)

// testOptions are the demo's, with every listener on a port of the
// system's choosing.
func testOptions(voteRate float64) Options {
	return Options{WebAddr: "127.0.0.1:0", GatewayAddr: "127.0.0.1:0", GatewayHTTPAddr: "127.0.0.1:0", VoteRate: voteRate}
}

// The demo brought up end to end: web's proxy answers a plaintext client,
// web reaches emoji and voting through proxies, the bot's traffic (through
// the gateway) shows up in every proxy's golden metrics, and the
// deliberate voting failure is counted as a failure.
func TestDemoMeshed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := Start(ctx, testOptions(50))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			d.Stop()
		}
	}()

	resp, err := http.Get(d.WebURL + "/api/list")
	if err != nil {
		t.Fatal(err)
	}
	var list []map[string]string
	err = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(list) < 10 {
		t.Fatalf("GET /api/list through the web proxy: status %d, %d emojis, err %v", resp.StatusCode, len(list), err)
	}

	// The deliberately failing vote: 500 at web, a gRPC failure at voting's proxy.
	resp, err = http.Post(d.WebURL+"/api/vote?choice="+url.QueryEscape(voting.FailingShortcode), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("vote :poop: = %d, want 500", resp.StatusCode)
	}

	// Wait (bounded) until the bot's traffic has passed through every proxy.
	for {
		c, err := d.Inbound()
		if err != nil {
			t.Fatal(err)
		}
		if c["web"].Success >= 20 && c["emoji"].Success >= 20 && c["voting"].Success >= 5 && c["voting"].Failure >= 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("traffic did not reach every service: %+v", c)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Every hop between proxies was mutual TLS.
	for _, s := range d.Services {
		in, out := s.Proxy.MTLSHandshakes()
		switch s.Name {
		case "emoji", "voting":
			if in == 0 {
				t.Errorf("%s proxy accepted no mTLS connection", s.Name)
			}
		case "web":
			if in == 0 || out == 0 {
				t.Errorf("web proxy: %d mTLS accepted, %d originated", in, out)
			}
		}
		if !s.Identity.HasCert() {
			t.Errorf("%s proxy has no certificate", s.Name)
		}
	}

	// The same numbers are on the admin endpoint in Prometheus text.
	var votingSvc *Service
	for _, s := range d.Services {
		if s.Name == "voting" {
			votingSvc = s
		}
	}
	resp, err = http.Get("http://" + votingSvc.Admin.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), `classification="failure",client_id="spiffe://cluster.local/ns/emojivoto/sa/web",direction="inbound"`) ||
		!strings.Contains(string(body), `tls="true"`) {
		t.Errorf("voting proxy /metrics has no inbound failure series over mTLS from web:\n%s", string(body))
	}

	d.Stop()
	stopped = true
	sent, failed := d.Bot.Stats()
	if sent == 0 || float64(failed) > 0.2*float64(sent) {
		t.Errorf("bot sent %d requests, %d failed", sent, failed)
	}
	if _, err := http.Get(d.WebURL + "/healthz"); err == nil {
		t.Errorf("web proxy still answers after Stop")
	}
}
