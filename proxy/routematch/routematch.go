// Package routematch matches HTTP requests against the Gateway API's
// route matches as the control plane compiles them (gatewaypb.Match): the
// gateway's route table and the mesh's HTTP routes (proxy/profile) share
// it, so an HTTPRoute match means the same at the edge and in the mesh.
package routematch

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

// Matcher is a compiled Match: every part present must match. The nil
// *Matcher matches every request.
type Matcher struct {
	pathType gatewaypb.PathMatch_Type
	path     string // EXACT, PREFIX (without a trailing slash)
	pathRE   *regexp.Regexp
	headers  []headerMatch
	query    []queryMatch
	method   string
}

type headerMatch struct {
	name  string // canonical
	value string
	re    *regexp.Regexp
}

type queryMatch struct {
	name  string
	value string
	re    *regexp.Regexp
}

// Compile compiles m; nil gives the nil Matcher (every request). The
// error names the field.
func Compile(m *gatewaypb.Match) (*Matcher, error) {
	if m == nil {
		return nil, nil
	}
	cm := &Matcher{pathType: m.GetPath().GetType(), method: m.GetMethod()}
	v := m.GetPath().GetValue()
	switch cm.pathType {
	case gatewaypb.PathMatch_TYPE_UNSPECIFIED:
		if v != "" {
			return nil, errors.New("path.type: unset while path.value is set; EXACT, PREFIX or REGEX")
		}
	case gatewaypb.PathMatch_EXACT, gatewaypb.PathMatch_PREFIX:
		if !strings.HasPrefix(v, "/") {
			return nil, fmt.Errorf("path.value: %q must start with '/'", v)
		}
		cm.path = v
		if cm.pathType == gatewaypb.PathMatch_PREFIX {
			cm.path = strings.TrimRight(v, "/")
		}
	case gatewaypb.PathMatch_REGEX:
		re, err := anchored(v)
		if err != nil {
			return nil, fmt.Errorf("path.value: %w", err)
		}
		cm.pathRE = re
	default:
		return nil, fmt.Errorf("path.type: %v is not EXACT, PREFIX or REGEX", cm.pathType)
	}
	for i, h := range m.GetHeaders() {
		if h.GetName() == "" {
			return nil, fmt.Errorf("headers[%d].name: empty", i)
		}
		hm := headerMatch{name: http.CanonicalHeaderKey(h.GetName()), value: h.GetValue()}
		if h.GetRegex() {
			re, err := anchored(h.GetValue())
			if err != nil {
				return nil, fmt.Errorf("headers[%d] (%s).value: %w", i, h.GetName(), err)
			}
			hm.re = re
		}
		cm.headers = append(cm.headers, hm)
	}
	for i, q := range m.GetQueryParams() {
		if q.GetName() == "" {
			return nil, fmt.Errorf("query_params[%d].name: empty", i)
		}
		qm := queryMatch{name: q.GetName(), value: q.GetValue()}
		if q.GetRegex() {
			re, err := anchored(q.GetValue())
			if err != nil {
				return nil, fmt.Errorf("query_params[%d] (%s).value: %w", i, q.GetName(), err)
			}
			qm.re = re
		}
		cm.query = append(cm.query, qm)
	}
	return cm, nil
}

// anchored compiles an RE2 expression anchored at both ends.
func anchored(expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("%q is not a valid RE2 expression: %w", expr, err)
	}
	return re, nil
}

// Matches says whether r matches every part of m.
func (m *Matcher) Matches(r *http.Request) bool {
	if m == nil {
		return true
	}
	if m.method != "" && r.Method != m.method {
		return false
	}
	if m.pathType != gatewaypb.PathMatch_TYPE_UNSPECIFIED {
		p := r.URL.EscapedPath()
		if p == "" {
			p = "/"
		}
		switch m.pathType {
		case gatewaypb.PathMatch_EXACT:
			if p != m.path {
				return false
			}
		case gatewaypb.PathMatch_PREFIX:
			// Path elements: "/foo" matches "/foo" and "/foo/bar", not "/foobar".
			if m.path != "" && p != m.path && !(strings.HasPrefix(p, m.path) && p[len(m.path)] == '/') {
				return false
			}
		case gatewaypb.PathMatch_REGEX:
			if !m.pathRE.MatchString(p) {
				return false
			}
		}
	}
	for _, h := range m.headers {
		v, ok := HeaderValue(r, h.name)
		if !ok {
			return false
		}
		if h.re != nil {
			if !h.re.MatchString(v) {
				return false
			}
		} else if v != h.value {
			return false
		}
	}
	if len(m.query) > 0 {
		q := r.URL.Query()
		for _, qm := range m.query {
			vs, ok := q[qm.name]
			if !ok {
				return false
			}
			// The first value: what the spec leaves to implementations,
			// and what Envoy and most servers read.
			if qm.re != nil {
				if !qm.re.MatchString(vs[0]) {
					return false
				}
			} else if vs[0] != qm.value {
				return false
			}
		}
	}
	return true
}

// HeaderValue is a request header's value as matched: several field lines
// joined by commas (RFC 9110 §5.3); Host from the request line. name is
// canonical.
func HeaderValue(r *http.Request, name string) (string, bool) {
	if name == "Host" {
		return r.Host, r.Host != ""
	}
	vs := r.Header[name]
	switch len(vs) {
	case 0:
		return "", false
	case 1:
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}
