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
// req.Body does not read (the caller takes it from buf). req.Header and
// req.URL are into's, made again for each head: the caller is done with
// the last ones, and every slice in the Header, before it parses the
// next.
func ParseHead(buf []byte, req *http.Request, into *Reuse) (n int, ok bool) {
	return parseHead(buf, nil, req, into)
}

// unread is the Body of a request whose body the caller takes from its
// buffer: not http.NoBody, since there is one, and no allocation per
// request.
type unread struct{}

func (unread) Read([]byte) (int, error) { return 0, io.EOF }
func (unread) Close() error             { return nil }
