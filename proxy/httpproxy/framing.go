package httpproxy

import (
	"net/http"

	"github.com/meridian-mesh/meridian/proxy/httpproxy/h1server"
)

// A request with both Content-Length and Transfer-Encoding must be
// forwarded by its Transfer-Encoding alone, without Content-Length, and the
// connection closed after the response (RFC 9112 §6.1, §6.3): the two
// framings disagree, and a server behind another intermediary may have
// read the request differently (request smuggling). http.ReadRequest
// applies Transfer-Encoding and drops Content-Length before the handler
// sees the request; the proxy's HTTP/1 server (h1server) reads the head
// and keeps the answer for the request in flight.

// ambiguousFraming reports a request received with both Content-Length and
// Transfer-Encoding.
func ambiguousFraming(r *http.Request) bool {
	return r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 && h1server.AmbiguousFraming(r)
}
