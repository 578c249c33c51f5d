package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
)

// The headers that carry a client's certificate to the backend: Envoy's
// X-Forwarded-Client-Cert, which Emissary, Istio and Envoy Gateway users'
// backends read, and RFC 9440's Client-Cert and Client-Cert-Chain. The
// gateway removes them from every request (a client could otherwise claim
// any certificate) and sets them only for a certificate it verified.
const (
	hdrXFCC            = "X-Forwarded-Client-Cert"
	hdrClientCert      = "Client-Cert"
	hdrClientCertChain = "Client-Cert-Chain"
)

// clientCert is what the gateway tells backends about the certificate a
// connection's client presented and the listener's CAs verified: computed
// once per connection, after the handshake.
type clientCert struct {
	xfcc  string // Hash, Subject, URI and DNS, in Envoy's format
	cert  string // RFC 9440 Client-Cert: the leaf, :base64(DER):
	chain string // RFC 9440 Client-Cert-Chain: the client's intermediates, "" for none
}

type clientCertKey struct{}

// withClientCert returns ctx carrying the connection's verified client
// certificate, or ctx itself when it has none.
func withClientCert(ctx context.Context, cs tls.ConnectionState, cfg *tls.Config) context.Context {
	cc := verifiedClientCert(cs, cfg)
	if cc == nil {
		return ctx
	}
	return context.WithValue(ctx, clientCertKey{}, cc)
}

// verifiedClientCert describes the client's certificate when it chains to
// the listener's CAs: always so when the handshake required it
// (AllowValidOnly); with the insecure fallback the handshake only asked for
// it, so it is verified here as crypto/tls would have (client
// authentication usage, the client's intermediates), and one that does not
// verify is served without the headers, as no certificate would be.
func verifiedClientCert(cs tls.ConnectionState, cfg *tls.Config) *clientCert {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	leaf, rest := cs.PeerCertificates[0], cs.PeerCertificates[1:]
	if len(cs.VerifiedChains) == 0 {
		if cfg == nil || cfg.ClientCAs == nil {
			return nil
		}
		opts := x509.VerifyOptions{Roots: cfg.ClientCAs, Intermediates: x509.NewCertPool(),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		for _, c := range rest {
			opts.Intermediates.AddCert(c)
		}
		if _, err := leaf.Verify(opts); err != nil {
			return nil
		}
	}
	cc := &clientCert{xfcc: xfcc(leaf), cert: sfBinary(leaf.Raw)}
	if len(rest) > 0 {
		items := make([]string, len(rest))
		for i, c := range rest {
			items[i] = sfBinary(c.Raw)
		}
		cc.chain = strings.Join(items, ", ")
	}
	return cc
}

// xfcc is the element Envoy sets for the current client (its
// forward_client_cert_details SANITIZE_SET with subject, URI and DNS, as
// Istio's gateways send it): Hash, the SHA-256 of the certificate's DER in
// hex; Subject, always quoted, in RFC 2253 form; URI, the first URI SAN;
// DNS, one pair per DNS SAN. A value holding ',', ';', '=' or '"' is
// quoted, '"' escaped with a backslash.
func xfcc(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	var b strings.Builder
	b.WriteString("Hash=")
	b.WriteString(hex.EncodeToString(sum[:]))
	b.WriteString(";Subject=")
	b.WriteString(quoted(c.Subject.String()))
	if len(c.URIs) > 0 {
		b.WriteString(";URI=")
		b.WriteString(xfccValue(c.URIs[0].String()))
	}
	for _, d := range c.DNSNames {
		b.WriteString(";DNS=")
		b.WriteString(xfccValue(d))
	}
	return b.String()
}

func xfccValue(v string) string {
	if strings.ContainsAny(v, `,;="`) {
		return quoted(v)
	}
	return v
}

func quoted(v string) string {
	return `"` + strings.ReplaceAll(v, `"`, `\"`) + `"`
}

// sfBinary is RFC 8941's Byte Sequence, as RFC 9440 carries a certificate.
func sfBinary(der []byte) string {
	return ":" + base64.StdEncoding.EncodeToString(der) + ":"
}

// setClientCert replaces whatever the client sent in the certificate
// headers with the connection's verified certificate, if any.
func setClientCert(r *http.Request, h http.Header) {
	delete(h, hdrXFCC)
	delete(h, hdrClientCert)
	delete(h, hdrClientCertChain)
	if r.TLS == nil {
		return
	}
	cc, _ := r.Context().Value(clientCertKey{}).(*clientCert)
	if cc == nil {
		return
	}
	h[hdrXFCC] = []string{cc.xfcc}
	h[hdrClientCert] = []string{cc.cert}
	if cc.chain != "" {
		h[hdrClientCertChain] = []string{cc.chain}
	}
}
