package h1client

import (
	"bufio"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/meridian-mesh/meridian/proxy/httpproxy/internal/h1head"
)

// writeRequest writes req as (*http.Request).Write does, byte for byte,
// for the requests a proxy sends most: no body (body nil) or a small one
// read whole (body, req.ContentLength bytes), no Transfer-Encoding or
// trailers, not CONNECT, an ASCII host that is not an IPv6 literal, and no
// httptrace hooks on writing. It writes nothing and returns false for any
// other request, which the caller writes with Request.Write. It skips what
// Request.Write pays per request: fmt for the request and Host lines, a
// transferWriter, a sorter from a pool. FuzzWriteRequest compares the two.
// req has passed check.
func writeRequest(bw *bufio.Writer, req *http.Request, body []byte) bool {
	if req.TransferEncoding != nil || req.Trailer != nil || req.URL == nil {
		return false
	}
	if body == nil {
		if req.ContentLength != 0 || (req.Body != nil && req.Body != http.NoBody) {
			return false
		}
	} else if int64(len(body)) != req.ContentLength || len(body) == 0 {
		return false
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if method == http.MethodConnect {
		return false
	}
	if t := httptrace.ContextClientTrace(req.Context()); t != nil &&
		(t.WroteHeaderField != nil || t.WroteHeaders != nil || t.WroteRequest != nil || t.Wait100Continue != nil) {
		return false
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 {
			return false // Request.Write converts it to Punycode
		}
	}
	if strings.HasPrefix(host, "[") {
		return false // Request.Write removes an IPv6 zone
	}
	if !httpguts.ValidHostHeader(host) {
		host = "" // as Request.Write does
	}
	ruri := req.URL.RequestURI()
	for i := 0; i < len(ruri); i++ {
		if c := ruri[i]; c < ' ' || c == 0x7f {
			return false // Request.Write's error
		}
	}
	userAgent := defaultUserAgent
	if _, ok := req.Header["User-Agent"]; ok {
		userAgent = h1head.Get(req.Header, "User-Agent")
	}
	var keysBuf [32]string
	keys := keysBuf[:0]
	for k, vv := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue // Request.Write drops it
		}
		for _, v := range vv {
			if strings.ContainsAny(v, "\r\n") {
				return false // check refuses these; Request.Write would turn them into spaces
			}
		}
		keys = append(keys, k)
	}
	if strings.ContainsAny(userAgent, "\r\n") {
		return false
	}
	slices.Sort(keys)

	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(ruri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if userAgent != "" {
		bw.WriteString("User-Agent: ")
		bw.WriteString(textproto.TrimString(userAgent))
		bw.WriteString("\r\n")
	}
	if req.Close && !h1head.HasToken(h1head.Get(req.Header, "Connection"), "close") {
		bw.WriteString("Connection: close\r\n")
	}
	if len(body) > 0 || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		var n [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(n[:0], int64(len(body)), 10))
		bw.WriteString("\r\n")
	}
	for _, k := range keys {
		for _, v := range req.Header[k] {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(textproto.TrimString(v))
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("\r\n")
	bw.Write(body)
	return true
}

// defaultUserAgent is what Request.Write sends without a User-Agent field.
const defaultUserAgent = "Go-http-client/1.1"
