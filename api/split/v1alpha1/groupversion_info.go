// Package v1alpha1 holds the SMI TrafficSplit API, split.smi-spec.io/v1alpha1, as
// far as Meridian reads it. The SMI project is archived and its Go SDK
// unmaintained, so the types are defined here; every served version of the
// CRD is in api/crds.
//
// +kubebuilder:object:generate=true
// +groupName=split.smi-spec.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "split.smi-spec.io", Version: "v1alpha1"}

	// SchemeBuilder registers this package's types with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &TrafficSplit{}, &TrafficSplitList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
