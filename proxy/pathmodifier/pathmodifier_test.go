package pathmodifier_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/proxy/pathmodifier"
)

// The spec's ReplacePrefixMatch table (HTTPPathModifier), the conformance
// tests' rewrite and redirect paths, element boundaries and escaped paths.
func TestReplacePrefix(t *testing.T) {
	for _, c := range []struct {
		path, matched, repl string
		ok                  bool
		want                string // EscapedPath after
	}{
		// The spec's table.
		{"/foo/bar", "/foo", "/xyz", true, "/xyz/bar"},
		{"/foo/bar", "/foo", "/xyz/", true, "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz", true, "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz/", true, "/xyz/bar"},
		{"/foo", "/foo", "/xyz", true, "/xyz"},
		{"/foo/", "/foo", "/xyz", true, "/xyz/"},
		{"/foo/bar", "/foo", "", true, "/bar"},
		{"/foo/", "/foo", "", true, "/"},
		{"/foo", "/foo", "", true, "/"},
		{"/foo/", "/foo", "/", true, "/"},
		{"/foo", "/foo", "/", true, "/"},
		// Conformance: HTTPRouteRewritePath, HTTPRouteRedirectPath.
		{"/prefix/one/two", "/prefix/one", "/one", true, "/one/two"},
		{"/strip-prefix/three", "/strip-prefix", "/", true, "/three"},
		{"/strip-prefix", "/strip-prefix", "/", true, "/"},
		{"/prefix/rewrite-path-and-modify-headers/one", "/prefix/rewrite-path-and-modify-headers", "/prefix", true, "/prefix/one"},
		{"/original-prefix/lemon", "/original-prefix", "/replacement-prefix", true, "/replacement-prefix/lemon"},
		{"/path-and-host", "/path-and-host", "/replacement-prefix", true, "/replacement-prefix"},
		// The root prefix matches every path.
		{"/a/b", "/", "/x", true, "/x/a/b"},
		{"/", "/", "/x", true, "/x/"},
		// Element boundaries: /foo is no prefix of /foobar.
		{"/foobar", "/foo", "/xyz", false, "/foobar"},
		{"/bar", "/foo", "/xyz", false, "/bar"},
		// The rest keeps its escapes; the replacement is escaped.
		{"/foo/a%2Fb", "/foo", "/xyz", true, "/xyz/a%2Fb"},
		{"/foo/a%2Fb", "/foo", "/x y", true, "/x%20y/a%2Fb"},
		{"/f%6Fo/a%2Fb", "/foo", "/xyz", true, "/xyz/a%2Fb"},
		{"/foo/a%20b", "/foo", "", true, "/a%20b"},
	} {
		u, err := url.Parse("http://h" + c.path + "?q=1")
		if err != nil {
			t.Fatal(err)
		}
		ok := pathmodifier.ReplacePrefix(u, c.matched, c.repl)
		if ok != c.ok || u.EscapedPath() != c.want || u.RawQuery != "q=1" {
			t.Errorf("%s, prefix %q → %q: %v %q ?%s, want %v %q ?q=1", c.path, c.matched, c.repl, ok, u.EscapedPath(), u.RawQuery, c.ok, c.want)
		}
	}
}

func TestReplaceFullPath(t *testing.T) {
	u, _ := url.Parse("http://h/full/a%2Fb?q=1")
	pathmodifier.ReplaceFullPath(u, "/one two")
	if got := u.String(); got != "http://h/one%20two?q=1" {
		t.Errorf("got %s, want http://h/one%%20two?q=1", got)
	}
}

// Whatever the path (escaped or not), a prefix that matched is replaced
// into a path that starts with "/", whose escaped form decodes to it, and
// whose rest after the replacement is the rest after the prefix.
func FuzzReplacePrefix(f *testing.F) {
	f.Add("/foo/bar", "/foo", "/xyz")
	f.Add("/f%6Fo/a%2Fb", "/foo/", "")
	f.Add("/%", "/", "/")
	f.Fuzz(func(t *testing.T, path, matched, repl string) {
		if !strings.HasPrefix(matched, "/") || (repl != "" && !strings.HasPrefix(repl, "/")) {
			t.Skip() // the API's validation: paths are absolute
		}
		u, err := url.Parse("http://h" + path)
		if err != nil || !strings.HasPrefix(u.Path, "/") {
			t.Skip()
		}
		before := u.Path
		if !pathmodifier.ReplacePrefix(u, matched, repl) {
			if u.Path != before {
				t.Fatalf("unmatched %q changed to %q", before, u.Path)
			}
			return
		}
		if !strings.HasPrefix(u.Path, "/") {
			t.Fatalf("%q, %q → %q: not absolute", path, repl, u.Path)
		}
		rest := before[len(strings.TrimSuffix(matched, "/")):]
		if !strings.HasSuffix(u.Path, rest) {
			t.Fatalf("%q → %q lost the rest %q", before, u.Path, rest)
		}
		d, err := url.PathUnescape(u.EscapedPath())
		if err != nil || d != u.Path {
			t.Fatalf("EscapedPath %q decodes to %q (%v), want %q", u.EscapedPath(), d, err, u.Path)
		}
	})
}
