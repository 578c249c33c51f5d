package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ServiceProfile describes the routes of one service and how to treat their
// requests: which responses are failures, which routes are retryable, their
// timeouts, the retry budget, and traffic-split overrides. It is shaped like
// Linkerd's ServiceProfile (linkerd.io/v1alpha2), so existing profiles carry
// over by changing the apiVersion.
//
// The name is the service's fully qualified name,
// <service>.<namespace>.svc.<cluster-domain> (for example
// web-svc.emojivoto.svc.cluster.local), and the profile lives in the
// service's namespace.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=sp,categories=meridian
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ServiceProfile struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ServiceProfileSpec `json:"spec"`
}

// ServiceProfileList is a list of ServiceProfiles.
//
// +kubebuilder:object:root=true
type ServiceProfileList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ServiceProfile `json:"items"`
}

// ServiceProfileSpec is the desired treatment of a service's requests.
type ServiceProfileSpec struct {
	// Routes are matched in order; the first route whose condition matches
	// a request applies to it.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=1000
	Routes []RouteSpec `json:"routes,omitempty"`

	// RetryBudget limits retries to a fraction of the requests, so that
	// retries cannot multiply the load on a failing service.
	// +optional
	RetryBudget *RetryBudget `json:"retryBudget,omitempty"`

	// DstOverrides sends the service's traffic to other authorities by
	// weight (a traffic split written on the profile).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	DstOverrides []WeightedDst `json:"dstOverrides,omitempty"`

	// OpaquePorts are ports whose traffic is proxied as opaque TCP, without
	// protocol detection.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	OpaquePorts []int32 `json:"opaquePorts,omitempty"`
}

// RouteSpec is one route of a service.
type RouteSpec struct {
	// Name identifies the route in metrics (the rt_route label), for
	// example "GET /api/list".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Name string `json:"name"`

	// Condition selects the requests this route applies to.
	// +required
	Condition *RequestMatch `json:"condition"`

	// ResponseClasses classify responses; the first matching class decides
	// whether a response is a failure. Without a match, 5xx is a failure.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	ResponseClasses []ResponseClass `json:"responseClasses,omitempty"`

	// IsRetryable lets the proxy retry failed requests of this route,
	// within the retry budget.
	// +optional
	IsRetryable bool `json:"isRetryable,omitempty"`

	// Timeout bounds each request of this route, retries included, for
	// example "250ms" or "1m30s".
	// +optional
	Timeout Duration `json:"timeout,omitempty"`
}

// RequestMatch is a predicate on requests. The fields set are combined with
// AND; all, any and not nest further matches. Nested matches are checked by
// the control plane, not by the API server's schema.
//
// +kubebuilder:validation:MinProperties=1
type RequestMatch struct {
	// All matches when every nested match does.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Type=object
	// +kubebuilder:validation:items:XPreserveUnknownFields
	All []RequestMatch `json:"all,omitempty"`

	// Any matches when at least one nested match does.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Type=object
	// +kubebuilder:validation:items:XPreserveUnknownFields
	Any []RequestMatch `json:"any,omitempty"`

	// Not matches when the nested match does not.
	// +optional
	// +kubebuilder:validation:Type=object
	// +kubebuilder:validation:XPreserveUnknownFields
	Not *RequestMatch `json:"not,omitempty"`

	// PathRegex matches the whole request path (it is anchored), in Go's
	// RE2 syntax, for example "/api/vote/[^/]*".
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	PathRegex string `json:"pathRegex,omitempty"`

	// Method matches the HTTP method, for example GET.
	// +optional
	// +kubebuilder:validation:Pattern=`^[A-Za-z]+$`
	// +kubebuilder:validation:MaxLength=32
	Method string `json:"method,omitempty"`
}

// ResponseClass says whether the responses it matches are failures.
type ResponseClass struct {
	// Condition selects the responses of this class.
	// +required
	Condition *ResponseMatch `json:"condition"`

	// IsFailure marks the matched responses as failures (they count against
	// the success rate and may be retried).
	// +optional
	IsFailure bool `json:"isFailure,omitempty"`
}

// ResponseMatch is a predicate on responses. The fields set are combined
// with AND; all, any and not nest further matches. Nested matches are
// checked by the control plane, not by the API server's schema.
//
// +kubebuilder:validation:MinProperties=1
type ResponseMatch struct {
	// All matches when every nested match does.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Type=object
	// +kubebuilder:validation:items:XPreserveUnknownFields
	All []ResponseMatch `json:"all,omitempty"`

	// Any matches when at least one nested match does.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Type=object
	// +kubebuilder:validation:items:XPreserveUnknownFields
	Any []ResponseMatch `json:"any,omitempty"`

	// Not matches when the nested match does not.
	// +optional
	// +kubebuilder:validation:Type=object
	// +kubebuilder:validation:XPreserveUnknownFields
	Not *ResponseMatch `json:"not,omitempty"`

	// Status matches HTTP status codes in a range.
	// +optional
	Status *Range `json:"status,omitempty"`
}

// Range is an inclusive range of HTTP status codes; a missing bound is open.
//
// +kubebuilder:validation:MinProperties=1
// +kubebuilder:validation:XValidation:rule="!has(self.min) || !has(self.max) || self.min <= self.max",message="min must not be greater than max"
type Range struct {
	// +optional
	// +kubebuilder:validation:Minimum=100
	// +kubebuilder:validation:Maximum=599
	Min int32 `json:"min,omitempty"`

	// +optional
	// +kubebuilder:validation:Minimum=100
	// +kubebuilder:validation:Maximum=599
	Max int32 `json:"max,omitempty"`
}

// RetryBudget allows retries up to RetryRatio times the requests of the
// last TTL, and at least MinRetriesPerSecond.
type RetryBudget struct {
	// RetryRatio is the fraction of requests that may be retried, for
	// example 0.2 (20% extra load at most).
	// +required
	// +kubebuilder:validation:Type=number
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	RetryRatio Ratio `json:"retryRatio"`

	// MinRetriesPerSecond allows this many retries per second regardless of
	// the ratio, so that services with little traffic can retry at all.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	MinRetriesPerSecond int32 `json:"minRetriesPerSecond"`

	// TTL is the window over which requests and retries are counted, for
	// example "10s".
	// +required
	TTL Duration `json:"ttl"`
}

// WeightedDst is one destination of a traffic split written on a profile.
type WeightedDst struct {
	// Authority is the destination's host[:port], for example
	// web-v2.emojivoto.svc.cluster.local:80.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Authority string `json:"authority"`

	// Weight is the destination's share, relative to the other
	// destinations: an integer or a quantity such as "500m".
	// +required
	Weight resource.Quantity `json:"weight"`
}
