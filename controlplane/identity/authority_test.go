package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/meridian-mesh/meridian/api/proto/identity"
	"github.com/meridian-mesh/meridian/controlplane/identity"
)

type pair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serialN atomic.Int64

// newCA makes a CA certificate signed by parent (self-signed when nil).
func newCA(t *testing.T, name string, parent *pair, notBefore, notAfter time.Time) pair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serialN.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: notBefore, NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return pair{c, key}
}

func (p pair) keyPEM(t *testing.T) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(p.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// writeSecretDir lays the files out as the kubelet does for a mounted
// Secret, and updates them as it does: a new timestamped directory, the
// ..data symlink swapped by rename, the file names symlinks into ..data.
func writeSecretDir(t *testing.T, dir string, crt, key, ca []byte) {
	t.Helper()
	ts := filepath.Join(dir, fmt.Sprintf("..%d", serialN.Add(1)))
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"tls.crt": crt, "tls.key": key, "ca.crt": ca} {
		if err := os.WriteFile(filepath.Join(ts, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, name := range identity.IssuerFiles {
		if _, err := os.Lstat(filepath.Join(dir, name)); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// A renewed issuer in the mounted Secret is taken without a restart, and
// the next certificates chain through it; a renewal that is broken, under
// other trust anchors, or not valid now is refused with a reason while the
// issuer in use keeps signing.
func TestAuthorityRenewsIssuerFromDir(t *testing.T) {
	now := time.Now()
	root := newCA(t, "root", nil, now.Add(-time.Hour), now.Add(3650*24*time.Hour))
	first := newCA(t, "issuer-1", &root, now.Add(-time.Hour), now.Add(48*time.Hour))
	rootPEM := mustPEM(root.cert)
	dir := t.TempDir()
	writeSecretDir(t, dir, mustPEM(first.cert), first.keyPEM(t), rootPEM)
	ca, err := identity.Load(td, dir)
	if err != nil {
		t.Fatal(err)
	}
	auth := identity.NewAuthority(ca)
	srv := localServer(t, auth, 0)

	type report struct {
		ca  *identity.CA
		err error
	}
	reports := make(chan report, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		auth.WatchDir(ctx, dir, 20*time.Millisecond, func(ca *identity.CA, err error) { reports <- report{ca, err} })
	}()
	defer func() { cancel(); <-done }()
	next := func() report {
		t.Helper()
		select {
		case r := <-reports:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no reload reported within 10s")
		}
		return report{}
	}
	// certify returns the issuer a new leaf chains through, verified
	// against the trust anchor.
	certify := func() *x509.Certificate {
		t.Helper()
		const id = "spiffe://cluster.local/ns/emojivoto/sa/web"
		der, _ := csr(t, id)
		resp, err := srv.Certify(context.Background(), &pb.CertifyRequest{Identity: id, Token: []byte("good"), CertificateSigningRequest: der})
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(resp.LeafCertificate)
		if err != nil {
			t.Fatal(err)
		}
		inter, err := x509.ParseCertificate(resp.IntermediateCertificates[0])
		if err != nil {
			t.Fatal(err)
		}
		roots, inters := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(root.cert)
		inters.AddCert(inter)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("leaf does not verify against the trust anchor: %v", err)
		}
		return inter
	}
	if got := certify(); !got.Equal(first.cert) {
		t.Fatalf("signed by %s, want issuer-1", got.Subject)
	}

	// cert-manager renews the issuer (a new key) under the same root.
	second := newCA(t, "issuer-2", &root, now.Add(-time.Minute), now.Add(48*time.Hour))
	writeSecretDir(t, dir, mustPEM(second.cert), second.keyPEM(t), rootPEM)
	if r := next(); r.err != nil || !r.ca.Issuer.Equal(second.cert) {
		t.Fatalf("renewal: issuer %s, err %v", r.ca.Issuer.Subject, r.err)
	}
	if got := certify(); !got.Equal(second.cert) {
		t.Fatalf("after the renewal, signed by %s, want issuer-2", got.Subject)
	}

	refused := func(what string, crt, key, ca []byte, want string) {
		t.Helper()
		writeSecretDir(t, dir, crt, key, ca)
		r := next()
		if r.err == nil || !strings.Contains(r.err.Error(), want) {
			t.Fatalf("%s: err %v, want %q", what, r.err, want)
		}
		if !auth.Current().Issuer.Equal(second.cert) {
			t.Fatalf("%s: the issuer in use changed to %s", what, auth.Current().Issuer.Subject)
		}
		if got := certify(); !got.Equal(second.cert) {
			t.Fatalf("%s: signed by %s, want issuer-2 still", what, got.Subject)
		}
	}
	third := newCA(t, "issuer-3", &root, now.Add(-time.Minute), now.Add(48*time.Hour))
	refused("a key of another certificate", mustPEM(third.cert), second.keyPEM(t), rootPEM, "tls.key does not match tls.crt")
	otherRoot := newCA(t, "other-root", nil, now.Add(-time.Hour), now.Add(3650*24*time.Hour))
	stranger := newCA(t, "stranger", &otherRoot, now.Add(-time.Minute), now.Add(48*time.Hour))
	refused("other trust anchors", mustPEM(stranger.cert), stranger.keyPEM(t), mustPEM(otherRoot.cert), "other trust anchors than the ones proxies were given")
	expired := newCA(t, "expired", &root, now.Add(-48*time.Hour), now.Add(-time.Hour))
	refused("an expired issuer", mustPEM(expired.cert), expired.keyPEM(t), rootPEM, "has expired")
	refused("no key", mustPEM(third.cert), nil, rootPEM, "tls.key")

	// A good renewal after the refusals is taken.
	writeSecretDir(t, dir, mustPEM(third.cert), third.keyPEM(t), rootPEM)
	if r := next(); r.err != nil || !r.ca.Issuer.Equal(third.cert) {
		t.Fatalf("renewal after refusals: issuer %s, err %v", r.ca.Issuer.Subject, r.err)
	}
	if got := certify(); !got.Equal(third.cert) {
		t.Fatalf("signed by %s, want issuer-3", got.Subject)
	}
}
