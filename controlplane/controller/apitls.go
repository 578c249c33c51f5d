package controller

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meridian-mesh/meridian/controlplane/identity"
)

// apiCert is the controller's own certificate for its gRPC API (destination
// and identity): a SPIFFE leaf issued by the identity CA, so proxies verify
// the control plane with the same trust anchors as their peers, and service
// account tokens never cross the network in plaintext. It is reissued,
// with a new key, once 70% of its lifetime has passed; handshakes in
// flight keep the certificate they started with.
type apiCert struct {
	ca       identity.CASource // the issuer may be renewed meanwhile
	id       spiffeid.ID
	lifetime time.Duration
	now      func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	renewAt time.Time
}

func newAPICert(ca identity.CASource, id string, lifetime time.Duration) (*apiCert, error) {
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return nil, fmt.Errorf("--api-identity %q: %w", id, err)
	}
	if td := ca.Current().TrustDomain; sid.TrustDomain() != td {
		return nil, fmt.Errorf("--api-identity %q: trust domain %q is not the identity issuer's %q", id, sid.TrustDomain().Name(), td.Name())
	}
	if lifetime <= 0 {
		lifetime = 24 * time.Hour
	}
	c := &apiCert{ca: ca, id: sid, lifetime: lifetime, now: time.Now}
	if _, err := c.get(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *apiCert) get() (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cert != nil && c.now().Before(c.renewAt) {
		return c.cert, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leaf, chain, err := c.ca.Current().Issue(c.id, key.Public(), c.lifetime)
	if err != nil {
		if c.cert != nil {
			return c.cert, nil // keep serving on the old one
		}
		return nil, fmt.Errorf("issuing the API certificate for %s: %w", c.id, err)
	}
	c.cert = &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
	c.renewAt = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 7 / 10)
	return c.cert, nil
}

// tlsConfig serves the API over TLS 1.3. Proxies need present no client
// certificate: the identity API's proof is the token, and destination
// answers are not secret. A gateway proxy presents its workload
// certificate, verified against the trust anchors roots, to read its
// Gateway's snapshot (which carries private keys).
func (c *apiCert) tlsConfig(roots []*x509.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     []string{"h2"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.get() },
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      pool,
	}
}
