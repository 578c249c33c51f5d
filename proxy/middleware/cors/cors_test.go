package cors_test

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/proxy/middleware/cors"
)

// The conformance test HTTPRouteCORS's routes.
var (
	cors1 = cors.Config{
		AllowOrigins:     []string{"https://www.foo.com", "https://*.bar.com"},
		AllowMethods:     []string{"GET", "OPTIONS"},
		AllowHeaders:     []string{"x-header-1", "x-header-2"},
		ExposeHeaders:    []string{"x-header-3", "x-header-4"},
		AllowCredentials: true,
		MaxAge:           3600 * time.Second,
	}
	cors2             = cors.Config{AllowOrigins: []string{"https://www.foo.com"}, AllowMethods: []string{"*"}}
	wildcardOrigin    = cors.Config{AllowOrigins: []string{"*"}, AllowMethods: []string{"PUT"}}
	wildcardAll       = cors.Config{AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}, AllowCredentials: true}
	wildcardAllUnauth = cors.Config{AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}}
)

// Every case of HTTPRouteCORS (the values it accepts listed; "" is an
// absent field), and the rules around them, through a reverse proxy to a
// loopback upstream that sends CORS fields of its own: a preflight never
// reaches it, an allowed request gets the filter's fields instead of the
// upstream's.
func TestCORS(t *testing.T) {
	preflight := func(origin, method, headers string) map[string]string {
		h := map[string]string{"Origin": origin, "Access-Control-Request-Method": method}
		if headers != "" {
			h["Access-Control-Request-Headers"] = headers
		}
		return h
	}
	for _, c := range []struct {
		name     string
		config   cors.Config
		method   string
		header   map[string]string
		status   []int
		upstream bool                // reached the upstream
		want     map[string][]string // field: accepted values
	}{
		{"preflight, exact origin", cors1, "OPTIONS", preflight("https://www.foo.com", "GET", "x-header-1, x-header-2"), []int{200, 204}, false, map[string][]string{
			"Access-Control-Allow-Origin":      {"https://www.foo.com"},
			"Access-Control-Allow-Methods":     {"GET, OPTIONS"},
			"Access-Control-Allow-Headers":     {"x-header-1, x-header-2"},
			"Access-Control-Expose-Headers":    {"x-header-3, x-header-4"},
			"Access-Control-Max-Age":           {"3600"},
			"Access-Control-Allow-Credentials": {"true"},
			"Vary":                             {"Origin,Access-Control-Request-Method,Access-Control-Request-Headers"},
		}},
		{"preflight, wildcard origin", cors1, "OPTIONS", preflight("https://www.bar.com", "GET", "x-header-1, x-header-2"), []int{200, 204}, false, map[string][]string{
			"Access-Control-Allow-Origin":      {"https://www.bar.com"},
			"Access-Control-Allow-Methods":     {"GET, OPTIONS"},
			"Access-Control-Allow-Headers":     {"x-header-1, x-header-2"},
			"Access-Control-Expose-Headers":    {"x-header-3, x-header-4"},
			"Access-Control-Max-Age":           {"3600"},
			"Access-Control-Allow-Credentials": {"true"},
		}},
		{"preflight, wildcard over many labels", cors1, "OPTIONS", preflight("https://xpto.www.bar.com", "GET", "x-header-1, x-header-2"), []int{200, 204}, false, map[string][]string{
			"Access-Control-Allow-Origin": {"https://xpto.www.bar.com"},
			"Access-Control-Max-Age":      {"3600"},
		}},
		{"preflight, origin not allowed", cors1, "OPTIONS", preflight("https://foobar.com", "GET", ""), []int{200, 204, 403}, false, map[string][]string{
			"Access-Control-Allow-Origin": {""}, "Access-Control-Allow-Methods": {""}, "Access-Control-Allow-Credentials": {""},
		}},
		{"request, exact origin", cors1, "GET", preflight("https://www.foo.com", "GET", "x-header-1, x-header-2"), []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin":      {"https://www.foo.com"},
			"Access-Control-Allow-Credentials": {"true"},
			"Access-Control-Expose-Headers":    {"x-header-3, x-header-4"},
			"Access-Control-Allow-Methods":     {"UPSTREAM"}, // not the filter's: left alone
			"Vary":                             {"Accept-Encoding,Origin"},
		}},
		{"request, wildcard origin", cors1, "GET", preflight("https://www.bar.com", "GET", ""), []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin": {"https://www.bar.com"},
		}},
		{"request, origin not allowed", cors1, "GET", preflight("https://foobar.com", "GET", ""), []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin": {"https://upstream.example"}, // the upstream's, untouched
			"Vary":                        {"Origin,Accept-Encoding"},
		}},
		{"preflight, POST with wildcard methods", cors2, "OPTIONS", preflight("https://www.foo.com", "POST", ""), []int{200, 204}, false, map[string][]string{
			"Access-Control-Allow-Methods":     {"POST", "*"},
			"Access-Control-Allow-Origin":      {"https://www.foo.com"},
			"Access-Control-Allow-Credentials": {""},
			"Access-Control-Allow-Headers":     {""},
			"Access-Control-Max-Age":           {"5"}, // the spec's default
		}},
		{"preflight, any origin", wildcardOrigin, "OPTIONS", preflight("https://foobar.com", "PUT", ""), []int{200, 204}, false, map[string][]string{
			"Access-Control-Allow-Origin":      {"https://foobar.com", "*"},
			"Access-Control-Allow-Methods":     {"PUT"},
			"Access-Control-Allow-Credentials": {""},
		}},
		{"preflight, any origin, with a port", wildcardOrigin, "OPTIONS", preflight("https://foobar.com:12345", "PUT", ""), []int{200, 204}, false, map[string][]string{
			"Access-Control-Allow-Origin":      {"https://foobar.com:12345", "*"},
			"Access-Control-Allow-Methods":     {"PUT"},
			"Access-Control-Allow-Credentials": {""},
		}},
		{"request, any origin, with a port", wildcardOrigin, "PUT", map[string]string{"Origin": "https://foobar.com:12345"}, []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin": {"https://foobar.com:12345", "*"},
		}},
		{"request, any origin", wildcardOrigin, "PUT", map[string]string{"Origin": "https://foobar.com"}, []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin":      {"https://foobar.com", "*"},
			"Access-Control-Allow-Credentials": {""},
		}},
		{"preflight, wildcards with credentials echo", wildcardAll, "OPTIONS", preflight("https://other.foo.com", "PUT", "x-header-1, x-header-2"), []int{200, 204}, false, map[string][]string{
			"Access-Control-Allow-Origin":      {"https://other.foo.com"},
			"Access-Control-Allow-Methods":     {"PUT"},
			"Access-Control-Allow-Headers":     {"x-header-1, x-header-2", "x-header-2, x-header-1"},
			"Access-Control-Allow-Credentials": {"true"},
		}},
		{"preflight, wildcards without credentials", wildcardAllUnauth, "OPTIONS", preflight("https://other.foo.com", "PUT", "x-header-1, x-header-2"), []int{200, 204}, false, map[string][]string{
			"Access-Control-Allow-Origin":      {"https://other.foo.com", "*"},
			"Access-Control-Allow-Methods":     {"PUT", "*"},
			"Access-Control-Allow-Headers":     {"x-header-1, x-header-2", "x-header-2, x-header-1", "*"},
			"Access-Control-Allow-Credentials": {""},
		}},
		{"preflight, wildcard headers, none requested", wildcardAll, "OPTIONS", preflight("https://other.foo.com", "PUT", ""), []int{200, 204}, false, map[string][]string{
			"Access-Control-Allow-Headers": {""},
		}},
		{"request, wildcards with credentials", wildcardAll, "GET", map[string]string{"Origin": "https://other.foo.com"}, []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin":      {"https://other.foo.com"},
			"Access-Control-Allow-Credentials": {"true"},
		}},
		{"request, wildcards without credentials", wildcardAllUnauth, "GET", map[string]string{"Origin": "https://other.foo.com"}, []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin":      {"https://other.foo.com", "*"},
			"Access-Control-Allow-Credentials": {""},
		}},
		// Around the conformance cases.
		{"no Origin: not CORS", cors1, "OPTIONS", map[string]string{"Access-Control-Request-Method": "GET"}, []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin": {"https://upstream.example"},
			"Vary":                        {"Origin,Accept-Encoding"},
		}},
		{"OPTIONS without a requested method: not a preflight", cors1, "OPTIONS", map[string]string{"Origin": "https://www.foo.com"}, []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin": {"https://www.foo.com"},
		}},
		{"the scheme's default port", cors1, "GET", map[string]string{"Origin": "https://www.foo.com:443"}, []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin": {"https://www.foo.com:443"},
		}},
		{"another port", cors1, "GET", map[string]string{"Origin": "https://www.foo.com:8443"}, []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin": {"https://upstream.example"},
		}},
		{"another scheme", cors1, "GET", map[string]string{"Origin": "http://www.foo.com"}, []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin": {"https://upstream.example"},
		}},
		{"the wildcard needs a label", cors1, "GET", map[string]string{"Origin": "https://bar.com"}, []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin": {"https://upstream.example"},
		}},
		{"the wildcard's suffix", cors1, "GET", map[string]string{"Origin": "https://evilbar.com"}, []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin": {"https://upstream.example"},
		}},
		{"host case", cors1, "GET", map[string]string{"Origin": "HTTPS://WWW.Foo.com"}, []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin": {"HTTPS://WWW.Foo.com"},
		}},
		{"null origin", cors1, "GET", map[string]string{"Origin": "null"}, []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin": {"https://upstream.example"},
		}},
		{"IPv6 origin", cors.Config{AllowOrigins: []string{"http://[::1]:8080"}}, "GET", map[string]string{"Origin": "http://[::1]:8080"}, []int{200}, true, map[string][]string{
			"Access-Control-Allow-Origin": {"http://[::1]:8080"},
		}},
		{"expose * with credentials", cors.Config{AllowOrigins: []string{"*"}, ExposeHeaders: []string{"*", "x-a"}, AllowCredentials: true}, "GET", map[string]string{"Origin": "https://a.example"}, []int{200}, true, map[string][]string{
			"Access-Control-Expose-Headers": {"x-a"},
			"Access-Control-Allow-Origin":   {"https://a.example"},
		}},
		{"expose * without credentials", cors.Config{AllowOrigins: []string{"*"}, ExposeHeaders: []string{"*"}}, "GET", map[string]string{"Origin": "https://a.example"}, []int{200}, true, map[string][]string{
			"Access-Control-Expose-Headers": {"*"},
			"Access-Control-Allow-Origin":   {"*"},
			"Vary":                          {"Accept-Encoding"}, // "*" to everyone: no Vary: Origin
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var reached atomic.Bool
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				reached.Store(true)
				w.Header().Set("Access-Control-Allow-Origin", "https://upstream.example")
				w.Header().Set("Access-Control-Allow-Methods", "UPSTREAM")
				w.Header().Set("Vary", "Accept-Encoding")
				w.Write([]byte("upstream"))
			}))
			defer up.Close()
			u, _ := url.Parse(up.URL)
			front := httptest.NewServer(cors.New(c.config)(httputil.NewSingleHostReverseProxy(u)))
			defer front.Close()
			req, _ := http.NewRequest(c.method, front.URL+"/cors", nil)
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			resp, err := front.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if !slices.Contains(c.status, resp.StatusCode) {
				t.Errorf("status %d, want one of %v", resp.StatusCode, c.status)
			}
			if reached.Load() != c.upstream {
				t.Errorf("reached the upstream: %v, want %v", reached.Load(), c.upstream)
			}
			for k, vs := range c.want {
				if got := strings.Join(resp.Header.Values(k), ","); !slices.Contains(vs, got) {
					t.Errorf("%s = %q, want one of %q", k, got, vs)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		origin string
		ok     bool
	}{
		{"*", true}, {"https://a.example", true}, {"http://a.example:8080", true}, {"https://*.a.example", true},
		{"https://*", true}, {"http://[::1]:80", true},
		{"ftp://a.example", false}, {"a.example", false}, {"https://a.example:0", false}, {"https://a.example:x", false},
		{"https://a.*.example", false}, {"https://a.example/path", false}, {"https://", false},
	} {
		err := cors.Config{AllowOrigins: []string{c.origin}}.Validate()
		if (err == nil) != c.ok {
			t.Errorf("%q: %v, want ok %v", c.origin, err, c.ok)
		}
	}
}

// Whatever the Origin, the filter answers with no origin but that one: an
// Access-Control-Allow-Origin is absent or the request's own, and only
// for an origin that is https on port 443 under www.foo.com or bar.com.
func FuzzOrigin(f *testing.F) {
	f.Add("https://www.foo.com")
	f.Add("https://a.b.bar.com:443")
	f.Add("https://bar.com")
	f.Add("null")
	f.Add("https://www.foo.com@evil.com")
	h := cors.New(cors1)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	f.Fuzz(func(t *testing.T, origin string) {
		for _, method := range []string{http.MethodGet, http.MethodOptions} {
			r := httptest.NewRequest(method, "/", nil)
			r.Header["Origin"] = []string{origin}
			r.Header.Set("Access-Control-Request-Method", "GET")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			got := w.Header().Values("Access-Control-Allow-Origin")
			if len(got) == 0 {
				continue
			}
			if len(got) != 1 || got[0] != origin {
				t.Fatalf("%s from %q: Access-Control-Allow-Origin %q", method, origin, got)
			}
			u, err := url.Parse(origin)
			if err != nil || !strings.EqualFold(u.Scheme, "https") || (u.Port() != "" && u.Port() != "443") || u.User != nil ||
				!(strings.EqualFold(u.Hostname(), "www.foo.com") || strings.HasSuffix(strings.ToLower(u.Hostname()), ".bar.com")) {
				t.Fatalf("%s from %q allowed", method, origin)
			}
		}
	})
}
