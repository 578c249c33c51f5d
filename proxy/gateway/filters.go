package gateway

// The mapping from gatewaypb.Filter to the filter middlewares of
// proxy/middleware/{headers,redirect,rewrite,mirror,cors}.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/metrics"
	"github.com/meridian-mesh/meridian/proxy/middleware/cors"
	"github.com/meridian-mesh/meridian/proxy/middleware/headers"
	"github.com/meridian-mesh/meridian/proxy/middleware/mirror"
	"github.com/meridian-mesh/meridian/proxy/middleware/redirect"
	"github.com/meridian-mesh/meridian/proxy/middleware/rewrite"
)

// filter builds one filter of rule rl (or of one of its backends).
func (b *builder) filter(rl *rule, f *gatewaypb.Filter) (func(http.Handler) http.Handler, error) {
	switch f.GetFilter().(type) {
	case *gatewaypb.Filter_RequestHeaders:
		m, err := modifier(f.GetRequestHeaders())
		if err != nil {
			return nil, fmt.Errorf("request_headers.%w", err)
		}
		return headers.Request(m), nil
	case *gatewaypb.Filter_ResponseHeaders:
		m, err := modifier(f.GetResponseHeaders())
		if err != nil {
			return nil, fmt.Errorf("response_headers.%w", err)
		}
		return headers.Response(m), nil
	case *gatewaypb.Filter_Redirect:
		rd := f.GetRedirect()
		code := int(rd.GetStatusCode())
		switch code {
		case 0:
			code = http.StatusFound
		case 301, 302, 303, 307, 308:
		default:
			return nil, fmt.Errorf("redirect.status_code: %d is not 301, 302, 303, 307 or 308", code)
		}
		if rd.GetPort() > 65535 {
			return nil, fmt.Errorf("redirect.port: %d is not a port number", rd.GetPort())
		}
		switch rd.GetScheme() {
		case "", "http", "https":
		default:
			return nil, fmt.Errorf("redirect.scheme: %q is not http or https", rd.GetScheme())
		}
		c := redirect.Config{Scheme: rd.GetScheme(), Hostname: rd.GetHostname(), Port: rd.GetPort(), StatusCode: code,
			MatchedPrefix: rl.prefix, ListenerPort: rl.listener.port, ListenerScheme: rl.listener.scheme}
		switch p := rd.GetPath().GetModifier().(type) {
		case *gatewaypb.PathModifier_FullPath:
			c.FullPath = p.FullPath
		case *gatewaypb.PathModifier_ReplacePrefix:
			if rl.prefix == "" {
				return nil, errors.New("redirect.path.replace_prefix: the rule's match has no PREFIX path to replace")
			}
			c.ReplacePrefix = &p.ReplacePrefix
		}
		return redirect.New(c)
	case *gatewaypb.Filter_Rewrite:
		rw := f.GetRewrite()
		c := rewrite.Config{Hostname: rw.GetHostname(), MatchedPrefix: rl.prefix}
		switch p := rw.GetPath().GetModifier().(type) {
		case *gatewaypb.PathModifier_FullPath:
			c.FullPath = &p.FullPath
		case *gatewaypb.PathModifier_ReplacePrefix:
			if rl.prefix == "" {
				return nil, errors.New("rewrite.path.replace_prefix: the rule's match has no PREFIX path to replace")
			}
			c.ReplacePrefix = &p.ReplacePrefix
		}
		return rewrite.New(c), nil
	case *gatewaypb.Filter_Mirror:
		m := f.GetMirror()
		if m.GetDenominator() == 0 && m.GetNumerator() != 0 || m.GetNumerator() > m.GetDenominator() {
			return nil, fmt.Errorf("mirror: %d/%d is not a fraction (numerator ≤ denominator, 0/0 for all)", m.GetNumerator(), m.GetDenominator())
		}
		be, err := b.backend(m.GetBackend())
		if err != nil {
			return nil, fmt.Errorf("mirror.backend (%s): %w", m.GetBackend().GetName(), err)
		}
		if be.authority == "" {
			return nil, fmt.Errorf("mirror.backend (%s).authority: empty; a mirror needs a valid backend", m.GetBackend().GetName())
		}
		be.h2 = be.protocol == gatewaypb.Backend_H2C || rl.grpc
		be.key = metrics.GatewayRoute(b.gateway, rl.listener.name, rl.ref, be.label())
		send := b.g.forward(rl, be)
		return mirror.New(mirror.Config{Numerator: m.GetNumerator(), Denominator: m.GetDenominator(), Send: func(r *http.Request) {
			// A request of its own: a fresh context (not the client's,
			// which ends with its response, nor its exchange), bounded.
			ctx, cancel := context.WithTimeout(context.Background(), mirrorTimeout)
			defer cancel()
			send.ServeHTTP(discard{h: http.Header{}}, r.WithContext(ctx))
		}}), nil
	case *gatewaypb.Filter_Cors:
		c := f.GetCors()
		return cors.New(cors.Config{AllowOrigins: c.GetAllowOrigins(), AllowMethods: c.GetAllowMethods(), AllowHeaders: c.GetAllowHeaders(),
			ExposeHeaders: c.GetExposeHeaders(), MaxAge: time.Duration(c.GetMaxAgeSeconds()) * time.Second, AllowCredentials: c.GetAllowCredentials()}), nil
	}
	return nil, fmt.Errorf("%T: not a filter this proxy knows", f.GetFilter())
}

// mirrorTimeout bounds a mirrored request: nobody waits for its answer.
const mirrorTimeout = 30 * time.Second

// modifier is a HeaderModifier for proxy/middleware/headers; set is in
// name order (a map's order is random).
func modifier(h *gatewaypb.HeaderModifier) (headers.Modifier, error) {
	var m headers.Modifier
	names := make([]string, 0, len(h.GetSet()))
	for k := range h.GetSet() {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if k == "" {
			return m, errors.New("set: an empty header name")
		}
		m.Set = append(m.Set, headers.Header{Name: k, Value: h.GetSet()[k]})
	}
	for i, a := range h.GetAdd() {
		if a.GetName() == "" {
			return m, fmt.Errorf("add[%d].name: empty", i)
		}
		m.Add = append(m.Add, headers.Header{Name: a.GetName(), Value: a.GetValue()})
	}
	m.Remove = h.GetRemove()
	return m, nil
}

// discard is the ResponseWriter of a mirrored request: the answer is dropped.
type discard struct{ h http.Header }

func (d discard) Header() http.Header       { return d.h }
func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) WriteHeader(int)             {}
func (discard) Flush()                      {}
