// Package rewrite implements the Gateway API's URLRewrite filter
// (HTTPURLRewriteFilter): the request's host and path are rewritten before
// the next handler forwards it.
package rewrite

import (
	"net/http"

	"github.com/meridian-mesh/meridian/proxy/pathmodifier"
)

// Config is an HTTPURLRewriteFilter and the rule's PathPrefix value.
type Config struct {
	// Hostname replaces the request's Host (port included); empty: kept.
	Hostname string
	// FullPath replaces the whole path (ReplaceFullPath); nil: none.
	FullPath *string
	// ReplacePrefix replaces MatchedPrefix, the rule's PathPrefix value
	// (ReplacePrefixMatch); nil: none. FullPath wins when both are set
	// (the API's validation allows one).
	ReplacePrefix *string
	MatchedPrefix string
}

// New returns the filter. It rewrites r in place before calling next:
// r.Host (and r.URL.Host, set for an absolute-form request) and r.URL's
// path, escaped form included (RawPath, as pathmodifier keeps it valid);
// the query and r.RequestURI, the target as the client sent it, stay.
func New(c Config) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c.Hostname != "" {
				r.Host = c.Hostname
				if r.URL.Host != "" {
					r.URL.Host = c.Hostname
				}
			}
			switch {
			case c.FullPath != nil:
				pathmodifier.ReplaceFullPath(r.URL, *c.FullPath)
			case c.ReplacePrefix != nil:
				pathmodifier.ReplacePrefix(r.URL, c.MatchedPrefix, *c.ReplacePrefix)
			}
			next.ServeHTTP(w, r)
		})
	}
}
