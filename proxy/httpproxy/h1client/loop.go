package h1client

import (
	"bufio"
	"net/http"

	"github.com/meridian-mesh/meridian/proxy/httpproxy/internal/h1head"
)

// AppendRequest appends req's head and body, as the client writes them
// (writeRequest: (*http.Request).Write's bytes), to dst: body is the
// whole of req's body (req.ContentLength bytes; nil for none), req.Body is
// not read. ok is false for a request writeRequest leaves to
// Request.Write. bw is the caller's, reused: it is reset to append to dst.
func AppendRequest(bw *bufio.Writer, dst []byte, req *http.Request, body []byte) (out []byte, ok bool) {
	a := appender{b: dst}
	bw.Reset(&a)
	if !writeRequest(bw, req, body) {
		return dst, false
	}
	bw.Flush()
	return a.b, true
}

type appender struct{ b []byte }

func (a *appender) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// ParseResponseHead parses the response head at the start of buf, as the
// client does for the heads it parses in place (parseResponseHead: a final
// status with a body, one Content-Length, no Connection field but
// keep-alive, not to a HEAD request); ok is false for any other. n is the head's length; the
// body is resp.ContentLength bytes after it.
func ParseResponseHead(buf []byte, req *http.Request, resp *http.Response) (n int, ok bool) {
	var body h1head.Body
	n, ok = parseResponseHead(buf, nil, req, resp, &body)
	if ok {
		resp.Body = nil
	}
	return n, ok
}
