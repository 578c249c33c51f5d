package sidecar

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// chain serves a request with its middlewares in the order given, the
// first outermost, then the handler; a middleware that answers stops it.
func TestChain(t *testing.T) {
	mark := func(name string, stop bool) func(http.Handler) http.Handler {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Add("Seen", name)
				if !stop {
					next.ServeHTTP(w, r)
				}
			})
		}
	}
	end := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Header().Add("Seen", "handler") })
	for _, c := range []struct {
		name string
		mws  []func(http.Handler) http.Handler
		want string
	}{
		{"none", nil, "handler"},
		{"in order", []func(http.Handler) http.Handler{mark("a", false), mark("b", false), mark("c", false)}, "a,b,c,handler"},
		{"one answers", []func(http.Handler) http.Handler{mark("a", false), mark("b", true), mark("c", false)}, "a,b"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			chain(c.mws...)(end).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
			if got := strings.Join(rec.Header().Values("Seen"), ","); got != c.want {
				t.Errorf("served by %s, want %s", got, c.want)
			}
		})
	}
}
