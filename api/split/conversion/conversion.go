// Package conversion converts SMI TrafficSplits between the four served
// versions (split.smi-spec.io v1alpha1 to v1alpha4) through the hub, the
// storage version v1alpha4. It is pure: no I/O, no clients; the conversion
// webhook (controlplane/conversion) calls it for the API server.
package conversion

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	splitv1alpha1 "github.com/meridian-mesh/meridian/api/split/v1alpha1"
	splitv1alpha2 "github.com/meridian-mesh/meridian/api/split/v1alpha2"
	splitv1alpha3 "github.com/meridian-mesh/meridian/api/split/v1alpha3"
	splitv1alpha4 "github.com/meridian-mesh/meridian/api/split/v1alpha4"
)

// Annotations that carry what an older version cannot hold through a round
// trip, as Kubernetes does for its own lossy conversions: set when
// converting down, read and removed when converting up.
const (
	// MatchesAnnotation holds v1alpha3/4 spec.matches (a JSON list of
	// TypedLocalObjectReference) on a v1alpha1/2 object.
	MatchesAnnotation = "split.meridian.io/matches"
	// WeightsAnnotation holds a v1alpha1 object's original weights (a JSON
	// list of quantity strings, e.g. ["500m","1"]) on the integer versions
	// when they could not be kept exactly (fractional weights are scaled by
	// 1000). They are restored only while the integer weights are still
	// the ones they convert to (a newer client may have changed them).
	WeightsAnnotation = "split.meridian.io/weights"
)

// Versions are the served versions, oldest first; Hub is the storage one.
var Versions = []string{"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"}

// Hub is the version every conversion goes through (the storage version).
const Hub = "v1alpha4"

// Kind is the converted kind.
const Kind = "TrafficSplit"

// Group is the API group of every version.
var Group = splitv1alpha4.GroupVersion.Group

// Convert returns obj (a *TrafficSplit of any version; not modified) as a
// *TrafficSplit of version, with apiVersion and kind set.
func Convert(obj runtime.Object, version string) (runtime.Object, error) {
	hub, err := ToHub(obj)
	if err != nil {
		return nil, err
	}
	return FromHub(hub, version)
}

// ToHub returns obj (a *TrafficSplit of any version; not modified) as a
// v1alpha4 TrafficSplit.
func ToHub(obj runtime.Object) (*splitv1alpha4.TrafficSplit, error) {
	hub := &splitv1alpha4.TrafficSplit{}
	hub.APIVersion, hub.Kind = splitv1alpha4.GroupVersion.String(), Kind
	switch in := obj.(type) {
	case *splitv1alpha4.TrafficSplit:
		out := in.DeepCopy()
		out.APIVersion, out.Kind = hub.APIVersion, hub.Kind
		return out, nil
	case *splitv1alpha3.TrafficSplit:
		in.ObjectMeta.DeepCopyInto(&hub.ObjectMeta)
		hub.Spec.Service = in.Spec.Service
		for _, b := range in.Spec.Backends {
			hub.Spec.Backends = append(hub.Spec.Backends, splitv1alpha4.TrafficSplitBackend{Service: b.Service, Weight: b.Weight})
		}
		hub.Spec.Matches = slices.Clone(in.Spec.Matches)
		return hub, nil
	case *splitv1alpha2.TrafficSplit:
		in.ObjectMeta.DeepCopyInto(&hub.ObjectMeta)
		hub.Spec.Service = in.Spec.Service
		for _, b := range in.Spec.Backends {
			hub.Spec.Backends = append(hub.Spec.Backends, splitv1alpha4.TrafficSplitBackend{Service: b.Service, Weight: b.Weight})
		}
		return hub, restoreMatches(hub)
	case *splitv1alpha1.TrafficSplit:
		in.ObjectMeta.DeepCopyInto(&hub.ObjectMeta)
		hub.Spec.Service = in.Spec.Service
		qs := make([]resource.Quantity, len(in.Spec.Backends))
		for i, b := range in.Spec.Backends {
			qs[i] = b.Weight
		}
		ws, scaled, err := Weights(qs)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", Kind, objName(&in.ObjectMeta), err)
		}
		for i, b := range in.Spec.Backends {
			hub.Spec.Backends = append(hub.Spec.Backends, splitv1alpha4.TrafficSplitBackend{Service: b.Service, Weight: ws[i]})
		}
		delete(hub.Annotations, WeightsAnnotation) // a stale one, from an earlier trip
		if scaled {
			orig := make([]string, len(qs))
			for i, q := range qs {
				orig[i] = q.String()
			}
			setAnnotation(&hub.ObjectMeta, WeightsAnnotation, orig)
		}
		return hub, restoreMatches(hub)
	case nil:
		return nil, fmt.Errorf("no %s to convert", Kind)
	default:
		return nil, fmt.Errorf("cannot convert a %T: only %s %s v1alpha1 to v1alpha4 are converted", obj, Group, Kind)
	}
}

// FromHub returns hub (not modified) as a *TrafficSplit of version.
func FromHub(hub *splitv1alpha4.TrafficSplit, version string) (runtime.Object, error) {
	switch version {
	case "v1alpha4":
		out := hub.DeepCopy()
		out.APIVersion, out.Kind = splitv1alpha4.GroupVersion.String(), Kind
		return out, nil
	case "v1alpha3":
		out := &splitv1alpha3.TrafficSplit{}
		out.APIVersion, out.Kind = splitv1alpha3.GroupVersion.String(), Kind
		hub.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
		out.Spec.Service = hub.Spec.Service
		for _, b := range hub.Spec.Backends {
			out.Spec.Backends = append(out.Spec.Backends, splitv1alpha3.TrafficSplitBackend{Service: b.Service, Weight: b.Weight})
		}
		out.Spec.Matches = slices.Clone(hub.Spec.Matches)
		return out, nil
	case "v1alpha2":
		out := &splitv1alpha2.TrafficSplit{}
		out.APIVersion, out.Kind = splitv1alpha2.GroupVersion.String(), Kind
		hub.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
		out.Spec.Service = hub.Spec.Service
		for _, b := range hub.Spec.Backends {
			out.Spec.Backends = append(out.Spec.Backends, splitv1alpha2.TrafficSplitBackend{Service: b.Service, Weight: b.Weight})
		}
		stashMatches(&out.ObjectMeta, hub.Spec.Matches)
		return out, nil
	case "v1alpha1":
		out := &splitv1alpha1.TrafficSplit{}
		out.APIVersion, out.Kind = splitv1alpha1.GroupVersion.String(), Kind
		hub.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
		out.Spec.Service = hub.Spec.Service
		orig := originalWeights(hub)
		delete(out.Annotations, WeightsAnnotation)
		if len(out.Annotations) == 0 {
			out.Annotations = nil
		}
		for i, b := range hub.Spec.Backends {
			w := *resource.NewQuantity(int64(b.Weight), resource.DecimalSI)
			if orig != nil {
				w = orig[i]
			}
			out.Spec.Backends = append(out.Spec.Backends, splitv1alpha1.TrafficSplitBackend{Service: b.Service, Weight: w})
		}
		stashMatches(&out.ObjectMeta, hub.Spec.Matches)
		return out, nil
	default:
		return nil, fmt.Errorf("%s %s: cannot convert to %s/%s: the served versions are %v", Kind, objName(&hub.ObjectMeta), Group, version, Versions)
	}
}

// Weights turns v1alpha1 weights into the integers of the later versions.
// When every weight is a whole number they are its value ("20" → 20);
// when any has a fractional part (such as "500m"), every weight is scaled
// by 1000 (thousandths, rounded up) so that their ratios are kept, and
// scaled is true. Negative weights, and weights too large for an int once
// scaled, are errors naming the field.
func Weights(qs []resource.Quantity) (ws []int, scaled bool, err error) {
	ws = make([]int, len(qs))
	for i, q := range qs {
		if q.Sign() < 0 {
			return nil, false, fmt.Errorf("spec.backends[%d].weight: %s is negative: a weight is a number from 0 (an integer, or a quantity such as \"500m\")", i, q.String())
		}
		v, ok := q.AsInt64()
		if !ok {
			if q.Cmp(*resource.NewQuantity(math.MaxInt64, resource.DecimalSI)) > 0 {
				return nil, false, fmt.Errorf("spec.backends[%d].weight: %s is too large: a weight is at most %d", i, q.String(), maxWeight(1))
			}
			scaled = true
			continue
		}
		if int64(int(v)) != v {
			return nil, false, fmt.Errorf("spec.backends[%d].weight: %s is too large: a weight is at most %d", i, q.String(), maxWeight(1))
		}
		ws[i] = int(v)
	}
	if !scaled {
		return ws, false, nil
	}
	limit := *resource.NewQuantity(maxWeight(1000), resource.DecimalSI)
	for i, q := range qs {
		if q.Cmp(limit) > 0 {
			return nil, false, fmt.Errorf("spec.backends[%d].weight: %s is too large: with a fractional weight in the split every weight is counted in thousandths, so a weight is at most %d", i, q.String(), maxWeight(1000))
		}
		ws[i] = int(q.MilliValue())
	}
	return ws, true, nil
}

// maxWeight is the largest weight that, multiplied by scale, fits an int.
func maxWeight(scale int64) int64 { return int64(math.MaxInt) / scale }

// originalWeights are the WeightsAnnotation's quantities when they still
// convert to hub's weights, else nil.
func originalWeights(hub *splitv1alpha4.TrafficSplit) []resource.Quantity {
	raw, ok := hub.Annotations[WeightsAnnotation]
	if !ok {
		return nil
	}
	var ss []string
	if json.Unmarshal([]byte(raw), &ss) != nil || len(ss) != len(hub.Spec.Backends) {
		return nil
	}
	qs := make([]resource.Quantity, len(ss))
	for i, s := range ss {
		q, err := resource.ParseQuantity(s)
		if err != nil {
			return nil
		}
		qs[i] = q
	}
	ws, _, err := Weights(qs)
	if err != nil {
		return nil
	}
	for i, b := range hub.Spec.Backends {
		if ws[i] != b.Weight {
			return nil
		}
	}
	return qs
}

// stashMatches keeps matches in MatchesAnnotation of an object whose
// version cannot hold them (and clears a stale one when there are none).
func stashMatches(m *metav1.ObjectMeta, matches []corev1.TypedLocalObjectReference) {
	if len(matches) == 0 {
		delete(m.Annotations, MatchesAnnotation)
		if len(m.Annotations) == 0 {
			m.Annotations = nil
		}
		return
	}
	setAnnotation(m, MatchesAnnotation, matches)
}

// restoreMatches moves MatchesAnnotation back into hub's spec.matches.
func restoreMatches(hub *splitv1alpha4.TrafficSplit) error {
	raw, ok := hub.Annotations[MatchesAnnotation]
	if !ok {
		return nil
	}
	var ms []corev1.TypedLocalObjectReference
	if err := json.Unmarshal([]byte(raw), &ms); err != nil {
		return fmt.Errorf("%s %s: metadata.annotations[%s]: %v: it holds spec.matches for the versions without them, a JSON list of {apiGroup, kind, name}", Kind, objName(&hub.ObjectMeta), MatchesAnnotation, err)
	}
	delete(hub.Annotations, MatchesAnnotation)
	if len(hub.Annotations) == 0 {
		hub.Annotations = nil
	}
	hub.Spec.Matches = ms
	return nil
}

func setAnnotation(m *metav1.ObjectMeta, key string, v any) {
	b, _ := json.Marshal(v) // lists of strings and of plain structs always marshal
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations[key] = string(b)
}

// objName is namespace/name, or name, or "(unnamed)".
func objName(m *metav1.ObjectMeta) string {
	switch {
	case m.Name == "" && m.GenerateName == "":
		return "(unnamed)"
	case m.Name == "":
		return joinNS(m.Namespace, m.GenerateName+"*")
	default:
		return joinNS(m.Namespace, m.Name)
	}
}

func joinNS(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}
