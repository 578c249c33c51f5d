package check

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/internal/pemutil"
)

// issuerState is what the identity checks learn, for the later ones.
type issuerState struct {
	secret  *corev1.Secret
	anchors []*x509.Certificate
	issuer  *x509.Certificate
	chain   []*x509.Certificate // what follows the issuer in tls.crt
}

func identityChecks(o Options) []Check {
	ns := o.Namespace
	replace := fmt.Sprintf("replace Secret %s/%s (keys tls.crt, tls.key, ca.crt) with a valid trust anchor and issuer, e.g. from cert-manager; the controller takes a renewed issuer within a minute; new trust anchors need a restart of it (kubectl -n %s rollout restart deploy/%s) and then of the meshed workloads",
		ns, names.IssuerSecretName, ns, names.ControllerName)
	needSecret := func(s *State) error {
		if s.issuer.secret == nil {
			return Skip("no issuer Secret")
		}
		return nil
	}
	needAnchors := func(s *State) error {
		if len(s.issuer.anchors) == 0 {
			return Skip("no trust anchor parsed")
		}
		return nil
	}
	needIssuer := func(s *State) error {
		if s.issuer.issuer == nil {
			return Skip("no issuer certificate parsed")
		}
		return nil
	}
	return []Check{
		{
			Group:       GroupIdentity,
			Description: "issuer Secret exists",
			Hint:        installCommand + " (or create the Secret with cert-manager)",
			Retry:       true,
			Run: func(ctx context.Context, s *State) error {
				s.issuer = issuerState{}
				if err := s.needClient(); err != nil {
					return err
				}
				sec, err := s.Kube.CoreV1().Secrets(s.Namespace).Get(ctx, names.IssuerSecretName, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("no secret %s/%s", s.Namespace, names.IssuerSecretName)
				}
				if err != nil {
					return err
				}
				var missing []string
				for _, k := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey, "ca.crt"} {
					if len(sec.Data[k]) == 0 {
						missing = append(missing, k)
					}
				}
				if len(missing) > 0 {
					return fmt.Errorf("secret %s/%s has no %s", s.Namespace, names.IssuerSecretName, strings.Join(missing, ", "))
				}
				s.issuer.secret = sec
				return nil
			},
		},
		{
			Group:       GroupIdentity,
			Description: "trust anchors are valid CA certificates",
			Hint:        replace,
			Run: func(_ context.Context, s *State) error {
				if err := needSecret(s); err != nil {
					return err
				}
				certs, err := parseCertsPEM(s.issuer.secret.Data["ca.crt"])
				if err != nil {
					return fmt.Errorf("ca.crt: %w", err)
				}
				var probs []string
				for _, c := range certs {
					if !c.BasicConstraintsValid || !c.IsCA {
						probs = append(probs, fmt.Sprintf("trust anchor %s is not a CA certificate", certName(c)))
					}
				}
				if len(probs) > 0 {
					return joinProblems(probs)
				}
				s.issuer.anchors = certs
				return nil
			},
		},
		{
			Group:       GroupIdentity,
			Description: "trust anchors are within their validity period",
			Hint:        replace,
			Run: func(_ context.Context, s *State) error {
				if err := needAnchors(s); err != nil {
					return err
				}
				return validNow("trust anchor", s.issuer.anchors, s.now())
			},
		},
		{
			Group:       GroupIdentity,
			Description: "trust anchors are valid for at least 60 days",
			Hint:        "rotate the trust anchor before it expires: add the new one to ca.crt beside the old, then replace the issuer",
			Warning:     true,
			Run: func(_ context.Context, s *State) error {
				if err := needAnchors(s); err != nil {
					return err
				}
				return validFor("trust anchor", s.issuer.anchors, s.now(), expiryWarningWindow)
			},
		},
		{
			Group:       GroupIdentity,
			Description: "issuer certificate and key are valid",
			Hint:        replace,
			Run: func(_ context.Context, s *State) error {
				if err := needSecret(s); err != nil {
					return err
				}
				certs, err := parseCertsPEM(s.issuer.secret.Data[corev1.TLSCertKey])
				if err != nil {
					return fmt.Errorf("tls.crt: %w", err)
				}
				key, err := pemutil.Key(s.issuer.secret.Data[corev1.TLSPrivateKeyKey])
				if err != nil {
					return fmt.Errorf("tls.key: %w", err)
				}
				iss := certs[0]
				if !iss.BasicConstraintsValid || !iss.IsCA || iss.KeyUsage&x509.KeyUsageCertSign == 0 {
					return fmt.Errorf("issuer %s is not a CA certificate allowed to sign certificates (needs basicConstraints CA:TRUE and keyUsage certSign)", certName(iss))
				}
				if !publicKeysEqual(key.Public(), iss.PublicKey) {
					return fmt.Errorf("tls.key is not the key of the issuer certificate %s", certName(iss))
				}
				s.issuer.issuer, s.issuer.chain = iss, certs[1:]
				return nil
			},
		},
		{
			Group:       GroupIdentity,
			Description: "issuer certificate is within its validity period",
			Hint:        replace,
			Run: func(_ context.Context, s *State) error {
				if err := needIssuer(s); err != nil {
					return err
				}
				return validNow("issuer", []*x509.Certificate{s.issuer.issuer}, s.now())
			},
		},
		{
			Group:       GroupIdentity,
			Description: "issuer certificate is valid for at least 60 days",
			Hint:        "rotate the issuer before it expires (cert-manager renews it by itself)",
			Warning:     true,
			Run: func(_ context.Context, s *State) error {
				if err := needIssuer(s); err != nil {
					return err
				}
				return validFor("issuer", []*x509.Certificate{s.issuer.issuer}, s.now(), expiryWarningWindow)
			},
		},
		{
			Group:       GroupIdentity,
			Description: "issuer certificate is issued by the trust anchors",
			Hint:        replace,
			Run: func(_ context.Context, s *State) error {
				if err := needIssuer(s); err != nil {
					return err
				}
				if err := needAnchors(s); err != nil {
					return err
				}
				_, err := verifyChain(s.issuer.issuer, s.issuer.chain, s.issuer.anchors, s.now(), "", x509.ExtKeyUsageAny)
				if err != nil {
					return fmt.Errorf("issuer %s does not chain to the trust anchors in ca.crt: %w", certName(s.issuer.issuer), err)
				}
				return nil
			},
		},
	}
}

// parseCertsPEM parses every CERTIFICATE block; there must be one.
func parseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	out, err := pemutil.Certs(b)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return out, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}

// certName names a certificate in messages.
func certName(c *x509.Certificate) string {
	if n := c.Subject.String(); n != "" {
		return fmt.Sprintf("%q", n)
	}
	return fmt.Sprintf("with serial %x", c.SerialNumber)
}

// validNow fails when a certificate is expired or not valid yet.
func validNow(what string, certs []*x509.Certificate, now time.Time) error {
	var probs []string
	for _, c := range certs {
		switch {
		case now.After(c.NotAfter):
			probs = append(probs, fmt.Sprintf("%s %s expired %s (%s ago)", what, certName(c), c.NotAfter.UTC().Format(time.RFC3339), days(now.Sub(c.NotAfter))))
		case now.Before(c.NotBefore):
			probs = append(probs, fmt.Sprintf("%s %s is not valid before %s (in %s; is this machine's clock right?)", what, certName(c), c.NotBefore.UTC().Format(time.RFC3339), days(c.NotBefore.Sub(now))))
		}
	}
	return joinProblems(probs)
}

// validFor fails when a certificate expires within d.
func validFor(what string, certs []*x509.Certificate, now time.Time, d time.Duration) error {
	var probs []string
	for _, c := range certs {
		switch left := c.NotAfter.Sub(now); {
		case left < 0:
			probs = append(probs, fmt.Sprintf("%s %s has expired (%s)", what, certName(c), c.NotAfter.UTC().Format(time.RFC3339)))
		case left < d:
			probs = append(probs, fmt.Sprintf("%s %s expires %s (in %s)", what, certName(c), c.NotAfter.UTC().Format(time.RFC3339), days(left)))
		}
	}
	return joinProblems(probs)
}

// days rounds a duration for people: "3 days", "5h0m0s" under a day.
func days(d time.Duration) string {
	if d < 24*time.Hour {
		return d.Round(time.Minute).String()
	}
	n := int(math.Round(d.Hours() / 24))
	if n == 1 {
		return "1 day"
	}
	return fmt.Sprintf("%d days", n)
}

// verifyChain verifies leaf against roots at time now, through the
// intermediates, for dnsName (if set) and the key usage.
func verifyChain(leaf *x509.Certificate, intermediates, roots []*x509.Certificate, now time.Time, dnsName string, usage x509.ExtKeyUsage) ([][]*x509.Certificate, error) {
	rp := x509.NewCertPool()
	for _, r := range roots {
		rp.AddCert(r)
	}
	ip := x509.NewCertPool()
	for _, c := range intermediates {
		ip.AddCert(c)
	}
	return leaf.Verify(x509.VerifyOptions{Roots: rp, Intermediates: ip, CurrentTime: now, DNSName: dnsName, KeyUsages: []x509.ExtKeyUsage{usage}})
}
