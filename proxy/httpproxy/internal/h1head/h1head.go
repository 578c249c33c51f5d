// Package h1head parses the HTTP/1 heads a proxy sees most, in place: a
// whole head already buffered, CRLF line endings, no line folding, no
// obs-text, no Transfer-Encoding, Trailer or Pragma field, at most one
// Content-Length. It gives what net/http's readers (http.ReadRequest,
// http.ReadResponse, textproto.Reader.ReadMIMEHeader) give for those heads,
// with one string for the whole head where they make one per line and
// value; for anything else it says no, and the caller uses net/http's
// reader, so that every error and every unusual form stays net/http's.
// h1server's FuzzParseHead and h1client's FuzzParseResponseHead hold the
// two to the same result.
package h1head

import (
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"strconv"

	"golang.org/x/net/http/httpguts"
)

// End is the length of the head at the start of buf (through its empty
// line), or -1 when buf does not hold it whole.
func End(buf []byte) int {
	end := bytes.Index(buf, crlfcrlf)
	if end < 0 {
		return -1
	}
	return end + len(crlfcrlf)
}

var crlfcrlf = []byte("\r\n\r\n")

// CutLine returns s's first line without its CRLF, and the rest. A lone CR
// or LF does not end a line (the callers' checks refuse it).
func CutLine(s string) (line, rest string) {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '\r' && s[i+1] == '\n' {
			return s[:i], s[i+2:]
		}
	}
	return s, ""
}

// Fields is a head's header section.
type Fields struct {
	Header http.Header
	// Host is the first Host field's value, when the caller asked for the
	// Host fields to be taken out of Header (a request's, as
	// http.ReadRequest does); Hosts counts them.
	Host  string
	Hosts int
	// ContentLength is the Content-Length field's value, which stays in
	// Header too; Lengths counts the fields.
	ContentLength string
	Lengths       int
}

// Reuse is the storage of a Header that ParseFields fills again, cleared,
// instead of making a new one: for a caller done with each head's Header
// and every slice in it before it parses the next one (an event loop's
// connection, which serves one request at a time). Its zero value is
// ready.
type Reuse struct {
	h    http.Header
	strs []string
}

// maxReused bounds the fields of a Reuse's Header: a head with more gets
// a new one, so that one large head does not leave every later one a
// large map to clear.
const maxReused = 32

// ParseFields parses the field lines of rest (each ending in CRLF, the
// empty line excluded) as textproto.ReadMIMEHeader does: names
// canonicalized, values trimmed of spaces and tabs, repeated fields in
// order. takeHost takes the Host fields out of the map. The Header is
// new, or into's (nil: new).
func ParseFields(rest string, takeHost bool, into *Reuse) (f Fields, ok bool) {
	lines := 0
	for i := 0; i < len(rest); i++ {
		if rest[i] == '\n' {
			lines++
		}
	}
	var h http.Header
	var strs []string // each field's first value, as textproto does
	switch {
	case into == nil || lines > maxReused:
		h, strs = make(http.Header, lines), make([]string, lines)
	case into.h == nil || cap(into.strs) < lines:
		into.h, into.strs = make(http.Header, max(lines, 8)), make([]string, max(lines, 8))
		fallthrough
	default:
		clear(into.h)
		h, strs = into.h, into.strs[:lines]
	}
	for rest != "" {
		var line string
		line, rest = CutLine(rest)
		colon := -1
		for i := 0; i < len(line); i++ {
			if line[i] == ':' {
				colon = i
				break
			}
			if !httpguts.IsTokenRune(rune(line[i])) {
				return Fields{}, false // folding, spaces before the colon, bad names
			}
		}
		if colon <= 0 {
			return Fields{}, false
		}
		value := line[colon+1:]
		for i := 0; i < len(value); i++ {
			if c := value[i]; c != '\t' && (c < ' ' || c > '~') {
				return Fields{}, false // CTLs are errors, obs-text is left to net/http
			}
		}
		value = trimOWS(value)
		key := textproto.CanonicalMIMEHeaderKey(line[:colon])
		switch key {
		case "Host":
			if takeHost {
				f.Hosts++
				if f.Hosts == 1 {
					f.Host = value
				}
				continue
			}
		case "Content-Length":
			f.Lengths++
			f.ContentLength = value
		case "Transfer-Encoding", "Trailer", "Pragma":
			return Fields{}, false
		}
		if vv := h[key]; vv != nil {
			h[key] = append(vv, value)
		} else {
			vv, strs = strs[:1:1], strs[1:]
			vv[0] = value
			h[key] = vv
		}
	}
	f.Header = h
	return f, true
}

// trimOWS is textproto's trimming of a field value: leading and trailing
// spaces and tabs (CR and LF cannot occur here).
func trimOWS(s string) string {
	i, j := 0, len(s)
	for i < j && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	for j > i && (s[j-1] == ' ' || s[j-1] == '\t') {
		j--
	}
	return s[i:j]
}

// ContentLength parses a trimmed Content-Length value as net/http does
// (base 10, 63 bits; empty is an error).
func ContentLength(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 63)
	if err != nil {
		return 0, false
	}
	return int64(n), true
}

// Proto is the HTTP/1.x version string p as a constant (no string kept),
// and its minor version; ok is false for any other.
func Proto(p string) (proto string, minor int, ok bool) {
	switch p {
	case "HTTP/1.1":
		return "HTTP/1.1", 1, true
	case "HTTP/1.0":
		return "HTTP/1.0", 0, true
	}
	return "", 0, false
}

// Body is net/http's body for a Content-Length message: it reads that
// many bytes from r, returns io.EOF with the last of them, and
// io.ErrUnexpectedEOF when r ends first. Close does nothing (the
// callers' own bodies decide what is left unread).
type Body struct {
	r      io.LimitedReader
	sawEOF bool
}

// NewBody reads n bytes from r.
func NewBody(r io.Reader, n int64) *Body { return &Body{r: io.LimitedReader{R: r, N: n}} }

// Reset makes b a new body reading n bytes from r (a Body inside the
// caller's own allocation).
func (b *Body) Reset(r io.Reader, n int64) { *b = Body{r: io.LimitedReader{R: r, N: n}} }

func (b *Body) Read(p []byte) (int, error) {
	if b.sawEOF {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.sawEOF = true
		if b.r.N > 0 {
			err = io.ErrUnexpectedEOF
		}
	}
	if err == nil && n > 0 && b.r.N == 0 {
		err = io.EOF
		b.sawEOF = true
	}
	return n, err
}

func (b *Body) Close() error { return nil }

// Get is http.Header.Get for a key already in canonical form, without
// Get's canonicalization of the key on every call. The result is Get's: a
// Header's keys are canonical, and Get finds no other.
func Get(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// HasToken is net/http's unexported hasToken: whether token (ASCII, lower
// case) appears in the field value v, case-insensitively, between token
// boundaries (space, comma, tab). It is what net/http's server and
// Request.Write test a Connection or Expect value with.
func HasToken(v, token string) bool {
	if len(token) > len(v) || token == "" {
		return false
	}
	if v == token {
		return true
	}
	for sp := 0; sp <= len(v)-len(token); sp++ {
		if b := v[sp]; b != token[0] && b|0x20 != token[0] {
			continue
		}
		if sp > 0 && !isTokenBoundary(v[sp-1]) {
			continue
		}
		if end := sp + len(token); end != len(v) && !isTokenBoundary(v[end]) {
			continue
		}
		if asciiEqualFold(v[sp:sp+len(token)], token) {
			return true
		}
	}
	return false
}

func isTokenBoundary(b byte) bool { return b == ' ' || b == ',' || b == '\t' }

// asciiEqualFold is net/http's internal/ascii.EqualFold: ASCII letters
// only (strings.EqualFold would also fold the Kelvin sign to k).
func asciiEqualFold(s, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i], t[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}
