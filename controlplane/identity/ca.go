// Package identity is Meridian's certificate authority: it holds the trust
// anchor and the issuer, and serves Certify (api/proto/identity), which signs
// a proxy's CSR for the SPIFFE ID its proof of identity establishes.
package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meridian-mesh/meridian/internal/pemutil"
)

// DefaultLeafLifetime is how long a workload certificate is valid.
const DefaultLeafLifetime = 24 * time.Hour

// clockSkew back-dates certificates so that peers whose clocks run a little
// behind accept them at once.
const clockSkew = time.Minute

// CA is a trust anchor and the issuer that signs leaf certificates.
type CA struct {
	TrustDomain spiffeid.TrustDomain
	Roots       []*x509.Certificate // trust anchors
	Issuer      *x509.Certificate
	key         crypto.Signer
}

// RootsPEM returns the trust anchors, PEM-encoded (what proxies are given).
func (ca *CA) RootsPEM() []byte { return pemutil.EncodeCerts(ca.Roots) }

// Generate creates a trust anchor (valid 10 years) and an issuer signed by
// it (valid 1 year), both ECDSA P-256: local mode and the quick start.
func Generate(td spiffeid.TrustDomain) (*CA, error) {
	now := time.Now().Add(-clockSkew)
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	rootTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "root.meridian." + td.Name()},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, err
	}
	root, _ := x509.ParseCertificate(rootDER)
	issKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	issTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "issuer.meridian." + td.Name()},
		NotBefore:             now,
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	issDER, err := x509.CreateCertificate(rand.Reader, issTmpl, root, issKey.Public(), rootKey)
	if err != nil {
		return nil, err
	}
	iss, _ := x509.ParseCertificate(issDER)
	return &CA{TrustDomain: td, Roots: []*x509.Certificate{root}, Issuer: iss, key: issKey}, nil
}

// Load reads an issuer from a directory in the shape cert-manager writes a
// Secret: tls.crt (the issuer certificate, maybe followed by its chain),
// tls.key (its private key) and ca.crt (the trust anchors).
func Load(td spiffeid.TrustDomain, dir string) (*CA, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("identity issuer: %w", err)
		}
		return b, nil
	}
	crtPEM, err := read("tls.crt")
	if err != nil {
		return nil, err
	}
	keyPEM, err := read("tls.key")
	if err != nil {
		return nil, err
	}
	caPEM, err := read("ca.crt")
	if err != nil {
		return nil, err
	}
	return Parse(td, crtPEM, keyPEM, caPEM)
}

// Parse builds a CA from PEM: the issuer certificate, its key, the roots.
func Parse(td spiffeid.TrustDomain, crtPEM, keyPEM, caPEM []byte) (*CA, error) {
	crts, err := pemutil.Certs(crtPEM)
	if err != nil || len(crts) == 0 {
		return nil, fmt.Errorf("identity issuer: tls.crt: no certificate (%v)", err)
	}
	roots, err := pemutil.Certs(caPEM)
	if err != nil || len(roots) == 0 {
		return nil, fmt.Errorf("identity issuer: ca.crt: no certificate (%v)", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("identity issuer: tls.key: no PEM block")
	}
	key, err := pemutil.ParseKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("identity issuer: tls.key: %w", err)
	}
	iss := crts[0]
	if !iss.IsCA || iss.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("identity issuer: tls.crt is not a CA certificate allowed to sign certificates")
	}
	if !publicKeysEqual(key.Public(), iss.PublicKey) {
		return nil, errors.New("identity issuer: tls.key does not match tls.crt")
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range crts[1:] {
		inter.AddCert(c)
	}
	if _, err := iss.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("identity issuer: tls.crt does not chain to ca.crt: %w", err)
	}
	return &CA{TrustDomain: td, Roots: roots, Issuer: iss, key: key}, nil
}

// WriteDir writes the CA as Load reads it (tests, and `meridian demo` when
// asked to keep its issuer).
func (ca *CA) WriteDir(dir string) error {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Issuer.Raw}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		"ca.crt":  ca.RootsPEM(),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Issue signs a leaf certificate for id over pub, valid for lifetime.
// The chain returned is leaf then issuer.
func (ca *CA) Issue(id spiffeid.ID, pub crypto.PublicKey, lifetime time.Duration) (leaf *x509.Certificate, chain [][]byte, err error) {
	now := time.Now()
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.Issuer.NotAfter) {
		notAfter = ca.Issuer.NotAfter // never outlive the issuer
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Issuer, pub, ca.key)
	if err != nil {
		return nil, nil, err
	}
	leaf, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return leaf, [][]byte{der, ca.Issuer.Raw}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}
