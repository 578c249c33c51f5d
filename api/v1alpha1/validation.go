package v1alpha1

import (
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// maxMatchDepth bounds the nesting of all/any/not.
const maxMatchDepth = 16

var methodRE = regexp.MustCompile(`^[A-Za-z]+$`)

// Validate checks a profile as the API server's schema does, and further:
// nested matches, regular expressions and the retry budget's values. The
// control plane ignores invalid routes of profiles that reached it anyway.
func (p *ServiceProfile) Validate() field.ErrorList {
	var errs field.ErrorList
	if p.Name == "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "name"), ""))
	}
	spec := field.NewPath("spec")
	if n := len(p.Spec.Routes); n > 1000 {
		errs = append(errs, field.TooMany(spec.Child("routes"), n, 1000))
	}
	for i := range p.Spec.Routes {
		errs = append(errs, p.Spec.Routes[i].Validate(spec.Child("routes").Index(i))...)
	}
	if b := p.Spec.RetryBudget; b != nil {
		path := spec.Child("retryBudget")
		if r, err := b.RetryRatio.Float64(); err != nil || r < 0 || r > 1000 {
			errs = append(errs, field.Invalid(path.Child("retryRatio"), string(b.RetryRatio), "must be a number from 0 to 1000"))
		}
		if b.MinRetriesPerSecond < 0 {
			errs = append(errs, field.Invalid(path.Child("minRetriesPerSecond"), b.MinRetriesPerSecond, "must not be negative"))
		}
		if b.TTL == "" {
			errs = append(errs, field.Required(path.Child("ttl"), `a duration such as "10s"`))
		} else if d, err := b.TTL.Parse(); err != nil || d == 0 {
			errs = append(errs, field.Invalid(path.Child("ttl"), string(b.TTL), `must be a positive duration such as "10s"`))
		}
	}
	for i, d := range p.Spec.DstOverrides {
		path := spec.Child("dstOverrides").Index(i)
		if d.Authority == "" {
			errs = append(errs, field.Required(path.Child("authority"), ""))
		}
		if d.Weight.Sign() < 0 {
			errs = append(errs, field.Invalid(path.Child("weight"), d.Weight.String(), "must not be negative"))
		}
	}
	seen := map[int32]bool{}
	for i, port := range p.Spec.OpaquePorts {
		path := spec.Child("opaquePorts").Index(i)
		if port < 1 || port > 65535 {
			errs = append(errs, field.Invalid(path, port, "must be a port from 1 to 65535"))
		}
		if seen[port] {
			errs = append(errs, field.Duplicate(path, port))
		}
		seen[port] = true
	}
	return errs
}

// Validate checks one route; path names it in errors.
func (r *RouteSpec) Validate(path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if r.Name == "" {
		errs = append(errs, field.Required(path.Child("name"), ""))
	}
	if r.Condition == nil {
		errs = append(errs, field.Required(path.Child("condition"), ""))
	} else {
		errs = append(errs, r.Condition.Validate(path.Child("condition"))...)
	}
	for i := range r.ResponseClasses {
		c := &r.ResponseClasses[i]
		cp := path.Child("responseClasses").Index(i).Child("condition")
		if c.Condition == nil {
			errs = append(errs, field.Required(cp, ""))
		} else {
			errs = append(errs, c.Condition.Validate(cp)...)
		}
	}
	if _, err := r.Timeout.Parse(); err != nil {
		errs = append(errs, field.Invalid(path.Child("timeout"), string(r.Timeout), `must be a duration such as "250ms" or "1m30s"`))
	}
	return errs
}

// Validate checks a request match and its nested matches.
func (m *RequestMatch) Validate(path *field.Path) field.ErrorList {
	return m.validate(path, 0)
}

func (m *RequestMatch) validate(path *field.Path, depth int) field.ErrorList {
	var errs field.ErrorList
	if depth > maxMatchDepth {
		return append(errs, field.Forbidden(path, "matches nest too deeply"))
	}
	if len(m.All) == 0 && len(m.Any) == 0 && m.Not == nil && m.PathRegex == "" && m.Method == "" {
		errs = append(errs, field.Required(path, "one of all, any, not, pathRegex, method"))
	}
	for i := range m.All {
		errs = append(errs, m.All[i].validate(path.Child("all").Index(i), depth+1)...)
	}
	for i := range m.Any {
		errs = append(errs, m.Any[i].validate(path.Child("any").Index(i), depth+1)...)
	}
	if m.Not != nil {
		errs = append(errs, m.Not.validate(path.Child("not"), depth+1)...)
	}
	if m.PathRegex != "" {
		if _, err := regexp.Compile("^(?:" + m.PathRegex + ")$"); err != nil {
			errs = append(errs, field.Invalid(path.Child("pathRegex"), m.PathRegex, strings.TrimPrefix(err.Error(), "error parsing regexp: ")))
		}
	}
	if m.Method != "" && !methodRE.MatchString(m.Method) {
		errs = append(errs, field.Invalid(path.Child("method"), m.Method, "must be an HTTP method such as GET"))
	}
	return errs
}

// Validate checks a response match and its nested matches.
func (m *ResponseMatch) Validate(path *field.Path) field.ErrorList {
	return m.validate(path, 0)
}

func (m *ResponseMatch) validate(path *field.Path, depth int) field.ErrorList {
	var errs field.ErrorList
	if depth > maxMatchDepth {
		return append(errs, field.Forbidden(path, "matches nest too deeply"))
	}
	if len(m.All) == 0 && len(m.Any) == 0 && m.Not == nil && m.Status == nil {
		errs = append(errs, field.Required(path, "one of all, any, not, status"))
	}
	for i := range m.All {
		errs = append(errs, m.All[i].validate(path.Child("all").Index(i), depth+1)...)
	}
	for i := range m.Any {
		errs = append(errs, m.Any[i].validate(path.Child("any").Index(i), depth+1)...)
	}
	if m.Not != nil {
		errs = append(errs, m.Not.validate(path.Child("not"), depth+1)...)
	}
	if s := m.Status; s != nil {
		sp := path.Child("status")
		if s.Min == 0 && s.Max == 0 {
			errs = append(errs, field.Required(sp, "min or max"))
		}
		if s.Min != 0 && (s.Min < 100 || s.Min > 599) {
			errs = append(errs, field.Invalid(sp.Child("min"), s.Min, "must be an HTTP status from 100 to 599"))
		}
		if s.Max != 0 && (s.Max < 100 || s.Max > 599) {
			errs = append(errs, field.Invalid(sp.Child("max"), s.Max, "must be an HTTP status from 100 to 599"))
		}
		if s.Min != 0 && s.Max != 0 && s.Min > s.Max {
			errs = append(errs, field.Invalid(sp, *s, "min must not be greater than max"))
		}
	}
	return errs
}

// Matches reports whether status is in the range.
func (r Range) Matches(status int) bool {
	return (r.Min == 0 || status >= int(r.Min)) && (r.Max == 0 || status <= int(r.Max))
}

// ServiceForProfile parses a profile name of the form
// <service>.<namespace>.svc.<clusterDomain>. It reports false for any other
// name, such as an external authority.
func ServiceForProfile(name, clusterDomain string) (service, namespace string, ok bool) {
	rest, found := strings.CutSuffix(name, ".svc."+strings.Trim(clusterDomain, "."))
	if !found {
		return "", "", false
	}
	service, namespace, found = strings.Cut(rest, ".")
	if !found || service == "" || namespace == "" || strings.Contains(namespace, ".") {
		return "", "", false
	}
	return service, namespace, true
}

// ProfileName is the name of the profile of service in namespace.
func ProfileName(service, namespace, clusterDomain string) string {
	return service + "." + namespace + ".svc." + strings.Trim(clusterDomain, ".")
}
