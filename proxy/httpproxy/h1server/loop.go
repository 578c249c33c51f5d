package h1server

import (
	"io"
	"net/http"
)

// ParseHead parses the request head at the start of buf into *req, as the
// server does for the heads it parses in place (see parseHead), for a
// caller that serves requests on an event loop: ok is false for any head
// parseHead leaves to http.ReadRequest (a chunked body among them). n is
// the head's length; a body of req.ContentLength bytes follows it, which
// req.Body does not read (the caller takes it from buf).
func ParseHead(buf []byte, req *http.Request) (n int, ok bool) {
	return parseHead(buf, noBytes{}, req)
}

// noBytes is the reader under req.Body: empty, and no allocation per
// request (a strings.Reader in an interface is one).
type noBytes struct{}

func (noBytes) Read([]byte) (int, error) { return 0, io.EOF }
