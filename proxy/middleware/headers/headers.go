// Package headers implements the Gateway API's RequestHeaderModifier and
// ResponseHeaderModifier filters (HTTPHeaderFilter): set, add and remove
// header fields of the request before the next handler sees it, or of the
// response before it is written.
package headers

import (
	"bufio"
	"net"
	"net/http"
)

// Header is one field: Name is matched case-insensitively.
type Header struct{ Name, Value string }

// Modifier is an HTTPHeaderFilter. It is applied in the order Remove, Set,
// Add (Envoy's order, which the other implementations share): a name both
// removed and added ends with the added value only.
type Modifier struct {
	// Set replaces every value of the field with Value.
	Set []Header
	// Add appends Value to the field: joined with a comma to the field's
	// last line (RFC 9110 §5.3), as the spec's example "my-header:
	// foo,bar,baz" shows; a field line of its own for Set-Cookie, whose
	// values cannot be combined.
	Add []Header
	// Remove removes the fields of these names.
	Remove []string
}

// compiled is a Modifier with its names canonicalised once.
type compiled struct {
	set, add []Header
	remove   []string
}

func compile(m Modifier) *compiled {
	c := &compiled{
		set:    make([]Header, len(m.Set)),
		add:    make([]Header, len(m.Add)),
		remove: make([]string, len(m.Remove)),
	}
	for i, h := range m.Set {
		c.set[i] = Header{http.CanonicalHeaderKey(h.Name), h.Value}
	}
	for i, h := range m.Add {
		c.add[i] = Header{http.CanonicalHeaderKey(h.Name), h.Value}
	}
	for i, n := range m.Remove {
		c.remove[i] = http.CanonicalHeaderKey(n)
	}
	return c
}

// Apply applies m to h.
func (m Modifier) Apply(h http.Header) { compile(m).apply(h) }

func (c *compiled) apply(h http.Header) {
	canonical(h)
	for _, n := range c.remove {
		delete(h, n)
	}
	for _, f := range c.set {
		h[f.Name] = []string{f.Value}
	}
	for _, f := range c.add {
		vs := h[f.Name]
		switch {
		case len(vs) == 0:
			h[f.Name] = []string{f.Value}
		case f.Name == "Set-Cookie":
			h[f.Name] = append(vs, f.Value)
		case vs[len(vs)-1] == "":
			vs[len(vs)-1] = f.Value
		default:
			vs[len(vs)-1] += "," + f.Value
		}
	}
}

// canonical moves the values of keys not in canonical form (set directly
// in the map, as a handler may) under their canonical key, so that case
// never splits a field nor hides one from Remove. net/http's parsers
// canonicalise already: one pass, allocating nothing then.
func canonical(h http.Header) {
	for k, vs := range h {
		if c := http.CanonicalHeaderKey(k); c != k {
			h[c] = append(h[c], vs...)
			delete(h, k)
		}
	}
}

// Request returns the RequestHeaderModifier filter: m applied to the
// request's header before next. The Host field is the request's r.Host in
// net/http, not a key of r.Header: Set or Add of "Host" sets r.Host, and
// removing it is ignored (a request has one authority).
func Request(m Modifier) func(http.Handler) http.Handler {
	c := compile(m)
	var host string
	hasHost := false
	for _, f := range append(append([]Header(nil), c.set...), c.add...) {
		if f.Name == "Host" {
			host, hasHost = f.Value, true
		}
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c.apply(r.Header)
			if hasHost {
				delete(r.Header, "Host")
				r.Host = host
			}
			next.ServeHTTP(w, r)
		})
	}
}

// Response returns the ResponseHeaderModifier filter: m applied to the
// response's header when next writes its status line (1xx informational
// responses excepted), its first body bytes, flushes, or returns without
// writing: whatever wrote the response, the upstream's or an error the
// proxy made.
func Response(m Modifier) func(http.Handler) http.Handler {
	c := compile(m)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mw := &writer{ResponseWriter: w, m: c}
			next.ServeHTTP(mw, r)
			mw.apply()
		})
	}
}

// writer applies the modifier once, just before the header is written.
type writer struct {
	http.ResponseWriter
	m    *compiled
	done bool
}

func (w *writer) apply() {
	if !w.done {
		w.done = true
		w.m.apply(w.ResponseWriter.Header())
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

// FlushError writes the header (modified) if it is not out yet.
func (w *writer) FlushError() error {
	w.apply()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush is http.Flusher's, for callers that type-assert it.
func (w *writer) Flush() { _ = w.FlushError() }

// Hijack applies the modifier to the header as it is at the hijack: a
// ReverseProxy switching protocols copies the upstream's 101 header after
// hijacking, so on an upgrade Set and Remove do not see the upstream's
// fields (Add and Set still reach the 101 response).
func (w *writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.apply()
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap gives http.ResponseController the rest (deadlines, full duplex).
func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }
