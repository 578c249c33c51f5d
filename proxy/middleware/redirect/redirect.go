// Package redirect implements the Gateway API's RequestRedirect filter
// (HTTPRequestRedirectFilter): it answers the request with a redirect and
// never calls the next handler.
package redirect

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/meridian-mesh/meridian/proxy/pathmodifier"
)

// Config is an HTTPRequestRedirectFilter and what it needs of its route and
// listener. Empty fields keep the request's part.
type Config struct {
	// Scheme of the Location: "http", "https" or empty (the request's).
	Scheme string
	// Hostname of the Location; empty: the request's host, port removed.
	Hostname string
	// Port of the Location; 0: derived as the spec says (Location below).
	Port uint32
	// FullPath replaces the whole path (ReplaceFullPath); empty: no
	// full-path replacement.
	FullPath string
	// ReplacePrefix replaces MatchedPrefix, the route's PathPrefix value
	// (ReplacePrefixMatch); nil: none.
	ReplacePrefix *string
	MatchedPrefix string
	// StatusCode is 301, 302, 303, 307 or 308; 0: 302.
	StatusCode int
	// ListenerPort and ListenerScheme ("http" or "https") are the listener
	// the request came in on. An empty ListenerScheme is the connection's
	// (TLS or not); a zero ListenerPort, the request's Host port.
	ListenerPort   uint32
	ListenerScheme string
}

// Validate says what in c the filter cannot use.
func (c Config) Validate() error {
	switch c.StatusCode {
	case 0, http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
	default:
		return fmt.Errorf("redirect: statusCode %d: allowed are 301, 302, 303, 307 and 308", c.StatusCode)
	}
	for _, s := range []struct{ field, v string }{{"scheme", c.Scheme}, {"listener scheme", c.ListenerScheme}} {
		if s.v != "" && s.v != "http" && s.v != "https" {
			return fmt.Errorf("redirect: %s %q: allowed are http and https", s.field, s.v)
		}
	}
	if c.Port > 65535 || c.ListenerPort > 65535 {
		return fmt.Errorf("redirect: port %d / listener port %d: allowed are 1 to 65535", c.Port, c.ListenerPort)
	}
	if c.FullPath != "" && c.ReplacePrefix != nil {
		return fmt.Errorf("redirect: path: one of replaceFullPath and replacePrefixMatch, not both")
	}
	for _, p := range []string{c.FullPath, c.MatchedPrefix} {
		if p != "" && !strings.HasPrefix(p, "/") {
			return fmt.Errorf("redirect: path %q: must start with /", p)
		}
	}
	return nil
}

// New returns the filter, or Validate's error for an invalid c. It answers
// with c.StatusCode (default 302) and a Location built from the request
// and c; the request's query is kept.
func New(c Config) (func(http.Handler) http.Handler, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	status := c.StatusCode
	if status == 0 {
		status = http.StatusFound
	}
	return func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, c.Location(r), status)
		})
	}, nil
}

// Location is the redirect's target for r. The port, when c.Port is 0, is
// the scheme's well-known one (80, 443) if c.Scheme is set, else the
// listener's; it is left out when it is the scheme's well-known one.
func (c Config) Location(r *http.Request) string {
	scheme := c.Scheme
	if scheme == "" {
		scheme = c.ListenerScheme
	}
	if scheme == "" {
		scheme = "http"
		if r.TLS != nil {
			scheme = "https"
		}
	}
	reqHost, reqPort := splitHost(r.Host)
	host := c.Hostname
	if host == "" {
		host = reqHost
	}
	var port uint32
	switch {
	case c.Port != 0:
		port = c.Port
	case c.Scheme != "":
		port = wellKnown(c.Scheme)
	case c.ListenerPort != 0:
		port = c.ListenerPort
	default:
		if p, err := strconv.ParseUint(reqPort, 10, 16); err == nil {
			port = uint32(p)
		}
	}
	if port == wellKnown(scheme) {
		port = 0
	}
	u := url.URL{Scheme: scheme, Host: host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if port != 0 {
		u.Host = net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10))
	} else if strings.Contains(host, ":") {
		u.Host = "[" + host + "]" // an IPv6 literal
	}
	switch {
	case c.FullPath != "":
		pathmodifier.ReplaceFullPath(&u, c.FullPath)
	case c.ReplacePrefix != nil:
		pathmodifier.ReplacePrefix(&u, c.MatchedPrefix, *c.ReplacePrefix)
	}
	if u.Path == "" {
		u.Path = "/" // an OPTIONS * or CONNECT request has none
	}
	return u.String()
}

// splitHost splits a Host header into host and port ("" when absent),
// brackets of an IPv6 literal removed.
func splitHost(hostport string) (host, port string) {
	u := url.URL{Host: hostport}
	return u.Hostname(), u.Port()
}

func wellKnown(scheme string) uint32 {
	switch scheme {
	case "http":
		return 80
	case "https":
		return 443
	}
	return 0
}
