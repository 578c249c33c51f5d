package traffic

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// v1alpha2 when served, else v1alpha1 (Argo's choices); neither is an error.
func TestPickSplitVersion(t *testing.T) {
	for _, tc := range []struct {
		served []string
		want   string
	}{
		{[]string{"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"}, "v1alpha2"},
		{[]string{"v1alpha1"}, "v1alpha1"},
		{[]string{"v1alpha3"}, ""},
		{nil, ""},
	} {
		var gvs []schema.GroupVersion
		for _, v := range tc.served {
			gvs = append(gvs, schema.GroupVersion{Group: splitGK.Group, Version: v})
		}
		m := meta.NewDefaultRESTMapper(gvs)
		for _, v := range tc.served {
			m.Add(schema.GroupVersionKind{Group: splitGK.Group, Version: v, Kind: "TrafficSplit"}, meta.RESTScopeNamespace)
		}
		gvk, err := pickSplitVersion(m)
		if gvk.Version != tc.want || (tc.want == "") != (err != nil) {
			t.Errorf("served %v: %v, %v; want %q", tc.served, gvk, err, tc.want)
		}
	}
}
