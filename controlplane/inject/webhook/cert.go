package webhook

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"sync/atomic"
	"time"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/internal/pemutil"
)

// Lifetimes of the serving certificate.
const (
	CertLifetime = 365 * 24 * time.Hour
	// RenewBefore: a certificate this close to its expiry is replaced.
	RenewBefore = 30 * 24 * time.Hour
	// DefaultResync is how often Run reads the Secret and the webhook
	// configuration again.
	DefaultResync = time.Minute
	clockSkew     = time.Minute
)

// Certs keeps the webhook's serving certificate: a self-signed CA and a
// leaf for the webhook Service's names, in a kubernetes.io/tls Secret
// (tls.crt, tls.key, ca.crt) that every replica shares, and the CA in the
// caBundle of every webhook of the MutatingWebhookConfiguration.
//
// Sync creates the Secret when it is missing (a replica that loses the
// race reads the winner's), replaces the certificate when it is within
// RenewBefore of expiry, does not cover Hosts or does not parse (ca.crt then
// keeps the previous CA as well, so that replicas still serving the old leaf
// stay trusted until they reload), and patches the caBundles that differ
// from ca.crt.
type Certs struct {
	Client        kubernetes.Interface
	Namespace     string
	Secret        string // e.g. meridian-proxy-injector-tls
	WebhookConfig string // e.g. meridian-proxy-injector; empty: no caBundle to keep
	// CRDClient and CRDs: CustomResourceDefinitions whose conversion
	// webhook (spec.conversion.webhook.clientConfig) this server also
	// answers, and whose caBundle is kept the same way. A CRD that is
	// missing, or does not convert with a webhook, is left alone.
	CRDClient apiextensionsclient.Interface
	CRDs      []string
	Hosts     []string // DNS names and IP addresses the leaf must cover; the first is its CN
	Log       *slog.Logger
	Now       func() time.Time // default time.Now

	cur atomic.Pointer[servingCert]
}

type servingCert struct {
	cert  *tls.Certificate
	leaf  *x509.Certificate
	caPEM []byte
}

func (c *Certs) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Certs) log() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.New(slog.DiscardHandler)
}

// GetCertificate is the tls.Config hook: the current leaf.
func (c *Certs) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s := c.cur.Load()
	if s == nil {
		return nil, errors.New("webhook: no serving certificate yet")
	}
	return s.cert, nil
}

// CABundle is the PEM the webhook configuration should trust (nil before
// the first Sync).
func (c *Certs) CABundle() []byte {
	if s := c.cur.Load(); s != nil {
		return s.caPEM
	}
	return nil
}

// ErrNoWebhookConfig is Sync's error when the certificate is in place but
// the MutatingWebhookConfiguration does not exist (yet: install applies it
// with the controller).
var ErrNoWebhookConfig = errors.New("webhook: no MutatingWebhookConfiguration to give the CA to")

// Sync makes the Secret hold a usable certificate, serves it, and writes
// its CA into the webhook configuration and the CRDs' conversion webhooks.
func (c *Certs) Sync(ctx context.Context) error {
	s, err := c.syncSecret(ctx)
	if err != nil {
		return err
	}
	c.serve(s)
	// Both, even when the webhook configuration is not there yet; a CRD
	// that failed is the error to report (Run only waits quietly for a
	// missing configuration, ErrNoWebhookConfig alone).
	werr := c.patchCABundle(ctx, s.caPEM)
	if cerr := c.patchCRDs(ctx, s.caPEM); cerr != nil {
		return errors.Join(cerr, werr)
	}
	return werr
}

// ErrNoSecret is Load's error when the Secret does not exist or holds no
// usable certificate (yet: the leader makes it).
var ErrNoSecret = errors.New("webhook: no usable serving certificate in the secret yet")

// Load serves the certificate the Secret holds, if it is usable (even when
// it is due for renewal: the leader renews it), and writes nothing: it is
// what replicas that are not the leader run (see Follow).
func (c *Certs) Load(ctx context.Context) error {
	sec, err := c.Client.CoreV1().Secrets(c.Namespace).Get(ctx, c.Secret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return ErrNoSecret
	}
	if err != nil {
		return fmt.Errorf("webhook: reading secret %s/%s: %w", c.Namespace, c.Secret, err)
	}
	p, why := c.parse(sec.Data)
	if p.servingCert == nil {
		return fmt.Errorf("%w (secret %s/%s: %s)", ErrNoSecret, c.Namespace, c.Secret, why)
	}
	c.serve(p.servingCert)
	return nil
}

// serve makes s the certificate handshakes get.
func (c *Certs) serve(s *servingCert) {
	if old := c.cur.Load(); old == nil || !bytes.Equal(old.leaf.Raw, s.leaf.Raw) {
		c.log().Info("webhook: serving certificate loaded", "secret", c.Namespace+"/"+c.Secret, "expires", s.leaf.NotAfter.Format(time.RFC3339))
	}
	c.cur.Store(s)
}

func (c *Certs) syncSecret(ctx context.Context) (*servingCert, error) {
	secrets := c.Client.CoreV1().Secrets(c.Namespace)
	for range 5 {
		sec, err := secrets.Get(ctx, c.Secret, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			data, s, err := c.generate(nil)
			if err != nil {
				return nil, err
			}
			sec = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: c.Secret, Namespace: c.Namespace,
					Labels: map[string]string{names.LabelPartOf: names.PartOf}},
				Type: corev1.SecretTypeTLS,
				Data: data,
			}
			_, err = secrets.Create(ctx, sec, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				continue // another replica made it: use theirs
			}
			if err != nil {
				return nil, fmt.Errorf("webhook: creating secret %s/%s: %w", c.Namespace, c.Secret, err)
			}
			c.log().Info("webhook: created the serving certificate", "secret", c.Namespace+"/"+c.Secret)
			return s, nil
		}
		if err != nil {
			return nil, fmt.Errorf("webhook: reading secret %s/%s: %w", c.Namespace, c.Secret, err)
		}
		p, why := c.parse(sec.Data)
		if why == "" {
			return p.servingCert, nil
		}
		data, s, err := c.generate(p.cas)
		if err != nil {
			return nil, err
		}
		sec.Data = data
		_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			continue // another replica renewed it: read again
		}
		if err != nil {
			return nil, fmt.Errorf("webhook: renewing secret %s/%s: %w", c.Namespace, c.Secret, err)
		}
		c.log().Info("webhook: renewed the serving certificate", "secret", c.Namespace+"/"+c.Secret, "why", why)
		return s, nil
	}
	return nil, fmt.Errorf("webhook: secret %s/%s keeps changing under us", c.Namespace, c.Secret)
}

type parsed struct {
	*servingCert                     // set when the certificate can be served, even if it is to be replaced
	cas          []*x509.Certificate // ca.crt's certificates still valid
}

// parse reads a Secret's data; why says why it must be replaced ("" when it
// is good, and servingCert is then set).
func (c *Certs) parse(data map[string][]byte) (*parsed, string) {
	now := c.now()
	var cas []*x509.Certificate
	all, _ := pemutil.Certs(data["ca.crt"]) // one bad certificate must not hide the good ones
	for _, crt := range all {
		if crt.IsCA && now.Before(crt.NotAfter) {
			cas = append(cas, crt)
		}
	}
	pc := &parsed{cas: cas}
	cert, err := tls.X509KeyPair(data["tls.crt"], data["tls.key"])
	if err != nil {
		return pc, "tls.crt and tls.key: " + err.Error()
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return pc, "tls.crt: " + err.Error()
		}
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return pc, "tls.crt does not verify with ca.crt: " + err.Error()
	}
	// Usable from here on (Load serves it while the leader renews it).
	pc.servingCert = &servingCert{cert: &cert, leaf: leaf, caPEM: data["ca.crt"]}
	if leaf.NotAfter.Sub(now) < RenewBefore {
		return pc, "expires " + leaf.NotAfter.Format(time.RFC3339)
	}
	for _, h := range c.Hosts {
		if leaf.VerifyHostname(h) != nil {
			return pc, "does not cover " + h
		}
	}
	return pc, ""
}

// generate makes a CA and a leaf for Hosts; ca.crt is the new CA followed
// by keep (the previous CAs, trusted until the replicas reload).
func (c *Certs) generate(keep []*x509.Certificate) (map[string][]byte, *servingCert, error) {
	now := c.now().Add(-clockSkew)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	cn := "meridian-proxy-injector"
	if len(c.Hosts) > 0 {
		cn = c.Hosts[0]
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "meridian-proxy-injector-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(CertLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now,
		NotAfter:     now.Add(CertLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range c.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			leafTmpl.IPAddresses = append(leafTmpl.IPAddresses, ip)
		} else {
			leafTmpl.DNSNames = append(leafTmpl.DNSNames, h)
		}
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	var caPEM bytes.Buffer
	_ = pem.Encode(&caPEM, &pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	for _, k := range keep {
		if !bytes.Equal(k.Raw, caDER) {
			_ = pem.Encode(&caPEM, &pem.Block{Type: "CERTIFICATE", Bytes: k.Raw})
		}
	}
	crtPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	cert, err := tls.X509KeyPair(crtPEM, keyPEM)
	if err != nil {
		return nil, nil, err
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	data := map[string][]byte{"tls.crt": crtPEM, "tls.key": keyPEM, "ca.crt": caPEM.Bytes()}
	return data, &servingCert{cert: &cert, leaf: leaf, caPEM: caPEM.Bytes()}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// patchCABundle writes caPEM into every webhook of the configuration whose
// caBundle differs, with a JSON patch that tests each webhook's name (the
// list may have changed since it was read).
func (c *Certs) patchCABundle(ctx context.Context, caPEM []byte) error {
	if c.WebhookConfig == "" {
		return nil
	}
	api := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	var err error
	for range 5 {
		var cfg *admissionregv1.MutatingWebhookConfiguration
		cfg, err = api.Get(ctx, c.WebhookConfig, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return ErrNoWebhookConfig
		}
		if err != nil {
			return fmt.Errorf("webhook: reading MutatingWebhookConfiguration %s: %w", c.WebhookConfig, err)
		}
		var ops []map[string]any
		for i, wh := range cfg.Webhooks {
			if bytes.Equal(wh.ClientConfig.CABundle, caPEM) {
				continue
			}
			ops = append(ops,
				map[string]any{"op": "test", "path": fmt.Sprintf("/webhooks/%d/name", i), "value": wh.Name},
				map[string]any{"op": "add", "path": fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), "value": caPEM})
		}
		if len(ops) == 0 {
			return nil
		}
		patch, _ := json.Marshal(ops)
		if _, err = api.Patch(ctx, c.WebhookConfig, types.JSONPatchType, patch, metav1.PatchOptions{}); err == nil {
			c.log().Info("webhook: patched the caBundle", "config", c.WebhookConfig, "webhooks", len(ops)/2)
			return nil
		}
	}
	return fmt.Errorf("webhook: patching the caBundle of %s: %w", c.WebhookConfig, err)
}

// patchCRDs writes caPEM into the conversion webhook of each of CRDs whose
// caBundle differs, with a JSON patch that tests the strategy is still
// Webhook (it may have been re-applied since it was read).
func (c *Certs) patchCRDs(ctx context.Context, caPEM []byte) error {
	if c.CRDClient == nil {
		return nil
	}
	api := c.CRDClient.ApiextensionsV1().CustomResourceDefinitions()
	var errs []error
	for _, name := range c.CRDs {
		var err error
		for range 5 {
			var crd *apiextensionsv1.CustomResourceDefinition
			crd, err = api.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				// Not installed (yet: Run comes back every resync).
				c.log().Debug("webhook: no CustomResourceDefinition to give the CA to", "crd", name)
				err = nil
				break
			}
			if err != nil {
				err = fmt.Errorf("webhook: reading CustomResourceDefinition %s: %w", name, err)
				break
			}
			conv := crd.Spec.Conversion
			if conv == nil || conv.Strategy != apiextensionsv1.WebhookConverter || conv.Webhook == nil || conv.Webhook.ClientConfig == nil {
				// Installed without our conversion (another project's
				// CRD): not ours to change.
				c.log().Debug("webhook: CustomResourceDefinition does not convert with a webhook: caBundle not kept", "crd", name)
				break
			}
			if bytes.Equal(conv.Webhook.ClientConfig.CABundle, caPEM) {
				break
			}
			patch, _ := json.Marshal([]map[string]any{
				{"op": "test", "path": "/spec/conversion/strategy", "value": apiextensionsv1.WebhookConverter},
				{"op": "add", "path": "/spec/conversion/webhook/clientConfig/caBundle", "value": caPEM},
			})
			if _, err = api.Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{}); err == nil {
				c.log().Info("webhook: patched the conversion caBundle", "crd", name)
				break
			}
			err = fmt.Errorf("webhook: patching the conversion caBundle of CustomResourceDefinition %s: %w", name, err)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Run keeps the certificate and the caBundle until ctx ends: it syncs at
// once and again every resync (default DefaultResync), which picks up
// another replica's renewal, renews in time and restores a caBundle that a
// re-applied configuration lost; failures, and a configuration not there
// yet, are retried with backoff (1s doubling to 30s). It
// polls rather than watches so that it needs only get (and patch) on the
// objects it keeps (the chart's RBAC names them).
func (c *Certs) Run(ctx context.Context, resync time.Duration) {
	c.loop(ctx, resync, c.Sync, 30*time.Second, func(err error, backoff time.Duration) {
		if err == ErrNoWebhookConfig { // alone: joined with a CRD's error it is logged (Sync)
			// Soon, to patch it as soon as it appears.
			c.log().Debug("webhook: waiting for the webhook configuration", "name", c.WebhookConfig)
		} else {
			c.log().Error("webhook: keeping the serving certificate", "err", err, "retry_in", backoff)
		}
	})
}

// Follow is Run for the replicas that do not write: it Loads the Secret at
// once and again every resync, until ctx ends. Until it has a certificate
// it tries every second (the API server may already route admission
// requests here, and they fail until then); after a failure with one, with
// Run's backoff.
func (c *Certs) Follow(ctx context.Context, resync time.Duration) {
	c.loop(ctx, resync, c.Load, 0, func(err error, backoff time.Duration) {
		if errors.Is(err, ErrNoSecret) {
			c.log().Debug("webhook: waiting for the leader to make the serving certificate", "err", err, "retry_in", backoff)
		} else {
			c.log().Error("webhook: reading the serving certificate", "err", err, "retry_in", backoff)
		}
	})
}

// loop runs step at once and every resync (default DefaultResync), and
// after a failure again with backoff (1s doubling to maxBackoff; 0: 1s
// while no certificate is served, else 30s), until ctx ends.
func (c *Certs) loop(ctx context.Context, resync time.Duration, step func(context.Context) error, maxBackoff time.Duration, failed func(err error, retryIn time.Duration)) {
	if resync <= 0 {
		resync = DefaultResync
	}
	backoff := time.Second
	for {
		wait := resync
		if err := step(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			most := maxBackoff
			if most == 0 {
				most = 30 * time.Second
				if c.cur.Load() == nil {
					most = time.Second
				}
			}
			backoff = min(backoff, most)
			failed(err, backoff)
			wait, backoff = min(backoff, resync), min(2*backoff, most)
		} else {
			backoff = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
