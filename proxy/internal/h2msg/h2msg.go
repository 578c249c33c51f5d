// Package h2msg holds the HTTP/2 client's message rules shared by the
// proxy's two clients (httpproxy/h2client on goroutines, the loops'
// httpproxy/h2loop): the request a client sends for an http.Request (Go's
// transport's: checked first so that a refused request never touches a
// connection's HPACK state, then encoded) and a response's head as Go's
// transport validates it. See README.md.
package h2msg

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meridian-mesh/meridian/proxy/internal/fieldname"
)

// What follows is x/net/internal/httpcommon's EncodeHeaders (the request
// Go's HTTP/2 transport sends), with DisableCompression and no default
// User-Agent, split into a check that cannot fail halfway and an encoding
// pass, so that a refused request never touches the connection's HPACK
// state.

// ErrRequestHeaderListSize: the request's header list is above the peer's
// SETTINGS_MAX_HEADER_LIST_SIZE (CheckListSize).
var ErrRequestHeaderListSize = errors.New("http2: request header list larger than the peer's advertised limit (SETTINGS_MAX_HEADER_LIST_SIZE)")

// Request is a checked request's pseudo-header values.
type Request struct {
	host, method, path, protocol string
	trailers                     string // the trailer header's value
	connect                      bool   // a non-extended CONNECT: no :path or :scheme
	contentLength                int64  // -1: unknown
}

// CheckRequest validates req as Go's transport does (a request it refuses
// is refused) and returns its pseudo-header values. contentLength is the
// body's (-1: unknown, 0: none); req.Body is not looked at.
func CheckRequest(req *http.Request, contentLength int64) (Request, error) {
	var h Request
	if req.URL == nil {
		return h, errors.New("http2: request URL is nil")
	}
	if s := req.URL.Scheme; s != "http" && s != "https" {
		return h, fmt.Errorf("http2: unsupported URL scheme %q (http or https)", s)
	}
	// Connection-specific headers that make the request invalid.
	if vv := req.Header["Upgrade"]; len(vv) > 0 && (vv[0] != "" && vv[0] != "chunked") {
		return h, fmt.Errorf("http2: invalid Upgrade request header: %q", vv)
	}
	if vv := req.Header["Transfer-Encoding"]; len(vv) > 0 && (len(vv) > 1 || vv[0] != "" && vv[0] != "chunked") {
		return h, fmt.Errorf("http2: invalid Transfer-Encoding request header: %q", vv)
	}
	if vv := req.Header["Connection"]; len(vv) > 0 && (len(vv) > 1 || vv[0] != "" && !strings.EqualFold(vv[0], "close") && !strings.EqualFold(vv[0], "keep-alive")) {
		return h, fmt.Errorf("http2: invalid Connection request header: %q", vv)
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	host, err := httpguts.PunycodeHostPort(host)
	if err != nil {
		return h, fmt.Errorf("http2: request host: %w", err)
	}
	if !httpguts.ValidHostHeader(host) {
		return h, fmt.Errorf("http2: invalid Host header %q", host)
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
		return h, fmt.Errorf("http2: invalid method %q", h.method)
	}
	switch {
	case h.method == http.MethodConnect && h.protocol == "":
		h.connect = true
	case h.protocol != "" && h.method != http.MethodConnect:
		return h, errors.New("http2: invalid :protocol header in non-CONNECT request")
	}
	if !h.connect {
		h.path = req.URL.RequestURI()
		if !validPseudoPath(h.path) {
			orig := h.path
			h.path = strings.TrimPrefix(h.path, req.URL.Scheme+"://"+host)
			if !validPseudoPath(h.path) {
				if req.URL.Opaque != "" {
					return h, fmt.Errorf("http2: invalid request :path %q from URL.Opaque = %q", orig, req.URL.Opaque)
				}
				return h, fmt.Errorf("http2: invalid request :path %q", orig)
			}
		}
	}
	if err := validateHeaders(req.Header); err != "" {
		return h, fmt.Errorf("http2: invalid HTTP header %s", err)
	}
	if err := validateHeaders(req.Trailer); err != "" {
		return h, fmt.Errorf("http2: invalid HTTP trailer %s", err)
	}
	if len(req.Trailer) > 0 {
		keys := make([]string, 0, len(req.Trailer))
		for k := range req.Trailer {
			k = http.CanonicalHeaderKey(k)
			switch k {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				return h, fmt.Errorf("http2: invalid Trailer key %q", k)
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

// Enumerate calls f with every field of the request's header block, in
// the order they are sent.
func (h *Request) Enumerate(req *http.Request, f func(name, value string)) {
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

// ListSize is the header list's size as SETTINGS_MAX_HEADER_LIST_SIZE
// counts it.
func (h *Request) ListSize(req *http.Request) uint64 {
	var n uint64
	h.Enumerate(req, func(name, value string) {
		n += uint64(hpack.HeaderField{Name: name, Value: value}.Size())
	})
	return n
}

// CheckListSize is ErrRequestHeaderListSize if the request's header list
// is above peerMax (the peer's SETTINGS_MAX_HEADER_LIST_SIZE; 1<<64-1
// when it set none).
func (h *Request) CheckListSize(req *http.Request, peerMax uint64) error {
	if peerMax != 1<<64-1 && h.ListSize(req) > peerMax {
		return ErrRequestHeaderListSize
	}
	return nil
}

// Encode writes the request's header block with enc: its fields
// lower-cased, those whose names are not ASCII left out (RFC 9113 8.2.1,
// as Go's transport).
func (h *Request) Encode(enc *hpack.Encoder, req *http.Request) {
	h.Enumerate(req, func(name, value string) {
		name, ok := LowerHeader(name)
		if !ok {
			return
		}
		enc.WriteField(hpack.HeaderField{Name: name, Value: value})
	})
}

// EncodeTrailers writes a request's trailer block with enc, as Encode
// writes the header block's regular fields.
func EncodeTrailers(enc *hpack.Encoder, trailer http.Header) {
	for k, vv := range trailer {
		name, ok := LowerHeader(k)
		if !ok {
			continue
		}
		for _, v := range vv {
			enc.WriteField(hpack.HeaderField{Name: name, Value: v})
		}
	}
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

// LowerHeader lower-cases a header name for HTTP/2, without allocating
// for common ones; ok is false for a name that is not ASCII (not sent).
func LowerHeader(v string) (lower string, ok bool) {
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

// Response is a response HEADERS block's head, as Go's transport's
// handleResponse reads it.
type Response struct {
	// Code is :status as a number; Status its three digits.
	Code   int
	Status string
	// Header is the block's regular fields, canonical keys, without
	// Trailer; a final response's without the connection-specific fields
	// and with Content-Length only when it is valid (repeated values
	// identical).
	Header http.Header
	// Trailer holds the keys the Trailer field declared (nil values), nil
	// if none.
	Trailer http.Header
	// ContentLength is a final response's valid Content-Length, -1 if none.
	ContentLength int64
}

// Informational says the response is a 1xx one.
func (r *Response) Informational() bool { return r.Code >= 100 && r.Code <= 199 }

// ParseResponse reads a response's head from its HEADERS block. An error
// is the stream's (the caller resets it with PROTOCOL_ERROR): a header
// list truncated at the client's limit, :status missing or not three
// digits, a 1xx with END_STREAM.
func ParseResponse(f *http2.MetaHeadersFrame) (Response, error) {
	r := Response{ContentLength: -1}
	if f.Truncated {
		return r, errors.New("http2: response header list larger than the client's limit (SETTINGS_MAX_HEADER_LIST_SIZE)")
	}
	status := f.PseudoValue("status")
	if status == "" {
		return r, errors.New("http2: malformed response from server: missing :status")
	}
	code, err := strconv.Atoi(status)
	if err != nil || len(status) != 3 {
		return r, fmt.Errorf("http2: malformed response from server: :status %q is not a 3-digit code", status)
	}
	r.Code, r.Status = code, status
	regular := f.RegularFields()
	strs := make([]string, len(regular))
	header := make(http.Header, len(regular))
	r.Header = header
	for _, hf := range regular {
		key := fieldname.Canonical(hf.Name)
		if key == "Trailer" {
			if r.Trailer == nil {
				r.Trailer = make(http.Header)
			}
			for v := range strings.SplitSeq(hf.Value, ",") {
				if v = textproto.TrimString(v); v != "" {
					r.Trailer[fieldname.Canonical(v)] = nil
				}
			}
			continue
		}
		vv := header[key]
		if vv == nil && len(strs) > 0 {
			vv, strs = strs[:1:1], strs[1:]
			vv[0] = hf.Value
			header[key] = vv
		} else {
			header[key] = append(vv, hf.Value)
		}
	}
	if r.Informational() {
		if f.StreamEnded() {
			return r, errors.New("http2: 1xx informational response with END_STREAM")
		}
		return r, nil
	}
	for _, k := range connHeaders {
		delete(header, k)
	}
	if clens, ok := header["Content-Length"]; ok {
		// Repeated values count only when identical (RFC 9110 8.6).
		conflicting := slices.ContainsFunc(clens[1:], func(v string) bool { return v != clens[0] })
		cl, err := strconv.ParseUint(clens[0], 10, 63)
		if conflicting || err != nil {
			delete(header, "Content-Length")
		} else {
			header["Content-Length"] = clens[:1]
			r.ContentLength = int64(cl)
		}
	}
	return r, nil
}
