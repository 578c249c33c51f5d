package v1alpha1

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/test/apiserver"
)

// argoDocs reads the Argo Rollouts manifests of testdata/argo: each is an
// Argo example or documentation shape with only its apiVersion changed.
func argoDocs(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/argo/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/argo manifests: %v", err)
	}
	docs := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range bytes.Split(b, []byte("\n---\n")) {
			docs[fmt.Sprintf("%s#%d", filepath.Base(f), i)] = d
		}
	}
	return docs
}

// newOfKind returns an empty object of the manifest's kind.
func newOfKind(t *testing.T, doc []byte) any {
	t.Helper()
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		t.Fatal(err)
	}
	if tm.APIVersion != GroupVersion.String() {
		t.Fatalf("apiVersion %q, want %s", tm.APIVersion, GroupVersion)
	}
	switch tm.Kind {
	case "Rollout":
		return &Rollout{}
	case "AnalysisTemplate":
		return &AnalysisTemplate{}
	case "ClusterAnalysisTemplate":
		return &ClusterAnalysisTemplate{}
	case "AnalysisRun":
		return &AnalysisRun{}
	}
	t.Fatalf("kind %q", tm.Kind)
	return nil
}

// An Argo manifest decodes strictly (no field unknown to our types), is
// valid, and encodes back with every value it had: nothing is lost.
func TestArgoManifestsRoundTrip(t *testing.T) {
	for name, doc := range argoDocs(t) {
		t.Run(name, func(t *testing.T) {
			obj := newOfKind(t, doc)
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("strict decode: %v", err)
			}
			if errs := obj.(interface {
				Validate() field.ErrorList
			}).Validate(); len(errs) > 0 {
				t.Fatalf("Validate: %v", errs.ToAggregate())
			}
			out, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			var in, back any
			if err := yaml.Unmarshal(doc, &in); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(out, &back); err != nil {
				t.Fatal(err)
			}
			if diff := lost("", in, back); diff != "" {
				t.Errorf("lost in the round trip: %s\nencoded: %s", diff, out)
			}
			// Decoding what we encoded gives the same object.
			again := newOfKind(t, doc)
			if err := json.Unmarshal(out, again); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(obj, again) {
				t.Errorf("re-decoded object differs:\n%#v\n%#v", obj, again)
			}
		})
	}
}

// lost reports the first value of in that out does not hold. A zero value
// (0, false, "", {}, []) missing from out is not lost: omitempty drops it
// and it means the same.
func lost(path string, in, out any) string {
	switch v := in.(type) {
	case map[string]any:
		o, ok := out.(map[string]any)
		if !ok {
			if len(v) == 0 && out == nil {
				return ""
			}
			return fmt.Sprintf("%s: %v became %v", path, in, out)
		}
		for k, x := range v {
			y, ok := o[k]
			if !ok {
				if isZeroValue(x) {
					continue
				}
				return fmt.Sprintf("%s.%s: %v missing", path, k, x)
			}
			if d := lost(path+"."+k, x, y); d != "" {
				return d
			}
		}
		return ""
	case []any:
		o, ok := out.([]any)
		if !ok || len(o) != len(v) {
			if len(v) == 0 && out == nil {
				return ""
			}
			return fmt.Sprintf("%s: %v became %v", path, in, out)
		}
		for i := range v {
			if d := lost(fmt.Sprintf("%s[%d]", path, i), v[i], o[i]); d != "" {
				return d
			}
		}
		return ""
	default:
		if a, ok := number(in); ok {
			if b, ok := number(out); ok && a == b {
				return ""
			}
		}
		if !reflect.DeepEqual(in, out) {
			return fmt.Sprintf("%s: %#v became %#v", path, in, out)
		}
		return ""
	}
}

// number reads a JSON number as decoded by encoding/json (float64) or by
// the client (int64).
func number(x any) (float64, bool) {
	switch v := x.(type) {
	case float64:
		return v, true
	case int64:
		return float64(v), true
	}
	return 0, false
}

func isZeroValue(x any) bool {
	switch v := x.(type) {
	case nil:
		return true
	case bool:
		return !v
	case float64:
		return v == 0
	case int64:
		return v == 0
	case string:
		return v == ""
	case map[string]any:
		return len(v) == 0
	case []any:
		return len(v) == 0
	}
	return false
}

func TestPauseDuration(t *testing.T) {
	for _, tc := range []struct {
		in    *intstr.IntOrString
		want  time.Duration
		timed bool
		bad   bool
	}{
		{nil, 0, false, false},
		{ptr(intstr.FromInt32(30)), 30 * time.Second, true, false},
		{ptr(intstr.FromString("30")), 30 * time.Second, true, false},
		{ptr(intstr.FromString("30s")), 30 * time.Second, true, false},
		{ptr(intstr.FromString("1h")), time.Hour, true, false},
		{ptr(intstr.FromString("1.5s")), time.Second, true, false}, // whole seconds, as Argo
		{ptr(intstr.FromString("soon")), 0, true, true},
		{ptr(intstr.FromInt32(-1)), 0, true, true},
	} {
		p := &RolloutPause{Duration: tc.in}
		d, timed, err := p.PauseDuration()
		if d != tc.want || timed != tc.timed || (err != nil) != tc.bad {
			t.Errorf("%v: %v, %v, %v; want %v, %v, error %v", tc.in, d, timed, err, tc.want, tc.timed, tc.bad)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// Validate names the field and what is allowed for what the schema cannot
// say.
func TestRolloutValidate(t *testing.T) {
	base := func() *Rollout {
		var r Rollout
		if err := yaml.UnmarshalStrict([]byte(`
apiVersion: meridian.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web:1}]}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      trafficRouting: {meridian: {}, managedRoutes: [{name: hdr}]}
      steps: [{setWeight: 10}, {pause: {}}]
`), &r); err != nil {
			t.Fatal(err)
		}
		return &r
	}
	if errs := base().Validate(); len(errs) > 0 {
		t.Fatalf("base: %v", errs)
	}
	for _, tc := range []struct {
		name  string
		edit  func(r *Rollout)
		field string
	}{
		{"no strategy", func(r *Rollout) { r.Spec.Strategy = RolloutStrategy{} }, "spec.strategy"},
		{"two strategies", func(r *Rollout) { r.Spec.Strategy.BlueGreen = &BlueGreenStrategy{ActiveService: "a"} }, "spec.strategy"},
		{"template and workloadRef", func(r *Rollout) {
			r.Spec.WorkloadRef = &ObjectRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"}
		}, "spec.template"},
		{"neither template nor workloadRef", func(r *Rollout) { r.Spec.Template = nil }, "spec.template"},
		{"workloadRef kind", func(r *Rollout) {
			r.Spec.Template = nil
			r.Spec.WorkloadRef = &ObjectRef{Kind: "StatefulSet", Name: "web"}
		}, "spec.workloadRef.kind"},
		{"selector mismatch", func(r *Rollout) { r.Spec.Selector.MatchLabels["app"] = "other" }, "spec.selector"},
		{"no selector", func(r *Rollout) { r.Spec.Selector = nil }, "spec.selector"},
		{"step with two actions", func(r *Rollout) { r.Spec.Strategy.Canary.Steps[0].Pause = &RolloutPause{} }, "spec.strategy.canary.steps[0]"},
		{"empty step", func(r *Rollout) { r.Spec.Strategy.Canary.Steps[1].Pause = nil }, "spec.strategy.canary.steps[1]"},
		{"weight over 100", func(r *Rollout) { r.Spec.Strategy.Canary.Steps[0].SetWeight = ptr(int32(101)) }, "spec.strategy.canary.steps[0].setWeight"},
		{"bad pause", func(r *Rollout) {
			r.Spec.Strategy.Canary.Steps[1].Pause.Duration = ptr(intstr.FromString("a while"))
		}, "spec.strategy.canary.steps[1].pause.duration"},
		{"same services", func(r *Rollout) { r.Spec.Strategy.Canary.CanaryService = "web-stable" }, "spec.strategy.canary.canaryService"},
		{"routing without canary service", func(r *Rollout) { r.Spec.Strategy.Canary.CanaryService = "" }, "spec.strategy.canary.canaryService"},
		{"header route not managed", func(r *Rollout) {
			r.Spec.Strategy.Canary.Steps[0] = CanaryStep{SetHeaderRoute: &SetHeaderRoute{Name: "nope"}}
		}, "spec.strategy.canary.steps[0].setHeaderRoute.name"},
		{"header match two kinds", func(r *Rollout) {
			r.Spec.Strategy.Canary.Steps[0] = CanaryStep{SetHeaderRoute: &SetHeaderRoute{Name: "hdr", Match: []HeaderRoutingMatch{{HeaderName: "x", HeaderValue: &StringMatch{Exact: "a", Prefix: "b"}}}}}
		}, "spec.strategy.canary.steps[0].setHeaderRoute.match[0].headerValue"},
		{"canary scale two fields", func(r *Rollout) {
			r.Spec.Strategy.Canary.Steps[0] = CanaryStep{SetCanaryScale: &SetCanaryScale{Weight: ptr(int32(10)), Replicas: ptr(int32(1))}}
		}, "spec.strategy.canary.steps[0].setCanaryScale"},
		{"canary scale without routing", func(r *Rollout) {
			r.Spec.Strategy.Canary.TrafficRouting = nil
			r.Spec.Strategy.Canary.Steps[0] = CanaryStep{SetCanaryScale: &SetCanaryScale{Replicas: ptr(int32(1))}}
		}, "spec.strategy.canary.steps[0].setCanaryScale"},
		{"analysis without templates", func(r *Rollout) {
			r.Spec.Strategy.Canary.Steps[0] = CanaryStep{Analysis: &RolloutAnalysis{}}
		}, "spec.strategy.canary.steps[0].analysis.templates"},
		{"surge and unavailable 0", func(r *Rollout) {
			r.Spec.Strategy.Canary.MaxSurge = ptr(intstr.FromString("0%"))
			r.Spec.Strategy.Canary.MaxUnavailable = ptr(intstr.FromInt32(0))
		}, "spec.strategy.canary.maxUnavailable"},
		{"bad percentage", func(r *Rollout) { r.Spec.Strategy.Canary.MaxSurge = ptr(intstr.FromString("lots")) }, "spec.strategy.canary.maxSurge"},
		{"plugin only", func(r *Rollout) {
			r.Spec.Strategy.Canary.TrafficRouting.Meridian = nil
			r.Spec.Strategy.Canary.TrafficRouting.Plugins = map[string]json.RawMessage{"argoproj-labs/gatewayAPI": json.RawMessage(`{}`)}
		}, "spec.strategy.canary.trafficRouting.plugins"},
		{"deadline not above minReady", func(r *Rollout) {
			r.Spec.MinReadySeconds = 30
			r.Spec.ProgressDeadlineSeconds = ptr(int32(30))
		}, "spec.progressDeadlineSeconds"},
		{"bluegreen same services", func(r *Rollout) {
			r.Spec.Strategy = RolloutStrategy{BlueGreen: &BlueGreenStrategy{ActiveService: "a", PreviewService: "a"}}
		}, "spec.strategy.blueGreen.previewService"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			tc.edit(r)
			errs := r.Validate()
			for _, e := range errs {
				if e.Field == tc.field {
					return
				}
			}
			t.Errorf("no error on %s; got %v", tc.field, errs)
		})
	}
}

func TestAnalysisValidate(t *testing.T) {
	base := func() *AnalysisTemplate {
		var a AnalysisTemplate
		if err := yaml.UnmarshalStrict([]byte(`
apiVersion: meridian.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: sr}
spec:
  args: [{name: svc}]
  metrics:
  - name: sr
    interval: 30s
    count: 3
    successCondition: result >= 0.95
    provider: {meridian: {metric: success-rate, window: 1m, minRequests: 10}}
`), &a); err != nil {
			t.Fatal(err)
		}
		return &a
	}
	if errs := base().Validate(); len(errs) > 0 {
		t.Fatalf("base: %v", errs)
	}
	m := func(a *AnalysisTemplate) *Metric { return &a.Spec.Metrics[0] }
	for _, tc := range []struct {
		name  string
		edit  func(a *AnalysisTemplate)
		field string
	}{
		{"no metrics", func(a *AnalysisTemplate) { a.Spec.Metrics = nil }, "spec.metrics"},
		{"duplicate metric", func(a *AnalysisTemplate) { a.Spec.Metrics = append(a.Spec.Metrics, a.Spec.Metrics[0]) }, "spec.metrics[1].name"},
		{"count without interval", func(a *AnalysisTemplate) { m(a).Interval = "" }, "spec.metrics[0].interval"},
		{"bad interval", func(a *AnalysisTemplate) { m(a).Interval = "often" }, "spec.metrics[0].interval"},
		{"bad count", func(a *AnalysisTemplate) { m(a).Count = ptr(intstr.FromString("three")) }, "spec.metrics[0].count"},
		{"negative failureLimit", func(a *AnalysisTemplate) { m(a).FailureLimit = ptr(intstr.FromInt32(-2)) }, "spec.metrics[0].failureLimit"},
		{"two providers", func(a *AnalysisTemplate) { m(a).Provider.Web = &WebMetric{URL: "http://x"} }, "spec.metrics[0].provider"},
		{"no provider", func(a *AnalysisTemplate) { m(a).Provider = MetricProvider{} }, "spec.metrics[0].provider"},
		{"bad window", func(a *AnalysisTemplate) { m(a).Provider.Meridian.Window = "0s" }, "spec.metrics[0].provider.meridian.window"},
		{"bad metric", func(a *AnalysisTemplate) { m(a).Provider.Meridian.Metric = "errors" }, "spec.metrics[0].provider.meridian.metric"},
		{"prometheus without query", func(a *AnalysisTemplate) {
			m(a).Provider = MetricProvider{Prometheus: &PrometheusMetric{Address: "http://p"}}
		}, "spec.metrics[0].provider.prometheus.query"},
		{"web GET with body", func(a *AnalysisTemplate) {
			m(a).Provider = MetricProvider{Web: &WebMetric{URL: "http://x", Body: "{}"}}
		}, "spec.metrics[0].provider.web.body"},
		{"value and valueFrom", func(a *AnalysisTemplate) {
			a.Spec.Args[0].Value = ptr("x")
			a.Spec.Args[0].ValueFrom = &ValueFrom{SecretKeyRef: &SecretKeyRef{Name: "s", Key: "k"}}
		}, "spec.args[0].valueFrom"},
		{"dryRun unknown metric", func(a *AnalysisTemplate) { a.Spec.DryRun = []DryRun{{MetricName: "nope"}} }, "spec.dryRun[0].metricName"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := base()
			tc.edit(a)
			errs := a.Validate()
			for _, e := range errs {
				if e.Field == tc.field {
					return
				}
			}
			t.Errorf("no error on %s; got %v", tc.field, errs)
		})
	}
}

// The CRDs accept every Argo manifest on a real kube-apiserver, with
// strict field validation, and keep every value (nothing pruned); the
// scale subresource reads Argo's paths; the schema rejects what it can.
func TestCRDsAcceptArgoManifests(t *testing.T) {
	cfg := apiserver.Start(t, "../crds")
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	resources := map[string]string{"Rollout": "rollouts", "AnalysisTemplate": "analysistemplates", "ClusterAnalysisTemplate": "clusteranalysistemplates", "AnalysisRun": "analysisruns"}
	createNS(t, dyn, "demo")

	for name, doc := range argoDocs(t) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatal(err)
		}
		gvr := GroupVersion.WithResource(resources[u.GetKind()])
		var ri dynamic.ResourceInterface = dyn.Resource(gvr)
		if u.GetKind() != "ClusterAnalysisTemplate" {
			if u.GetNamespace() == "" {
				u.SetNamespace("default")
			}
			ri = dyn.Resource(gvr).Namespace(u.GetNamespace())
		}
		status, hasStatus := u.Object["status"]
		got, err := ri.Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"})
		if err != nil {
			t.Fatalf("%s: create: %v", name, err)
		}
		if d := lost("", u.Object["spec"], got.Object["spec"]); d != "" {
			t.Errorf("%s: the API server dropped spec%s", name, d)
		}
		if hasStatus {
			got.Object["status"] = status
			got, err = ri.UpdateStatus(ctx, got, metav1.UpdateOptions{FieldValidation: "Strict"})
			if err != nil {
				t.Fatalf("%s: update status: %v", name, err)
			}
			if d := lost("", status, got.Object["status"]); d != "" {
				t.Errorf("%s: the API server dropped status%s", name, d)
			}
		}
	}

	// The scale subresource, as an HPA reads it.
	scale, err := dyn.Resource(GroupVersion.WithResource("rollouts")).Namespace("demo").Get(ctx, "rollouts-demo", metav1.GetOptions{}, "scale")
	if err != nil {
		t.Fatal(err)
	}
	if r, _, _ := unstructured.NestedInt64(scale.Object, "spec", "replicas"); r != 5 {
		t.Errorf("scale spec.replicas = %d, want 5", r)
	}
	if sel, _, _ := unstructured.NestedString(scale.Object, "status", "selector"); sel != "app=rollouts-demo" {
		t.Errorf("scale status.selector = %q", sel)
	}

	// The schema rejects what it can express, naming the field.
	for _, tc := range []struct{ doc, field string }{
		{`{apiVersion: meridian.io/v1alpha1, kind: Rollout, metadata: {name: bad1}, spec: {strategy: {canary: {steps: [{setWeight: 150}]}}}}`, "setWeight"},
		{`{apiVersion: meridian.io/v1alpha1, kind: Rollout, metadata: {name: bad2}, spec: {workloadRef: {kind: Deployment, name: d, scaleDown: sometimes}, strategy: {canary: {}}}}`, "scaleDown"},
		{`{apiVersion: meridian.io/v1alpha1, kind: Rollout, metadata: {name: bad3}, spec: {strategy: {blueGreen: {}}}}`, "activeService"},
		{`{apiVersion: meridian.io/v1alpha1, kind: Rollout, metadata: {name: bad4}, spec: {strategy: {canary: {steps: [{experiment: {}}]}}}}`, "experiment"},
		{`{apiVersion: meridian.io/v1alpha1, kind: AnalysisTemplate, metadata: {name: bad5}, spec: {metrics: [{name: m, provider: {meridian: {metric: errors}}}]}}`, "metric"},
		{`{apiVersion: meridian.io/v1alpha1, kind: AnalysisTemplate, metadata: {name: bad6}, spec: {metrics: []}}`, "metrics"},
	} {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(tc.doc), &u.Object); err != nil {
			t.Fatal(err)
		}
		gvr := GroupVersion.WithResource(resources[u.GetKind()])
		_, err := dyn.Resource(gvr).Namespace("default").Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"})
		if err == nil || !(apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: created or wrong error: %v", u.GetName(), err)
		}
	}
}

func createNS(t *testing.T, dyn dynamic.Interface, name string) {
	t.Helper()
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name}}}
	if _, err := dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
