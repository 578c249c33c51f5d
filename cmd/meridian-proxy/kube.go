package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/internal/pemutil"
)

// tokenSubject reads the namespace and service account a projected
// ServiceAccount token names (sub: system:serviceaccount:NS:SA). The proxy
// does not verify the token (the identity service does, with TokenReview);
// it only learns which SPIFFE ID to expect in the certificate it gets back.
func tokenSubject(path string) (ns, sa string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("--identity-token-file: %w", err)
	}
	if ns, sa, err = jwtSubject(b); err != nil {
		return "", "", fmt.Errorf("--identity-token-file %s: %w", path, err)
	}
	return ns, sa, nil
}

// jwtSubject reads the ServiceAccount a JWT's sub claim names, without
// verifying the token.
func jwtSubject(token []byte) (ns, sa string, err error) {
	parts := strings.Split(strings.TrimSpace(string(token)), ".")
	if len(parts) != 3 {
		return "", "", errors.New("not a JWT (want header.payload.signature)")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return "", "", fmt.Errorf("payload: %w", err)
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", "", fmt.Errorf("payload: %w", err)
	}
	ns, sa, ok := names.ParseServiceAccountUser(claims.Sub)
	if !ok {
		return "", "", fmt.Errorf("subject %q is not system:serviceaccount:NAMESPACE:NAME", claims.Sub)
	}
	return ns, sa, nil
}

// parseAnchors reads the trust anchors' PEM certificates.
func parseAnchors(b []byte) ([]*x509.Certificate, error) {
	roots, err := pemutil.Certs(b)
	if err != nil {
		return nil, fmt.Errorf("--identity-trust-anchors: %w", err)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("--identity-trust-anchors: no PEM certificates")
	}
	return roots, nil
}

// controlPlaneCreds are the credentials for the destination and identity
// APIs: TLS verifying the controller's SPIFFE ID against the trust anchors
// when id is set (Kubernetes: tokens cross the pod network), else plaintext
// (local mode on loopback).
func controlPlaneCreds(id string, anchorsPEM []byte) (credentials.TransportCredentials, error) {
	if id == "" {
		return insecure.NewCredentials(), nil
	}
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return nil, fmt.Errorf("--destination-identity %q: %w", id, err)
	}
	if anchorsPEM == nil {
		return nil, fmt.Errorf("--destination-identity needs the trust anchors (--identity-trust-anchors or $%s)", names.EnvTrustAnchors)
	}
	roots, err := parseAnchors(anchorsPEM)
	if err != nil {
		return nil, err
	}
	bundle := x509bundle.FromX509Authorities(sid.TrustDomain(), roots)
	cfg := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(sid))
	cfg.MinVersion = tls.VersionTLS13
	return credentials.NewTLS(cfg), nil
}
