package compile

import (
	"maps"
	"reflect"
	"slices"

	"google.golang.org/protobuf/proto"
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
		slices.EqualFunc(p.Routes, o.Routes, func(a, b Route) bool { return reflect.DeepEqual(a, b) }) &&
		slices.EqualFunc(p.HTTPRoutes, o.HTTPRoutes, HTTPRoute.Equal)
}

// Equal reports whether two HTTP routes would be sent identically (their
// gateway model parts are protobuf messages: compared as such).
func (r HTTPRoute) Equal(o HTTPRoute) bool {
	return r.Name == o.Name && r.Timeout == o.Timeout && r.Status == o.Status &&
		proto.Equal(r.Match, o.Match) && proto.Equal(r.RequestHeaders, o.RequestHeaders) && proto.Equal(r.ResponseHeaders, o.ResponseHeaders) &&
		slices.EqualFunc(r.Backends, o.Backends, func(a, b RouteBackend) bool {
			return a.Authority == b.Authority && a.Weight == b.Weight &&
				proto.Equal(a.RequestHeaders, b.RequestHeaders) && proto.Equal(a.ResponseHeaders, b.ResponseHeaders)
		})
}
