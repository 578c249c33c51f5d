package gateway

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"google.golang.org/protobuf/types/known/durationpb"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// rule is one match of one route rule, with what orders it among the
// rules of a hostname.
type rule struct {
	pb *gatewaypb.Rule

	exact    bool // an Exact path
	pathLen  int  // characters of the path (prefix, exact or regex)
	regex    bool
	method   bool
	headers  int
	query    int
	created  metav1.Time
	ns, name string
	ruleIdx  int
	matchIdx int
}

// before is the Gateway API's precedence among rules of one hostname:
// an Exact path, then the longest path (a prefix before a regular
// expression of the same length: regular expressions are
// implementation-specific), then a method match, then the most header
// matches, then the most query parameter matches; ties go to the oldest
// route, then namespace/name, then rule and match order.
func (a *rule) before(b *rule) bool {
	if a.exact != b.exact {
		return a.exact
	}
	if a.pathLen != b.pathLen {
		return a.pathLen > b.pathLen
	}
	if a.regex != b.regex {
		return !a.regex
	}
	if a.method != b.method {
		return a.method
	}
	if a.headers != b.headers {
		return a.headers > b.headers
	}
	if a.query != b.query {
		return a.query > b.query
	}
	if !a.created.Equal(&b.created) {
		return a.created.Before(&b.created)
	}
	if a.ns != b.ns {
		return a.ns < b.ns
	}
	if a.name != b.name {
		return a.name < b.name
	}
	if a.ruleIdx != b.ruleIdx {
		return a.ruleIdx < b.ruleIdx
	}
	return a.matchIdx < b.matchIdx
}

func sortRules(rs []*rule) {
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].before(rs[j]) })
}

func ruleName(name *gwv1.SectionName, i int) string {
	if name != nil && *name != "" {
		return string(*name)
	}
	return strconv.Itoa(i)
}

func (c *compiler) httpRoute(r *gwv1.HTTPRoute) *compiled {
	cr := &compiled{}
	who := fmt.Sprintf("HTTPRoute %s/%s", r.Namespace, r.Name)
	for ri, rr := range r.Spec.Rules {
		field := fmt.Sprintf("%s: spec.rules[%d]", who, ri)
		ref := &gatewaypb.RouteRef{Kind: "HTTPRoute", Namespace: r.Namespace, Name: r.Name, Rule: ruleName(rr.Name, ri)}
		matches := rr.Matches
		if len(matches) == 0 {
			matches = []gwv1.HTTPRouteMatch{{}}
		}
		type m struct {
			pb *gatewaypb.Match
			r  rule
		}
		var ms []m
		prefixOnly := true
		for mi, hm := range matches {
			pm, key, err := httpMatch(hm)
			if err != "" {
				cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fmt.Sprintf("%s.matches[%d].%s", field, mi, err))
				continue
			}
			if pm.Path.Type != gatewaypb.PathMatch_PREFIX {
				prefixOnly = false
			}
			key.matchIdx = mi
			ms = append(ms, m{pm, key})
		}
		filters := c.httpFilters(cr, r.Namespace, "HTTPRoute", field+".filters", rr.Filters, prefixOnly)
		var backends []*gatewaypb.Backend
		for bi, br := range rr.BackendRefs {
			b := c.backend(cr, "HTTPRoute", r.Namespace, fmt.Sprintf("%s.backendRefs[%d]", field, bi), br.BackendRef, false)
			b.Filters = c.httpFilters(cr, r.Namespace, "HTTPRoute", fmt.Sprintf("%s.backendRefs[%d].filters", field, bi), br.Filters, prefixOnly)
			for _, f := range b.Filters {
				if f.GetRedirect() != nil || f.GetRewrite() != nil || f.GetMirror() != nil || f.GetCors() != nil {
					cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fmt.Sprintf("%s.backendRefs[%d].filters: only RequestHeaderModifier and ResponseHeaderModifier are supported on a backendRef", field, bi))
					break
				}
			}
			backends = append(backends, b)
		}
		timeouts := c.timeouts(cr, field, rr.Timeouts)
		retry := c.retry(cr, field, rr.Retry)
		sp := c.session(cr, field, rr.SessionPersistence)
		for _, x := range ms {
			k := x.r
			k.pb = &gatewaypb.Rule{Route: ref, Match: x.pb, Filters: filters, Backends: backends, Timeouts: timeouts, Retry: retry, SessionPersistence: sp}
			k.created, k.ns, k.name, k.ruleIdx = r.CreationTimestamp, r.Namespace, r.Name, ri
			cr.rules = append(cr.rules, &k)
		}
	}
	return cr
}

// httpMatch compiles one HTTPRouteMatch; err names the field and what is
// allowed.
func httpMatch(hm gwv1.HTTPRouteMatch) (*gatewaypb.Match, rule, string) {
	var k rule
	pm := &gatewaypb.Match{}
	typ, val := gwv1.PathMatchPathPrefix, "/"
	if hm.Path != nil {
		if hm.Path.Type != nil {
			typ = *hm.Path.Type
		}
		if hm.Path.Value != nil {
			val = *hm.Path.Value
		}
	}
	switch typ {
	case gwv1.PathMatchExact, gwv1.PathMatchPathPrefix:
		if !strings.HasPrefix(val, "/") {
			return nil, k, fmt.Sprintf("path.value %q must start with \"/\"", val)
		}
		if typ == gwv1.PathMatchExact {
			pm.Path = &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_EXACT, Value: val}
			k.exact = true
		} else {
			// "/foo/" and "/foo" match the same paths (element-wise).
			if len(val) > 1 {
				val = strings.TrimRight(val, "/")
				if val == "" {
					val = "/"
				}
			}
			pm.Path = &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_PREFIX, Value: val}
		}
	case gwv1.PathMatchRegularExpression:
		if _, err := regexp.Compile(val); err != nil {
			return nil, k, fmt.Sprintf("path.value %q is not a valid RE2 regular expression: %v", val, err)
		}
		pm.Path = &gatewaypb.PathMatch{Type: gatewaypb.PathMatch_REGEX, Value: val}
		k.regex = true
	default:
		return nil, k, fmt.Sprintf("path.type %q is not supported (allowed: Exact, PathPrefix, RegularExpression)", typ)
	}
	k.pathLen = len(val)
	hdrs, bad := headerMatches(len(hm.Headers), func(i int) (string, string, string) {
		h := hm.Headers[i]
		typ := ""
		if h.Type != nil {
			typ = string(*h.Type)
		}
		return string(h.Name), typ, h.Value
	})
	if bad != "" {
		return nil, k, bad
	}
	pm.Headers = hdrs
	k.headers = len(pm.Headers)
	seenQ := map[string]bool{}
	for i, q := range hm.QueryParams {
		if seenQ[string(q.Name)] {
			continue
		}
		seenQ[string(q.Name)] = true
		re := false
		if q.Type != nil {
			switch *q.Type {
			case gwv1.QueryParamMatchExact:
			case gwv1.QueryParamMatchRegularExpression:
				if _, err := regexp.Compile(q.Value); err != nil {
					return nil, k, fmt.Sprintf("queryParams[%d].value %q is not a valid RE2 regular expression: %v", i, q.Value, err)
				}
				re = true
			default:
				return nil, k, fmt.Sprintf("queryParams[%d].type %q is not supported (allowed: Exact, RegularExpression)", i, *q.Type)
			}
		}
		pm.QueryParams = append(pm.QueryParams, &gatewaypb.QueryMatch{Name: string(q.Name), Regex: re, Value: q.Value})
	}
	k.query = len(pm.QueryParams)
	if hm.Method != nil && *hm.Method != "" {
		pm.Method = string(*hm.Method)
		k.method = true
	}
	return pm, k, ""
}

// httpFilters compiles filters; prefixOnly says every match of the rule is
// a PathPrefix (ReplacePrefixMatch needs one).
func (c *compiler) httpFilters(cr *compiled, ns, kind, field string, fs []gwv1.HTTPRouteFilter, prefixOnly bool) []*gatewaypb.Filter {
	var out []*gatewaypb.Filter
	answers := 0 // redirects and rewrites: at most one of them
	for i, f := range fs {
		fld := fmt.Sprintf("%s[%d]", field, i)
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestHeaderModifier:
			if f.RequestHeaderModifier == nil {
				cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fld+".requestHeaderModifier is required with type RequestHeaderModifier")
				continue
			}
			out = append(out, &gatewaypb.Filter{Filter: &gatewaypb.Filter_RequestHeaders{RequestHeaders: headerModifier(f.RequestHeaderModifier)}})
		case gwv1.HTTPRouteFilterResponseHeaderModifier:
			if f.ResponseHeaderModifier == nil {
				cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fld+".responseHeaderModifier is required with type ResponseHeaderModifier")
				continue
			}
			out = append(out, &gatewaypb.Filter{Filter: &gatewaypb.Filter_ResponseHeaders{ResponseHeaders: headerModifier(f.ResponseHeaderModifier)}})
		case gwv1.HTTPRouteFilterRequestRedirect:
			answers++
			if f.RequestRedirect == nil {
				cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fld+".requestRedirect is required with type RequestRedirect")
				continue
			}
			pb, problems := RedirectFilter(fld+".requestRedirect", f.RequestRedirect, prefixOnly)
			for _, p := range problems {
				cr.invalid(string(gwv1.RouteReasonUnsupportedValue), p)
			}
			out = append(out, &gatewaypb.Filter{Filter: &gatewaypb.Filter_Redirect{Redirect: pb}})
		case gwv1.HTTPRouteFilterURLRewrite:
			answers++
			if f.URLRewrite == nil {
				cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fld+".urlRewrite is required with type URLRewrite")
				continue
			}
			pb, problems := RewriteFilter(fld+".urlRewrite", f.URLRewrite, prefixOnly)
			for _, p := range problems {
				cr.invalid(string(gwv1.RouteReasonUnsupportedValue), p)
			}
			out = append(out, &gatewaypb.Filter{Filter: &gatewaypb.Filter_Rewrite{Rewrite: pb}})
		case gwv1.HTTPRouteFilterRequestMirror:
			if m := c.mirror(cr, ns, kind, fld, f.RequestMirror); m != nil {
				out = append(out, m)
			}
		case gwv1.HTTPRouteFilterCORS:
			if f.CORS == nil {
				cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fld+".cors is required with type CORS")
				continue
			}
			out = append(out, &gatewaypb.Filter{Filter: &gatewaypb.Filter_Cors{Cors: cors(f.CORS)}})
		default:
			cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fmt.Sprintf("%s.type %q is not supported (allowed: RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror, CORS)", fld, f.Type))
		}
	}
	if answers > 1 {
		cr.invalid(string(gwv1.RouteReasonIncompatibleFilters), field+": RequestRedirect and URLRewrite cannot be combined, nor repeated, in one rule")
	}
	return out
}

func headerModifier(h *gwv1.HTTPHeaderFilter) *gatewaypb.HeaderModifier {
	pb := &gatewaypb.HeaderModifier{}
	for _, s := range h.Set {
		if pb.Set == nil {
			pb.Set = map[string]string{}
		}
		pb.Set[string(s.Name)] = s.Value
	}
	for _, a := range h.Add {
		pb.Add = append(pb.Add, &gatewaypb.Header{Name: string(a.Name), Value: a.Value})
	}
	pb.Remove = append(pb.Remove, h.Remove...)
	return pb
}

// RedirectFilter compiles a RequestRedirect filter (field names it in the
// problems): the gateway's and the mesh's. prefixOnly says every match of
// the rule is a PathPrefix (ReplacePrefixMatch needs one). Each problem
// makes the rule invalid.
func RedirectFilter(field string, rd *gwv1.HTTPRequestRedirectFilter, prefixOnly bool) (*gatewaypb.Redirect, []string) {
	var problems []string
	pb := &gatewaypb.Redirect{StatusCode: 302}
	if rd.Scheme != nil {
		if *rd.Scheme != "http" && *rd.Scheme != "https" {
			problems = append(problems, fmt.Sprintf("%s.scheme %q is not supported (allowed: http, https)", field, *rd.Scheme))
		}
		pb.Scheme = *rd.Scheme
	}
	if rd.Hostname != nil {
		pb.Hostname = string(*rd.Hostname)
	}
	if rd.Port != nil {
		pb.Port = uint32(*rd.Port)
	}
	if rd.StatusCode != nil {
		switch *rd.StatusCode {
		case 301, 302, 303, 307, 308:
			pb.StatusCode = uint32(*rd.StatusCode)
		default:
			problems = append(problems, fmt.Sprintf("%s.statusCode %d is not supported (allowed: 301, 302, 303, 307, 308)", field, *rd.StatusCode))
		}
	}
	var problem string
	pb.Path, problem = pathModifier(field+".path", rd.Path, prefixOnly)
	if problem != "" {
		problems = append(problems, problem)
	}
	return pb, problems
}

// RewriteFilter compiles a URLRewrite filter, as RedirectFilter does a
// redirect.
func RewriteFilter(field string, rw *gwv1.HTTPURLRewriteFilter, prefixOnly bool) (*gatewaypb.Rewrite, []string) {
	pb := &gatewaypb.Rewrite{}
	if rw.Hostname != nil {
		pb.Hostname = string(*rw.Hostname)
	}
	var problem string
	if pb.Path, problem = pathModifier(field+".path", rw.Path, prefixOnly); problem != "" {
		return pb, []string{problem}
	}
	return pb, nil
}

func pathModifier(field string, p *gwv1.HTTPPathModifier, prefixOnly bool) (*gatewaypb.PathModifier, string) {
	if p == nil {
		return nil, ""
	}
	switch p.Type {
	case gwv1.FullPathHTTPPathModifier:
		if p.ReplaceFullPath == nil {
			return nil, field + ".replaceFullPath is required with type ReplaceFullPath"
		}
		return &gatewaypb.PathModifier{Modifier: &gatewaypb.PathModifier_FullPath{FullPath: *p.ReplaceFullPath}}, ""
	case gwv1.PrefixMatchHTTPPathModifier:
		if p.ReplacePrefixMatch == nil {
			return nil, field + ".replacePrefixMatch is required with type ReplacePrefixMatch"
		}
		if !prefixOnly {
			return nil, field + ".type ReplacePrefixMatch needs every match of the rule to be a PathPrefix path match"
		}
		return &gatewaypb.PathModifier{Modifier: &gatewaypb.PathModifier_ReplacePrefix{ReplacePrefix: *p.ReplacePrefixMatch}}, ""
	}
	return nil, fmt.Sprintf("%s.type %q is not supported (allowed: ReplaceFullPath, ReplacePrefixMatch)", field, p.Type)
}

func cors(f *gwv1.HTTPCORSFilter) *gatewaypb.CORS {
	pb := &gatewaypb.CORS{MaxAgeSeconds: uint32(max(f.MaxAge, 0))}
	for _, o := range f.AllowOrigins {
		pb.AllowOrigins = append(pb.AllowOrigins, string(o))
	}
	for _, m := range f.AllowMethods {
		pb.AllowMethods = append(pb.AllowMethods, string(m))
	}
	for _, h := range f.AllowHeaders {
		pb.AllowHeaders = append(pb.AllowHeaders, string(h))
	}
	for _, h := range f.ExposeHeaders {
		pb.ExposeHeaders = append(pb.ExposeHeaders, string(h))
	}
	if f.AllowCredentials != nil {
		pb.AllowCredentials = *f.AllowCredentials
	}
	return pb
}

// mirror compiles a RequestMirror filter. A mirror whose backend does not
// resolve is left out (its answer is never used) and ResolvedRefs says why.
func (c *compiler) mirror(cr *compiled, ns, kind, fld string, m *gwv1.HTTPRequestMirrorFilter) *gatewaypb.Filter {
	if m == nil {
		cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fld+".requestMirror is required with type RequestMirror")
		return nil
	}
	b := c.backend(cr, kind, ns, fld+".requestMirror.backendRef", gwv1.BackendRef{BackendObjectReference: m.BackendRef}, kind == "GRPCRoute")
	if b.Authority == "" {
		return nil
	}
	b.Weight = 0
	pb := &gatewaypb.Mirror{Backend: b}
	switch {
	case m.Percent != nil:
		pb.Numerator, pb.Denominator = uint32(max(*m.Percent, 0)), 100
	case m.Fraction != nil:
		pb.Numerator, pb.Denominator = uint32(max(m.Fraction.Numerator, 0)), 100
		if m.Fraction.Denominator != nil {
			pb.Denominator = uint32(max(*m.Fraction.Denominator, 0))
		}
		if pb.Denominator == 0 || pb.Numerator > pb.Denominator {
			cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fmt.Sprintf("%s.requestMirror.fraction %d/%d is not a fraction (allowed: 0 <= numerator <= denominator, denominator > 0)", fld, pb.Numerator, pb.Denominator))
			return nil
		}
	}
	return &gatewaypb.Filter{Filter: &gatewaypb.Filter_Mirror{Mirror: pb}}
}

// duration parses a Gateway API duration (a subset of Go's: h, m, s, ms).
func duration(cr *compiled, field string, d *gwv1.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil || v < 0 {
		cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fmt.Sprintf("%s %q is not a duration (allowed: e.g. 1h, 10s, 500ms)", field, *d))
		return nil
	}
	if v == 0 {
		return nil // 0s disables the timeout
	}
	return durationpb.New(v)
}

func (c *compiler) timeouts(cr *compiled, field string, t *gwv1.HTTPRouteTimeouts) *gatewaypb.Timeouts {
	if t == nil {
		return nil
	}
	pb := &gatewaypb.Timeouts{
		Request:        duration(cr, field+".timeouts.request", t.Request),
		BackendRequest: duration(cr, field+".timeouts.backendRequest", t.BackendRequest),
	}
	if pb.Request != nil && pb.BackendRequest != nil && pb.BackendRequest.AsDuration() > pb.Request.AsDuration() {
		cr.invalid(string(gwv1.RouteReasonUnsupportedValue), field+".timeouts.backendRequest must not be longer than timeouts.request")
	}
	if pb.Request == nil && pb.BackendRequest == nil {
		return nil
	}
	return pb
}

// DefaultRetryAttempts is how many times a rule whose retry leaves
// attempts out (implementation-specific, says the spec) retries: as many
// as a rule without a retry policy retries connection errors. Without it a
// retry stanza retried nothing, less than no stanza at all.
const DefaultRetryAttempts = 2

func (c *compiler) retry(cr *compiled, field string, r *gwv1.HTTPRouteRetry) *gatewaypb.Retry {
	if r == nil {
		return nil
	}
	pb := &gatewaypb.Retry{Backoff: duration(cr, field+".retry.backoff", r.Backoff), Attempts: DefaultRetryAttempts}
	if r.Attempts != nil {
		if *r.Attempts < 0 {
			cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fmt.Sprintf("%s.retry.attempts %d is negative", field, *r.Attempts))
		} else {
			pb.Attempts = uint32(*r.Attempts)
		}
	}
	for i, code := range r.Codes {
		if code < 400 || code > 599 {
			cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fmt.Sprintf("%s.retry.codes[%d] %d is not supported (allowed: 400-599)", field, i, code))
			continue
		}
		pb.Codes = append(pb.Codes, uint32(code))
	}
	return pb
}

func (c *compiler) session(cr *compiled, field string, s *gwv1.SessionPersistence) *gatewaypb.SessionPersistence {
	if s == nil {
		return nil
	}
	pb := &gatewaypb.SessionPersistence{Type: gatewaypb.SessionPersistence_COOKIE}
	if s.Type != nil {
		switch *s.Type {
		case gwv1.CookieBasedSessionPersistence:
		case gwv1.HeaderBasedSessionPersistence:
			pb.Type = gatewaypb.SessionPersistence_HEADER
		default:
			cr.invalid(string(gwv1.RouteReasonUnsupportedValue), fmt.Sprintf("%s.sessionPersistence.type %q is not supported (allowed: Cookie, Header)", field, *s.Type))
		}
	}
	if s.SessionName != nil {
		pb.Name = *s.SessionName
	}
	pb.AbsoluteTimeout = duration(cr, field+".sessionPersistence.absoluteTimeout", s.AbsoluteTimeout)
	if s.CookieConfig != nil && s.CookieConfig.LifetimeType != nil && *s.CookieConfig.LifetimeType == gwv1.PermanentCookieLifetimeType {
		if pb.AbsoluteTimeout == nil {
			cr.invalid(string(gwv1.RouteReasonUnsupportedValue), field+".sessionPersistence.absoluteTimeout is required with cookieConfig.lifetimeType Permanent")
		}
		pb.PermanentCookie = true
	}
	return pb
}

// headerMatches converts a route match's header matches (HTTPRoute's and
// GRPCRoute's differ only in their types' names): at(i) is the i-th
// match's name, type ("" is Exact) and value. Only the first of names that
// are equal but for case counts, as the spec says. A bad match is the
// message naming its field.
func headerMatches(n int, at func(i int) (name, typ, value string)) ([]*gatewaypb.HeaderMatch, string) {
	var out []*gatewaypb.HeaderMatch
	seen := map[string]bool{}
	for i := range n {
		name, typ, value := at(i)
		if seen[strings.ToLower(name)] {
			continue
		}
		seen[strings.ToLower(name)] = true
		re := false
		switch typ {
		case "", "Exact":
		case "RegularExpression":
			if _, err := regexp.Compile(value); err != nil {
				return nil, fmt.Sprintf("headers[%d].value %q is not a valid RE2 regular expression: %v", i, value, err)
			}
			re = true
		default:
			return nil, fmt.Sprintf("headers[%d].type %q is not supported (allowed: Exact, RegularExpression)", i, typ)
		}
		out = append(out, &gatewaypb.HeaderMatch{Name: name, Regex: re, Value: value})
	}
	return out, ""
}
