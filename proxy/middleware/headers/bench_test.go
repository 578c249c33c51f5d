package headers_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/middleware/headers"
)

// The per-request cost of a modifier of each kind (set, add to an existing
// field, remove), on a request with a dozen fields.
func BenchmarkRequest(b *testing.B) {
	h := headers.Request(headers.Modifier{
		Set:    []headers.Header{{Name: "X-Set", Value: "s"}},
		Add:    []headers.Header{{Name: "X-Add", Value: "a"}},
		Remove: []string{"X-Remove"},
	})(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	base := http.Header{}
	for _, k := range []string{"Accept", "Accept-Encoding", "User-Agent", "Cookie", "Authorization", "X-Request-Id", "X-B3-Traceid", "Traceparent", "Content-Type", "Origin"} {
		base.Set(k, "v")
	}
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		r.Header = base.Clone()
		r.Header.Set("X-Add", "x")
		r.Header.Set("X-Remove", "r")
		h.ServeHTTP(w, r)
	}
}

// The per-request cost of the response modifier around a handler that
// writes a small response.
func BenchmarkResponse(b *testing.B) {
	h := headers.Response(headers.Modifier{
		Set:    []headers.Header{{Name: "X-Set", Value: "s"}},
		Remove: []string{"Server"},
	})(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Server", "app")
		w.Write([]byte("ok"))
	}))
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
}
