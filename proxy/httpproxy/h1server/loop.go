package h1server

import (
	"net/http"
	"strings"
)

// ParseHead parses the request head at the start of buf into *req, as the
// server does for the heads it parses in place (see parseHead), for a
// caller that serves requests without a body on an event loop: ok is false
// for any head parseHead leaves to http.ReadRequest, and for a request
// with a body (Content-Length above 0), which the caller hands to the
// server. n is the head's length.
func ParseHead(buf []byte, req *http.Request) (n int, ok bool) {
	n, ok = parseHead(buf, strings.NewReader(""), req)
	if !ok || req.ContentLength != 0 {
		return 0, false
	}
	return n, true
}
