package v1alpha1

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

func TestRatioJSON(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`0.2`, `0.2`},
		{`"0.25"`, `0.25`},
		{`1`, `1`},
		{`1e-1`, `1e-1`},
		{`null`, `0`},
	} {
		var r Ratio
		if err := json.Unmarshal([]byte(tc.in), &r); err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		out, err := json.Marshal(r)
		if err != nil || string(out) != tc.want {
			t.Errorf("%s → %q → %s, %v; want %s", tc.in, string(r), out, err, tc.want)
		}
	}
	for _, bad := range []string{`"lots"`, `true`, `{}`, `[0.2]`} {
		var r Ratio
		if err := json.Unmarshal([]byte(bad), &r); err == nil {
			t.Errorf("%s decoded as %q", bad, string(r))
		}
	}
	if _, err := json.Marshal(Ratio("x")); err == nil {
		t.Error("a non-number Ratio encoded")
	}
	if out, _ := json.Marshal(Ratio(".5")); string(out) != "0.5" {
		t.Errorf(".5 encoded as %s, want a valid JSON number", out)
	}
	if f, err := Ratio("0.2").Float64(); err != nil || f != 0.2 {
		t.Errorf("Float64 = %v, %v", f, err)
	}
}

func TestDurationParse(t *testing.T) {
	if d, err := Duration("1m30s").Parse(); err != nil || d != 90*time.Second {
		t.Errorf("1m30s = %v, %v", d, err)
	}
	if d, err := Duration("").Parse(); err != nil || d != 0 {
		t.Errorf("empty = %v, %v", d, err)
	}
	for _, bad := range []string{"soon", "-1s", "10"} {
		if _, err := Duration(bad).Parse(); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestServiceForProfile(t *testing.T) {
	for _, tc := range []struct {
		name, domain, svc, ns string
		ok                    bool
	}{
		{"web.emojivoto.svc.cluster.local", "cluster.local", "web", "emojivoto", true},
		{"web.emojivoto.svc.example.org", "example.org.", "web", "emojivoto", true},
		{"web.emojivoto.svc.cluster.local", "example.org", "", "", false},
		{"api.example.com", "cluster.local", "", "", false},
		{"a.b.c.svc.cluster.local", "cluster.local", "", "", false},
		{".ns.svc.cluster.local", "cluster.local", "", "", false},
	} {
		svc, ns, ok := ServiceForProfile(tc.name, tc.domain)
		if svc != tc.svc || ns != tc.ns || ok != tc.ok {
			t.Errorf("ServiceForProfile(%q, %q) = %q, %q, %v", tc.name, tc.domain, svc, ns, ok)
		}
	}
	if got := ProfileName("web", "emojivoto", "cluster.local"); got != "web.emojivoto.svc.cluster.local" {
		t.Errorf("ProfileName = %s", got)
	}
}

func TestValidate(t *testing.T) {
	good := ServiceProfile{
		ObjectMeta: metav1.ObjectMeta{Name: "web.ns.svc.cluster.local", Namespace: "ns"},
		Spec: ServiceProfileSpec{
			Routes: []RouteSpec{{
				Name:            "r",
				Condition:       &RequestMatch{Any: []RequestMatch{{Method: "GET"}, {Not: &RequestMatch{PathRegex: "/a.*"}}}},
				ResponseClasses: []ResponseClass{{Condition: &ResponseMatch{Status: &Range{Min: 500}}, IsFailure: true}},
				Timeout:         "1s",
			}},
			RetryBudget:  &RetryBudget{RetryRatio: "0.2", MinRetriesPerSecond: 10, TTL: "10s"},
			DstOverrides: []WeightedDst{{Authority: "web-v2:80", Weight: resource.MustParse("500m")}},
			OpaquePorts:  []int32{3306},
		},
	}
	if errs := good.Validate(); len(errs) > 0 {
		t.Fatalf("valid profile: %v", errs)
	}
	bad := good.DeepCopy()
	bad.Spec.Routes[0].Condition.Any[1].Not.PathRegex = "(("
	bad.Spec.Routes[0].Condition.Any[0] = RequestMatch{}
	bad.Spec.Routes[0].ResponseClasses[0].Condition.All = []ResponseMatch{{Status: &Range{Min: 500, Max: 404}}}
	bad.Spec.Routes[0].Timeout = "soon"
	bad.Spec.RetryBudget.TTL = "0s"
	bad.Spec.RetryBudget.RetryRatio = "-1"
	bad.Spec.DstOverrides[0].Weight = resource.MustParse("-1")
	bad.Spec.OpaquePorts = []int32{3306, 3306, 70000}
	var got []string
	for _, e := range bad.Validate() {
		got = append(got, e.Field)
	}
	want := []string{
		"spec.routes[0].condition.any[0]",
		"spec.routes[0].condition.any[1].not.pathRegex",
		"spec.routes[0].responseClasses[0].condition.all[0].status",
		"spec.routes[0].timeout",
		"spec.retryBudget.retryRatio",
		"spec.retryBudget.ttl",
		"spec.dstOverrides[0].weight",
		"spec.opaquePorts[1]",
		"spec.opaquePorts[2]",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("errors in\n%v\nwant\n%v", got, want)
	}
}

// A Linkerd profile decodes once its apiVersion is changed.
func TestLinkerdProfileDecodes(t *testing.T) {
	const linkerd = `apiVersion: meridian.io/v1alpha1
kind: ServiceProfile
metadata:
  name: books.default.svc.cluster.local
  namespace: default
spec:
  routes:
  - condition:
      method: GET
      pathRegex: /books/[^/]*\.json
    name: GET /books/{id}.json
    isRetryable: true
    timeout: 300ms
    responseClasses:
    - condition:
        status:
          min: 500
          max: 599
      isFailure: true
  retryBudget:
    retryRatio: 0.2
    minRetriesPerSecond: 10
    ttl: 10s
  dstOverrides:
  - authority: books-v2.default.svc.cluster.local:7002
    weight: 1
`
	var p ServiceProfile
	if err := yaml.UnmarshalStrict([]byte(linkerd), &p); err != nil {
		t.Fatal(err)
	}
	if errs := p.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	out, err := json.Marshal(p.Spec.RetryBudget)
	if err != nil || string(out) != `{"retryRatio":0.2,"minRetriesPerSecond":10,"ttl":"10s"}` {
		t.Errorf("retry budget encodes as %s, %v", out, err)
	}
}
