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

// Classify inspects the bytes seen so far. It returns done=false when more
// bytes could change the answer.
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
	// An HTTP/1 request starts with a method token (RFC 9110 tchar) and a space.
	for i, c := range b {
		if c == ' ' {
			if i == 0 {
				return Opaque, true
			}
			return HTTP1, true
		}
		if !isTchar(c) || i >= maxMethod {
			return Opaque, true
		}
	}
	return Opaque, false
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
	r *bufio.Reader
}

func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Buffered returns the peeked bytes not yet read.
func (c *Conn) Buffered() int { return c.r.Buffered() }

// CloseWrite half-closes the underlying connection when it supports it.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// Detect peeks at conn until its protocol is known, the peer stops sending
// for timeout (server-speaks-first protocols), or the peer closes. Either way
// the returned Conn replays every byte. An error is returned only when the
// connection failed before any byte could be classified.
func Detect(conn net.Conn, timeout time.Duration) (Protocol, *Conn, error) {
	c := &Conn{Conn: conn, r: bufio.NewReaderSize(conn, 4096)}
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return Opaque, c, err
	}
	defer conn.SetReadDeadline(time.Time{})
	want := 1
	for {
		b, err := c.r.Peek(want)
		if err == nil {
			// Look at everything that has arrived, not just what we asked for.
			b, _ = c.r.Peek(c.r.Buffered())
		}
		p, done := Classify(b)
		if done {
			return p, c, nil
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, io.EOF) {
				// Silence or an early close: treat what we have as opaque.
				return Opaque, c, nil
			}
			return Opaque, c, err
		}
		want = len(b) + 1
		if want > c.r.Size() {
			return Opaque, c, nil
		}
	}
}
