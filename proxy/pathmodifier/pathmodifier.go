// Package pathmodifier applies a Gateway API HTTPPathModifier
// (ReplaceFullPath, ReplacePrefixMatch) to a URL's path: the one path
// logic of the redirect and rewrite filters.
package pathmodifier

import (
	"net/url"
	"strings"
)

// ReplaceFullPath sets u's path to full (a decoded path: u escapes it as
// it needs); the query is kept.
func ReplaceFullPath(u *url.URL, full string) {
	u.Path, u.RawPath = full, ""
}

// ReplacePrefix replaces the matched path prefix of u with replacement,
// element by element as the spec's table says (a trailing "/" of either
// is ignored; an empty result is "/"):
//
//	/foo/bar  /foo   /xyz   → /xyz/bar
//	/foo/     /foo   /xyz   → /xyz/
//	/foo      /foo   ""     → /
//
// It reports false, leaving u as it was, when the path does not start with
// matched at an element boundary (a route that matched otherwise).
//
// The prefix is matched on the decoded path (as routes match). When u
// carries an escaped form of its own (RawPath: %2F, or an escape that
// EscapedPath would not make), the rest after the prefix keeps its escapes:
// the prefix is cut from the escaped path after as many decoded bytes, and
// the replacement escaped, so that RawPath stays a valid encoding of Path.
func ReplacePrefix(u *url.URL, matched, replacement string) bool {
	prefix := strings.TrimSuffix(matched, "/")
	p := u.Path
	if !strings.HasPrefix(p, prefix) || (len(p) > len(prefix) && p[len(prefix)] != '/') {
		return false
	}
	repl := strings.TrimSuffix(replacement, "/")
	rest := p[len(prefix):]
	np := repl + rest
	if np == "" {
		np = "/"
	}
	raw := u.RawPath
	if raw == "" || u.EscapedPath() != raw {
		// No escaped form of its own, or one that is not an encoding of
		// Path (EscapedPath ignores it then too).
		u.Path, u.RawPath = np, ""
		return true
	}
	i := escapedOffset(raw, len(prefix))
	nraw := (&url.URL{Path: repl}).EscapedPath() + raw[i:]
	if nraw == "" {
		nraw = "/"
	}
	u.Path, u.RawPath = np, nraw
	if u.EscapedPath() != nraw {
		// The escapes left are ones EscapedPath makes itself.
		u.RawPath = ""
	}
	return true
}

// escapedOffset returns the offset in raw, a valid escaped form of a path
// of at least n bytes, after its first n decoded bytes.
func escapedOffset(raw string, n int) int {
	i := 0
	for ; n > 0; n-- {
		if raw[i] == '%' {
			i += 3
		} else {
			i++
		}
	}
	return i
}
