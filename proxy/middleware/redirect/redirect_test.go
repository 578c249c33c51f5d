package redirect_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/middleware/redirect"
)

func ptr(s string) *string { return &s }

// Every redirect of the conformance tests (HTTPRouteRedirectPath, Port,
// Scheme, HostAndStatus, PortAndScheme on listeners 80, 8080 and 443, 303,
// 307, 308), and what the spec leaves to the request (its host, scheme,
// query, escaped path), answered over a loopback server without calling
// the next handler.
func TestRedirect(t *testing.T) {
	on80 := func(c redirect.Config) redirect.Config {
		c.ListenerPort, c.ListenerScheme = 80, "http"
		return c
	}
	on8080 := func(c redirect.Config) redirect.Config {
		c.ListenerPort, c.ListenerScheme = 8080, "http"
		return c
	}
	on443 := func(c redirect.Config) redirect.Config {
		c.ListenerPort, c.ListenerScheme = 443, "https"
		return c
	}
	const ex = "example.org"
	for _, c := range []struct {
		name     string
		config   redirect.Config
		target   string // path and query, sent with Host gw.test:8080 unless host is set
		host     string
		method   string
		status   int
		location string
	}{
		// HTTPRouteRedirectPath
		{"prefix", on8080(redirect.Config{ReplacePrefix: ptr("/replacement-prefix"), MatchedPrefix: "/original-prefix"}),
			"/original-prefix/lemon", "", "", 302, "http://gw.test:8080/replacement-prefix/lemon"},
		{"full path", on8080(redirect.Config{FullPath: "/full-path-replacement"}),
			"/full/path/original", "", "", 302, "http://gw.test:8080/full-path-replacement"},
		{"path and host", on8080(redirect.Config{Hostname: ex, ReplacePrefix: ptr("/replacement-prefix"), MatchedPrefix: "/path-and-host"}),
			"/path-and-host", "", "", 302, "http://example.org:8080/replacement-prefix"},
		{"path and status", on8080(redirect.Config{ReplacePrefix: ptr("/replacement-prefix"), MatchedPrefix: "/path-and-status", StatusCode: 301}),
			"/path-and-status", "", "", 301, "http://gw.test:8080/replacement-prefix"},
		{"full path and host", on8080(redirect.Config{Hostname: ex, FullPath: "/replacement-full"}),
			"/full-path-and-host", "", "", 302, "http://example.org:8080/replacement-full"},
		{"full path and status", on8080(redirect.Config{FullPath: "/replacement-full", StatusCode: 301}),
			"/full-path-and-status", "", "", 301, "http://gw.test:8080/replacement-full"},
		// HTTPRouteRedirectPort
		{"port", on80(redirect.Config{Port: 8083}), "/port", "", "", 302, "http://gw.test:8083/port"},
		{"port and host", on80(redirect.Config{Port: 8083, Hostname: ex}), "/port-and-host", "", "", 302, "http://example.org:8083/port-and-host"},
		{"port and status", on80(redirect.Config{Port: 8083, StatusCode: 301}), "/port-and-status", "", "", 301, "http://gw.test:8083/port-and-status"},
		// HTTPRouteRedirectScheme
		{"scheme", on80(redirect.Config{Scheme: "https"}), "/scheme", "", "", 302, "https://gw.test/scheme"},
		{"scheme and host", on80(redirect.Config{Scheme: "https", Hostname: ex}), "/scheme-and-host", "", "", 302, "https://example.org/scheme-and-host"},
		{"scheme and status", on80(redirect.Config{Scheme: "https", StatusCode: 301}), "/scheme-and-status", "", "", 301, "https://gw.test/scheme-and-status"},
		// HTTPRouteRedirectHostAndStatus
		{"hostname", on80(redirect.Config{Hostname: ex}), "/hostname-redirect", "", "", 302, "http://example.org/hostname-redirect"},
		{"host and status", on80(redirect.Config{Hostname: ex, StatusCode: 301}), "/host-and-status", "", "", 301, "http://example.org/host-and-status"},
		// HTTPRoute303/307/308Redirect
		{"303", on80(redirect.Config{StatusCode: 303}), "/see-other", "", http.MethodPost, 303, "http://gw.test/see-other"},
		{"307", on80(redirect.Config{StatusCode: 307}), "/temporary", "", http.MethodPost, 307, "http://gw.test/temporary"},
		{"308", on80(redirect.Config{StatusCode: 308}), "/permanent", "", http.MethodPost, 308, "http://gw.test/permanent"},
		// HTTPRouteRedirectPortAndScheme, listener on 80
		{"80: scheme nil, port nil", on80(redirect.Config{Hostname: ex}), "/a", "", "", 302, "http://example.org/a"},
		{"80: scheme nil, port 80", on80(redirect.Config{Hostname: ex, Port: 80}), "/a", "", "", 302, "http://example.org/a"},
		{"80: scheme nil, port 8080", on80(redirect.Config{Hostname: ex, Port: 8080}), "/a", "", "", 302, "http://example.org:8080/a"},
		{"80: https, port nil", on80(redirect.Config{Hostname: ex, Scheme: "https"}), "/a", "", "", 302, "https://example.org/a"},
		{"80: https, port 443", on80(redirect.Config{Hostname: ex, Scheme: "https", Port: 443}), "/a", "", "", 302, "https://example.org/a"},
		{"80: https, port 8443", on80(redirect.Config{Hostname: ex, Scheme: "https", Port: 8443}), "/a", "", "", 302, "https://example.org:8443/a"},
		// listener on 8080
		{"8080: scheme nil, port nil", on8080(redirect.Config{Hostname: ex}), "/a", "", "", 302, "http://example.org:8080/a"},
		{"8080: scheme nil, port 80", on8080(redirect.Config{Hostname: ex, Port: 80}), "/a", "", "", 302, "http://example.org/a"},
		{"8080: https, port nil", on8080(redirect.Config{Hostname: ex, Scheme: "https"}), "/a", "", "", 302, "https://example.org/a"},
		// listener on 443
		{"443: scheme nil, port nil", on443(redirect.Config{Hostname: ex}), "/a", "", "", 302, "https://example.org/a"},
		{"443: scheme nil, port 443", on443(redirect.Config{Hostname: ex, Port: 443}), "/a", "", "", 302, "https://example.org/a"},
		{"443: scheme nil, port 8443", on443(redirect.Config{Hostname: ex, Port: 8443}), "/a", "", "", 302, "https://example.org:8443/a"},
		{"443: http, port nil", on443(redirect.Config{Hostname: ex, Scheme: "http"}), "/a", "", "", 302, "http://example.org/a"},
		{"443: http, port 80", on443(redirect.Config{Hostname: ex, Scheme: "http", Port: 80}), "/a", "", "", 302, "http://example.org/a"},
		{"443: http, port 8080", on443(redirect.Config{Hostname: ex, Scheme: "http", Port: 8080}), "/a", "", "", 302, "http://example.org:8080/a"},
		// The request's parts.
		{"query kept", on80(redirect.Config{Scheme: "https"}), "/q?a=1&b=%20", "", "", 302, "https://gw.test/q?a=1&b=%20"},
		{"escaped path kept", on80(redirect.Config{ReplacePrefix: ptr("/new"), MatchedPrefix: "/old"}), "/old/a%2Fb", "", "", 302, "http://gw.test/new/a%2Fb"},
		{"IPv6 host", on8080(redirect.Config{}), "/six", "[::1]:8080", "", 302, "http://[::1]:8080/six"},
		{"IPv6 host, default port", on80(redirect.Config{}), "/six", "[::1]", "", 302, "http://[::1]/six"},
		{"no listener: the request's port", redirect.Config{Hostname: ex}, "/a", "gw.test:9999", "", 302, "http://example.org:9999/a"},
		{"HEAD", on80(redirect.Config{Scheme: "https"}), "/h", "", http.MethodHead, 302, "https://gw.test/h"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var called atomic.Bool
			f, err := redirect.New(c.config)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(f(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called.Store(true) })))
			defer srv.Close()
			method := c.method
			if method == "" {
				method = http.MethodGet
			}
			req, err := http.NewRequest(method, srv.URL+c.target, strings.NewReader("body"))
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "gw.test:8080"
			if c.host != "" {
				req.Host = c.host
			}
			client := srv.Client()
			client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.status || resp.Header.Get("Location") != c.location {
				t.Errorf("%d Location %q, want %d %q", resp.StatusCode, resp.Header.Get("Location"), c.status, c.location)
			}
			if called.Load() {
				t.Error("the next handler was called")
			}
		})
	}
}

// A request that came in over TLS, with no listener scheme given, keeps
// https.
func TestRedirectTLSRequest(t *testing.T) {
	f, err := redirect.New(redirect.Config{Hostname: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(f(http.NotFoundHandler()))
	defer srv.Close()
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/s", nil)
	req.Host = "gw.test:443"
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Location"); got != "https://example.org/s" {
		t.Errorf("Location %q, want https://example.org/s", got)
	}
}

// Whatever the request's path and Host, the Location is an absolute URL
// that parses back to the scheme, host and port configured, and to the
// replaced path.
func FuzzLocation(f *testing.F) {
	f.Add("/old/a%2Fb", "gw.test:8080", "/new")
	f.Add("/old", "[::1]", "")
	f.Add("/old/", "", "/")
	f.Fuzz(func(t *testing.T, target, host, repl string) {
		if repl != "" && !strings.HasPrefix(repl, "/") {
			t.Skip()
		}
		u, err := url.ParseRequestURI(target)
		if err != nil || !strings.HasPrefix(u.Path, "/") {
			t.Skip()
		}
		c := redirect.Config{Scheme: "https", Hostname: "example.org", Port: 8443, ReplacePrefix: &repl, MatchedPrefix: "/old"}
		r := &http.Request{Method: http.MethodGet, URL: u, Host: host}
		loc, err := url.Parse(c.Location(r))
		if err != nil {
			t.Fatalf("Location %q does not parse: %v", c.Location(r), err)
		}
		if loc.Scheme != "https" || loc.Host != "example.org:8443" || loc.RawQuery != u.RawQuery {
			t.Fatalf("Location %q for %q", loc, target)
		}
		if !strings.HasPrefix(loc.Path, "/") {
			t.Fatalf("Location %q: path not absolute", loc)
		}
	})
}

// An invalid Config is refused when the filter is built: the gateway and
// the mesh refuse the route or profile with the error, so no request is
// answered by a filter that cannot work.
func TestRedirectInvalidConfig(t *testing.T) {
	for _, c := range []redirect.Config{{StatusCode: 200}, {Scheme: "ftp"}, {Port: 70000}, {FullPath: "a"}, {FullPath: "/a", ReplacePrefix: ptr("/b")}} {
		if f, err := redirect.New(c); err == nil || f != nil {
			t.Errorf("New(%+v): %v, want an error and no filter", c, err)
		}
	}
}
