package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	proxygw "github.com/meridian-mesh/meridian/proxy/gateway"
)

// servedCA is a CA ConfigMap as the suite's MustCreateCACertConfigMap
// makes it, with a client certificate it signed
// (MustCreateCASignedClientCertSecret).
type servedCA struct {
	cm     *corev1.ConfigMap
	client tls.Certificate
}

func newServedCA(t *testing.T, name string) servedCA {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, clientKey := key(), key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	clTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "client of " + name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	clDER, err := x509.CreateCertificate(rand.Reader, clTmpl, ca, &clientKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return servedCA{
		cm: &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: infra, Name: name},
			Data: map[string]string{"ca.crt": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))}},
		client: tls.Certificate{Certificate: [][]byte{clDER}, PrivateKey: clientKey},
	}
}

// TestFrontendServed compiles the upstream GatewayFrontendClientCertificateValidation
// and ...InsecureFallback tests' manifests, serves the snapshot with the
// gateway proxy on loopback (the Gateway's ports 443 and 8443 bound to
// free ones) and makes those tests' requests as their TLS client does:
// the server certificate as the only root, the client certificate
// presented whenever the gateway asks (which it must), or none.
func TestFrontendServed(t *testing.T) {
	for _, tc := range []struct {
		file, gw string
		insecure bool
	}{
		{"gateway-with-clientcertificate-validation.yaml", "client-validation-default", false},
		{"gateway-with-clientcertificate-validation-insecure-fallback.yaml", "client-validation-insecure-fallback", true},
	} {
		t.Run(tc.gw, func(t *testing.T) {
			def, perPort := newServedCA(t, "tls-validity-checks-ca-certificate"), newServedCA(t, "tls-validity-checks-per-port-ca-certificate")
			crt, pk := certPEM(t, "*", "*.org", "*.wildcard.org")
			server := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: infra, Name: "tls-validity-checks-certificate"}, Type: corev1.SecretTypeTLS,
				Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: pk}}
			in := add(load(t, "conformance/manifests.yaml", "conformance/"+tc.file), server, def.cm, perPort.cm)
			r := Compile(in, key(infra, tc.gw), Options{})

			var dests []discover.Destination
			for _, name := range []string{"infra-backend-v1", "infra-backend-v2"} {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }))
				t.Cleanup(srv.Close)
				dests = append(dests, discover.Destination{Authority: name + "." + infra + ".svc.cluster.local:8080", Endpoints: []discover.Endpoint{{Addr: srv.Listener.Addr().String()}}})
			}
			res, err := discover.NewStatic(dests)
			if err != nil {
				t.Fatal(err)
			}
			bound := map[uint32]string{443: freeAddr(t), 8443: freeAddr(t)}
			g, err := proxygw.New(proxygw.Config{
				Bind:      func(p uint32) string { return bound[p] },
				AdminAddr: "127.0.0.1:0", Resolver: res, Balancer: balance.RoundRobin,
				DrainTimeout: 2 * time.Second, Log: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := g.Apply(r.Snapshot); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { g.Run(ctx); close(done) }()
			t.Cleanup(func() { cancel(); <-done })

			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(crt)
			request := func(port uint32, host string, cert *tls.Certificate) (string, bool, error) {
				asked := false
				cfg := &tls.Config{ServerName: host, RootCAs: roots, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
					asked = true
					if cert == nil {
						return &tls.Certificate{}, nil
					}
					return cert, nil
				}}
				tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
				defer tr.CloseIdleConnections()
				req, _ := http.NewRequest("GET", "https://"+bound[port]+"/", nil)
				req.Host = host
				resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
				if err != nil {
					return "", asked, err
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 {
					return "", asked, fmt.Errorf("status %s", resp.Status)
				}
				return string(b), asked, nil
			}
			for _, c := range []struct {
				name string
				port uint32
				host string
				cert *tls.Certificate
				want string // the backend; "" refused unless insecure
			}{
				{"default: its client", 443, "example.org", &def.client, "infra-backend-v1"},
				{"default: the per-port client", 443, "example.org", &perPort.client, ""},
				{"default: no certificate", 443, "example.org", nil, ""},
				{"per port: its client", 8443, "second-example.org", &perPort.client, "infra-backend-v2"},
				{"per port: the default's client", 8443, "second-example.org", &def.client, ""},
				{"per port: no certificate", 8443, "second-example.org", nil, ""},
			} {
				want := c.want
				if want == "" && tc.insecure {
					want = map[uint32]string{443: "infra-backend-v1", 8443: "infra-backend-v2"}[c.port]
				}
				got, asked, err := request(c.port, c.host, c.cert)
				switch {
				case !asked:
					t.Errorf("%s: the gateway did not ask for a client certificate", c.name)
				case want == "" && err == nil:
					t.Errorf("%s: served by %s, want refused", c.name, got)
				case want != "" && (err != nil || got != want):
					t.Errorf("%s: %q, %v; want served by %s", c.name, got, err, want)
				}
			}
		})
	}
}

// freeAddr is a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}
