// Package tlsid is the proxy's workload identity: a private key made in
// memory (never written anywhere), a certificate for the workload's SPIFFE ID
// obtained from the control plane's identity service and renewed at 70% of
// its lifetime, and the TLS configurations of mutual TLS between meshed
// proxies built on it with go-spiffe.
package tlsid

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	pb "github.com/meridian-mesh/meridian/api/proto/identity"
)

// ALPN protocols between meshed proxies: the protocol spoken inside the
// TLS session. HTTP keeps its standard names; opaque TCP has its own.
const (
	ALPNH2     = "h2"
	ALPNHTTP1  = "http/1.1"
	ALPNOpaque = "meridian.io/opaque"
)

// DefaultRefresh is the fraction of a certificate's remaining lifetime after
// which it is renewed.
const DefaultRefresh = 0.7

// Config configures an Identity.
type Config struct {
	// ID is the SPIFFE ID the proxy asks for.
	ID spiffeid.ID
	// Roots are the trust anchors of ID's trust domain.
	Roots []*x509.Certificate
	// Client reaches the identity service.
	Client pb.IdentityClient
	// Token returns the current proof of identity (read again for each
	// request: projected tokens are rotated by the kubelet).
	Token func() ([]byte, error)
	// Refresh is the fraction of the lifetime after which the certificate
	// is renewed; DefaultRefresh when 0.
	Refresh float64
	// RetryMin and RetryMax bound the delay between failed attempts
	// (defaults 100ms and 10s): it doubles from RetryMin after each
	// failure, jittered by ±20%. The current certificate is kept meanwhile.
	RetryMin, RetryMax time.Duration
	// LogEvery is the least time between two logged renewal failures
	// (default 1m); the failures in between are counted in the next line.
	LogEvery time.Duration
	Log      *slog.Logger
}

// Identity holds the proxy's key and current certificate.
type Identity struct {
	cfg    Config
	bundle *x509bundle.Bundle
	key    *ecdsa.PrivateKey
	csr    []byte

	svid atomic.Pointer[x509svid.SVID]
	// ticketKey encrypts the session tickets this proxy's server side
	// issues (one key for every connection, so that they resume), and
	// sessions are the tickets its client side holds.
	ticketKey [32]byte
	sessions  tls.ClientSessionCache
	ready     chan struct{}
	readyOnce sync.Once
	renewals  atomic.Int64
	failures  atomic.Int64
}

// New makes the key and the CSR. Run obtains the certificates.
func New(cfg Config) (*Identity, error) {
	if cfg.ID.IsZero() {
		return nil, errors.New("tlsid: no SPIFFE ID")
	}
	if len(cfg.Roots) == 0 {
		return nil, errors.New("tlsid: no trust anchors")
	}
	if cfg.Client == nil || cfg.Token == nil {
		return nil, errors.New("tlsid: no identity service client or token source")
	}
	if cfg.Refresh <= 0 || cfg.Refresh >= 1 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 100 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 10 * time.Second
	}
	if cfg.LogEvery <= 0 {
		cfg.LogEvery = time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{cfg.ID.URL()}}, key)
	if err != nil {
		return nil, err
	}
	i := &Identity{cfg: cfg, bundle: x509bundle.FromX509Authorities(cfg.ID.TrustDomain(), cfg.Roots),
		key: key, csr: csr, ready: make(chan struct{}), sessions: tls.NewLRUClientSessionCache(sessionCacheSize)}
	if _, err := rand.Read(i.ticketKey[:]); err != nil {
		return nil, err
	}
	return i, nil
}

// sessionCacheSize bounds the TLS sessions a proxy keeps to resume: one
// per endpoint it talks to.
const sessionCacheSize = 4096

// ID is the proxy's SPIFFE ID.
func (i *Identity) ID() spiffeid.ID { return i.cfg.ID }

// Bundle is the trust anchors peers are verified against.
func (i *Identity) Bundle() *x509bundle.Bundle { return i.bundle }

// Ready is closed once the first certificate is in hand.
func (i *Identity) Ready() <-chan struct{} { return i.ready }

// HasCert reports whether a certificate that has not expired is in hand:
// with an expired one every new mutual TLS connection fails, so the proxy
// is not ready.
func (i *Identity) HasCert() bool {
	s := i.svid.Load()
	return s != nil && time.Now().Before(s.Certificates[0].NotAfter)
}

// Renewals counts the certificates obtained after the first.
func (i *Identity) Renewals() int64 { return i.renewals.Load() }

// Failures counts failed attempts to obtain a certificate.
func (i *Identity) Failures() int64 { return i.failures.Load() }

// Expiry is when the current certificate expires; zero before the first.
func (i *Identity) Expiry() time.Time {
	if s := i.svid.Load(); s != nil {
		return s.Certificates[0].NotAfter
	}
	return time.Time{}
}

// GetX509SVID returns the current certificate chain and key
// (x509svid.Source, for go-spiffe's tlsconfig).
func (i *Identity) GetX509SVID() (*x509svid.SVID, error) {
	s := i.svid.Load()
	if s == nil {
		return nil, errors.New("tlsid: no certificate yet")
	}
	return s, nil
}

// Chain returns the current certificate chain (leaf first), or nil.
func (i *Identity) Chain() []*x509.Certificate {
	if s := i.svid.Load(); s != nil {
		return s.Certificates
	}
	return nil
}

var errNoToken = errors.New("no proof of identity")

// Run obtains a certificate, then renews it at Refresh of its remaining
// lifetime, until ctx ends. Failures are retried with backoff; the current
// certificate keeps serving meanwhile.
func (i *Identity) Run(ctx context.Context) {
	backoff := i.cfg.RetryMin
	var lastLog time.Time
	var unlogged int // failures since the last logged one
	for {
		var wait time.Duration
		leaf, err := i.renew(ctx)
		if err == nil {
			backoff = i.cfg.RetryMin
			wait = time.Duration(float64(time.Until(leaf.NotAfter)) * i.cfg.Refresh)
			if unlogged > 0 || !lastLog.IsZero() {
				i.cfg.Log.Info("identity: certificate obtained after failures", "id", i.cfg.ID.String(), "expires", leaf.NotAfter, "failures_not_logged", unlogged)
				unlogged, lastLog = 0, time.Time{}
			}
			i.cfg.Log.Debug("identity: certificate obtained", "id", i.cfg.ID.String(), "expires", leaf.NotAfter, "renew_in", wait)
		} else {
			if ctx.Err() != nil {
				return
			}
			startingUp := i.svid.Load() == nil && errors.Is(err, errNoToken)
			if !startingUp {
				i.failures.Add(1)
			}
			wait = time.Duration(float64(backoff) * (0.8 + 0.4*mrand.Float64()))
			if cur := i.svid.Load(); cur != nil {
				// Before expiry, never wait past it for lack of backoff
				// room; after it (an outage), the backoff alone decides, so
				// a proxy does not ask (and, in Kubernetes mode, cost a
				// TokenReview) more than once per RetryMax.
				if left := time.Until(cur.Certificates[0].NotAfter); left > 0 {
					wait = min(wait, max(left/4, i.cfg.RetryMin))
				}
			}
			backoff = min(2*backoff, i.cfg.RetryMax)
			switch {
			case startingUp:
				// The proof of identity (local mode: the registration) is
				// not there yet.
				i.cfg.Log.Debug("identity: waiting for a token", "err", err, "retry_in", wait)
			case time.Since(lastLog) < i.cfg.LogEvery:
				unlogged++ // logged at most once per LogEvery
			default:
				state := "keeping the current certificate"
				switch cur := i.svid.Load(); {
				case cur == nil:
					state = "no certificate yet"
				case !time.Now().Before(cur.Certificates[0].NotAfter):
					state = "the certificate has expired: not ready"
				}
				i.cfg.Log.Warn("identity: certify failed; "+state, "id", i.cfg.ID.String(), "err", err, "retry_in", wait,
					"failures_not_logged", unlogged, "next_log_after", i.cfg.LogEvery)
				lastLog, unlogged = time.Now(), 0
			}
		}
		t := time.NewTimer(max(wait, time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (i *Identity) renew(ctx context.Context) (*x509.Certificate, error) {
	tok, err := i.cfg.Token()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoToken, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := i.cfg.Client.Certify(cctx, &pb.CertifyRequest{Identity: i.cfg.ID.String(), Token: tok, CertificateSigningRequest: i.csr})
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for _, der := range append([][]byte{resp.GetLeafCertificate()}, resp.GetIntermediateCertificates()...) {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate from the identity service: %w", err)
		}
		certs = append(certs, c)
	}
	id, _, err := x509svid.Verify(certs, i.bundle)
	if err != nil {
		return nil, fmt.Errorf("certificate from the identity service does not verify: %w", err)
	}
	if id != i.cfg.ID {
		return nil, fmt.Errorf("identity service certified %s, not %s", id, i.cfg.ID)
	}
	if !i.key.PublicKey.Equal(certs[0].PublicKey) {
		return nil, errors.New("identity service certified another key")
	}
	if i.svid.Swap(&x509svid.SVID{ID: id, Certificates: certs, PrivateKey: i.key}) != nil {
		i.renewals.Add(1) // the first certificate is not a renewal
	}
	i.readyOnce.Do(func() { close(i.ready) })
	return certs[0], nil
}

// ServerConfig terminates mTLS from meshed peers: TLS 1.3, the current
// certificate (read at each handshake, so rotation needs no restart), and a
// client certificate required to be a SPIFFE ID of the proxy's trust domain.
//
// A client that connected before may resume its TLS session (TLS 1.3 PSK
// with a fresh key exchange): no certificates are sent or verified again,
// which makes a new connection to a known peer several times cheaper. The
// peer's certificate was verified when the session began, under the same
// trust anchors (they do not change in a running proxy); a resumed
// connection is still checked to carry a SPIFFE ID of the trust domain in
// a certificate that has not expired.
func (i *Identity) ServerConfig() *tls.Config {
	td := i.cfg.ID.TrustDomain()
	c := tlsconfig.MTLSServerConfig(i, i.bundle, tlsconfig.AuthorizeMemberOf(td))
	c.MinVersion = tls.VersionTLS13
	c.NextProtos = []string{ALPNH2, ALPNHTTP1, ALPNOpaque}
	c.SetSessionTicketKeys([][32]byte{i.ticketKey})
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if !cs.DidResume {
			return nil // VerifyPeerCertificate checked the chain
		}
		return resumedPeer(cs, func(id spiffeid.ID) bool { return id.MemberOf(td) })
	}
	return c
}

// ClientConfig originates mTLS to a meshed peer that must present server,
// speaking alpn inside. It resumes no session: see ClientConfigTo.
func (i *Identity) ClientConfig(server spiffeid.ID, alpn string) *tls.Config {
	c := tlsconfig.MTLSClientConfig(i, i.bundle, tlsconfig.AuthorizeID(server))
	c.MinVersion = tls.VersionTLS13
	c.ServerName = ServerName(server)
	c.NextProtos = []string{alpn}
	return c
}

// ClientConfigTo is ClientConfig for a connection to addr (host:port) that
// resumes the TLS session of an earlier connection to that address and
// identity when there is one (see ServerConfig). Sessions are kept per
// address, not only per identity: the endpoints of one service share an
// identity but not their ticket keys.
func (i *Identity) ClientConfigTo(addr string, server spiffeid.ID, alpn string) *tls.Config {
	c := i.ClientConfig(server, alpn)
	c.ClientSessionCache = addrSessions{c: i.sessions, addr: addr}
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if !cs.DidResume {
			return nil // VerifyPeerCertificate checked the chain and the ID
		}
		return resumedPeer(cs, func(id spiffeid.ID) bool { return id == server })
	}
	return c
}

// addrSessions is the session cache of one address.
type addrSessions struct {
	c    tls.ClientSessionCache
	addr string
}

func (a addrSessions) Get(key string) (*tls.ClientSessionState, bool) {
	return a.c.Get(a.addr + "|" + key)
}

func (a addrSessions) Put(key string, cs *tls.ClientSessionState) { a.c.Put(a.addr+"|"+key, cs) }

// resumedPeer checks a resumed connection's peer: a SPIFFE ID that ok
// accepts, in a certificate that has not expired.
func resumedPeer(cs tls.ConnectionState, ok func(spiffeid.ID) bool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tlsid: resumed session without the peer's certificate")
	}
	if now := time.Now(); now.After(cs.PeerCertificates[0].NotAfter) {
		return fmt.Errorf("tlsid: resumed session: the peer's certificate expired at %s", cs.PeerCertificates[0].NotAfter.Format(time.RFC3339))
	}
	id, found := PeerID(cs)
	if !found || !ok(id) {
		return fmt.Errorf("tlsid: resumed session: peer %q is not allowed", id)
	}
	return nil
}

// serverNameInfix marks a TLS ClientHello as one from a meshed proxy: its
// SNI is "<sa>.<ns>.serviceaccount.identity.meridian.<trust-domain>", as
// Linkerd names identities in DNS form.
const serverNameInfix = ".serviceaccount.identity.meridian."

// ServerName is the SNI a meshed client sends to reach id.
func ServerName(id spiffeid.ID) string {
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(segs) == 4 && segs[0] == "ns" && segs[2] == "sa" {
		return segs[3] + "." + segs[1] + serverNameInfix + id.TrustDomain().Name()
	}
	return "workload" + serverNameInfix + id.TrustDomain().Name()
}

// IsMeshedServerName reports whether sni is one a meshed proxy of td sends.
func IsMeshedServerName(sni string, td spiffeid.TrustDomain) bool {
	return strings.HasSuffix(sni, serverNameInfix+td.Name())
}

// PeerID is the SPIFFE ID of a verified TLS peer.
func PeerID(cs tls.ConnectionState) (spiffeid.ID, bool) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, false
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	return id, err == nil
}

// ParseID parses a SPIFFE ID such as a destination's endpoint identity.
func ParseID(s string) (spiffeid.ID, error) { return spiffeid.FromString(s) }
