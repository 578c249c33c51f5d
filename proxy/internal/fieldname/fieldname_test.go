package fieldname

import (
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
