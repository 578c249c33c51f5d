package launch

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	idpb "github.com/meridian-mesh/meridian/api/proto/identity"
	"github.com/meridian-mesh/meridian/controlplane/gateway/provision"
	"github.com/meridian-mesh/meridian/controlplane/identity"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/dstclient"
	"github.com/meridian-mesh/meridian/proxy/gateway"
	"github.com/meridian-mesh/meridian/proxy/gwclient"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
)

// The demo's Gateway (manifests/emojivoto.yaml), its listeners' ports and
// its certificate's Secret.
const (
	GatewayName      = "edge"
	GatewayHTTPSPort = 8443
	GatewayHTTPPort  = 8080
	gatewayCertName  = "edge-cert"
)

// GatewayWorkload is the gateway proxy's workload and service account: the
// name a Deployment of the Gateway has on Kubernetes, and the identity the
// gateway API lets read the Gateway's snapshot.
var GatewayWorkload = provision.Name(GatewayName)

// Gateway is the demo's running edge gateway.
type Gateway struct {
	Name  string
	HTTPS net.Addr // the HTTPS listener (GatewayHTTPSPort)
	HTTP  net.Addr // the HTTP listener, which redirects to HTTPS
	Admin net.Addr
	Proxy *gateway.Gateway
	// Identity is the gateway's workload identity (mTLS to web's proxy,
	// and its proof to the gateway API).
	Identity *tlsid.Identity
	// Roots trust the listener's self-signed certificate.
	Roots *x509.CertPool
}

// writeGatewayCert generates the HTTPS listener's self-signed certificate
// (localhost, 127.0.0.1, ::1) and writes it into dir as the Secret the
// Gateway names, so the local store reads it like any Secret. The private
// key exists only for the run: never in the repository.
func writeGatewayCert(dir string) (path string, roots *x509.CertPool, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		return "", nil, err
	}
	serial, err := crand.Int(crand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return "", nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "localhost", Organization: []string{"meridian demo"}},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// Self-signed: the certificate is its own trust anchor.
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return "", nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	y := fmt.Sprintf("# Written by meridian demo for this run: the edge gateway's self-signed certificate.\n"+
		"apiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: %s}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: %s\n  tls.key: %s\n",
		gatewayCertName, Namespace, base64.StdEncoding.EncodeToString(certPEM), base64.StdEncoding.EncodeToString(keyPEM))
	path = filepath.Join(dir, "demo-gateway-cert.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		return "", nil, err
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return path, roots, nil
}

// startGateway runs the edge gateway's proxy in-process, as
// `meridian-proxy gateway` runs on Kubernetes: it registers its workload
// (client-only: it is no endpoint of any service), obtains its identity
// with the registration's token, watches its Gateway's snapshot on the
// gateway API with that identity, and takes web's endpoints from the
// destination API. It returns once both listeners are open.
func (d *Demo) startGateway(ctx, startCtx context.Context, o Options, roots *x509.CertPool) error {
	name := GatewayWorkload
	log := o.Log.With("proxy", name)
	resolver := dstclient.New(d.cc, dstclient.Options{Token: Namespace + "/" + name, Log: log})
	spiffeID, err := identity.ID(d.CA.TrustDomain, Namespace, name)
	if err != nil {
		return err
	}
	id, err := tlsid.New(tlsid.Config{ID: spiffeID, Roots: d.CA.Roots, Client: idpb.NewIdentityClient(d.cc),
		Token: resolver.RegistrationToken, RetryMin: 50 * time.Millisecond, RetryMax: 2 * time.Second, Log: log})
	if err != nil {
		return err
	}
	d.goServe(name+" identity", func() error { id.Run(ctx); return nil })
	bind := map[uint32]string{GatewayHTTPSPort: o.GatewayAddr, GatewayHTTPPort: o.GatewayHTTPAddr}
	g, err := gateway.New(gateway.Config{
		Bind: func(p uint32) string {
			if a, ok := bind[p]; ok {
				return a
			}
			return "127.0.0.1:0" // a port the manifests were edited to add
		},
		AdminAddr: "127.0.0.1:0", Resolver: resolver, Balancer: balance.PeakEWMA, Identity: id,
		Namespace: Namespace, DrainTimeout: 2 * time.Second, Log: log,
		EventLoop: true, EventLoopH2: true, // as meridian-proxy's defaults
	})
	if err != nil {
		return fmt.Errorf("gateway proxy: %w", err)
	}
	gw := &Gateway{Name: name, Admin: g.AdminAddr(), Proxy: g, Identity: id, Roots: roots}
	d.Gateway = gw
	d.goServe(name+" proxy", func() error { return g.Run(ctx) })

	registered := make(chan struct{})
	var once sync.Once
	// The address is the admin listener's: a registration needs one, and
	// with no service it is nobody's endpoint.
	w := dstclient.Workload{Name: name, Namespace: Namespace, ServiceAccount: name, Address: gw.Admin.String(),
		Labels: map[string]string{"app": name}, Credential: d.credentials[name]}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		resolver.Register(ctx, w, func() { once.Do(func() { close(registered) }) })
	}()

	// The gateway API serves the snapshot (the certificate's key in it) to
	// the Gateway's identity only: the stream presents the gateway's
	// certificate, so it starts once there is one.
	apiID, err := identity.ID(d.CA.TrustDomain, ControllerNamespace, ControllerServiceAccount)
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient("passthrough:///"+d.Destination, dstclient.DialOptions(credentials.NewTLS(id.ClientConfig(apiID, "h2")))...)
	if err != nil {
		return err
	}
	d.cleanup = append(d.cleanup, func() { cc.Close() })
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		select {
		case <-id.Ready():
		case <-ctx.Done():
			return
		}
		gwclient.New(cc, gwclient.Options{Namespace: Namespace, Name: GatewayName, Token: Namespace + "/" + name, Log: log}).Run(ctx, g.Apply)
	}()

	for what, ch := range map[string]<-chan struct{}{"register with the control plane": registered, "obtain its certificate": id.Ready()} {
		if err := d.await(startCtx, ch, name+" did not "+what); err != nil {
			return err
		}
	}
	// Bounded: the first snapshot follows the certificate at once.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ports := g.Ports()
		if s, p := ports[GatewayHTTPSPort], ports[GatewayHTTPPort]; s != nil && p != nil {
			gw.HTTPS, gw.HTTP = s, p
			return nil
		}
		if time.Now().After(deadline) {
			diag := g.Diagnostics()
			return fmt.Errorf("the gateway did not open its listeners within 10s: the served directory needs the Gateway %s/%s "+
				"with listeners on ports %d and %d, as demo/launch/manifests/emojivoto.yaml has (serving: version %q, rejected %+v, refused %+v)",
				Namespace, GatewayName, GatewayHTTPSPort, GatewayHTTPPort, diag.Version, diag.Rejected, diag.Refused)
		}
		select {
		case err := <-d.errs:
			return err
		case <-startCtx.Done():
			return startCtx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// await waits for ch, a component's failure, ctx or 10s.
func (d *Demo) await(ctx context.Context, ch <-chan struct{}, what string) error {
	select {
	case <-ch:
		return nil
	case err := <-d.errs:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return errors.New(what + " within 10s")
	}
}

// Client is an HTTPS client of the gateway that trusts its self-signed
// certificate, and follows no redirect (the HTTP listener's are for
// browsers).
func (g *Gateway) Client(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout:       timeout,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: g.Roots, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
