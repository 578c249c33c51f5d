package sidecar

import (
	"net/http"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// Issue 11: /ready stayed true with an expired certificate while every new
// mTLS connection failed. Once the certificate expires during an outage of
// the identity service the proxy is not ready, /metrics shows the expiry
// and the failed renewals, and it is ready again with a new certificate.
func TestNotReadyOnceCertificateExpired(t *testing.T) {
	svc := tlsidtest.Start(t, time.Second)
	app := startHTTP(t, whoCalled())
	p := startProxy(t, Config{InboundForward: app.addr, Identity: svc.Identity(t, "emojivoto", "emoji")})
	eventually(t, "/ready with a certificate", func() bool { return ready(p.admin) == http.StatusOK })
	svc.Down.Store(true)
	eventually(t, "/ready fails once the certificate expired", func() bool { return ready(p.admin) != http.StatusOK })

	fams := scrape(t, p.admin)
	exp, n := metricSum(fams, "identity_cert_expiration_timestamp_seconds", nil)
	if n != 1 || exp <= 0 || exp > float64(time.Now().Unix())+1 {
		t.Fatalf("identity_cert_expiration_timestamp_seconds = %v (%d series), want the past expiry", exp, n)
	}
	if f, _ := metricSum(fams, "identity_cert_refresh_failures_total", nil); f < 1 {
		t.Fatalf("identity_cert_refresh_failures_total = %v during an outage", f)
	}
	if r, _ := metricSum(fams, "identity_cert_refresh_count", nil); r < 1 {
		t.Fatalf("identity_cert_refresh_count = %v", r)
	}

	svc.Down.Store(false)
	eventually(t, "/ready once renewed", func() bool { return ready(p.admin) == http.StatusOK })
	if exp2, _ := metricSum(scrape(t, p.admin), "identity_cert_expiration_timestamp_seconds", nil); exp2 <= exp {
		t.Fatalf("expiry %v after renewal, was %v", exp2, exp)
	}
}
