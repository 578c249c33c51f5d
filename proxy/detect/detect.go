// Package detect decides what protocol a freshly accepted connection speaks by
// peeking at its first bytes, without consuming them.
package detect

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// Protocol is what a connection was detected to speak.
type Protocol int

const (
	Opaque Protocol = iota // anything else: copied as bytes
	HTTP1                  // an HTTP/1.x request line
	HTTP2                  // the HTTP/2 connection preface (prior knowledge, h2c, gRPC)
	TLS                    // a TLS ClientHello record
)

func (p Protocol) String() string {
	switch p {
	case HTTP1:
		return "http/1"
	case HTTP2:
		return "h2"
	case TLS:
		return "tls"
	}
	return "opaque"
}

// Preface is the HTTP/2 client connection preface (RFC 9113 §3.4).
const Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// maxMethod bounds the method token we wait for; the longest registered method
// (UPDATEREDIRECTREF) is 17 bytes.
const maxMethod = 24

// MaxRequestLine bounds the request line detection reads before it decides.
// A longer line (a long URI: Go's server takes lines up to its 1MB header
// limit) is HTTP/1 when it starts with a method of RFC 9110 or PATCH, a
// space and an origin-form ("/...") or absolute-form ("http://...") target
// whose bytes so far are all valid; otherwise it is opaque. Opaque is the
// safe mistake: the bytes still reach the server, only without the HTTP
// features (per-request balancing, metrics) in between.
const MaxRequestLine = 4096

// bufSize holds a MaxRequestLine-long method and target plus the version
// and line end that decide it.
const bufSize = MaxRequestLine + len(" HTTP/1.1\r\n")

// Classify inspects the bytes seen so far. It returns done=false when more
// bytes could change the answer; once done, more bytes never change it.
//
// HTTP/1 is decided only on a complete, valid request line (RFC 9112 §3):
// method SP request-target SP HTTP/1.x CRLF, or a bare LF as §2.2 allows.
// Anything else is opaque: text protocols whose first line is a token and a
// space (memcached "set k 0 0 5", IRC "NICK alice", Redis "SET k v") or a
// bare token ("PING") are decided opaque as soon as their line departs from
// HTTP's.
func Classify(b []byte) (p Protocol, done bool) {
	if len(b) == 0 {
		return Opaque, false
	}
	// TLS handshake record: content type 22, major version 3.
	if b[0] == 0x16 {
		if len(b) < 2 {
			return Opaque, false
		}
		if b[1] == 0x03 {
			return TLS, true
		}
		return Opaque, true
	}
	n := min(len(b), len(Preface))
	if bytes.Equal(b[:n], []byte(Preface[:n])) {
		if n == len(Preface) {
			return HTTP2, true
		}
		return Opaque, false
	}
	return classifyRequestLine(b)
}

// classifyRequestLine decides whether b starts with an HTTP/1 request line.
func classifyRequestLine(b []byte) (Protocol, bool) {
	// method = token (RFC 9110 §9.1)
	i := 0
	for ; i < len(b) && b[i] != ' '; i++ {
		if !isTchar(b[i]) || i >= maxMethod {
			return Opaque, true
		}
	}
	if i == len(b) {
		return Opaque, false
	}
	if i == 0 {
		return Opaque, true
	}
	method := b[:i]
	// request-target: visible bytes up to the next space (RFC 9112 §3.2).
	// Controls (CR and LF among them) end the line too early: no version.
	start := i + 1
	j := start
	for ; j < len(b) && b[j] != ' '; j++ {
		if j >= MaxRequestLine {
			return longLine(method, b[start:j]), true
		}
		if c := b[j]; c < 0x21 || c == 0x7f {
			return Opaque, true
		}
	}
	if j == len(b) {
		return Opaque, false
	}
	if j == start {
		return Opaque, true // two spaces: no target
	}
	// HTTP-version = "HTTP/1." DIGIT, then CRLF or a bare LF.
	v := b[j+1:]
	const prefix = "HTTP/1."
	for k := 0; k < len(v); k++ {
		c := v[k]
		switch {
		case k < len(prefix):
			if c != prefix[k] {
				return Opaque, true
			}
		case k == len(prefix):
			if c < '0' || c > '9' {
				return Opaque, true
			}
		case k == len(prefix)+1:
			if c == '\n' {
				return HTTP1, true
			}
			if c != '\r' {
				return Opaque, true
			}
		default: // after CR
			if c == '\n' {
				return HTTP1, true
			}
			return Opaque, true
		}
	}
	return Opaque, false
}

// longLine decides a request line whose target filled MaxRequestLine.
func longLine(method, target []byte) Protocol {
	switch string(method) {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH":
	default:
		return Opaque
	}
	if bytes.HasPrefix(target, []byte("/")) || bytes.HasPrefix(target, []byte("http://")) || bytes.HasPrefix(target, []byte("https://")) {
		return HTTP1
	}
	return Opaque
}

func isTchar(c byte) bool {
	switch {
	case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

// Conn is a connection whose peeked bytes are replayed before the rest.
type Conn struct {
	net.Conn
	r      *bufio.Reader
	silent bool
}

// Silent reports whether detection ended because the peer had sent no byte
// by the timeout: it may wait for the server to speak first, or be an idle
// connection a client pool opened ahead of need. (An opaque result for
// bytes, or for a peer that closed, is not silent.)
func (c *Conn) Silent() bool { return c.silent }

// Wait blocks until the peer has sent a byte (buffered, not consumed), or
// closed, or a read deadline the caller set passes. It reports the error
// that ended the wait, nil when a byte is there.
func (c *Conn) Wait() error {
	_, err := c.r.Peek(1)
	return err
}

// Resume runs detection again on a Conn that was Silent, once its peer has
// started sending: as DetectUntil, with the bytes already buffered.
func (c *Conn) Resume(timeout time.Duration, lineDeadline time.Time) (Protocol, error) {
	c.silent = false
	return c.detect(timeout, lineDeadline)
}

func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Buffered returns the peeked bytes not yet read.
func (c *Conn) Buffered() int { return c.r.Buffered() }

// Peeked returns the peeked bytes not yet read, valid until the next Read:
// for a caller that takes the connection underneath (an event loop).
func (c *Conn) Peeked() []byte {
	b, _ := c.r.Peek(c.r.Buffered())
	return b
}

// CloseWrite half-closes the underlying connection when it supports it.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// ErrIncomplete is returned when a client sent the start of what may be a
// request line but did not complete it by the line deadline.
var ErrIncomplete = errors.New("detect: incomplete request line at the header deadline")

// Detect peeks at conn until its protocol is known, the peer stops sending
// for timeout (server-speaks-first protocols), or the peer closes. Either way
// the returned Conn replays every byte. An error is returned only when the
// connection failed before any byte could be classified.
func Detect(conn net.Conn, timeout time.Duration) (Protocol, *Conn, error) {
	return DetectUntil(conn, timeout, time.Time{})
}

// DetectUntil is Detect for a server with a header deadline (an absolute
// time, counted from accept): a client that has sent nothing by timeout is
// opaque (it waits for the server to speak), but one that has sent part of
// a line that could still be an HTTP request line is given until
// lineDeadline to complete it, as an HTTP server's header timeout would,
// and gets ErrIncomplete after that. A zero lineDeadline treats such a
// client as opaque at timeout, as Detect does.
func DetectUntil(conn net.Conn, timeout time.Duration, lineDeadline time.Time) (Protocol, *Conn, error) {
	c := &Conn{Conn: conn, r: bufio.NewReaderSize(conn, bufSize)}
	p, err := c.detect(timeout, lineDeadline)
	return p, c, err
}

func (c *Conn) detect(timeout time.Duration, lineDeadline time.Time) (Protocol, error) {
	conn := c.Conn
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return Opaque, err
	}
	defer conn.SetReadDeadline(time.Time{})
	extended := false
	want := 1
	for {
		b, err := c.r.Peek(want)
		if err == nil {
			// Look at everything that has arrived, not just what we asked for.
			b, _ = c.r.Peek(c.r.Buffered())
		}
		p, done := Classify(b)
		if done {
			return p, nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && len(b) > 0 && !lineDeadline.IsZero() {
			if extended {
				return Opaque, ErrIncomplete
			}
			// A partial line: the client is talking, not waiting for the
			// server. Wait for the rest until the header deadline.
			extended = true
			if err := conn.SetReadDeadline(lineDeadline); err != nil {
				return Opaque, err
			}
			want = len(b) + 1
			continue
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, io.EOF) {
				// Silence or an early close: treat what we have as opaque.
				c.silent = len(b) == 0 && !errors.Is(err, io.EOF)
				return Opaque, nil
			}
			return Opaque, err
		}
		want = len(b) + 1
		if want > c.r.Size() {
			return Opaque, nil
		}
	}
}
