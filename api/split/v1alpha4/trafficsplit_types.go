package v1alpha4

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TrafficSplit sends the traffic addressed to a root (apex) service to
// backend services by weight.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=ts,categories=smi
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:storageversion
type TrafficSplit struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec TrafficSplitSpec `json:"spec"`
}

// TrafficSplitList is a list of TrafficSplits.
//
// +kubebuilder:object:root=true
type TrafficSplitList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficSplit `json:"items"`
}

// TrafficSplitSpec names the apex service and its weighted backends.
type TrafficSplitSpec struct {
	// Service is the apex service: clients address it, and its traffic is
	// split among the backends. It is in the TrafficSplit's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Service string `json:"service"`

	// Backends receive the apex service's traffic by weight.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Backends []TrafficSplitBackend `json:"backends"`

	// Matches restrict the split to requests matching one of the referenced
	// route groups (for example an HTTPRouteGroup). Meridian does not
	// implement matches yet: a split with matches is applied to all traffic.
	// +optional
	// +listType=atomic
	Matches []corev1.TypedLocalObjectReference `json:"matches,omitempty"`
}

// TrafficSplitBackend is one weighted backend service.
type TrafficSplitBackend struct {
	// Service is the backend service, in the TrafficSplit's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Service string `json:"service"`

	// Weight is the backend's share relative to the other backends.
	// +required
	// +kubebuilder:validation:Minimum=0
	Weight int `json:"weight"`
}
