// Package cors implements the Gateway API's CORS filter (HTTPCORSFilter):
// it answers preflight requests itself and adds the Access-Control-*
// fields to the responses of cross-origin requests from allowed origins.
package cors

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is an HTTPCORSFilter.
type Config struct {
	// AllowOrigins are "<scheme>://<host>[:<port>]" (port defaulting to
	// the scheme's), the host possibly with a "*" matching any number of
	// labels to its left ("https://*.example.com"), or "*": any origin.
	AllowOrigins []string
	// AllowMethods are method names (case-sensitive) or "*".
	AllowMethods []string
	// AllowHeaders and ExposeHeaders are field names or "*".
	AllowHeaders, ExposeHeaders []string
	// MaxAge is how long a client may cache a preflight's answer, in whole
	// seconds; 0: the spec's default, 5 s.
	MaxAge time.Duration
	// AllowCredentials adds Access-Control-Allow-Credentials: true, and
	// makes every "*" answer the request's value instead (the Fetch
	// standard ignores "*" on a request with credentials).
	AllowCredentials bool
}

// origin is an allowed origin: scheme, host (suffix after a "*", when
// wild) and port.
type origin struct {
	any          bool
	scheme, host string
	wild         bool
	port         string
}

func parseOrigin(s string) (origin, error) {
	if s == "*" {
		return origin{any: true}, nil
	}
	scheme, rest, ok := strings.Cut(s, "://")
	scheme = strings.ToLower(scheme)
	if !ok || (scheme != "http" && scheme != "https") {
		return origin{}, fmt.Errorf("cors: allowOrigins %q: the scheme must be http or https", s)
	}
	host, port := rest, ""
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.HasSuffix(rest, "]") {
		host, port = rest[:i], rest[i+1:]
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return origin{}, fmt.Errorf("cors: allowOrigins %q: the port must be 1 to 65535", s)
		}
	}
	if port == "" {
		port = defaultPort(scheme)
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]") // an IPv6 literal, as url.Hostname gives it
	o := origin{scheme: scheme, host: strings.ToLower(host), port: port}
	if i := strings.LastIndexByte(o.host, '*'); i >= 0 {
		if i != 0 || strings.Count(o.host, "*") > 1 {
			return origin{}, fmt.Errorf("cors: allowOrigins %q: a wildcard must be the leftmost part of the host", s)
		}
		o.wild, o.host = true, o.host[1:]
	}
	if o.host == "" && !o.wild || strings.ContainsAny(o.host, "/?#@ ") {
		return origin{}, fmt.Errorf("cors: allowOrigins %q: not an origin <scheme>://<host>[:<port>]", s)
	}
	return o, nil
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// match reports whether the request's Origin value is allowed by o.
func (o origin) match(scheme, host, port string) bool {
	switch {
	case o.any:
		return true
	case scheme != o.scheme || port != o.port:
		return false
	case o.wild:
		// "*" is greedy to the left: one or more characters, dots included.
		return len(host) > len(o.host) && strings.HasSuffix(host, o.host)
	}
	return host == o.host
}

// Validate says which of c's values the filter cannot use.
func (c Config) Validate() error {
	for _, s := range c.AllowOrigins {
		if _, err := parseOrigin(s); err != nil {
			return err
		}
	}
	if c.MaxAge < 0 {
		return fmt.Errorf("cors: maxAge %v: must not be negative", c.MaxAge)
	}
	return nil
}

// filter is a compiled Config.
type filter struct {
	origins                []origin
	anyOrigin              bool
	methods, allow, expose string // joined lists; "" when absent
	anyMethod, anyHeader   bool
	maxAge                 string
	credentials            bool
	vary                   bool
}

// New returns the filter. A preflight (OPTIONS with Origin and
// Access-Control-Request-Method) is answered here, 200 with no body,
// never reaching next: with the Access-Control-* fields when its origin is
// allowed, without them otherwise (the client then fails the request it
// meant to send). Any other request with an allowed Origin goes to next,
// and its response gets Access-Control-Allow-Origin, -Allow-Credentials
// and -Expose-Headers, replacing any the upstream sent. Responses carry
// Vary: Origin whenever the answer depends on it. Origins that do not
// parse (Validate) never match.
func New(c Config) func(http.Handler) http.Handler {
	f := &filter{credentials: c.AllowCredentials}
	for _, s := range c.AllowOrigins {
		if o, err := parseOrigin(s); err == nil {
			f.origins = append(f.origins, o)
			f.anyOrigin = f.anyOrigin || o.any
		}
	}
	f.anyMethod = slices.Contains(c.AllowMethods, "*")
	f.methods = strings.Join(c.AllowMethods, ", ")
	f.anyHeader = slices.Contains(c.AllowHeaders, "*")
	f.allow = strings.Join(c.AllowHeaders, ", ")
	if slices.Contains(c.ExposeHeaders, "*") && c.AllowCredentials {
		// "*" is no wildcard to a request with credentials: it would
		// expose a field named "*". The safelisted fields stay exposed.
		f.expose = strings.Join(slices.DeleteFunc(slices.Clone(c.ExposeHeaders), func(s string) bool { return s == "*" }), ", ")
	} else {
		f.expose = strings.Join(c.ExposeHeaders, ", ")
	}
	maxAge := int64(c.MaxAge / time.Second)
	if c.MaxAge <= 0 {
		maxAge = 5
	}
	f.maxAge = strconv.FormatInt(maxAge, 10)
	// With only "*" and no credentials the answer is "*" for every origin.
	f.vary = !(f.anyOrigin && !f.credentials)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			o := r.Header.Get("Origin")
			if o == "" {
				if f.vary {
					w.Header().Add("Vary", "Origin")
				}
				next.ServeHTTP(w, r)
				return
			}
			allowed := f.allowed(o)
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				f.preflight(w, r, o, allowed)
				return
			}
			if !allowed {
				if f.vary {
					w.Header().Add("Vary", "Origin")
				}
				next.ServeHTTP(w, r)
				return
			}
			cw := &writer{ResponseWriter: w, f: f, origin: o}
			next.ServeHTTP(cw, r)
			cw.apply()
		})
	}
}

func (f *filter) allowed(value string) bool {
	if f.anyOrigin {
		return true
	}
	u, err := url.Parse(value)
	if err != nil || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return false // "null" included: only "*" allows it
	}
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if port == "" {
		port = defaultPort(scheme)
	}
	for _, o := range f.origins {
		if o.match(scheme, host, port) {
			return true
		}
	}
	return false
}

// allowOrigin sets Access-Control-Allow-Origin and -Credentials.
func (f *filter) allowOrigin(h http.Header, origin string) {
	if f.anyOrigin && !f.credentials {
		h.Set("Access-Control-Allow-Origin", "*")
	} else {
		h.Set("Access-Control-Allow-Origin", origin)
	}
	if f.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if f.vary {
		h.Add("Vary", "Origin")
	}
}

func (f *filter) preflight(w http.ResponseWriter, r *http.Request, origin string, allowed bool) {
	h := w.Header()
	if !allowed {
		h.Add("Vary", "Origin")
		h.Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		return
	}
	f.allowOrigin(h, origin)
	// A wildcard answers the request's own method and fields: valid with
	// or without credentials, which a literal "*" is not.
	if f.anyMethod {
		h.Set("Access-Control-Allow-Methods", r.Header.Get("Access-Control-Request-Method"))
	} else if f.methods != "" {
		h.Set("Access-Control-Allow-Methods", f.methods)
	}
	if f.anyHeader {
		if req := strings.Join(r.Header.Values("Access-Control-Request-Headers"), ", "); req != "" {
			h.Set("Access-Control-Allow-Headers", req)
		}
	} else if f.allow != "" {
		h.Set("Access-Control-Allow-Headers", f.allow)
	}
	if f.expose != "" {
		h.Set("Access-Control-Expose-Headers", f.expose)
	}
	h.Set("Access-Control-Max-Age", f.maxAge)
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

// writer sets the CORS fields of an allowed request's response just
// before its header is written, over any the upstream sent.
type writer struct {
	http.ResponseWriter
	f      *filter
	origin string
	done   bool
}

func (w *writer) apply() {
	if w.done {
		return
	}
	w.done = true
	h := w.ResponseWriter.Header()
	for _, k := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers"} {
		delete(h, k)
	}
	w.f.allowOrigin(h, w.origin)
	if w.f.expose != "" {
		h.Set("Access-Control-Expose-Headers", w.f.expose)
	}
}

func (w *writer) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.apply()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *writer) Write(p []byte) (int, error) {
	w.apply()
	return w.ResponseWriter.Write(p)
}

// FlushError writes the header, CORS fields set, if it is not out yet.
func (w *writer) FlushError() error {
	w.apply()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush is http.Flusher's, for callers that type-assert it.
func (w *writer) Flush() { _ = w.FlushError() }

// Hijack sets the CORS fields first (a protocol switch writes the header
// itself).
func (w *writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.apply()
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap gives http.ResponseController the rest.
func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }
