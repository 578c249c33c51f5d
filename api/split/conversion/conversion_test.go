package conversion

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	splitv1alpha1 "github.com/meridian-mesh/meridian/api/split/v1alpha1"
	splitv1alpha2 "github.com/meridian-mesh/meridian/api/split/v1alpha2"
	splitv1alpha3 "github.com/meridian-mesh/meridian/api/split/v1alpha3"
	splitv1alpha4 "github.com/meridian-mesh/meridian/api/split/v1alpha4"
)

const matchesJSON = `[{"apiGroup":"specs.smi-spec.io","kind":"HTTPRouteGroup","name":"canary-routes"}]`

var matches = []corev1.TypedLocalObjectReference{{APIGroup: ptr.To("specs.smi-spec.io"), Kind: "HTTPRouteGroup", Name: "canary-routes"}}

// meta is the metadata every fixture shares, with extra annotations.
func meta(extra map[string]string) metav1.ObjectMeta {
	ann := map[string]string{"owner": "argo-rollouts"}
	for k, v := range extra {
		ann[k] = v
	}
	return metav1.ObjectMeta{
		Name: "web", Namespace: "shop", UID: types.UID("1234"), ResourceVersion: "42", Generation: 3,
		Labels: map[string]string{"app": "web"}, Annotations: ann,
	}
}

// fixtures are the same split in each version: what a conversion to that
// version must give, from any other. withMatches: v1alpha3/4 have matches,
// and the older versions carry them in MatchesAnnotation.
func fixtures(withMatches bool) map[string]runtime.Object {
	old := map[string]string{}
	var ms []corev1.TypedLocalObjectReference
	if withMatches {
		old[MatchesAnnotation] = matchesJSON
		ms = matches
	}
	tm := func(v string) metav1.TypeMeta { return metav1.TypeMeta{APIVersion: Group + "/" + v, Kind: Kind} }
	return map[string]runtime.Object{
		"v1alpha1": &splitv1alpha1.TrafficSplit{TypeMeta: tm("v1alpha1"), ObjectMeta: meta(old), Spec: splitv1alpha1.TrafficSplitSpec{
			Service: "web", Backends: []splitv1alpha1.TrafficSplitBackend{
				{Service: "web-stable", Weight: resource.MustParse("80")}, {Service: "web-canary", Weight: resource.MustParse("20")}}}},
		"v1alpha2": &splitv1alpha2.TrafficSplit{TypeMeta: tm("v1alpha2"), ObjectMeta: meta(old), Spec: splitv1alpha2.TrafficSplitSpec{
			Service: "web", Backends: []splitv1alpha2.TrafficSplitBackend{{Service: "web-stable", Weight: 80}, {Service: "web-canary", Weight: 20}}}},
		"v1alpha3": &splitv1alpha3.TrafficSplit{TypeMeta: tm("v1alpha3"), ObjectMeta: meta(nil), Spec: splitv1alpha3.TrafficSplitSpec{
			Service: "web", Backends: []splitv1alpha3.TrafficSplitBackend{{Service: "web-stable", Weight: 80}, {Service: "web-canary", Weight: 20}}, Matches: ms}},
		"v1alpha4": &splitv1alpha4.TrafficSplit{TypeMeta: tm("v1alpha4"), ObjectMeta: meta(nil), Spec: splitv1alpha4.TrafficSplitSpec{
			Service: "web", Backends: []splitv1alpha4.TrafficSplitBackend{{Service: "web-stable", Weight: 80}, {Service: "web-canary", Weight: 20}}, Matches: ms}},
	}
}

func sameObject(t *testing.T, what string, got, want runtime.Object) {
	t.Helper()
	if !equality.Semantic.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Errorf("%s:\n got %s\nwant %s", what, g, w)
	}
}

// Every version to every version, with and without matches; and each
// there and back, which must give the original exactly.
func TestConvertEveryVersion(t *testing.T) {
	for _, withMatches := range []bool{false, true} {
		fx := fixtures(withMatches)
		for _, from := range Versions {
			for _, to := range Versions {
				t.Run(fmt.Sprintf("%s-to-%s-matches-%v", from, to, withMatches), func(t *testing.T) {
					in := fx[from].DeepCopyObject()
					got, err := Convert(in, to)
					if err != nil {
						t.Fatal(err)
					}
					sameObject(t, "converted", got, fx[to])
					sameObject(t, "input untouched", in, fx[from])
					back, err := Convert(got, from)
					if err != nil {
						t.Fatal(err)
					}
					sameObject(t, "round trip", back, fx[from])
				})
			}
		}
	}
}

// The same through JSON, as the webhook converts: v1alpha1's string
// weights ("20", as Argo Rollouts writes them) become integers.
func TestConvertJSON(t *testing.T) {
	in := `{"apiVersion":"split.smi-spec.io/v1alpha1","kind":"TrafficSplit","metadata":{"name":"web","namespace":"shop"},
		"spec":{"service":"web","backends":[{"service":"web-stable","weight":"80"},{"service":"web-canary","weight":"20"}]}}`
	for _, v := range Versions[1:] {
		out, err := ConvertJSON([]byte(in), Group+"/"+v)
		if err != nil {
			t.Fatal(err)
		}
		want := `{"kind":"TrafficSplit","apiVersion":"split.smi-spec.io/` + v + `","metadata":{"name":"web","namespace":"shop"},"spec":{"service":"web","backends":[{"service":"web-stable","weight":80},{"service":"web-canary","weight":20}]}}`
		if string(out) != want {
			t.Errorf("%s:\n got %s\nwant %s", v, out, want)
		}
	}
	out, err := ConvertJSON([]byte(in), Group+"/v1alpha1")
	if err != nil || !strings.Contains(string(out), `"weight":"80"`) {
		t.Errorf("to v1alpha1: %s, %v", out, err)
	}
}

// Objects written as v1alpha1 while the CRD had no conversion are stored as
// v1alpha4 with v1alpha1's weights: they still convert.
func TestConvertJSONLegacyWeights(t *testing.T) {
	for _, tc := range []struct{ weights, want string }{
		{`"80","20"`, `"weight":80},{"service":"b","weight":20}`},
		{`"750m","250m"`, `"weight":750},{"service":"b","weight":250}`},
		{`"1","500m"`, `"weight":1000},{"service":"b","weight":500}`},
		{`1.5,1`, `"weight":1500},{"service":"b","weight":1000}`},
	} {
		w := strings.Split(tc.weights, ",")
		in := `{"apiVersion":"split.smi-spec.io/v1alpha4","kind":"TrafficSplit","metadata":{"name":"web","namespace":"shop"},
			"spec":{"service":"web","backends":[{"service":"a","weight":` + w[0] + `},{"service":"b","weight":` + w[1] + `}]}}`
		for _, v := range []string{"v1alpha2", "v1alpha4"} {
			out, err := ConvertJSON([]byte(in), Group+"/"+v)
			if err != nil {
				t.Fatalf("%s to %s: %v", tc.weights, v, err)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("%s to %s: %s, want %s", tc.weights, v, out, tc.want)
			}
		}
	}
}

// Fractional v1alpha1 weights are counted in thousandths in the integer
// versions, all of them so that the ratios hold, and come back exactly.
func TestFractionalWeights(t *testing.T) {
	v1 := &splitv1alpha1.TrafficSplit{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}, Spec: splitv1alpha1.TrafficSplitSpec{
		Service: "web", Backends: []splitv1alpha1.TrafficSplitBackend{
			{Service: "a", Weight: resource.MustParse("500m")}, {Service: "b", Weight: resource.MustParse("1")}, {Service: "c", Weight: resource.MustParse("0")}}}}
	got, err := Convert(v1, "v1alpha2")
	if err != nil {
		t.Fatal(err)
	}
	v2 := got.(*splitv1alpha2.TrafficSplit)
	if w := v2.Spec.Backends; w[0].Weight != 500 || w[1].Weight != 1000 || w[2].Weight != 0 {
		t.Fatalf("weights %+v, want 500, 1000, 0", w)
	}
	if a := v2.Annotations[WeightsAnnotation]; a != `["500m","1","0"]` {
		t.Fatalf("%s = %q", WeightsAnnotation, a)
	}
	back, err := Convert(v2, "v1alpha1")
	if err != nil {
		t.Fatal(err)
	}
	want := v1.DeepCopy()
	want.APIVersion, want.Kind = Group+"/v1alpha1", Kind
	sameObject(t, "round trip", back, want)

	// A client of an integer version changed the weights: the annotation
	// is stale, the integers win and it is dropped.
	v2.Spec.Backends[0].Weight = 700
	back, err = Convert(v2, "v1alpha1")
	if err != nil {
		t.Fatal(err)
	}
	b1 := back.(*splitv1alpha1.TrafficSplit)
	if _, ok := b1.Annotations[WeightsAnnotation]; ok {
		t.Error("stale weights annotation kept")
	}
	for i, w := range []int64{700, 1000, 0} {
		// Quantities print canonically: 1000 is "1k".
		if b1.Spec.Backends[i].Weight.Value() != w {
			t.Errorf("backend %d: %s, want %d", i, b1.Spec.Backends[i].Weight.String(), w)
		}
	}
}

func TestWeightErrors(t *testing.T) {
	for _, tc := range []struct {
		weights []string
		want    string
	}{
		{[]string{"20", "-1"}, `TrafficSplit shop/web: spec.backends[1].weight: -1 is negative: a weight is a number from 0`},
		{[]string{"-500m"}, `spec.backends[0].weight: -500m is negative`},
		{[]string{"1", "10E18"}, `spec.backends[1].weight: 10E18 is too large: a weight is at most 9223372036854775807`},
		{[]string{"500m", "10E15"}, `spec.backends[1].weight: 10E15 is too large: with a fractional weight in the split every weight is counted in thousandths, so a weight is at most 9223372036854775`},
	} {
		v1 := &splitv1alpha1.TrafficSplit{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}, Spec: splitv1alpha1.TrafficSplitSpec{Service: "web"}}
		for i, w := range tc.weights {
			v1.Spec.Backends = append(v1.Spec.Backends, splitv1alpha1.TrafficSplitBackend{Service: fmt.Sprint("b", i), Weight: resource.MustParse(w)})
		}
		_, err := Convert(v1, "v1alpha4")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.weights, err, tc.want)
		}
	}
	// The same through JSON, for the integer versions' legacy weights.
	_, err := ConvertJSON([]byte(`{"apiVersion":"split.smi-spec.io/v1alpha4","kind":"TrafficSplit","metadata":{"name":"web","namespace":"shop"},"spec":{"service":"web","backends":[{"service":"a","weight":"-2"}]}}`), Group+"/v1alpha2")
	if err == nil || !strings.Contains(err.Error(), "TrafficSplit shop/web: spec.backends[0].weight: -2 is negative") {
		t.Errorf("legacy negative weight: %v", err)
	}
}

func TestConvertErrors(t *testing.T) {
	good := `{"apiVersion":"split.smi-spec.io/v1alpha2","kind":"TrafficSplit","metadata":{"name":"web","namespace":"shop"},"spec":{"service":"web","backends":[{"service":"a","weight":1}]}}`
	for _, tc := range []struct{ in, to, want string }{
		{good, "split.smi-spec.io/v1beta1", "cannot convert to split.smi-spec.io/v1beta1: the served versions are [v1alpha1 v1alpha2 v1alpha3 v1alpha4]"},
		{good, "apps/v1", `desired apiVersion "apps/v1"`},
		{strings.Replace(good, "TrafficSplit", "HTTPRouteGroup", 1), "split.smi-spec.io/v1alpha4", `kind "HTTPRouteGroup": only split.smi-spec.io TrafficSplit`},
		{strings.Replace(good, `"weight":1`, `"weight":{}`, 1), "split.smi-spec.io/v1alpha4", "TrafficSplit shop/web: spec.backends[].weight"},
		{strings.Replace(good, `"name":"web",`, `"name":"web","annotations":{"split.meridian.io/matches":"[{"},`, 1), "split.smi-spec.io/v1alpha4",
			"TrafficSplit shop/web: metadata.annotations[split.meridian.io/matches]"},
		{`[]`, "split.smi-spec.io/v1alpha4", "decoding a TrafficSplit"},
	} {
		_, err := ConvertJSON([]byte(tc.in), tc.to)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s to %s: %v, want %q", tc.in, tc.to, err, tc.want)
		}
	}
	if _, err := Convert(&corev1.Pod{}, "v1alpha4"); err == nil || !strings.Contains(err.Error(), "cannot convert a *v1.Pod") {
		t.Errorf("pod: %v", err)
	}
}
