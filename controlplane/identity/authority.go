package identity

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/internal/filewatch"
)

// CASource gives the CA to sign with now. A *CA is its own source; an
// *Authority is one whose issuer is replaced while the controller runs.
type CASource interface {
	Current() *CA
}

// Current returns ca itself.
func (ca *CA) Current() *CA { return ca }

// Authority holds the CA in use and replaces its issuer when the issuer
// Secret is renewed (cert-manager renews it well before it expires; the
// kubelet updates the mounted files about a minute later). The trust anchors
// never change under it: proxies hold the anchors they were injected with,
// so a new issuer must chain to those same anchors.
type Authority struct {
	cur atomic.Pointer[CA]
}

// NewAuthority returns an Authority signing with ca.
func NewAuthority(ca *CA) *Authority {
	a := &Authority{}
	a.cur.Store(ca)
	return a
}

// Current returns the CA in use.
func (a *Authority) Current() *CA { return a.cur.Load() }

// Replace makes next the CA in use, or says why it may not be: another
// trust domain, other trust anchors, an issuer not valid now. It reports
// whether the issuer changed.
func (a *Authority) Replace(next *CA, now time.Time) (bool, error) {
	cur := a.cur.Load()
	if next.TrustDomain != cur.TrustDomain {
		return false, fmt.Errorf("identity issuer: trust domain %q, not %q", next.TrustDomain.Name(), cur.TrustDomain.Name())
	}
	if !sameCerts(next.Roots, cur.Roots) {
		return false, errors.New("identity issuer: ca.crt holds other trust anchors than the ones proxies were given; " +
			"an issuer is renewed under the same anchors; to change the anchors, restart the controller, then the meshed workloads " +
			"(meridian check --proxy names the pods still on the old ones)")
	}
	if now.Before(next.Issuer.NotBefore) || !now.Before(next.Issuer.NotAfter) {
		return false, fmt.Errorf("identity issuer: tls.crt is valid from %s to %s, not now", next.Issuer.NotBefore.UTC().Format(time.RFC3339), next.Issuer.NotAfter.UTC().Format(time.RFC3339))
	}
	if bytes.Equal(next.Issuer.Raw, cur.Issuer.Raw) {
		return false, nil
	}
	a.cur.Store(next)
	return true, nil
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Raw, b[i].Raw) {
			return false
		}
	}
	return true
}

// IssuerFiles are the files of an issuer directory (a mounted Secret in
// the shape cert-manager writes).
var IssuerFiles = []string{"tls.crt", "tls.key", "ca.crt"}

// WatchDir reloads the issuer from dir, which Load reads, when its files
// change, looking every interval until ctx ends. A new issuer in use is
// reported to report with a nil error; a change that does not parse, or
// that Replace refuses, with the error, while the CA in use keeps signing. A change is read
// again before it is reported bad: the kubelet swaps a Secret's files at
// once, but a reader may straddle the swap.
func (a *Authority) WatchDir(ctx context.Context, dir string, interval time.Duration, report func(*CA, error)) {
	// Nothing seen yet: the first look loads the files and compares the
	// issuer with the one in use, so that a renewal between the caller's
	// Load and this call is not missed until the next one.
	look := func() (string, bool) { return readIssuerFiles(dir), true }
	filewatch.Poll(ctx, interval, "", look, func(files string) string {
		changed, err := a.load(dir)
		if err != nil {
			select {
			case <-ctx.Done():
				return files
			case <-time.After(min(interval, time.Second) / 2):
			}
			files = readIssuerFiles(dir)
			changed, err = a.load(dir)
		}
		if changed || err != nil {
			report(a.Current(), err)
		}
		return files
	})
}

func (a *Authority) load(dir string) (bool, error) {
	next, err := Load(a.Current().TrustDomain, dir)
	if err != nil {
		return false, err
	}
	return a.Replace(next, time.Now())
}

// readIssuerFiles is the files' contents, to see a change (a missing file
// reads as empty).
func readIssuerFiles(dir string) string {
	paths := make([]string, len(IssuerFiles))
	for i, f := range IssuerFiles {
		paths[i] = filepath.Join(dir, f)
	}
	return filewatch.Contents(paths...)
}
