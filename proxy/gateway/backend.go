package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/outbound"
)

// A backend is a compiled Backend: the authority resolved through the
// destination API and the cache (connection pools, mTLS or the
// BackendTLSPolicy's TLS) its requests go through.
type backend struct {
	authority string // canonical; "" when the backend is invalid
	name      string
	weight    uint32
	protocol  gatewaypb.Backend_Protocol
	cache     *outbound.Cache
	serve     http.Handler // the backend's filters, then forward
	h2        bool         // H2C, or a GRPCRoute's: requests go over HTTP/2
	token     string       // its name in session cookies and headers
	key       string       // its requests' metrics route key (metrics.GatewayRoute)
	loopOK    bool         // HTTP/1.1 or H2C, no filters, no BackendTLSPolicy: the event loop may serve it (HTTP/2 ones relayed)
}

// label is the backend label of its metrics.
func (b *backend) label() string {
	if b.name != "" {
		return b.name
	}
	return b.authority
}

// builder compiles the parts of a snapshot that need the gateway: backends
// (their caches) and filters (their handlers).
type builder struct {
	g       *Gateway
	gateway string // the snapshot's, for metrics labels
	// caches are the caches the table uses: those it does not use any more
	// are closed once it replaced the previous one.
	caches map[string]*outbound.Cache
	// clientCert is presented by the connections that originate a
	// BackendTLSPolicy's TLS (Snapshot.backend_client_certificate); nil:
	// none. Mesh mTLS presents the workload identity instead.
	clientCert *certificate
}

func (b *builder) backend(be *gatewaypb.Backend) (*backend, error) {
	cb := &backend{name: be.GetName(), weight: be.GetWeight(), protocol: be.GetProtocol()}
	if be.GetAuthority() != "" {
		a, err := discover.CanonicalAuthority(be.GetAuthority(), 80)
		if err != nil {
			return nil, fmt.Errorf("authority: %q is not host:port: %w", be.GetAuthority(), err)
		}
		cb.authority = a
	}
	switch cb.protocol {
	case gatewaypb.Backend_PROTOCOL_UNSPECIFIED, gatewaypb.Backend_H2C, gatewaypb.Backend_WEBSOCKET:
	default:
		return nil, fmt.Errorf("protocol: %v is not PROTOCOL_UNSPECIFIED, H2C or WEBSOCKET", cb.protocol)
	}
	cb.token = token(cb)
	key, cfg, err := backendTLS(be.GetTls(), b.clientCert)
	if err != nil {
		return nil, fmt.Errorf("tls.%w", err)
	}
	// One cache per policy, kept across snapshots (its connection pools
	// and endpoint state with it).
	c := b.caches[key]
	if c == nil {
		c = b.g.caches[key]
	}
	if c == nil {
		c = b.g.cache(key, cfg)
	}
	b.caches[key], cb.cache = c, c
	return cb, nil
}

// backendTLS compiles a BackendTLS into the client configuration of its
// connections and a key naming it: backends with the same policy (and the
// same client certificate) share a cache. No policy: the key "" (the mesh's
// cache: mTLS to meshed endpoints). client, when not nil, is the
// certificate the connections present.
func backendTLS(bt *gatewaypb.BackendTLS, client *certificate) (string, *tls.Config, error) {
	if bt == nil {
		return "", nil, nil
	}
	if bt.GetServerName() == "" {
		return "", nil, errors.New("server_name: empty; it is the SNI sent and, without subject_alt_names, the name verified")
	}
	cfg := &tls.Config{ServerName: bt.GetServerName(), MinVersion: tls.VersionTLS12}
	if pem := bt.GetCaCertificates(); len(pem) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return "", nil, errors.New("ca_certificates: no PEM certificate in it")
		}
		cfg.RootCAs = pool
	}
	if sans := bt.GetSubjectAltNames(); len(sans) > 0 {
		// The chain is verified against the roots, and the leaf must carry
		// one of the names instead of the server name.
		roots := cfg.RootCAs
		cfg.InsecureSkipVerify = true // replaced by VerifyConnection below
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the backend presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
				return err
			}
			for _, san := range sans {
				if leaf.VerifyHostname(san) == nil {
					return nil
				}
				for _, u := range leaf.URIs {
					if u.String() == san {
						return nil
					}
				}
			}
			return fmt.Errorf("the backend's certificate has none of the subject alternative names %q", sans)
		}
	}
	var clientChain []byte
	if client != nil {
		// Presented whatever CAs the backend says it accepts (a
		// tls.Config.Certificates entry would be withheld when its issuer
		// is not among them): the backend's answer is its own to give.
		cert := client.cert
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		for _, der := range cert.Certificate {
			clientChain = append(clientChain, der...)
		}
	}
	// A new client certificate makes a new cache: the old one's
	// connections, which present the old certificate, close with it.
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%q\x00%x", bt.GetServerName(), bt.GetCaCertificates(), bt.GetSubjectAltNames(), clientChain)))
	return "tls:" + hex.EncodeToString(sum[:8]), cfg, nil
}

// tlsDial originates TLS as a BackendTLSPolicy says over dial's
// connections, offering the protocol the pool needs (h2 or http/1.1).
func tlsDial(dial func(ctx context.Context, addr string) (net.Conn, error), cfg *tls.Config) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := dial(ctx, addr)
		if err != nil {
			return nil, err
		}
		cc := cfg.Clone()
		if p := httpproxy.DialProtocol(ctx); p != "" {
			cc.NextProtos = []string{p}
		}
		tc := tls.Client(c, cc)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS to backend endpoint %s (server name %s): %w", addr, cfg.ServerName, err)
		}
		return tc, nil
	}
}

// ruleFilters builds a rule's handler: its filters in order, then the
// backend pick.
func (b *builder) ruleFilters(rl *rule, fs []*gatewaypb.Filter) (http.Handler, error) {
	h := b.g.pick(rl)
	for i := len(fs) - 1; i >= 0; i-- {
		mw, err := b.filter(rl, fs[i])
		if err != nil {
			return nil, fmt.Errorf("filters[%d]: %w", i, err)
		}
		h = mw(h)
	}
	return h, nil
}

// backendFilters builds a backend's handler within a rule: its own
// filters, then forward.
func (b *builder) backendFilters(rl *rule, fs []*gatewaypb.Filter, be *backend) (http.Handler, error) {
	h := b.g.forward(rl, be)
	for i := len(fs) - 1; i >= 0; i-- {
		mw, err := b.filter(rl, fs[i])
		if err != nil {
			return nil, fmt.Errorf("filters[%d]: %w", i, err)
		}
		h = mw(h)
	}
	return h, nil
}
