package h2client

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-mesh/meridian/proxy/internal/fieldname"
)

// What follows is x/net/internal/httpcommon's EncodeHeaders (the request
// Go's HTTP/2 transport sends), with DisableCompression and no default
// User-Agent, split into a check that cannot fail halfway and an encoding
// pass, so that a refused request never touches the connection's HPACK
// state.

var errRequestHeaderListSize = errors.New("h2client: request header list larger than the peer's advertised limit (SETTINGS_MAX_HEADER_LIST_SIZE)")

// reqHeaders is a checked request's pseudo-header values.
type reqHeaders struct {
	host, method, path, protocol string
	trailers                     string // the trailer header's value
	connect                      bool   // a non-extended CONNECT: no :path or :scheme
	contentLength                int64  // -1: unknown
}

// checkRequest validates req as Go's transport does (a request it refuses
// is refused) and returns its pseudo-header values.
func checkRequest(req *http.Request, contentLength int64) (reqHeaders, error) {
	var h reqHeaders
	if req.URL == nil {
		return h, errors.New("h2client: request URL is nil")
	}
	if s := req.URL.Scheme; s != "http" && s != "https" {
		return h, fmt.Errorf("h2client: unsupported URL scheme %q (http or https)", s)
	}
	// Connection-specific headers that make the request invalid.
	if vv := req.Header["Upgrade"]; len(vv) > 0 && (vv[0] != "" && vv[0] != "chunked") {
		return h, fmt.Errorf("h2client: invalid Upgrade request header: %q", vv)
	}
	if vv := req.Header["Transfer-Encoding"]; len(vv) > 0 && (len(vv) > 1 || vv[0] != "" && vv[0] != "chunked") {
		return h, fmt.Errorf("h2client: invalid Transfer-Encoding request header: %q", vv)
	}
	if vv := req.Header["Connection"]; len(vv) > 0 && (len(vv) > 1 || vv[0] != "" && !strings.EqualFold(vv[0], "close") && !strings.EqualFold(vv[0], "keep-alive")) {
		return h, fmt.Errorf("h2client: invalid Connection request header: %q", vv)
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	host, err := httpguts.PunycodeHostPort(host)
	if err != nil {
		return h, fmt.Errorf("h2client: request host: %w", err)
	}
	if !httpguts.ValidHostHeader(host) {
		return h, fmt.Errorf("h2client: invalid Host header %q", host)
	}
	h.host = host
	if vv := req.Header[":protocol"]; len(vv) > 0 {
		h.protocol = vv[0]
	}
	h.method = req.Method
	if h.method == "" {
		h.method = http.MethodGet
	}
	if !validMethod(h.method) {
		return h, fmt.Errorf("h2client: invalid method %q", h.method)
	}
	switch {
	case h.method == http.MethodConnect && h.protocol == "":
		h.connect = true
	case h.protocol != "" && h.method != http.MethodConnect:
		return h, errors.New("h2client: invalid :protocol header in non-CONNECT request")
	}
	if !h.connect {
		h.path = req.URL.RequestURI()
		if !validPseudoPath(h.path) {
			orig := h.path
			h.path = strings.TrimPrefix(h.path, req.URL.Scheme+"://"+host)
			if !validPseudoPath(h.path) {
				if req.URL.Opaque != "" {
					return h, fmt.Errorf("h2client: invalid request :path %q from URL.Opaque = %q", orig, req.URL.Opaque)
				}
				return h, fmt.Errorf("h2client: invalid request :path %q", orig)
			}
		}
	}
	if err := validateHeaders(req.Header); err != "" {
		return h, fmt.Errorf("h2client: invalid HTTP header %s", err)
	}
	if err := validateHeaders(req.Trailer); err != "" {
		return h, fmt.Errorf("h2client: invalid HTTP trailer %s", err)
	}
	if len(req.Trailer) > 0 {
		keys := make([]string, 0, len(req.Trailer))
		for k := range req.Trailer {
			k = http.CanonicalHeaderKey(k)
			switch k {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				return h, fmt.Errorf("h2client: invalid Trailer key %q", k)
			}
			keys = append(keys, k)
		}
		slices.Sort(keys)
		h.trailers = strings.Join(keys, ",")
	}
	h.contentLength = contentLength
	return h, nil
}

func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return m != ""
}

func validPseudoPath(v string) bool { return (len(v) > 0 && v[0] == '/') || v == "*" }

func validateHeaders(hdrs http.Header) string {
	for k, vv := range hdrs {
		if !httpguts.ValidHeaderFieldName(k) && k != ":protocol" {
			return fmt.Sprintf("name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Sprintf("value for header %q", k) // not the value: it may be secret
			}
		}
	}
	return ""
}

// enumerate calls f with every field of the request's header block, in
// the order they are sent.
func (h *reqHeaders) enumerate(req *http.Request, f func(name, value string)) {
	f(":authority", h.host)
	f(":method", h.method)
	if !h.connect {
		f(":path", h.path)
		f(":scheme", req.URL.Scheme)
	}
	if h.protocol != "" {
		f(":protocol", h.protocol)
	}
	if h.trailers != "" {
		f("trailer", h.trailers)
	}
	for k, vv := range req.Header {
		switch {
		case strings.EqualFold(k, "host"), strings.EqualFold(k, "content-length"):
			continue // :authority, and the length is the transport's
		case strings.EqualFold(k, "connection"), strings.EqualFold(k, "proxy-connection"),
			strings.EqualFold(k, "transfer-encoding"), strings.EqualFold(k, "upgrade"),
			strings.EqualFold(k, "keep-alive"):
			continue // connection-specific (RFC 9113 8.2.2)
		case strings.EqualFold(k, "te"):
			// Only "trailers" may be sent (RFC 9113 8.2.2); Go's
			// transport sends TE as it is and lets the server refuse
			// anything else, which h2server and Go's server do: the
			// forwarder only ever sets "trailers".
			for _, v := range vv {
				if httpguts.HeaderValuesContainsToken([]string{v}, "trailers") {
					f("te", "trailers")
					break
				}
			}
			continue
		case strings.EqualFold(k, "user-agent"):
			// At most one, none when empty (Go's HTTP/1 rule); no default.
			if len(vv) < 1 || vv[0] == "" {
				continue
			}
			vv = vv[:1]
		case strings.EqualFold(k, "cookie"):
			// RFC 9113 8.2.3: crumbs compress better.
			for _, v := range vv {
				for {
					p := strings.IndexByte(v, ';')
					if p < 0 {
						break
					}
					f("cookie", v[:p])
					p++
					for p+1 <= len(v) && v[p] == ' ' {
						p++
					}
					v = v[p:]
				}
				if len(v) > 0 {
					f("cookie", v)
				}
			}
			continue
		case k == ":protocol":
			continue
		}
		for _, v := range vv {
			f(k, v)
		}
	}
	if shouldSendContentLength(h.method, h.contentLength) {
		f("content-length", strconv.FormatInt(h.contentLength, 10))
	}
}

// listSize is the header list's size as SETTINGS_MAX_HEADER_LIST_SIZE counts it.
func (h *reqHeaders) listSize(req *http.Request) uint64 {
	var n uint64
	h.enumerate(req, func(name, value string) {
		n += uint64(hpack.HeaderField{Name: name, Value: value}.Size())
	})
	return n
}

func shouldSendContentLength(method string, n int64) bool {
	if n > 0 {
		return true
	}
	if n < 0 {
		return false
	}
	switch method {
	case "POST", "PUT", "PATCH":
		return true
	}
	return false
}

// lowerHeader lower-cases a header name for HTTP/2, without allocating for
// common ones; ok is false for a name that is not ASCII (not sent).
func lowerHeader(v string) (lower string, ok bool) {
	for i := 0; i < len(v); i++ {
		if v[i] >= 0x80 {
			return "", false
		}
	}
	return fieldname.Lower(v), true
}

// connHeaders are removed from responses: connection-specific fields make
// an HTTP/2 message malformed (RFC 9113 8.2.2), and a proxy relaying the
// response to an HTTP/1 client must not frame by them (Go's transport).
var connHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"}
