package httpproxy

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
)

// A request with both Content-Length and Transfer-Encoding must be
// forwarded by its Transfer-Encoding alone, without Content-Length, and the
// connection closed after the response (RFC 9112 §6.1, §6.3): the two
// framings disagree, and a server behind another intermediary may have
// read the request differently (request smuggling). net/http applies
// Transfer-Encoding and drops Content-Length before the handler sees the
// request, so the handler cannot tell such a request from a plain chunked
// one. FramingConn follows the HTTP/1 request stream as the server reads
// it, header blocks and body framing only, and tells the handler which
// requests carried both.

// FramingConn is an accepted HTTP/1 connection whose request heads are
// followed as the server reads them. Wrap a connection in it before
// handing it to the http.Server, and pass it to WithFraming in ConnContext.
type FramingConn struct {
	net.Conn

	mu     sync.Mutex
	state  framingState
	line   []byte // the line being read (heads, chunk sizes, trailers)
	head   framedHead
	remain int64 // body bytes left in a fixed body or a chunk
	heads  []framedHead
}

// framedHead is what is kept of one request head.
type framedHead struct {
	method, target string
	http10         bool
	cl, te         bool // Content-Length, Transfer-Encoding present
}

type framingState int

const (
	inHead framingState = iota
	inFixedBody
	inChunkSize
	inChunkData
	inChunkEnd // the CRLF after a chunk's data
	inTrailer
	// lost: the stream is not HTTP/1 as understood here (malformed, as the
	// server will find too, closing the connection): stop following it.
	// After a protocol switch (101) the bytes that follow are not HTTP/1
	// either, but no handler asks about them any more.
	lost
)

const (
	// maxFramingLine bounds one line; net/http's default MaxHeaderBytes.
	maxFramingLine = http.DefaultMaxHeaderBytes
	// maxFramingHeads bounds the heads kept unclaimed (pipelining).
	maxFramingHeads = 64
)

// NewFramingConn follows c's HTTP/1 requests.
func NewFramingConn(c net.Conn) *FramingConn { return &FramingConn{Conn: c} }

func (c *FramingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.scan(p[:n])
		c.mu.Unlock()
	}
	return n, err
}

// CloseWrite keeps half-close working through the wrapper.
func (c *FramingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// Unwrap gives access to the connection underneath.
func (c *FramingConn) Unwrap() net.Conn { return c.Conn }

// scan advances the framing state over b.
func (c *FramingConn) scan(b []byte) {
	for len(b) > 0 && c.state != lost {
		switch c.state {
		case inFixedBody, inChunkData:
			k := int64(len(b))
			if k > c.remain {
				k = c.remain
			}
			b = b[k:]
			if c.remain -= k; c.remain == 0 {
				if c.state == inFixedBody {
					c.state = inHead
				} else {
					c.state = inChunkEnd
				}
			}
		default:
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				c.appendLine(b)
				return
			}
			c.appendLine(b[:i])
			b = b[i+1:]
			line := bytes.TrimSuffix(c.line, []byte{'\r'})
			c.line = c.line[:0]
			c.endLine(line)
		}
	}
}

func (c *FramingConn) appendLine(b []byte) {
	if len(c.line)+len(b) > maxFramingLine {
		c.state = lost
		return
	}
	c.line = append(c.line, b...)
}

// endLine handles one complete line in the current state.
func (c *FramingConn) endLine(line []byte) {
	switch c.state {
	case inHead:
		switch {
		case c.head.method == "" && len(line) == 0:
			// An empty line before a request line is tolerated (RFC 9112 §2.2).
		case c.head.method == "":
			f := bytes.Fields(line)
			if len(f) != 3 {
				c.state = lost
				return
			}
			c.head = framedHead{method: string(f[0]), target: string(f[1]), http10: string(f[2]) == "HTTP/1.0"}
		case len(line) > 0:
			name, _, ok := bytes.Cut(line, []byte{':'})
			if !ok {
				return
			}
			switch {
			case bytes.EqualFold(name, []byte("Content-Length")):
				c.head.cl = true
				_, v, _ := bytes.Cut(line, []byte{':'})
				if n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64); err == nil && n >= 0 {
					c.remain = n
				} else {
					c.state = lost // the server refuses it and closes
				}
			case bytes.EqualFold(name, []byte("Transfer-Encoding")):
				c.head.te = true
			}
		default:
			c.endHead()
		}
	case inChunkSize:
		size, _, _ := bytes.Cut(line, []byte{';'})
		n, err := strconv.ParseInt(string(bytes.TrimSpace(size)), 16, 64)
		switch {
		case err != nil || n < 0:
			c.state = lost // a malformed body: the server closes the connection
		case n == 0:
			c.state = inTrailer
		default:
			c.remain, c.state = n, inChunkData
		}
	case inChunkEnd:
		if len(line) != 0 {
			c.state = lost
			return
		}
		c.state = inChunkSize
	case inTrailer:
		if len(line) == 0 {
			c.state = inHead
		}
	}
}

// endHead records the head just read and moves on to its body, framed as
// net/http frames it: Transfer-Encoding (ignored for HTTP/1.0) wins over
// Content-Length; neither means no body.
func (c *FramingConn) endHead() {
	h := c.head
	c.head = framedHead{}
	if len(c.heads) == maxFramingHeads {
		c.heads = c.heads[:copy(c.heads, c.heads[1:])]
	}
	c.heads = append(c.heads, h)
	switch {
	case h.te && !h.http10:
		c.state = inChunkSize
	case h.cl && c.remain > 0:
		c.state = inFixedBody
	default:
		c.state = inHead
	}
	if !h.cl {
		c.remain = 0
	}
}

// ambiguous reports whether r's head carried both Content-Length and
// Transfer-Encoding. The handler asks for every request first thing, so
// heads and requests stay paired; heads it never saw (the server answered
// them itself, e.g. OPTIONS *) are skipped by matching method and target.
func (c *FramingConn) ambiguous(r *http.Request) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.Header.Get("Upgrade") != "" {
		// Once the protocol is switched (101) the bytes are not HTTP/1
		// and no handler asks about them: stop following instead of
		// scanning, say, a WebSocket's frames for lines. (Were the upgrade
		// refused, the rest of the connection goes unchecked.)
		c.state, c.line = lost, nil
	}
	for i, h := range c.heads {
		if h.method == r.Method && h.target == r.RequestURI {
			// Shifted down rather than resliced, so that the slice keeps
			// its capacity and the next head needs no allocation.
			c.heads = c.heads[:copy(c.heads, c.heads[i+1:])]
			return h.cl && h.te && !h.http10
		}
	}
	return false
}

type framingKey struct{}

// WithFraming makes c's request framing known to the handler serving the
// requests of the connection whose context ctx is (http.Server.ConnContext).
func WithFraming(ctx context.Context, c *FramingConn) context.Context {
	if c == nil {
		return ctx
	}
	return context.WithValue(ctx, framingKey{}, c)
}

// ambiguousFraming reports a request received with both Content-Length and
// Transfer-Encoding.
func ambiguousFraming(r *http.Request) bool {
	c, _ := r.Context().Value(framingKey{}).(*FramingConn)
	// Asked for every request, so that heads and requests stay paired.
	return c != nil && r.ProtoMajor == 1 && c.ambiguous(r) && len(r.TransferEncoding) > 0
}
