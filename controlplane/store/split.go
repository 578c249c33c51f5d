package store

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	splitv1alpha1 "github.com/meridian-mesh/meridian/api/split/v1alpha1"
	splitv1alpha2 "github.com/meridian-mesh/meridian/api/split/v1alpha2"
	splitv1alpha3 "github.com/meridian-mesh/meridian/api/split/v1alpha3"
	splitv1alpha4 "github.com/meridian-mesh/meridian/api/split/v1alpha4"
)

// TrafficSplitFrom normalizes an SMI TrafficSplit of any version. It reports
// false if obj is not a TrafficSplit. v1alpha1 weights are quantities and
// become thousandths ("500m" → 500, "1" → 1000); later versions' integer
// weights are kept. Either way weights are only relative within one split.
// Negative weights become 0. Matches (v1alpha3+) are not represented: the
// split applies to all of the apex's traffic.
func TrafficSplitFrom(obj runtime.Object) (TrafficSplit, bool, error) {
	var (
		meta     metav1.Object
		service  string
		backends []Backend
	)
	switch o := obj.(type) {
	case *splitv1alpha1.TrafficSplit:
		meta, service = o, o.Spec.Service
		for _, b := range o.Spec.Backends {
			backends = append(backends, Backend{Service: b.Service, Weight: b.Weight.MilliValue()})
		}
	case *splitv1alpha2.TrafficSplit:
		meta, service = o, o.Spec.Service
		for _, b := range o.Spec.Backends {
			backends = append(backends, Backend{Service: b.Service, Weight: int64(b.Weight)})
		}
	case *splitv1alpha3.TrafficSplit:
		meta, service = o, o.Spec.Service
		for _, b := range o.Spec.Backends {
			backends = append(backends, Backend{Service: b.Service, Weight: int64(b.Weight)})
		}
	case *splitv1alpha4.TrafficSplit:
		meta, service = o, o.Spec.Service
		for _, b := range o.Spec.Backends {
			backends = append(backends, Backend{Service: b.Service, Weight: int64(b.Weight)})
		}
	default:
		return TrafficSplit{}, false, nil
	}
	if service == "" {
		return TrafficSplit{}, true, fmt.Errorf("store: TrafficSplit %s/%s has no spec.service", meta.GetNamespace(), meta.GetName())
	}
	for i := range backends {
		if backends[i].Weight < 0 {
			backends[i].Weight = 0
		}
	}
	return TrafficSplit{
		Key:      Key{meta.GetNamespace(), meta.GetName()},
		Service:  service,
		Backends: backends,
	}, true, nil
}
