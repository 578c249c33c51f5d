package compile

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// spec is what the compilers take from a ServiceProfile.
type spec struct {
	routes       []Route
	budget       *RetryBudget
	dstOverrides []weighted
}

// fromServiceProfile converts a ServiceProfile, skipping (and reporting)
// invalid routes, so that one bad route never takes the others down. An
// invalid retry budget is replaced by the default one.
func fromServiceProfile(sp *v1alpha1.ServiceProfile, warn *[]string) spec {
	var out spec
	where := "serviceprofile " + sp.Namespace + "/" + sp.Name
	routes := field.NewPath("spec", "routes")
	for i := range sp.Spec.Routes {
		rs := &sp.Spec.Routes[i]
		if errs := rs.Validate(routes.Index(i)); len(errs) > 0 {
			*warn = append(*warn, fmt.Sprintf("%s: route %q skipped: %v", where, rs.Name, errs.ToAggregate()))
			continue
		}
		timeout, _ := rs.Timeout.Parse() // validated
		r := Route{
			Name:        rs.Name,
			Condition:   requestMatch(rs.Condition),
			IsRetryable: rs.IsRetryable,
			Timeout:     timeout,
		}
		for _, rc := range rs.ResponseClasses {
			r.ResponseClasses = append(r.ResponseClasses, ResponseClass{Condition: responseMatch(rc.Condition), IsFailure: rc.IsFailure})
		}
		out.routes = append(out.routes, r)
	}
	if b := sp.Spec.RetryBudget; b != nil {
		rb := DefaultRetryBudget()
		var bad []string
		if ratio, err := b.RetryRatio.Float64(); err != nil || ratio < 0 || ratio > 1000 {
			bad = append(bad, fmt.Sprintf("retryRatio %q", string(b.RetryRatio)))
		} else {
			rb.RetryRatio = float32(ratio)
		}
		if b.MinRetriesPerSecond < 0 {
			bad = append(bad, fmt.Sprintf("minRetriesPerSecond %d", b.MinRetriesPerSecond))
		} else {
			rb.MinRetriesPerSecond = uint32(b.MinRetriesPerSecond)
		}
		if ttl, err := b.TTL.Parse(); err != nil || ttl <= 0 {
			bad = append(bad, fmt.Sprintf("ttl %q", string(b.TTL)))
		} else {
			rb.TTL = ttl
		}
		if len(bad) > 0 {
			*warn = append(*warn, fmt.Sprintf("%s: retryBudget: invalid %s: defaults used instead", where, strings.Join(bad, ", ")))
		}
		out.budget = &rb
	}
	for _, d := range sp.Spec.DstOverrides {
		// Weights are quantities ("1", "500m"): compare them in milli-units.
		out.dstOverrides = append(out.dstOverrides, weighted{authority: d.Authority, weight: d.Weight.MilliValue()})
	}
	return out
}

func profileOpaquePorts(sp *v1alpha1.ServiceProfile) []uint32 {
	out := make([]uint32, 0, len(sp.Spec.OpaquePorts))
	for _, p := range sp.Spec.OpaquePorts {
		if p > 0 && p <= 65535 {
			out = append(out, uint32(p))
		}
	}
	return out
}

func requestMatch(m *v1alpha1.RequestMatch) RequestMatch {
	out := RequestMatch{PathRegex: m.PathRegex, Method: strings.ToUpper(m.Method)}
	for i := range m.All {
		out.All = append(out.All, requestMatch(&m.All[i]))
	}
	for i := range m.Any {
		out.Any = append(out.Any, requestMatch(&m.Any[i]))
	}
	if m.Not != nil {
		n := requestMatch(m.Not)
		out.Not = &n
	}
	return out
}

// responseMatch converts a validated response match; an open status bound
// becomes 100 or 599.
func responseMatch(m *v1alpha1.ResponseMatch) ResponseMatch {
	var out ResponseMatch
	for i := range m.All {
		out.All = append(out.All, responseMatch(&m.All[i]))
	}
	for i := range m.Any {
		out.Any = append(out.Any, responseMatch(&m.Any[i]))
	}
	if m.Not != nil {
		n := responseMatch(m.Not)
		out.Not = &n
	}
	if s := m.Status; s != nil {
		r := StatusRange{Min: uint32(s.Min), Max: uint32(s.Max)}
		if r.Min == 0 {
			r.Min = 100
		}
		if r.Max == 0 {
			r.Max = 599
		}
		out.Status = &r
	}
	return out
}
