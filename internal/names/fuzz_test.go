package names

import (
	"strings"
	"testing"
)

// FuzzParseServiceAccountUser: the user name comes from a token's sub claim
// (which the proxy reads without verifying) and from TokenReview. What is
// accepted formats back to the same string, and never carries a ':' in its
// parts (which would let a name impersonate another namespace).
func FuzzParseServiceAccountUser(f *testing.F) {
	for _, s := range []string{"system:serviceaccount:emojivoto:web", "system:serviceaccount::web", "system:serviceaccount:a:b:c",
		"system:node:n", "", "system:serviceaccount:", "system:serviceaccounts:a:b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ns, sa, ok := ParseServiceAccountUser(s)
		if !ok {
			if ns != "" || sa != "" {
				t.Fatalf("ParseServiceAccountUser(%q) refused but returned %q, %q", s, ns, sa)
			}
			return
		}
		if ns == "" || sa == "" || strings.Contains(ns, ":") || strings.Contains(sa, ":") {
			t.Fatalf("ParseServiceAccountUser(%q) = %q, %q", s, ns, sa)
		}
		if u := ServiceAccountUser(ns, sa); u != s {
			t.Fatalf("ServiceAccountUser(%q, %q) = %q, want %q", ns, sa, u, s)
		}
	})
}
