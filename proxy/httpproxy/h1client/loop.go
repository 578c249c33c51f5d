package h1client

import (
	"bufio"
	"net/http"

	"github.com/meridian-mesh/meridian/proxy/httpproxy/internal/h1head"
)

// A RequestWriter appends requests as the client writes them, reusing
// its buffer: one per event loop (not safe for concurrent use).
type RequestWriter struct {
	bw *bufio.Writer
	a  appender
}

// NewRequestWriter makes a RequestWriter.
func NewRequestWriter() *RequestWriter {
	w := &RequestWriter{}
	w.bw = bufio.NewWriterSize(&w.a, 4096)
	return w
}

// AppendRequest appends req's head and body, as the client writes them
// (writeRequest: (*http.Request).Write's bytes), to dst: body is the
// whole of req's body (req.ContentLength bytes; nil for none), req.Body is
// not read. ok is false for a request writeRequest leaves to
// Request.Write.
func (w *RequestWriter) AppendRequest(dst []byte, req *http.Request, body []byte) (out []byte, ok bool) {
	w.a.b = dst
	w.bw.Reset(&w.a) // what a refused request left buffered is dropped
	ok = writeRequest(w.bw, req, body)
	if ok {
		w.bw.Flush()
		dst = w.a.b
	}
	w.a.b = nil
	return dst, ok
}

type appender struct{ b []byte }

func (a *appender) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// ParseResponseHead parses the response head at the start of buf, as the
// client does for the heads it parses in place (parseResponseHead: a final
// status with a body, one Content-Length, no Connection field but
// keep-alive, not to a HEAD request); ok is false for any other. n is the
// head's length; the body is resp.ContentLength bytes after it, and
// resp.Body is nil. resp.Header is into's, made again for each head (see
// h1head.Reuse).
func ParseResponseHead(buf []byte, req *http.Request, resp *http.Response, into *h1head.Reuse) (n int, ok bool) {
	n, ok = parseResponseHead(buf, nil, req, resp, nil, into)
	if ok {
		resp.Body = nil
	}
	return n, ok
}
