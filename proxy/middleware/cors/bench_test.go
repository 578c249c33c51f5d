package cors_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/middleware/cors"
)

// The per-request cost of the filter: a request with no Origin (most
// traffic), a cross-origin request from an allowed wildcard origin, and a
// preflight.
func BenchmarkCORS(b *testing.B) {
	h := cors.New(cors1)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	for _, c := range []struct {
		name, method string
		header       map[string]string
	}{
		{"no origin", http.MethodGet, nil},
		{"allowed origin", http.MethodGet, map[string]string{"Origin": "https://xpto.www.bar.com"}},
		{"preflight", http.MethodOptions, map[string]string{"Origin": "https://www.foo.com", "Access-Control-Request-Method": "GET"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := httptest.NewRequest(c.method, "/", nil)
			for k, v := range c.header {
				r.Header.Set(k, v)
			}
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(httptest.NewRecorder(), r)
			}
		})
	}
}
