package h1server

import (
	"io"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/meridian-mesh/meridian/proxy/httpproxy/internal/h1head"
)

// parseHead is http.ReadRequest for the requests a proxy sees most (see
// h1head): a whole head already in buf, with an origin-form target and
// HTTP/1.1 or HTTP/1.0, at most one Host. For those it returns what
// http.ReadRequest would (every field, the header map, the body's
// semantics; FuzzParseHead compares the two) and the head's length; for
// anything else, valid or not, ok is false and the caller reads the
// request with http.ReadRequest, so every error stays net/http's.
//
// The request's body reads from br after the head (Content-Length bytes);
// the caller discards the head from br first (br nil: the caller takes
// the body from buf, and Body reads nothing). The request is written to
// *req (the caller's, on its stack until it adds the context), and only
// when ok; its Header and URL are into's (nil: new ones).
func parseHead(buf []byte, br io.Reader, req *http.Request, into *Reuse) (n int, ok bool) {
	if n = h1head.End(buf); n < 0 {
		return 0, false
	}
	head := string(buf[:n-2]) // every line with its CRLF
	line, rest := h1head.CutLine(head)
	method, target, proto, minor, ok := parseRequestLine(line)
	if !ok {
		return 0, false
	}
	var u *url.URL
	var fields *h1head.Reuse
	if into != nil {
		fields = &into.fields
		if parseTarget(target, &into.url) {
			u = &into.url
		}
	}
	if u == nil {
		var err error
		if u, err = url.ParseRequestURI(target); err != nil {
			return 0, false
		}
	}
	f, ok := h1head.ParseFields(rest, true, fields)
	if !ok || f.Hosts > 1 || f.Lengths > 1 {
		return 0, false
	}
	var cl int64
	if f.Lengths == 1 {
		if cl, ok = h1head.ContentLength(f.ContentLength); !ok {
			return 0, false
		}
	}
	*req = http.Request{Method: method, URL: u, RequestURI: target, Proto: proto, ProtoMajor: 1, ProtoMinor: minor,
		Header: f.Header, Host: f.Host, Body: http.NoBody, ContentLength: cl}
	req.Close = shouldClose(minor, f.Header)
	switch {
	case cl > 0 && br == nil:
		req.Body = unread{}
	case cl > 0:
		req.Body = h1head.NewBody(br, cl)
	}
	return n, true
}

// Reuse is what ParseHead fills again for each head, instead of making it
// new: the Header's storage and the URL. Its zero value is ready.
type Reuse struct {
	fields h1head.Reuse
	url    url.URL
}

// parseTarget is url.ParseRequestURI for the origin-form targets whose
// path needs no escaping (letters, digits and "-._~$&+,/:;=@", not
// starting with "//"; the query as it is), into *u; false for any other.
func parseTarget(target string, u *url.URL) bool {
	path, query, hasQuery := strings.Cut(target, "?")
	if strings.HasPrefix(path, "//") {
		return false
	}
	for i := 0; i < len(path); i++ {
		if c := path[i]; !pathByte[c] {
			return false
		}
	}
	// As url's parse: a lone '?' at the end is ForceQuery; the query is
	// everything after the first one.
	*u = url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
	return true
}

// pathByte holds the bytes a path keeps as they are (url's shouldEscape
// in encodePath mode: unreserved, and the sub-delimiters it leaves).
var pathByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~$&+,/:;=@" {
		t[c] = true
	}
	return t
}()

// parseRequestLine splits "METHOD SP origin-form SP HTTP/1.x". Methods
// are the known ones as constants (no string kept for them) or other
// tokens; the target is visible ASCII starting with '/'. proto is a
// constant, minor its minor version.
func parseRequestLine(line string) (method, target, proto string, minor int, ok bool) {
	sp := -1
	for i := 0; i < len(line); i++ {
		if line[i] == ' ' {
			sp = i
			break
		}
		if !httpguts.IsTokenRune(rune(line[i])) {
			return "", "", "", 0, false
		}
	}
	const version = len(" HTTP/1.1")
	if sp <= 0 || len(line) < sp+1+1+version || line[sp+1] != '/' {
		return "", "", "", 0, false
	}
	method = knownMethod(line[:sp])
	if method == "CONNECT" || method == "PRI" {
		return "", "", "", 0, false // their targets and bodies follow other rules
	}
	rest := line[sp+1:]
	if rest[len(rest)-version] != ' ' {
		return "", "", "", 0, false
	}
	if proto, minor, ok = h1head.Proto(rest[len(rest)-version+1:]); !ok {
		return "", "", "", 0, false
	}
	target = rest[:len(rest)-version]
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c > '~' {
			return "", "", "", 0, false
		}
	}
	return method, target, proto, minor, true
}

func knownMethod(m string) string {
	switch m {
	case "GET":
		return "GET"
	case "POST":
		return "POST"
	case "HEAD":
		return "HEAD"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "OPTIONS":
		return "OPTIONS"
	case "PATCH":
		return "PATCH"
	}
	return m
}

// shouldClose is net/http's for a request (HTTP/1.x).
func shouldClose(minor int, h http.Header) bool {
	conv := h["Connection"]
	hasClose := httpguts.HeaderValuesContainsToken(conv, "close")
	if minor == 0 {
		return hasClose || !httpguts.HeaderValuesContainsToken(conv, "keep-alive")
	}
	return hasClose
}
