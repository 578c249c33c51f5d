package compile_test

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/internal/names"
)

var podinfo = store.Key{Namespace: "test", Name: "podinfo"}

// rollout is an apex service with stable and canary backends, as Argo
// Rollouts and Flagger set it up.
func rollout() *fakeReader {
	f := newFake()
	for i, name := range []string{"podinfo", "podinfo-stable", "podinfo-canary"} {
		f.addService(svc("test", name, "10.96.2."+string(rune('1'+i)), port("http", 9898, intstr.FromInt32(9898))))
		f.addSlice(slice("test", name, name+"-1", discoveryv1.AddressTypeIPv4, map[string]int32{"http": 9898}, ep{ip: "10.2.0." + string(rune('1'+i))}))
	}
	return f
}

func split(name string, backends ...store.Backend) store.TrafficSplit {
	return store.TrafficSplit{Key: store.Key{Namespace: "test", Name: name}, Service: "podinfo", Backends: backends}
}

func dsts(p compile.DestinationProfile) []string {
	out := []string{}
	for _, d := range p.DstOverrides {
		out = append(out, d.Authority+"="+strconv.FormatUint(uint64(d.Weight), 10))
	}
	return out
}

func TestProfileTrafficSplit(t *testing.T) {
	const (
		stable = "podinfo-stable.test.svc.cluster.local:9898"
		canary = "podinfo-canary.test.svc.cluster.local:9898"
		apex   = "podinfo.test.svc.cluster.local:9898"
	)
	for _, tc := range []struct {
		name     string
		splits   []store.TrafficSplit
		profile  *v1alpha1.ServiceProfile
		remove   []string // services to delete
		want     []string
		warnings []string // substrings, in order
		deps     []store.Key
	}{
		{
			name: "no split",
			want: []string{},
			deps: []store.Key{podinfo},
		},
		{
			name:   "90/10",
			splits: []store.TrafficSplit{split("podinfo", store.Backend{Service: "podinfo-stable", Weight: 90}, store.Backend{Service: "podinfo-canary", Weight: 10})},
			want:   []string{stable + "=90", canary + "=10"},
			deps:   []store.Key{podinfo, {Namespace: "test", Name: "podinfo-stable"}, {Namespace: "test", Name: "podinfo-canary"}},
		},
		{
			name:   "weight 0 is dropped",
			splits: []store.TrafficSplit{split("podinfo", store.Backend{Service: "podinfo-stable", Weight: 100}, store.Backend{Service: "podinfo-canary", Weight: 0})},
			want:   []string{stable + "=100"},
		},
		{
			name:     "all weights 0: the apex",
			splits:   []store.TrafficSplit{split("podinfo", store.Backend{Service: "podinfo-stable", Weight: 0}, store.Backend{Service: "podinfo-canary", Weight: 0})},
			want:     []string{},
			warnings: []string{"weight 0"},
		},
		{
			name:     "missing backend is reported and skipped",
			splits:   []store.TrafficSplit{split("podinfo", store.Backend{Service: "podinfo-stable", Weight: 90}, store.Backend{Service: "podinfo-canary", Weight: 10})},
			remove:   []string{"podinfo-canary"},
			want:     []string{stable + "=90"},
			warnings: []string{"backend service test/podinfo-canary does not exist"},
			deps:     []store.Key{podinfo, {Namespace: "test", Name: "podinfo-stable"}, {Namespace: "test", Name: "podinfo-canary"}},
		},
		{
			name:     "all backends missing: the apex, never an outage",
			splits:   []store.TrafficSplit{split("podinfo", store.Backend{Service: "podinfo-stable", Weight: 90}, store.Backend{Service: "podinfo-canary", Weight: 10})},
			remove:   []string{"podinfo-canary", "podinfo-stable"},
			want:     []string{},
			warnings: []string{"podinfo-stable does not exist", "podinfo-canary does not exist"},
		},
		{
			name:   "apex as its own backend",
			splits: []store.TrafficSplit{split("podinfo", store.Backend{Service: "podinfo", Weight: 1}, store.Backend{Service: "podinfo-canary", Weight: 3})},
			want:   []string{apex + "=1", canary + "=3"},
		},
		{
			name: "huge weights are scaled into 32 bits",
			splits: []store.TrafficSplit{split("podinfo",
				store.Backend{Service: "podinfo-stable", Weight: 9_000_000_000_000},
				store.Backend{Service: "podinfo-canary", Weight: 1_000_000_000_000})},
			want: []string{stable + "=4294967295", canary + "=477218588"},
		},
		{
			name: "two splits: the first by name wins",
			splits: []store.TrafficSplit{
				split("podinfo-b", store.Backend{Service: "podinfo-canary", Weight: 1}),
				split("podinfo-a", store.Backend{Service: "podinfo-stable", Weight: 1}),
			},
			want:     []string{stable + "=1"},
			warnings: []string{"trafficsplit test/podinfo-b ignored"},
		},
		{
			name: "profile dstOverrides",
			profile: &v1alpha1.ServiceProfile{Spec: v1alpha1.ServiceProfileSpec{DstOverrides: []v1alpha1.WeightedDst{
				{Authority: "Podinfo-Stable.test.svc.cluster.local:9898", Weight: resource.MustParse("900m")},
				{Authority: "podinfo-canary.test:9898", Weight: resource.MustParse("100m")},
				{Authority: "gone.test:9898", Weight: resource.MustParse("1")},
			}}},
			want:     []string{stable + "=900", canary + "=100"},
			warnings: []string{`dstOverride "gone.test:9898" skipped`},
			deps:     []store.Key{podinfo, {Namespace: "test", Name: "podinfo-stable"}, {Namespace: "test", Name: "podinfo-canary"}, {Namespace: "test", Name: "gone"}},
		},
		{
			name: "a split replaces the profile's dstOverrides",
			profile: &v1alpha1.ServiceProfile{Spec: v1alpha1.ServiceProfileSpec{DstOverrides: []v1alpha1.WeightedDst{
				{Authority: canary, Weight: resource.MustParse("1")},
			}}},
			splits:   []store.TrafficSplit{split("podinfo", store.Backend{Service: "podinfo-stable", Weight: 1})},
			want:     []string{stable + "=1"},
			warnings: []string{"replaces the serviceprofile's dstOverrides"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := rollout()
			if tc.splits != nil {
				f.splits[podinfo] = tc.splits
			}
			if tc.profile != nil {
				tc.profile.Namespace, tc.profile.Name = "test", "podinfo.test.svc.cluster.local"
				f.profiles[podinfo] = tc.profile
			}
			for _, s := range tc.remove {
				delete(f.services, store.Key{Namespace: "test", Name: s})
			}
			p := compile.Profile(f, "podinfo.test.svc.cluster.local:9898", compile.Options{})
			if !p.Exists || p.FullyQualifiedName != "podinfo.test.svc.cluster.local" {
				t.Fatalf("profile = %+v", p)
			}
			if got := dsts(p); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("dstOverrides = %q, want %q", got, tc.want)
			}
			all := strings.Join(p.Warnings, "\n")
			for _, w := range tc.warnings {
				i := strings.Index(all, w)
				if i < 0 {
					t.Fatalf("warnings %q lack %q", p.Warnings, w)
				}
				all = all[i+len(w):]
			}
			if len(tc.warnings) == 0 && len(p.Warnings) > 0 {
				t.Fatalf("unexpected warnings %q", p.Warnings)
			}
			if tc.deps != nil && !reflect.DeepEqual(p.Deps, tc.deps) {
				t.Fatalf("deps = %v, want %v", p.Deps, tc.deps)
			}
			// The proto carries the same weights.
			pp := p.ToProto()
			if len(pp.DstOverrides) != len(p.DstOverrides) {
				t.Fatalf("proto dst overrides = %v", pp.DstOverrides)
			}
			for i, d := range pp.DstOverrides {
				if d.Authority != p.DstOverrides[i].Authority || d.Weight != p.DstOverrides[i].Weight {
					t.Fatalf("proto dst override %d = %v, want %+v", i, d, p.DstOverrides[i])
				}
			}
		})
	}
}

func TestProfileRoutes(t *testing.T) {
	f := rollout()
	f.profiles[podinfo] = &v1alpha1.ServiceProfile{
		ObjectMeta: metav1.ObjectMeta{Namespace: "test", Name: "podinfo.test.svc.cluster.local"},
		Spec: v1alpha1.ServiceProfileSpec{
			Routes: []v1alpha1.RouteSpec{
				{
					Name:        "GET /api/info",
					Condition:   &v1alpha1.RequestMatch{Method: "get", PathRegex: "/api/info"},
					IsRetryable: true,
					Timeout:     "250ms",
					ResponseClasses: []v1alpha1.ResponseClass{
						{Condition: &v1alpha1.ResponseMatch{Status: &v1alpha1.Range{Min: 500}}, IsFailure: true},
						{Condition: &v1alpha1.ResponseMatch{Not: &v1alpha1.ResponseMatch{Status: &v1alpha1.Range{Max: 399}}}},
					},
				},
				{Name: "bad regex", Condition: &v1alpha1.RequestMatch{PathRegex: "(("}},
				{Name: "empty", Condition: &v1alpha1.RequestMatch{}},
				{
					Name: "POST or PUT /api/echo, not /api/echo/skip",
					Condition: &v1alpha1.RequestMatch{
						All: []v1alpha1.RequestMatch{
							{Any: []v1alpha1.RequestMatch{{Method: "POST"}, {Method: "PUT"}}},
							{PathRegex: "/api/echo(/.*)?"},
							{Not: &v1alpha1.RequestMatch{PathRegex: "/api/echo/skip"}},
						},
					},
				},
			},
			RetryBudget: &v1alpha1.RetryBudget{RetryRatio: "0.5", MinRetriesPerSecond: 3, TTL: "1m"},
			OpaquePorts: []int32{9898},
		},
	}
	p := compile.Profile(f, "10.96.2.1:9898", compile.Options{})
	if len(p.Warnings) != 2 || !strings.Contains(p.Warnings[0], `route "bad regex" skipped`) || !strings.Contains(p.Warnings[1], `route "empty" skipped`) {
		t.Fatalf("warnings = %q", p.Warnings)
	}
	want := &pb.DestinationProfile{
		FullyQualifiedName: "podinfo.test.svc.cluster.local",
		OpaqueProtocol:     true,
		RetryBudget:        &pb.RetryBudget{RetryRatio: 0.5, MinRetriesPerSecond: 3, Ttl: durationpb.New(time.Minute)},
		Routes: []*pb.Route{
			{
				Condition: &pb.RequestMatch{Match: &pb.RequestMatch_All{All: &pb.RequestMatchAll{Matches: []*pb.RequestMatch{
					{Match: &pb.RequestMatch_Method{Method: &pb.MethodMatch{Method: "GET"}}},
					{Match: &pb.RequestMatch_Path{Path: &pb.PathMatch{Regex: "/api/info"}}},
				}}}},
				ResponseClasses: []*pb.ResponseClass{
					{Condition: &pb.ResponseMatch{Match: &pb.ResponseMatch_Status{Status: &pb.StatusRange{Min: 500, Max: 599}}}, IsFailure: true},
					{Condition: &pb.ResponseMatch{Match: &pb.ResponseMatch_Not{Not: &pb.ResponseMatchNot{Match: &pb.ResponseMatch{Match: &pb.ResponseMatch_Status{Status: &pb.StatusRange{Min: 100, Max: 399}}}}}}},
				},
				MetricsLabels: map[string]string{"route": "GET /api/info"},
				IsRetryable:   true,
				Timeout:       durationpb.New(250 * time.Millisecond),
			},
			{
				Condition: &pb.RequestMatch{Match: &pb.RequestMatch_All{All: &pb.RequestMatchAll{Matches: []*pb.RequestMatch{
					{Match: &pb.RequestMatch_Any{Any: &pb.RequestMatchAny{Matches: []*pb.RequestMatch{
						{Match: &pb.RequestMatch_Method{Method: &pb.MethodMatch{Method: "POST"}}},
						{Match: &pb.RequestMatch_Method{Method: &pb.MethodMatch{Method: "PUT"}}},
					}}}},
					{Match: &pb.RequestMatch_Path{Path: &pb.PathMatch{Regex: "/api/echo(/.*)?"}}},
					{Match: &pb.RequestMatch_Not{Not: &pb.RequestMatchNot{Match: &pb.RequestMatch{Match: &pb.RequestMatch_Path{Path: &pb.PathMatch{Regex: "/api/echo/skip"}}}}}},
				}}}},
				MetricsLabels: map[string]string{"route": "POST or PUT /api/echo, not /api/echo/skip"},
			},
		},
	}
	if got := p.ToProto(); !proto.Equal(got, want) {
		t.Fatalf("profile:\n got %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
}

func TestProfileDefaults(t *testing.T) {
	f := rollout()
	def := &pb.RetryBudget{RetryRatio: 0.2, MinRetriesPerSecond: 10, Ttl: durationpb.New(10 * time.Second)}

	// No ServiceProfile: the default budget, no routes.
	p := compile.Profile(f, "podinfo.test:9898", compile.Options{})
	if got := p.ToProto(); !proto.Equal(got, &pb.DestinationProfile{FullyQualifiedName: "podinfo.test.svc.cluster.local", RetryBudget: def}) {
		t.Fatalf("default profile = %s", prototext.Format(got))
	}
	// Unknown authority: the default profile, marked as not existing.
	p = compile.Profile(f, "example.com:443", compile.Options{})
	if p.Exists || len(p.Warnings) == 0 {
		t.Fatalf("unknown authority profile = %+v", p)
	}
	if got := p.ToProto(); !proto.Equal(got, &pb.DestinationProfile{RetryBudget: def}) {
		t.Fatalf("unknown authority profile = %s", prototext.Format(got))
	}
	// An invalid retry budget falls back to the defaults, with a warning.
	f.profiles[podinfo] = &v1alpha1.ServiceProfile{Spec: v1alpha1.ServiceProfileSpec{
		RetryBudget: &v1alpha1.RetryBudget{RetryRatio: "x", MinRetriesPerSecond: -1, TTL: "soon"},
	}}
	p = compile.Profile(f, "podinfo.test:9898", compile.Options{})
	if !proto.Equal(p.ToProto().RetryBudget, def) || len(p.Warnings) != 1 {
		t.Fatalf("invalid budget: %v, warnings %q", p.ToProto().RetryBudget, p.Warnings)
	}
	// Opaque from the service annotation.
	f.services[podinfo].Annotations = map[string]string{names.AnnotationOpaquePorts: "9898"}
	if p := compile.Profile(f, "podinfo.test:9898", compile.Options{}); !p.OpaqueProtocol {
		t.Fatal("opaque-ports annotation not applied to the profile")
	}
}

func TestEqual(t *testing.T) {
	f := rollout()
	f.splits[podinfo] = []store.TrafficSplit{split("podinfo", store.Backend{Service: "podinfo-stable", Weight: 9}, store.Backend{Service: "podinfo-canary", Weight: 1})}
	f.profiles[podinfo] = &v1alpha1.ServiceProfile{Spec: v1alpha1.ServiceProfileSpec{Routes: []v1alpha1.RouteSpec{{
		Name:      "r",
		Condition: &v1alpha1.RequestMatch{Method: "GET"},
		ResponseClasses: []v1alpha1.ResponseClass{{
			Condition: &v1alpha1.ResponseMatch{
				All: []v1alpha1.ResponseMatch{{Status: &v1alpha1.Range{Min: 500}}},
				Any: []v1alpha1.ResponseMatch{{Status: &v1alpha1.Range{Max: 501}}, {Status: &v1alpha1.Range{Min: 503, Max: 503}}},
			},
			IsFailure: true,
		}},
	}}}}
	a := compile.Profile(f, "podinfo.test:9898", compile.Options{})
	b := compile.Profile(f, "10.96.2.1:9898", compile.Options{}) // another form of the same authority
	if !a.Equal(b) {
		t.Fatal("the same profile compares unequal")
	}
	// The response match's all and any are ANDed into one all.
	rc := a.ToProto().Routes[0].ResponseClasses[0].Condition
	if got := len(rc.GetAll().GetMatches()); got != 2 || rc.GetAll().GetMatches()[1].GetAny() == nil {
		t.Fatalf("response match = %v", rc)
	}
	f.splits[podinfo][0].Backends[1].Weight = 2
	if c := compile.Profile(f, "podinfo.test:9898", compile.Options{}); a.Equal(c) {
		t.Fatal("a weight change compares equal")
	}

	x := compile.Endpoints(f, "podinfo.test:9898", compile.Options{})
	y := compile.Endpoints(f, "podinfo.test.svc.cluster.local:9898", compile.Options{})
	if !x.Equal(y) {
		t.Fatal("the same endpoint set compares unequal")
	}
	y.Endpoints = append([]compile.Endpoint(nil), y.Endpoints...)
	y.Endpoints[0].Zone = "elsewhere"
	if x.Equal(y) {
		t.Fatal("a zone change compares equal")
	}
}
