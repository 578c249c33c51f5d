package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// EnvTrustAnchors holds the trust anchors PEM when they are not in a file:
// the injector puts them in the pod spec (the anchors live in the control
// plane's namespace, which the pod cannot mount from).
const EnvTrustAnchors = "MERIDIAN_PROXY_TRUST_ANCHORS"

// tokenSubject reads the namespace and service account a projected
// ServiceAccount token names (sub: system:serviceaccount:NS:SA). The proxy
// does not verify the token (the identity service does, with TokenReview);
// it only learns which SPIFFE ID to expect in the certificate it gets back.
func tokenSubject(path string) (ns, sa string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("--identity-token-file: %w", err)
	}
	parts := strings.Split(strings.TrimSpace(string(b)), ".")
	if len(parts) != 3 {
		return "", "", fmt.Errorf("--identity-token-file %s: not a JWT (want header.payload.signature)", path)
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return "", "", fmt.Errorf("--identity-token-file %s: payload: %w", path, err)
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", "", fmt.Errorf("--identity-token-file %s: payload: %w", path, err)
	}
	f := strings.Split(claims.Sub, ":")
	if len(f) != 4 || f[0] != "system" || f[1] != "serviceaccount" || f[2] == "" || f[3] == "" {
		return "", "", fmt.Errorf("--identity-token-file %s: subject %q is not system:serviceaccount:NAMESPACE:NAME", path, claims.Sub)
	}
	return f[2], f[3], nil
}
