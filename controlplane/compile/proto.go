package compile

import (
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
)

// ToProto is the profile as the destination API sends it.
func (p DestinationProfile) ToProto() *pb.DestinationProfile {
	out := &pb.DestinationProfile{
		FullyQualifiedName: p.FullyQualifiedName,
		RetryBudget: &pb.RetryBudget{
			RetryRatio:          p.RetryBudget.RetryRatio,
			MinRetriesPerSecond: p.RetryBudget.MinRetriesPerSecond,
			Ttl:                 durationpb.New(p.RetryBudget.TTL),
		},
		OpaqueProtocol: p.OpaqueProtocol,
	}
	for _, r := range p.Routes {
		pr := &pb.Route{
			Condition:     r.Condition.toProto(),
			MetricsLabels: map[string]string{"route": r.Name},
			IsRetryable:   r.IsRetryable,
		}
		if r.Timeout > 0 {
			pr.Timeout = durationpb.New(r.Timeout)
		}
		for _, rc := range r.ResponseClasses {
			pr.ResponseClasses = append(pr.ResponseClasses, &pb.ResponseClass{
				Condition: rc.Condition.toProto(),
				IsFailure: rc.IsFailure,
			})
		}
		out.Routes = append(out.Routes, pr)
	}
	for _, d := range p.DstOverrides {
		out.DstOverrides = append(out.DstOverrides, &pb.WeightedDst{Authority: d.Authority, Weight: d.Weight})
	}
	for _, r := range p.HTTPRoutes {
		pr := &pb.HttpRoute{Match: r.Match, RequestHeaders: r.RequestHeaders, ResponseHeaders: r.ResponseHeaders,
			MetricsLabels: map[string]string{"route": r.Name}, Status: r.Status, Redirect: r.Redirect, Rewrite: r.Rewrite}
		if r.Timeout > 0 {
			pr.Timeout = durationpb.New(r.Timeout)
		}
		for _, b := range r.Backends {
			pr.Backends = append(pr.Backends, &pb.RouteBackend{Authority: b.Authority, Weight: b.Weight, RequestHeaders: b.RequestHeaders, ResponseHeaders: b.ResponseHeaders})
		}
		out.HttpRoutes = append(out.HttpRoutes, pr)
	}
	return out
}

// toProto turns a match whose set fields must all hold into the API's
// one-of: a single field stays itself, several become an All.
func (m RequestMatch) toProto() *pb.RequestMatch {
	var parts []*pb.RequestMatch
	if m.Method != "" {
		parts = append(parts, &pb.RequestMatch{Match: &pb.RequestMatch_Method{Method: &pb.MethodMatch{Method: m.Method}}})
	}
	if m.PathRegex != "" {
		parts = append(parts, &pb.RequestMatch{Match: &pb.RequestMatch_Path{Path: &pb.PathMatch{Regex: m.PathRegex}}})
	}
	if m.Not != nil {
		parts = append(parts, &pb.RequestMatch{Match: &pb.RequestMatch_Not{Not: &pb.RequestMatchNot{Match: m.Not.toProto()}}})
	}
	if m.All != nil {
		all := &pb.RequestMatchAll{}
		for _, x := range m.All {
			all.Matches = append(all.Matches, x.toProto())
		}
		parts = append(parts, &pb.RequestMatch{Match: &pb.RequestMatch_All{All: all}})
	}
	if m.Any != nil {
		anyM := &pb.RequestMatchAny{}
		for _, x := range m.Any {
			anyM.Matches = append(anyM.Matches, x.toProto())
		}
		parts = append(parts, &pb.RequestMatch{Match: &pb.RequestMatch_Any{Any: anyM}})
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return &pb.RequestMatch{Match: &pb.RequestMatch_All{All: &pb.RequestMatchAll{Matches: parts}}}
}

func (m ResponseMatch) toProto() *pb.ResponseMatch {
	var parts []*pb.ResponseMatch
	if m.Status != nil {
		parts = append(parts, &pb.ResponseMatch{Match: &pb.ResponseMatch_Status{Status: &pb.StatusRange{Min: m.Status.Min, Max: m.Status.Max}}})
	}
	if m.Not != nil {
		parts = append(parts, &pb.ResponseMatch{Match: &pb.ResponseMatch_Not{Not: &pb.ResponseMatchNot{Match: m.Not.toProto()}}})
	}
	if m.All != nil {
		all := &pb.ResponseMatchAll{}
		for _, x := range m.All {
			all.Matches = append(all.Matches, x.toProto())
		}
		parts = append(parts, &pb.ResponseMatch{Match: &pb.ResponseMatch_All{All: all}})
	}
	if m.Any != nil {
		anyM := &pb.ResponseMatchAny{}
		for _, x := range m.Any {
			anyM.Matches = append(anyM.Matches, x.toProto())
		}
		parts = append(parts, &pb.ResponseMatch{Match: &pb.ResponseMatch_Any{Any: anyM}})
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return &pb.ResponseMatch{Match: &pb.ResponseMatch_All{All: &pb.ResponseMatchAll{Matches: parts}}}
}

// ToProto is the endpoint as the destination API sends it.
func (e Endpoint) ToProto() *pb.WeightedAddr {
	out := &pb.WeightedAddr{
		Addr:     &pb.TcpAddress{Ip: e.Addr.Addr().String(), Port: uint32(e.Addr.Port())},
		Weight:   e.Weight,
		Identity: e.Identity,
		Zone:     e.Zone,
	}
	switch e.Protocol {
	case ProtocolH2:
		out.ProtocolHint = pb.ProtocolHint_PROTOCOL_HINT_H2
	case ProtocolOpaque:
		out.ProtocolHint = pb.ProtocolHint_PROTOCOL_HINT_OPAQUE
	}
	if len(e.Labels) > 0 {
		out.MetricLabels = make(map[string]string, len(e.Labels))
		for k, v := range e.Labels {
			out.MetricLabels[k] = v
		}
	}
	return out
}
