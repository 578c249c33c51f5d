package rewrite_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/httpproxy/httpproxytest"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/middleware/rewrite"
)

func ptr(s string) *string { return &s }

// The conformance tests HTTPRouteRewriteHost and HTTPRouteRewritePath, and
// the request's query and escapes, through a reverse proxy to a loopback
// upstream that answers the Host and request-target it got.
func TestRewrite(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Host+" "+r.RequestURI)
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	upstream := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(u)
		pr.Out.Host = pr.In.Host // the Host as the filter left it
	}}
	for _, c := range []struct {
		name   string
		config rewrite.Config
		target string
		want   string // Host and request-target upstream
	}{
		// HTTPRouteRewriteHost
		{"host", rewrite.Config{Hostname: "one.example.org"}, "/one", "one.example.org /one"},
		{"host, port dropped", rewrite.Config{Hostname: "example.org"}, "/two", "example.org /two"},
		// HTTPRouteRewritePath
		{"prefix", rewrite.Config{ReplacePrefix: ptr("/one"), MatchedPrefix: "/prefix/one"}, "/prefix/one/two", "rewrite.example:8080 /one/two"},
		{"strip prefix", rewrite.Config{ReplacePrefix: ptr("/"), MatchedPrefix: "/strip-prefix"}, "/strip-prefix/three", "rewrite.example:8080 /three"},
		{"strip prefix, nothing after", rewrite.Config{ReplacePrefix: ptr("/"), MatchedPrefix: "/strip-prefix"}, "/strip-prefix", "rewrite.example:8080 /"},
		{"full path", rewrite.Config{FullPath: ptr("/one")}, "/full/one/two", "rewrite.example:8080 /one"},
		{"full path and host", rewrite.Config{FullPath: ptr("/test"), Hostname: "test.example.org"}, "/full/rewrite-path-and-modify-headers/test", "test.example.org /test"},
		{"prefix to prefix", rewrite.Config{ReplacePrefix: ptr("/prefix"), MatchedPrefix: "/prefix/rewrite-path-and-modify-headers"}, "/prefix/rewrite-path-and-modify-headers/one", "rewrite.example:8080 /prefix/one"},
		// The request's parts.
		{"query kept", rewrite.Config{ReplacePrefix: ptr("/b"), MatchedPrefix: "/a"}, "/a/x?q=1&r=%2F", "rewrite.example:8080 /b/x?q=1&r=%2F"},
		{"escapes kept", rewrite.Config{ReplacePrefix: ptr("/b"), MatchedPrefix: "/a"}, "/a/x%2Fy", "rewrite.example:8080 /b/x%2Fy"},
		{"full path escaped", rewrite.Config{FullPath: ptr("/a b")}, "/x", "rewrite.example:8080 /a%20b"},
		{"prefix not matched", rewrite.Config{ReplacePrefix: ptr("/b"), MatchedPrefix: "/a"}, "/ab", "rewrite.example:8080 /ab"},
		{"nothing", rewrite.Config{}, "/same?x", "rewrite.example:8080 /same?x"},
	} {
		t.Run(c.name, func(t *testing.T) {
			front := httptest.NewServer(rewrite.New(c.config)(upstream))
			defer front.Close()
			req, _ := http.NewRequest(http.MethodGet, front.URL, nil)
			req.URL.Opaque = c.target // sent as written
			req.Host = "rewrite.example:8080"
			resp, err := front.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != c.want {
				t.Errorf("upstream got %q, want %q", b, c.want)
			}
		})
	}
}

// An absolute-form request's URL host is rewritten with its Host.
func TestRewriteAbsoluteForm(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "http://old.example/p", nil)
	var got *http.Request
	rewrite.New(rewrite.Config{Hostname: "new.example"})(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r })).
		ServeHTTP(httptest.NewRecorder(), r)
	if got.Host != "new.example" || got.URL.Host != "new.example" {
		t.Errorf("Host %q, URL.Host %q, want new.example", got.Host, got.URL.Host)
	}
}

// Whatever the request-target, the rewritten one parses back to the
// rewritten path and the query the client sent.
func FuzzRewrite(f *testing.F) {
	f.Add("/a/x%2Fy?q", "/b")
	f.Add("/a", "")
	f.Add("/a/%zz", "/")
	f.Fuzz(func(t *testing.T, target, repl string) {
		if repl != "" && !strings.HasPrefix(repl, "/") {
			t.Skip()
		}
		u, err := url.ParseRequestURI(target)
		if err != nil || !strings.HasPrefix(u.Path, "/") {
			t.Skip()
		}
		r := &http.Request{Method: http.MethodGet, URL: u, Host: "h", RequestURI: target}
		rewrite.New(rewrite.Config{ReplacePrefix: &repl, MatchedPrefix: "/a"})(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			back, err := url.ParseRequestURI(r.URL.RequestURI())
			if err != nil {
				t.Fatalf("%q → %q: %v", target, r.URL.RequestURI(), err)
			}
			if back.Path != r.URL.Path || back.RawQuery != u.RawQuery {
				t.Fatalf("%q → %q parses to %q ?%s, want %q ?%s", target, r.URL.RequestURI(), back.Path, back.RawQuery, r.URL.Path, u.RawQuery)
			}
		})).ServeHTTP(httptest.NewRecorder(), r)
	})
}

// Through the proxy's own forwarder (proxy/httpproxy), the upstream gets
// the rewritten Host and path, escapes and query kept.
func TestThroughForwarder(t *testing.T) {
	app := httpproxytest.App(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Host+" "+r.RequestURI)
	}))
	fw := httpproxy.New(httpproxy.Options{Direction: "outbound", Metrics: metrics.New(), Log: httpproxytest.Log()})
	h := httpproxytest.Routed("outbound", httpproxytest.Target(t, "svc.test:80", nil, app))(
		rewrite.New(rewrite.Config{Hostname: "one.example.org", ReplacePrefix: ptr("/b"), MatchedPrefix: "/a"})(fw))
	front := httptest.NewServer(h)
	defer front.Close()
	req, _ := http.NewRequest(http.MethodGet, front.URL, nil)
	req.URL.Opaque = "/a/x%2Fy?q=1"
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "one.example.org /b/x%2Fy?q=1"; string(b) != want {
		t.Errorf("upstream got %q, want %q", b, want)
	}
}
