package conversion

import (
	"encoding/json"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	splitv1alpha1 "github.com/meridian-mesh/meridian/api/split/v1alpha1"
	splitv1alpha2 "github.com/meridian-mesh/meridian/api/split/v1alpha2"
	splitv1alpha3 "github.com/meridian-mesh/meridian/api/split/v1alpha3"
	splitv1alpha4 "github.com/meridian-mesh/meridian/api/split/v1alpha4"
)

// ConvertJSON converts one TrafficSplit in JSON (what a ConversionReview
// carries) to apiVersion (e.g. "split.smi-spec.io/v1alpha2").
func ConvertJSON(raw []byte, apiVersion string) ([]byte, error) {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil || gv.Group != Group {
		return nil, fmt.Errorf("desired apiVersion %q: only %s versions %v are converted", apiVersion, Group, Versions)
	}
	obj, err := Decode(raw)
	if err != nil {
		return nil, err
	}
	out, err := Convert(obj, gv.Version)
	if err != nil {
		return nil, err
	}
	return json.Marshal(out)
}

// Decode reads a TrafficSplit of any version from JSON into its typed
// object. The integer versions also accept string and fractional weights,
// converted as v1alpha1's are (Weights): TrafficSplits written as v1alpha1
// while the CRD had no conversion (strategy None, as SMI shipped it) are
// stored as v1alpha4 with v1alpha1's weights, and must still convert.
func Decode(raw []byte) (runtime.Object, error) {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(raw, &tm); err != nil {
		return nil, fmt.Errorf("decoding a %s: %w", Kind, err)
	}
	gv, err := schema.ParseGroupVersion(tm.APIVersion)
	if err != nil || gv.Group != Group || tm.Kind != Kind {
		return nil, fmt.Errorf("cannot convert apiVersion %q kind %q: only %s %s versions %v are converted", tm.APIVersion, tm.Kind, Group, Kind, Versions)
	}
	var obj runtime.Object
	switch gv.Version {
	case "v1alpha1":
		obj = &splitv1alpha1.TrafficSplit{}
	case "v1alpha2":
		obj = &splitv1alpha2.TrafficSplit{}
	case "v1alpha3":
		obj = &splitv1alpha3.TrafficSplit{}
	case "v1alpha4":
		obj = &splitv1alpha4.TrafficSplit{}
	default:
		return nil, fmt.Errorf("cannot convert from %s: the served versions are %v", tm.APIVersion, Versions)
	}
	err = json.Unmarshal(raw, obj)
	var typeErr *json.UnmarshalTypeError
	if gv.Version != "v1alpha1" && errors.As(err, &typeErr) {
		// Possibly weights that are not integers (see above).
		if raw, err = integerWeights(raw); err != nil {
			return nil, err
		}
		err = json.Unmarshal(raw, obj)
	}
	if err != nil {
		return nil, fmt.Errorf("decoding %s %s: %w", Kind, nameOf(raw), err)
	}
	return obj, nil
}

// integerWeights rewrites raw's spec.backends[].weight, which may be
// strings or fractions, as the integers Weights makes of them.
func integerWeights(raw []byte) ([]byte, error) {
	var weights struct {
		Spec struct {
			Backends []struct {
				Weight resource.Quantity `json:"weight"`
			} `json:"backends"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(raw, &weights); err != nil {
		return nil, fmt.Errorf("decoding %s %s: spec.backends[].weight: %w: a weight is an integer from 0", Kind, nameOf(raw), err)
	}
	qs := make([]resource.Quantity, len(weights.Spec.Backends))
	for i, b := range weights.Spec.Backends {
		qs[i] = b.Weight
	}
	ws, _, err := Weights(qs)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", Kind, nameOf(raw), err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	spec, _ := m["spec"].(map[string]any)
	backends, _ := spec["backends"].([]any)
	for i, b := range backends {
		if b, ok := b.(map[string]any); ok && i < len(ws) {
			b["weight"] = ws[i]
		}
	}
	return json.Marshal(m)
}

// nameOf is the object's namespace/name as far as raw says.
func nameOf(raw []byte) string {
	var o struct {
		metav1.ObjectMeta `json:"metadata"`
	}
	_ = json.Unmarshal(raw, &o)
	return objName(&o.ObjectMeta)
}
