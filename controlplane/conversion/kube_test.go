package conversion_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/api/split/conversion"
	"github.com/meridian-mesh/meridian/controlplane/conversion/conversiontest"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

func gvr(version string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "split.smi-spec.io", Version: version, Resource: "trafficsplits"}
}

// manifest is a TrafficSplit named name in version, with v1alpha1's string
// weights or the others' integers, and matches where the version has them.
func manifest(version, name string) *unstructured.Unstructured {
	w := func(n int) any {
		if version == "v1alpha1" {
			return fmt.Sprint(n) // as Argo Rollouts writes them
		}
		return int64(n)
	}
	spec := map[string]any{
		"service": "web",
		"backends": []any{
			map[string]any{"service": "web-stable", "weight": w(80)},
			map[string]any{"service": "web-canary", "weight": w(20)},
		},
	}
	if version == "v1alpha3" || version == "v1alpha4" {
		spec["matches"] = []any{map[string]any{"apiGroup": "specs.smi-spec.io", "kind": "HTTPRouteGroup", "name": "canary-routes"}}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "split.smi-spec.io/" + version, "kind": "TrafficSplit",
		"metadata": map[string]any{"name": name, "namespace": "shop"},
		"spec":     spec,
	}}
}

func weights(t *testing.T, u *unstructured.Unstructured) []any {
	t.Helper()
	bs, _, _ := unstructured.NestedSlice(u.Object, "spec", "backends")
	var out []any
	for _, b := range bs {
		out = append(out, b.(map[string]any)["weight"])
	}
	return out
}

func dump(u *unstructured.Unstructured) string {
	b, _ := yaml.Marshal(u.Object)
	return string(b)
}

// The test against a real kube-apiserver: the TrafficSplit CRD as
// generated (api/crds), its conversion webhook pointed at this package's
// handler on loopback TLS. A split written in any version reads back in
// every version, with integer weights in v1alpha2..4 and v1alpha1 quantity
// strings, and matches kept through the versions without them; and a split
// written as v1alpha1 with string weights is then updated through v1alpha2
// (Argo Rollouts' --traffic-split-api-version=v1alpha2).
func TestKubeAPIServerConverts(t *testing.T) {
	cfg := apiserver.Start(t)
	srv := conversiontest.NewServer()
	defer srv.Close()
	_, file, _, _ := runtime.Caller(0)
	if err := srv.Install(cfg, filepath.Join(filepath.Dir(file), "..", "..", "api", "crds")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(cfg)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(cfg)
	api := func(v string) dynamic.ResourceInterface { return dyn.Resource(gvr(v)).Namespace("shop") }

	for _, from := range conversion.Versions {
		name := "written-" + from
		if _, err := api(from).Create(ctx, manifest(from, name), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create as %s: %v", from, err)
		}
		for _, to := range conversion.Versions {
			got, err := api(to).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("written as %s, read as %s: %v", from, to, err)
			}
			if got.GetAPIVersion() != "split.smi-spec.io/"+to {
				t.Errorf("written as %s, read as %s: apiVersion %s", from, to, got.GetAPIVersion())
			}
			var want []any
			if to == "v1alpha1" {
				want = []any{"80", "20"}
			} else {
				want = []any{int64(80), int64(20)} // JSON integers
			}
			if w := weights(t, got); fmt.Sprint(w) != fmt.Sprint(want) || fmt.Sprintf("%T", w[0]) != fmt.Sprintf("%T", want[0]) {
				t.Errorf("written as %s, read as %s: weights %#v, want %#v\n%s", from, to, w, want, dump(got))
			}
			if svc, _, _ := unstructured.NestedString(got.Object, "spec", "service"); svc != "web" {
				t.Errorf("written as %s, read as %s: spec.service %q", from, to, svc)
			}
			matches, _, _ := unstructured.NestedSlice(got.Object, "spec", "matches")
			ann := got.GetAnnotations()[conversion.MatchesAnnotation]
			hasMatches := from == "v1alpha3" || from == "v1alpha4"
			switch {
			case !hasMatches && (len(matches) != 0 || ann != ""):
				t.Errorf("written as %s, read as %s: matches from nowhere\n%s", from, to, dump(got))
			case hasMatches && (to == "v1alpha3" || to == "v1alpha4") && (len(matches) != 1 || ann != ""):
				t.Errorf("written as %s, read as %s: matches %v, annotation %q", from, to, matches, ann)
			case hasMatches && (to == "v1alpha1" || to == "v1alpha2") && ann == "":
				t.Errorf("written as %s, read as %s: no %s\n%s", from, to, conversion.MatchesAnnotation, dump(got))
			}
		}
	}

	// matches through a v1alpha1 client that updates the weights, keeping
	// the annotations it does not know about: back in v1alpha4, with the
	// new weights.
	v1, err := api("v1alpha1").Get(ctx, "written-v1alpha4", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bs, _, _ := unstructured.NestedSlice(v1.Object, "spec", "backends")
	bs[0].(map[string]any)["weight"], bs[1].(map[string]any)["weight"] = "50", "50"
	if err := unstructured.SetNestedSlice(v1.Object, bs, "spec", "backends"); err != nil {
		t.Fatal(err)
	}
	if _, err := api("v1alpha1").Update(ctx, v1, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update as v1alpha1: %v", err)
	}
	v4, err := api("v1alpha4").Get(ctx, "written-v1alpha4", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	matches, _, _ := unstructured.NestedSlice(v4.Object, "spec", "matches")
	if fmt.Sprint(weights(t, v4)) != "[50 50]" || len(matches) != 1 || matches[0].(map[string]any)["name"] != "canary-routes" || v4.GetAnnotations()[conversion.MatchesAnnotation] != "" {
		t.Errorf("v1alpha4 → v1alpha1 → v1alpha4 lost the matches or the weights:\n%s", dump(v4))
	}

	// Argo Rollouts' scenario: a split written as v1alpha1 with string
	// weights, then read and updated through v1alpha2, reads back right in
	// v1alpha4 (what kubectl shows).
	if _, err := api("v1alpha1").Create(ctx, manifest("v1alpha1", "argo"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	v2, err := api("v1alpha2").Get(ctx, "argo", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("read as v1alpha2: %v", err)
	}
	bs, _, _ = unstructured.NestedSlice(v2.Object, "spec", "backends")
	bs[0].(map[string]any)["weight"], bs[1].(map[string]any)["weight"] = int64(40), int64(60)
	if err := unstructured.SetNestedSlice(v2.Object, bs, "spec", "backends"); err != nil {
		t.Fatal(err)
	}
	if _, err := api("v1alpha2").Update(ctx, v2, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update as v1alpha2: %v", err)
	}
	v4, err = api("v1alpha4").Get(ctx, "argo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if w := weights(t, v4); fmt.Sprintf("%#v", w) != fmt.Sprintf("%#v", []any{int64(40), int64(60)}) {
		t.Errorf("argo split in v1alpha4: weights %#v\n%s", w, dump(v4))
	}

	// Fractional weights: integers (thousandths) in v1alpha4, the original
	// quantities back in v1alpha1.
	frac := manifest("v1alpha1", "fractional")
	if err := unstructured.SetNestedSlice(frac.Object, []any{
		map[string]any{"service": "web-stable", "weight": "1"}, map[string]any{"service": "web-canary", "weight": "500m"},
	}, "spec", "backends"); err != nil {
		t.Fatal(err)
	}
	if _, err := api("v1alpha1").Create(ctx, frac, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	v4, err = api("v1alpha4").Get(ctx, "fractional", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if w := weights(t, v4); fmt.Sprint(w) != "[1000 500]" {
		t.Errorf("fractional in v1alpha4: weights %v", w)
	}
	v1, err = api("v1alpha1").Get(ctx, "fractional", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if w := weights(t, v1); fmt.Sprint(w) != "[1 500m]" || v1.GetAnnotations()[conversion.WeightsAnnotation] != "" {
		t.Errorf("fractional in v1alpha1: weights %v\n%s", w, dump(v1))
	}

	// A weight the integer versions cannot hold: refused, with the reason
	// the webhook gave.
	neg := manifest("v1alpha1", "negative")
	_ = unstructured.SetNestedSlice(neg.Object, []any{map[string]any{"service": "web-stable", "weight": "-1"}}, "spec", "backends")
	_, err = api("v1alpha1").Create(ctx, neg, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "spec.backends[0].weight: -1 is negative") {
		t.Errorf("negative weight: %v", err)
	}
}
