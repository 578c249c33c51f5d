package h1client

import (
	"io"
	"net/http"
	"strings"

	"github.com/meridian-mesh/meridian/proxy/httpproxy/internal/h1head"
)

// parseResponseHead is http.ReadResponse for the responses a proxy sees
// most (see h1head): a whole head already in buf, "HTTP/1.1 NNN reason"
// with a final status that has a body (not 1xx, 204 or 304), one
// Content-Length, no Connection field but one that is just keep-alive (as
// nginx and Node.js send on every response), to a request other than
// HEAD. For
// those it returns what http.ReadResponse would (FuzzParseResponseHead
// compares the two) and the head's length; for anything else, valid or
// not, ok is false and the caller reads the response with
// http.ReadResponse. The body reads from br after the head, which the
// caller discards from br first. The response is written to *resp and
// its body, if any, is *body (the caller's exchange holds both; nil: the
// caller reads it itself, and resp.Body is left http.NoBody), only when
// ok. The Header is into's (see h1head.Reuse; nil: a new one).
func parseResponseHead(buf []byte, br io.Reader, req *http.Request, resp *http.Response, body *h1head.Body, into *h1head.Reuse) (n int, ok bool) {
	if req.Method == http.MethodHead {
		return 0, false
	}
	if n = h1head.End(buf); n < 0 {
		return 0, false
	}
	head := string(buf[:n-2]) // every line with its CRLF
	line, rest := h1head.CutLine(head)
	if len(line) < len("HTTP/1.1 200") || line[8] != ' ' {
		return 0, false
	}
	if line[:8] != "HTTP/1.1" {
		return 0, false
	}
	code := 0
	for _, c := range []byte(line[9:12]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code > 599 || code == http.StatusNoContent || code == http.StatusNotModified {
		return 0, false
	}
	if reason := line[12:]; reason != "" {
		if reason[0] != ' ' {
			return 0, false
		}
		for i := 0; i < len(reason); i++ {
			if c := reason[i]; c != '\t' && (c < ' ' || c > '~') {
				return 0, false
			}
		}
	}
	f, ok := h1head.ParseFields(rest, false, into)
	if !ok || f.Lengths != 1 || !keepAliveOnly(f.Header["Connection"]) {
		return 0, false
	}
	cl, ok := h1head.ContentLength(f.ContentLength)
	if !ok {
		return 0, false
	}
	*resp = http.Response{Status: line[9:], StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: f.Header, Body: http.NoBody, ContentLength: cl, Request: req}
	if cl > 0 && body != nil {
		body.Reset(br, cl)
		resp.Body = body
	}
	return n, true
}

// keepAliveOnly reports whether a response's Connection field is absent
// or one "keep-alive": for HTTP/1.1 the default, so the response is read
// as without it (the field stays in the header, for the caller's
// hop-by-hop removal, as http.ReadResponse leaves it).
func keepAliveOnly(v []string) bool {
	return v == nil || len(v) == 1 && strings.EqualFold(v[0], "keep-alive")
}
