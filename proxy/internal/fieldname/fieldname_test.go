package fieldname

import (
	"net/textproto"
	"strings"
	"testing"
)

func TestLower(t *testing.T) {
	for _, name := range []string{"Content-Type", "content-type", "Grpc-Status", "X-Custom-Thing", "WWW-Authenticate", "x-a"} {
		if got, want := Lower(name), strings.ToLower(name); got != want {
			t.Errorf("Lower(%q) = %q, want %q", name, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { Lower("Content-Type") }); n != 0 {
		t.Errorf("Lower of a common canonical name allocates %v times, want 0", n)
	}
}

func TestCanonical(t *testing.T) {
	names := []string{"content-type", "Content-Type", "grpc-status", "te", "x-custom-thing", "WWW-Authenticate", "www-authenticate", "a b", "", "content-md5"}
	for k := range canonical {
		names = append(names, k)
	}
	for _, name := range names {
		if got, want := Canonical(name), textproto.CanonicalMIMEHeaderKey(name); got != want {
			t.Errorf("Canonical(%q) = %q, want %q", name, got, want)
		}
	}
	for _, name := range []string{"grpc-status", "grpc-message", "te", "trailer", "grpc-encoding", "grpc-accept-encoding", "grpc-timeout", "traceparent"} {
		if n := testing.AllocsPerRun(100, func() { Canonical(name) }); n != 0 {
			t.Errorf("Canonical(%q) allocates %v times, want 0", name, n)
		}
	}
}

func FuzzCanonical(f *testing.F) {
	f.Add("grpc-status")
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := Canonical(name), textproto.CanonicalMIMEHeaderKey(name); got != want {
			t.Errorf("Canonical(%q) = %q, want %q", name, got, want)
		}
	})
}
