// Package profile is the proxy's view of a destination profile: which route
// a request belongs to, how long it may take, whether it may be retried and
// within what budget, which responses count as failures, and how the
// authority's traffic is split over other authorities.
package profile

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/proxy/middleware/headers"
	"github.com/meridian-mesh/meridian/proxy/middleware/redirect"
	"github.com/meridian-mesh/meridian/proxy/middleware/rewrite"
	"github.com/meridian-mesh/meridian/proxy/routematch"
)

// Profile is a compiled destination profile. The zero value (no routes, no
// split) means "forward as is".
type Profile struct {
	Routes []*Route
	// HTTPRoutes are matched before Routes, in order (the control plane's
	// precedence): GAMMA route rules and a Rollout's header route, each
	// with its own backends (OwnsSplit).
	HTTPRoutes []*Route
	BudgetSpec BudgetSpec
	Splits     []Split // empty: all traffic goes to the authority itself

	budgetOnce sync.Once
	budget     *Budget
}

// Budget returns the profile's retry budget, shared by every request that
// uses this profile.
func (p *Profile) Budget() *Budget {
	p.budgetOnce.Do(func() { p.budget = NewBudget(p.BudgetSpec, nil) })
	return p.budget
}

// Pick chooses a traffic-split backend for one request by weight, or ""
// when the profile has no split (or every weight is 0).
func (p *Profile) Pick() string {
	if p == nil || len(p.Splits) == 0 {
		return ""
	}
	var total uint64
	for _, s := range p.Splits {
		total += uint64(s.Weight)
	}
	if total == 0 {
		return ""
	}
	n := rand.Uint64N(total)
	for _, s := range p.Splits {
		if n < uint64(s.Weight) {
			return s.Authority
		}
		n -= uint64(s.Weight)
	}
	return ""
}

// Route is one named class of requests.
type Route struct {
	Name      string
	match     matcher
	Timeout   time.Duration // 0: none
	Retryable bool
	classes   []responseClass

	// An HTTP route's (HTTPRoutes) own split and filters.
	own bool
	// Status, when not 0, answers the route's requests with it (404: no
	// GAMMA rule matched) and forwards nothing.
	Status   int
	backends []Backend
	total    uint64
	// Filters wraps the handler of the route's requests with its header
	// modifiers; nil: none.
	Filters func(http.Handler) http.Handler
}

// Backend is a weighted backend of an HTTP route. An empty Authority is
// an invalid backend: its share is answered 500.
type Backend struct {
	Authority string
	Weight    uint32
	// Filters wraps the handler of the requests sent here with the
	// backend's own header modifiers; nil: none.
	Filters func(http.Handler) http.Handler
}

// OwnsSplit says whether the route chooses its requests' backends itself
// (an HTTP route): then Pick, not the profile's split, decides.
func (rt *Route) OwnsSplit() bool { return rt != nil && rt.own }

// Pick chooses the backend of one request of an HTTP route by weight: nil
// when the route has no backends (the authority itself serves), or, with
// ok false, when no backend has a weight (the request is answered 500).
func (rt *Route) Pick() (b *Backend, ok bool) {
	if len(rt.backends) == 0 {
		return nil, true
	}
	if rt.total == 0 {
		return nil, false
	}
	n := rand.Uint64N(rt.total)
	for i := range rt.backends {
		b := &rt.backends[i]
		if n < uint64(b.Weight) {
			return b, true
		}
		n -= uint64(b.Weight)
	}
	return nil, false
}

// Split sends Weight parts of the traffic to Authority.
type Split struct {
	Authority string
	Weight    uint32
}

// BudgetSpec bounds retries: at most Ratio extra requests per original
// request, averaged over TTL, plus MinPerSecond always allowed.
type BudgetSpec struct {
	Ratio        float64
	MinPerSecond uint32
	TTL          time.Duration
}

// DefaultBudget is Linkerd's default retry budget.
var DefaultBudget = BudgetSpec{Ratio: 0.2, MinPerSecond: 10, TTL: 10 * time.Second}

// Match returns the first HTTP route matching r, else the first route
// matching it, or nil.
func (p *Profile) Match(r *http.Request) *Route {
	if p == nil {
		return nil
	}
	for _, rt := range p.HTTPRoutes {
		if rt.match(r) {
			return rt
		}
	}
	for _, rt := range p.Routes {
		if rt.match(r) {
			return rt
		}
	}
	return nil
}

// IsFailure classifies a response by the route's response classes; without
// a matching class a 5xx is a failure.
func (rt *Route) IsFailure(status int) bool {
	if rt != nil {
		for _, c := range rt.classes {
			if c.match(status) {
				return c.failure
			}
		}
	}
	return status >= 500
}

type matcher func(*http.Request) bool
type responseClass struct {
	match   func(int) bool
	failure bool
}

// FromProto compiles a DestinationProfile. An invalid route (a bad regex)
// is an error naming it; the caller keeps its previous profile.
func FromProto(m *pb.DestinationProfile) (*Profile, error) {
	p := &Profile{BudgetSpec: DefaultBudget}
	if b := m.GetRetryBudget(); b != nil {
		p.BudgetSpec = BudgetSpec{Ratio: float64(b.GetRetryRatio()), MinPerSecond: b.GetMinRetriesPerSecond(), TTL: b.GetTtl().AsDuration()}
		if p.BudgetSpec.TTL <= 0 {
			p.BudgetSpec.TTL = DefaultBudget.TTL
		}
	}
	for i, r := range m.GetRoutes() {
		name := r.GetMetricsLabels()["route"]
		mt, err := requestMatcher(r.GetCondition())
		if err != nil {
			return nil, fmt.Errorf("routes[%d] (%s).condition: %w", i, name, err)
		}
		rt := &Route{Name: name, match: mt, Retryable: r.GetIsRetryable(), Timeout: r.GetTimeout().AsDuration()}
		for j, c := range r.GetResponseClasses() {
			rm, err := responseMatcher(c.GetCondition())
			if err != nil {
				return nil, fmt.Errorf("routes[%d] (%s).responseClasses[%d]: %w", i, name, j, err)
			}
			rt.classes = append(rt.classes, responseClass{match: rm, failure: c.GetIsFailure()})
		}
		p.Routes = append(p.Routes, rt)
	}
	for _, d := range m.GetDstOverrides() {
		p.Splits = append(p.Splits, Split{Authority: d.GetAuthority(), Weight: d.GetWeight()})
	}
	for i, r := range m.GetHttpRoutes() {
		name := r.GetMetricsLabels()["route"]
		rt, err := httpRoute(r)
		if err != nil {
			return nil, fmt.Errorf("http_routes[%d] (%s).%w", i, name, err)
		}
		p.HTTPRoutes = append(p.HTTPRoutes, rt)
	}
	return p, nil
}

// httpRoute compiles an HTTP route: the gateway's matcher (routematch),
// its backends and header filters.
func httpRoute(r *pb.HttpRoute) (*Route, error) {
	mt, err := routematch.Compile(r.GetMatch())
	if err != nil {
		return nil, fmt.Errorf("match.%w", err)
	}
	rt := &Route{Name: r.GetMetricsLabels()["route"], match: mt.Matches, Timeout: r.GetTimeout().AsDuration(), own: true, Status: int(r.GetStatus())}
	if rt.Status != 0 && (rt.Status < 200 || rt.Status > 599) {
		return nil, fmt.Errorf("status: %d is no HTTP status", rt.Status)
	}
	if rt.Filters, err = filters(r.GetRequestHeaders(), r.GetResponseHeaders()); err != nil {
		return nil, err
	}
	answer, err := redirectOrRewrite(r)
	if err != nil {
		return nil, err
	}
	if answer != nil {
		if f := rt.Filters; f != nil {
			rt.Filters = func(next http.Handler) http.Handler { return f(answer(next)) }
		} else {
			rt.Filters = answer
		}
	}
	for j, b := range r.GetBackends() {
		f, err := filters(b.GetRequestHeaders(), b.GetResponseHeaders())
		if err != nil {
			return nil, fmt.Errorf("backends[%d].%w", j, err)
		}
		rt.backends = append(rt.backends, Backend{Authority: b.GetAuthority(), Weight: b.GetWeight(), Filters: f})
		rt.total += uint64(b.GetWeight())
	}
	return rt, nil
}

// redirectOrRewrite is the route's RequestRedirect (middleware/redirect:
// it answers, nothing is forwarded) or URLRewrite (middleware/rewrite),
// after its header filters; nil for neither. A mesh request's listener is
// plain HTTP on the port its authority names (the Service port).
func redirectOrRewrite(r *pb.HttpRoute) (func(http.Handler) http.Handler, error) {
	prefix := ""
	if p := r.GetMatch().GetPath(); p.GetType() == gatewaypb.PathMatch_PREFIX {
		prefix = p.GetValue()
	}
	pathMod := func(field string, m *gatewaypb.PathModifier) (full, replace *string, err error) {
		switch p := m.GetModifier().(type) {
		case *gatewaypb.PathModifier_FullPath:
			return &p.FullPath, nil, nil
		case *gatewaypb.PathModifier_ReplacePrefix:
			if prefix == "" {
				return nil, nil, fmt.Errorf("%s.path.replace_prefix: the route's match has no PREFIX path to replace", field)
			}
			return nil, &p.ReplacePrefix, nil
		}
		return nil, nil, nil
	}
	switch {
	case r.GetRedirect() != nil && r.GetRewrite() != nil:
		return nil, errors.New("redirect, rewrite: one of them, not both")
	case r.GetRedirect() != nil:
		rd := r.GetRedirect()
		c := redirect.Config{Scheme: rd.GetScheme(), Hostname: rd.GetHostname(), Port: rd.GetPort(),
			StatusCode: int(rd.GetStatusCode()), MatchedPrefix: prefix, ListenerScheme: "http"}
		full, replace, err := pathMod("redirect", rd.GetPath())
		if err != nil {
			return nil, err
		}
		if full != nil {
			c.FullPath = *full
		}
		c.ReplacePrefix = replace
		f, err := redirect.New(c)
		if err != nil {
			return nil, fmt.Errorf("redirect: %w", err)
		}
		return f, nil
	case r.GetRewrite() != nil:
		rw := r.GetRewrite()
		c := rewrite.Config{Hostname: rw.GetHostname(), MatchedPrefix: prefix}
		var err error
		if c.FullPath, c.ReplacePrefix, err = pathMod("rewrite", rw.GetPath()); err != nil {
			return nil, err
		}
		return rewrite.New(c), nil
	}
	return nil, nil
}

// filters is the handler wrapper of a request and a response header
// modifier (middleware/headers), nil for neither.
func filters(req, resp *gatewaypb.HeaderModifier) (func(http.Handler) http.Handler, error) {
	var wrap []func(http.Handler) http.Handler
	if req != nil {
		m, err := modifier(req)
		if err != nil {
			return nil, fmt.Errorf("request_headers.%w", err)
		}
		wrap = append(wrap, headers.Request(m))
	}
	if resp != nil {
		m, err := modifier(resp)
		if err != nil {
			return nil, fmt.Errorf("response_headers.%w", err)
		}
		wrap = append(wrap, headers.Response(m))
	}
	switch len(wrap) {
	case 0:
		return nil, nil
	case 1:
		return wrap[0], nil
	}
	return func(next http.Handler) http.Handler { return wrap[0](wrap[1](next)) }, nil
}

// modifier is a HeaderModifier for middleware/headers: Set in name order
// (a map has none), Add and Remove as given.
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
	m.Remove = append(m.Remove, h.GetRemove()...)
	return m, nil
}

func requestMatcher(m *pb.RequestMatch) (matcher, error) {
	switch m := m.GetMatch().(type) {
	case nil:
		return func(*http.Request) bool { return true }, nil
	case *pb.RequestMatch_Method:
		want := strings.ToUpper(m.Method.GetMethod())
		return func(r *http.Request) bool { return r.Method == want }, nil
	case *pb.RequestMatch_Path:
		re, err := regexp.Compile("^(?:" + m.Path.GetRegex() + ")$")
		if err != nil {
			return nil, fmt.Errorf("pathRegex %q: %w", m.Path.GetRegex(), err)
		}
		return func(r *http.Request) bool { return re.MatchString(r.URL.Path) }, nil
	case *pb.RequestMatch_Not:
		inner, err := requestMatcher(m.Not.GetMatch())
		if err != nil {
			return nil, err
		}
		return func(r *http.Request) bool { return !inner(r) }, nil
	case *pb.RequestMatch_All:
		ms, err := requestMatchers(m.All.GetMatches())
		return func(r *http.Request) bool {
			for _, f := range ms {
				if !f(r) {
					return false
				}
			}
			return true
		}, err
	case *pb.RequestMatch_Any:
		ms, err := requestMatchers(m.Any.GetMatches())
		return func(r *http.Request) bool {
			for _, f := range ms {
				if f(r) {
					return true
				}
			}
			return false
		}, err
	}
	return nil, fmt.Errorf("unknown request match %T", m.GetMatch())
}

func requestMatchers(ms []*pb.RequestMatch) ([]matcher, error) {
	out := make([]matcher, 0, len(ms))
	for _, m := range ms {
		f, err := requestMatcher(m)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

func responseMatcher(m *pb.ResponseMatch) (func(int) bool, error) {
	switch m := m.GetMatch().(type) {
	case nil:
		return func(int) bool { return true }, nil
	case *pb.ResponseMatch_Status:
		lo, hi := int(m.Status.GetMin()), int(m.Status.GetMax())
		if hi == 0 {
			hi = 599
		}
		if lo > hi {
			return nil, fmt.Errorf("status range %d-%d is empty", lo, hi)
		}
		return func(s int) bool { return s >= lo && s <= hi }, nil
	case *pb.ResponseMatch_Not:
		inner, err := responseMatcher(m.Not.GetMatch())
		if err != nil {
			return nil, err
		}
		return func(s int) bool { return !inner(s) }, nil
	case *pb.ResponseMatch_All, *pb.ResponseMatch_Any:
		var subs []*pb.ResponseMatch
		all := false
		if a, ok := m.(*pb.ResponseMatch_All); ok {
			subs, all = a.All.GetMatches(), true
		} else {
			subs = m.(*pb.ResponseMatch_Any).Any.GetMatches()
		}
		fs := make([]func(int) bool, 0, len(subs))
		for _, sm := range subs {
			f, err := responseMatcher(sm)
			if err != nil {
				return nil, err
			}
			fs = append(fs, f)
		}
		return func(s int) bool {
			for _, f := range fs {
				if f(s) != all {
					return !all
				}
			}
			return all
		}, nil
	}
	return nil, fmt.Errorf("unknown response match %T", m.GetMatch())
}
