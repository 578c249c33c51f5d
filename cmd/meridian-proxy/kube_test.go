package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeToken(t *testing.T, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	p := filepath.Join(t.TempDir(), "token")
	tok := enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(payload)) + ".c2ln"
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTokenSubject(t *testing.T) {
	ns, sa, err := tokenSubject(writeToken(t, `{"aud":["identity.meridian.io"],"sub":"system:serviceaccount:emojivoto:web"}`))
	if err != nil || ns != "emojivoto" || sa != "web" {
		t.Fatalf("tokenSubject = %q, %q, %v; want emojivoto, web", ns, sa, err)
	}
	for payload, want := range map[string]string{
		`{"sub":"system:node:n1"}`: "is not system:serviceaccount",
		`{"sub":""}`:               "is not system:serviceaccount",
		`not json`:                 "payload",
	} {
		if _, _, err := tokenSubject(writeToken(t, payload)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("payload %s: err %v, want one containing %q", payload, err, want)
		}
	}
	p := filepath.Join(t.TempDir(), "opaque")
	os.WriteFile(p, []byte("local-token"), 0o600)
	if _, _, err := tokenSubject(p); err == nil || !strings.Contains(err.Error(), "not a JWT") {
		t.Errorf("opaque token: err %v, want not a JWT", err)
	}
}

func TestControlPlaneCreds(t *testing.T) {
	if c, err := controlPlaneCreds("", nil); err != nil || c.Info().SecurityProtocol != "insecure" {
		t.Errorf("no identity: %v, %v; want plaintext", c, err)
	}
	if _, err := controlPlaneCreds("spiffe://cluster.local/ns/meridian/sa/meridian-controller", nil); err == nil || !strings.Contains(err.Error(), "needs the trust anchors") {
		t.Errorf("identity without anchors: err %v", err)
	}
	if _, err := controlPlaneCreds("meridian-controller", []byte("x")); err == nil || !strings.Contains(err.Error(), "--destination-identity") {
		t.Errorf("malformed identity: err %v", err)
	}
	if _, err := controlPlaneCreds("spiffe://cluster.local/ns/meridian/sa/meridian-controller", []byte("not pem")); err == nil || !strings.Contains(err.Error(), "no PEM certificates") {
		t.Errorf("bad anchors: err %v", err)
	}
}
