// Package pemutil reads and writes the PEM that certificates and keys travel
// in (Secrets, files, flags, environment variables), the same way
// everywhere: the proxy and the control plane import it alike.
package pemutil

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// Certs parses every CERTIFICATE block of b, in order, skipping blocks of
// other types. It returns the certificates it could parse and, when a
// CERTIFICATE block did not parse, an error naming each such block (1 is
// the first certificate): strict callers stop there, lenient ones (a
// bundle where one bad certificate must not hide the good ones) use the
// list. No certificate at all is not an error: callers say what they miss.
func Certs(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	var errs []error
	for n := 1; ; {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out, errors.Join(errs...)
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			errs = append(errs, fmt.Errorf("certificate %d: %w", n, err))
		} else {
			out = append(out, c)
		}
		n++
	}
}

// EncodeCerts is the PEM of certs, one CERTIFICATE block each: what Certs
// reads back.
func EncodeCerts(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// Key parses the first PEM block of b as a PKCS#8, SEC 1 (EC) or PKCS#1
// (RSA) private key, whatever the block's type says.
func Key(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	return ParseKey(blk.Bytes)
}

// ParseKey parses DER as a PKCS#8, SEC 1 (EC) or PKCS#1 (RSA) private key.
func ParseKey(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	return nil, errors.New("not a PKCS#8, EC or PKCS#1 private key")
}
