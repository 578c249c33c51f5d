// Package fieldname lower-cases HTTP field names for HTTP/2 (RFC 9113
// §8.2.1), and canonicalises the lower-case names HTTP/2 receives, without
// an allocation for the common ones: the proxy's HTTP/2 server and client
// write and read every name this way.
package fieldname

import (
	"net/http"
	"net/textproto"
	"strings"
)

// Canonical is textproto.CanonicalMIMEHeaderKey(name); common names in
// lower case (as HTTP/2 sends them) come from a table, where textproto
// allocates for those outside its own (te, trailer, grpc-status...).
func Canonical(name string) string {
	if s, ok := canonical[name]; ok {
		return s
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}

// Lower is name in lower case; common names, canonical (Content-Type) or
// already lower (content-type), come from a table.
func Lower(name string) string {
	if s, ok := common[name]; ok {
		return s
	}
	return strings.ToLower(name)
}

var common, canonical = func() (map[string]string, map[string]string) {
	m, c := make(map[string]string), make(map[string]string)
	for _, k := range []string{
		"accept", "accept-charset", "accept-encoding", "accept-language", "accept-ranges", "age",
		"access-control-allow-credentials", "access-control-allow-headers", "access-control-allow-methods",
		"access-control-allow-origin", "access-control-expose-headers", "access-control-max-age",
		"allow", "authorization", "cache-control", "content-disposition", "content-encoding",
		"content-language", "content-length", "content-location", "content-range", "content-type",
		"cookie", "date", "etag", "expect", "expires", "forwarded", "from", "host", "if-match",
		"if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified",
		"link", "location", "max-forwards", "origin", "proxy-authenticate", "proxy-authorization",
		"range", "referer", "refresh", "retry-after", "server", "server-timing", "set-cookie",
		"strict-transport-security", "te", "trailer", "user-agent", "vary", "via",
		"www-authenticate", "x-envoy-upstream-service-time", "x-forwarded-for", "x-forwarded-host",
		"x-forwarded-proto", "x-request-id", "traceparent", "tracestate",
		"grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "grpc-message", "grpc-status",
		"grpc-status-details-bin", "grpc-trace-bin", "grpc-tags-bin",
		"meridian-hop", "meridian-orig-proto", "meridian-expect", "meridian-dst-override",
	} {
		m[http.CanonicalHeaderKey(k)] = k
		m[k] = k
		c[k] = textproto.CanonicalMIMEHeaderKey(k)
	}
	return m, c
}()
