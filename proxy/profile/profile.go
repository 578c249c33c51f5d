// Package profile is the proxy's view of a destination profile: which route
// a request belongs to, how long it may take, whether it may be retried and
// within what budget, which responses count as failures, and how the
// authority's traffic is split over other authorities.
package profile

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
)

// Profile is a compiled destination profile. The zero value (no routes, no
// split) means "forward as is".
type Profile struct {
	Routes     []*Route
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

// Match returns the first route matching r, or nil.
func (p *Profile) Match(r *http.Request) *Route {
	if p == nil {
		return nil
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
	return p, nil
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
