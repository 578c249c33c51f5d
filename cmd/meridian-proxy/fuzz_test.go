package main

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/internal/names"
)

// FuzzJWTSubject: the proxy reads its projected token's subject without
// verifying the token (the identity service does). Whatever the file
// holds, it must not crash; an accepted subject is a ServiceAccount user
// name that formats back to the claim; a refusal says which part is wrong.
func FuzzJWTSubject(f *testing.F) {
	jwt := func(payload string) string {
		return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
	}
	for _, s := range []string{
		jwt(`{"sub":"system:serviceaccount:emojivoto:web"}`),
		jwt(`{"sub":"system:serviceaccount:emojivoto:web:x"}`),
		jwt(`{"sub":"system:node:n"}`),
		jwt(`{"sub":1}`),
		jwt(`not json`),
		"a.b",
		"a.!!!.c",
		"",
		jwt(`{"sub":"system:serviceaccount:a:b"}`) + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, token []byte) {
		ns, sa, err := jwtSubject(token)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "not a JWT") && !strings.HasPrefix(msg, "payload: ") && !strings.HasPrefix(msg, "subject ") {
				t.Fatalf("jwtSubject error says nothing of what is wrong: %v", err)
			}
			return
		}
		if n2, s2, ok := names.ParseServiceAccountUser(names.ServiceAccountUser(ns, sa)); !ok || n2 != ns || s2 != sa {
			t.Fatalf("jwtSubject = %q, %q: not a ServiceAccount", ns, sa)
		}
	})
}
