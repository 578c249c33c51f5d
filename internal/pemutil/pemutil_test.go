package pemutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

func selfSigned(t *testing.T, cn string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func block(typ string, b []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}))
}

func TestCerts(t *testing.T) {
	a, b := selfSigned(t, "a"), selfSigned(t, "b")
	ca, cb := block("CERTIFICATE", a.Raw), block("CERTIFICATE", b.Raw)
	for _, tc := range []struct {
		name string
		in   string
		want []string // common names parsed
		err  string   // substring of the error; "" for none
	}{
		{"empty", "", nil, ""},
		{"not PEM", "not pem", nil, ""},
		{"one", ca, []string{"a"}, ""},
		{"two, in order", cb + ca, []string{"b", "a"}, ""},
		{"other blocks skipped", block("PRIVATE KEY", []byte("k")) + ca + "junk between\n" + cb, []string{"a", "b"}, ""},
		{"a bad one is named, the good ones kept", ca + block("CERTIFICATE", []byte("bad")) + cb, []string{"a", "b"}, "certificate 2: "},
		{"only bad", block("CERTIFICATE", []byte("bad")), nil, "certificate 1: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Certs([]byte(tc.in))
			var names []string
			for _, c := range got {
				names = append(names, c.Subject.CommonName)
			}
			if strings.Join(names, ",") != strings.Join(tc.want, ",") {
				t.Errorf("certificates %q, want %q", names, tc.want)
			}
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}

func TestEncodeCertsRoundTrip(t *testing.T) {
	in := []*x509.Certificate{selfSigned(t, "a"), selfSigned(t, "b")}
	out, err := Certs(EncodeCerts(in))
	if err != nil || len(out) != 2 || !out[0].Equal(in[0]) || !out[1].Equal(in[1]) {
		t.Fatalf("Certs(EncodeCerts) = %v, %v", out, err)
	}
	if got := EncodeCerts(nil); len(got) != 0 {
		t.Errorf("EncodeCerts(nil) = %q", got)
	}
}

func TestKey(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(ec)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	pkcs1 := x509.MarshalPKCS1PrivateKey(rsaKey)
	for _, tc := range []struct {
		name, in, err string
	}{
		{"PKCS#8", block("PRIVATE KEY", pkcs8), ""},
		{"SEC 1", block("EC PRIVATE KEY", sec1), ""},
		{"PKCS#1", block("RSA PRIVATE KEY", pkcs1), ""},
		{"the type is not trusted", block("WHATEVER", sec1), ""},
		{"no PEM", "key", "no PEM block"},
		{"not a key", block("PRIVATE KEY", []byte("x")), "not a PKCS#8, EC or PKCS#1 private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := Key([]byte(tc.in))
			if tc.err == "" {
				if err != nil || k == nil {
					t.Fatalf("Key = %v, %v", k, err)
				}
				return
			}
			if err == nil || err.Error() != tc.err {
				t.Fatalf("Key error = %v, want %q", err, tc.err)
			}
		})
	}
}
