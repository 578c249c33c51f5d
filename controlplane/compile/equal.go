package compile

import (
	"maps"
	"reflect"
	"slices"
)

// Equal reports whether two endpoints would be sent identically.
func (e Endpoint) Equal(o Endpoint) bool {
	return e.Addr == o.Addr && e.Weight == o.Weight && e.Identity == o.Identity &&
		e.Zone == o.Zone && e.Protocol == o.Protocol && maps.Equal(e.Labels, o.Labels)
}

// Equal reports whether two endpoint sets would be sent identically
// (Target, Deps and Warnings do not count).
func (s EndpointSet) Equal(o EndpointSet) bool {
	return s.Exists == o.Exists && maps.Equal(s.Labels, o.Labels) &&
		slices.EqualFunc(s.Endpoints, o.Endpoints, Endpoint.Equal)
}

// Equal reports whether two profiles have the same ToProto form (Target,
// Deps and Warnings do not count).
func (p DestinationProfile) Equal(o DestinationProfile) bool {
	return p.FullyQualifiedName == o.FullyQualifiedName &&
		p.OpaqueProtocol == o.OpaqueProtocol &&
		p.RetryBudget == o.RetryBudget &&
		slices.Equal(p.DstOverrides, o.DstOverrides) &&
		slices.EqualFunc(p.Routes, o.Routes, func(a, b Route) bool { return reflect.DeepEqual(a, b) })
}
