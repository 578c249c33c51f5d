package v1alpha1

import (
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Rollout replaces a Deployment's rolling update with a canary or a
// blue-green release: traffic moves to the new version step by step through
// Meridian's data plane, and the new version is judged on its golden metrics
// before it is promoted. Its fields are Argo Rollouts' (argoproj.io/v1alpha1,
// v1.8), with the same names and meanings, so an Argo Rollout carries over by
// changing its apiVersion.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=ro,categories=meridian
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.HPAReplicas,selectorpath=.status.selector
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.spec.replicas`,description="Number of desired pods"
// +kubebuilder:printcolumn:name="Current",type=integer,JSONPath=`.status.replicas`,description="Total number of non-terminated pods targeted by this rollout"
// +kubebuilder:printcolumn:name="Up-to-date",type=integer,JSONPath=`.status.updatedReplicas`,description="Total number of non-terminated pods targeted by this rollout that have the desired template spec"
// +kubebuilder:printcolumn:name="Available",type=integer,JSONPath=`.status.availableReplicas`,description="Total number of available pods (ready for at least minReadySeconds) targeted by this rollout"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`,description="Time since resource was created"
type Rollout struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec RolloutSpec `json:"spec"`
	// +optional
	Status RolloutStatus `json:"status,omitempty"`
}

// RolloutList is a list of Rollouts.
//
// +kubebuilder:object:root=true
type RolloutList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Rollout `json:"items"`
}

// RolloutSpec is the desired state of a Rollout.
type RolloutSpec struct {
	// Replicas is the number of desired pods (default 1). An HPA sets it
	// through the scale subresource.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Replicas *int32 `json:"replicas,omitempty"`

	// Selector selects the Rollout's pods; it must match the template's
	// labels. Required with an inline template; with a workloadRef the
	// Deployment's selector is used when it is omitted.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// Template is the pod template, unless WorkloadRef names a Deployment
	// that holds it. The CRD keeps it schemaless (as Argo Rollouts' CRD
	// keeps it without descriptions) so the CRD stays under the 256 KiB
	// that client-side `kubectl apply` can record; the ReplicaSets made from
	// it are validated by the API server when they are created.
	// +optional
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	Template *corev1.PodTemplateSpec `json:"template,omitempty"`

	// WorkloadRef takes the pod template (and selector) from an existing
	// Deployment, the common way in: the Deployment stays as it is in Git.
	// +optional
	WorkloadRef *ObjectRef `json:"workloadRef,omitempty"`

	// MinReadySeconds is how long a new pod must be ready, without any of
	// its containers crashing, to count as available (default 0).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MinReadySeconds int32 `json:"minReadySeconds,omitempty"`

	// Strategy is the canary or the blue-green strategy; exactly one.
	// +required
	Strategy RolloutStrategy `json:"strategy"`

	// RevisionHistoryLimit is the number of old ReplicaSets kept for undo
	// (default 10).
	// +optional
	// +kubebuilder:validation:Minimum=0
	RevisionHistoryLimit *int32 `json:"revisionHistoryLimit,omitempty"`

	// Paused stops the Rollout at its current step until it is unset.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// ProgressDeadlineSeconds is how long the Rollout may make no progress
	// (outside pauses) before it is Degraded with ProgressDeadlineExceeded
	// (default 600).
	// +optional
	// +kubebuilder:validation:Minimum=1
	ProgressDeadlineSeconds *int32 `json:"progressDeadlineSeconds,omitempty"`

	// ProgressDeadlineAbort aborts the update when the progress deadline
	// is exceeded.
	// +optional
	ProgressDeadlineAbort bool `json:"progressDeadlineAbort,omitempty"`

	// RestartAt restarts every pod of the Rollout, one by one, once this
	// time has passed.
	// +optional
	RestartAt *metav1.Time `json:"restartAt,omitempty"`

	// Analysis limits how many finished AnalysisRuns are kept.
	// +optional
	Analysis *AnalysisRunStrategy `json:"analysis,omitempty"`
}

// ObjectRef names the workload that provides the pod template.
type ObjectRef struct {
	// APIVersion of the referent: apps/v1.
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// Kind of the referent: Deployment.
	// +optional
	Kind string `json:"kind,omitempty"`
	// Name of the referent, in the Rollout's namespace.
	// +optional
	Name string `json:"name,omitempty"`
	// ScaleDown says what happens to the Deployment: never (it keeps its
	// replicas; the default), onsuccess (scaled to 0 once the Rollout is
	// healthy) or progressively (scaled down as the Rollout scales up).
	// +optional
	// +kubebuilder:validation:Enum=never;onsuccess;progressively
	ScaleDown string `json:"scaleDown,omitempty"`
}

// The values of ObjectRef.ScaleDown.
const (
	ScaleDownNever         = "never"
	ScaleDownOnSuccess     = "onsuccess"
	ScaleDownProgressively = "progressively"
)

// DefaultRolloutUniqueLabelKey is the label (and selector term) that a
// Rollout's ReplicaSets and pods carry with their pod-template hash, as Argo
// Rollouts names it, so tools that read it keep working.
const DefaultRolloutUniqueLabelKey = "rollouts-pod-template-hash"

// AnalysisRunStrategy limits the AnalysisRuns kept in history.
type AnalysisRunStrategy struct {
	// SuccessfulRunHistoryLimit is the number of successful runs kept
	// (default 5).
	// +optional
	// +kubebuilder:validation:Minimum=0
	SuccessfulRunHistoryLimit *int32 `json:"successfulRunHistoryLimit,omitempty"`
	// UnsuccessfulRunHistoryLimit is the number of Failed, Error or
	// Inconclusive runs kept (default 5).
	// +optional
	// +kubebuilder:validation:Minimum=0
	UnsuccessfulRunHistoryLimit *int32 `json:"unsuccessfulRunHistoryLimit,omitempty"`
}

// RolloutStrategy holds one strategy.
type RolloutStrategy struct {
	// +optional
	BlueGreen *BlueGreenStrategy `json:"blueGreen,omitempty"`
	// +optional
	Canary *CanaryStrategy `json:"canary,omitempty"`
}

// BlueGreenStrategy runs the new version beside the old one behind a
// preview Service, then switches the active Service to it at once.
type BlueGreenStrategy struct {
	// ActiveService is the Service that receives production traffic; the
	// Rollout points it at the active ReplicaSet's pods.
	// +required
	// +kubebuilder:validation:MinLength=1
	ActiveService string `json:"activeService"`
	// PreviewService, when set, points at the new ReplicaSet before it is
	// promoted.
	// +optional
	PreviewService string `json:"previewService,omitempty"`
	// PreviewReplicaCount runs this many new pods before promotion; the new
	// ReplicaSet is scaled up fully before the switch.
	// +optional
	// +kubebuilder:validation:Minimum=0
	PreviewReplicaCount *int32 `json:"previewReplicaCount,omitempty"`
	// AutoPromotionEnabled promotes on its own once the new ReplicaSet is
	// available (default true); false pauses for `promote`.
	// +optional
	AutoPromotionEnabled *bool `json:"autoPromotionEnabled,omitempty"`
	// AutoPromotionSeconds waits this long after the new ReplicaSet is
	// available before promoting on its own (default 0).
	// +optional
	// +kubebuilder:validation:Minimum=0
	AutoPromotionSeconds int32 `json:"autoPromotionSeconds,omitempty"`
	// MaxUnavailable bounds the pods unavailable during a restart (default
	// 25%).
	// +optional
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`
	// ScaleDownDelaySeconds waits this long after the switch before scaling
	// the old ReplicaSet down (default 30), so every proxy has moved on.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ScaleDownDelaySeconds *int32 `json:"scaleDownDelaySeconds,omitempty"`
	// ScaleDownDelayRevisionLimit bounds the old ReplicaSets left running
	// while they wait for their scale-down.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ScaleDownDelayRevisionLimit *int32 `json:"scaleDownDelayRevisionLimit,omitempty"`
	// PrePromotionAnalysis must succeed before the active Service switches.
	// +optional
	PrePromotionAnalysis *RolloutAnalysis `json:"prePromotionAnalysis,omitempty"`
	// PostPromotionAnalysis runs after the switch; if it fails the Rollout
	// aborts and switches back.
	// +optional
	PostPromotionAnalysis *RolloutAnalysis `json:"postPromotionAnalysis,omitempty"`
	// PreviewMetadata is added to the new pods while they are the preview.
	// +optional
	PreviewMetadata *PodTemplateMetadata `json:"previewMetadata,omitempty"`
	// ActiveMetadata is added to the pods while they are the active ones.
	// +optional
	ActiveMetadata *PodTemplateMetadata `json:"activeMetadata,omitempty"`
	// AbortScaleDownDelaySeconds waits this long after an abort before
	// scaling the preview ReplicaSet down (default 30; 0 keeps it).
	// +optional
	// +kubebuilder:validation:Minimum=0
	AbortScaleDownDelaySeconds *int32 `json:"abortScaleDownDelaySeconds,omitempty"`
}

// CanaryStrategy moves traffic to the new version by steps.
type CanaryStrategy struct {
	// CanaryService selects the canary's pods only (the Rollout adds the
	// pod-template-hash to its selector).
	// +optional
	CanaryService string `json:"canaryService,omitempty"`
	// StableService selects the stable pods only.
	// +optional
	StableService string `json:"stableService,omitempty"`
	// Steps are run in order; at the end the canary is promoted.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	Steps []CanaryStep `json:"steps,omitempty"`
	// TrafficRouting splits traffic by weight; without it the split is by
	// replica counts.
	// +optional
	TrafficRouting *RolloutTrafficRouting `json:"trafficRouting,omitempty"`
	// MaxUnavailable bounds the pods unavailable during the update, as a
	// number or a percentage rounded down (default 25%).
	// +optional
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`
	// MaxSurge bounds the pods above the desired count, as a number or a
	// percentage rounded up (default 25%).
	// +optional
	MaxSurge *intstr.IntOrString `json:"maxSurge,omitempty"`
	// Analysis is a background AnalysisRun that runs while the steps run.
	// +optional
	Analysis *RolloutAnalysisBackground `json:"analysis,omitempty"`
	// CanaryMetadata is added to the canary's pods while they are the
	// canary.
	// +optional
	CanaryMetadata *PodTemplateMetadata `json:"canaryMetadata,omitempty"`
	// StableMetadata is added to the stable pods.
	// +optional
	StableMetadata *PodTemplateMetadata `json:"stableMetadata,omitempty"`
	// ScaleDownDelaySeconds waits this long after promotion before scaling
	// the old stable ReplicaSet down (default 30), with traffic routing.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ScaleDownDelaySeconds *int32 `json:"scaleDownDelaySeconds,omitempty"`
	// ScaleDownDelayRevisionLimit bounds the old ReplicaSets left running
	// while they wait for their scale-down.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ScaleDownDelayRevisionLimit *int32 `json:"scaleDownDelayRevisionLimit,omitempty"`
	// AbortScaleDownDelaySeconds waits this long after an abort before
	// scaling the canary down (default 30; 0 keeps it), with traffic
	// routing.
	// +optional
	// +kubebuilder:validation:Minimum=0
	AbortScaleDownDelaySeconds *int32 `json:"abortScaleDownDelaySeconds,omitempty"`
	// DynamicStableScale scales the stable ReplicaSet down as traffic moves
	// to the canary (by default it stays fully scaled, for an instant
	// abort).
	// +optional
	DynamicStableScale bool `json:"dynamicStableScale,omitempty"`
	// MinPodsPerReplicaSet is the least number of pods a canary or stable
	// ReplicaSet that is not scaled to 0 runs, with traffic routing.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MinPodsPerReplicaSet *int32 `json:"minPodsPerReplicaSet,omitempty"`
}

// RolloutTrafficRouting says how traffic is split between the stable and the
// canary. Meridian routes through its own data plane; `smi` names an SMI
// TrafficSplit (as Argo's SMI router does), and `plugins` and
// `managedRoutes` are accepted with Argo's names.
type RolloutTrafficRouting struct {
	// Meridian routes through Meridian's proxies. Without an httpRoute or a
	// trafficSplit named, Meridian writes what it needs itself.
	// +optional
	Meridian *MeridianTrafficRouting `json:"meridian,omitempty"`
	// SMI routes through an SMI TrafficSplit, which Meridian's data plane
	// obeys.
	// +optional
	SMI *SMITrafficRouting `json:"smi,omitempty"`
	// ManagedRoutes are the header routes the Rollout manages, in order of
	// precedence; setHeaderRoute steps name them.
	// +optional
	// +listType=map
	// +listMapKey=name
	ManagedRoutes []MangedRoutes `json:"managedRoutes,omitempty"`
	// Plugins holds traffic-router plugin configuration, kept as written.
	// Meridian runs no plugins: a Rollout that relies only on a plugin is
	// reported as invalid by the controller.
	// +optional
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	Plugins map[string]json.RawMessage `json:"plugins,omitempty"`
	// MaxTrafficWeight is the total weight (default 100).
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxTrafficWeight *int32 `json:"maxTrafficWeight,omitempty"`
}

// MeridianTrafficRouting optionally names the object Meridian edits.
type MeridianTrafficRouting struct {
	// HTTPRoute names a Gateway API HTTPRoute in the Rollout's namespace
	// whose stable and canary backendRefs weights Meridian sets.
	// +optional
	HTTPRoute string `json:"httpRoute,omitempty"`
	// TrafficSplit names an SMI TrafficSplit in the Rollout's namespace
	// whose backends' weights Meridian sets.
	// +optional
	TrafficSplit string `json:"trafficSplit,omitempty"`
}

// MangedRoutes names a managed route (Argo's spelling of the type).
type MangedRoutes struct {
	// +required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// SMITrafficRouting names the SMI TrafficSplit to route with.
type SMITrafficRouting struct {
	// RootService is the Service clients address (default: the stable
	// Service).
	// +optional
	RootService string `json:"rootService,omitempty"`
	// TrafficSplitName is the TrafficSplit's name (default: the Rollout's).
	// +optional
	TrafficSplitName string `json:"trafficSplitName,omitempty"`
}

// CanaryStep is one step: exactly one of its fields is set.
type CanaryStep struct {
	// SetWeight sends this percentage of traffic to the canary and (unless
	// setCanaryScale or dynamicStableScale say otherwise) scales the canary
	// to the same share of the replicas.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	SetWeight *int32 `json:"setWeight,omitempty"`
	// Pause waits for its duration, or without one until promoted.
	// +optional
	Pause *RolloutPause `json:"pause,omitempty"`
	// Analysis runs an AnalysisRun and waits for its result.
	// +optional
	Analysis *RolloutAnalysis `json:"analysis,omitempty"`
	// SetCanaryScale scales the canary without changing the weights.
	// +optional
	SetCanaryScale *SetCanaryScale `json:"setCanaryScale,omitempty"`
	// SetHeaderRoute sends requests with matching headers to the canary.
	// +optional
	SetHeaderRoute *SetHeaderRoute `json:"setHeaderRoute,omitempty"`
}

// RolloutPause is a pause step.
type RolloutPause struct {
	// Duration is how long to wait: seconds as a number (30), or a number
	// with a unit ("30s", "5m", "1h"). Without it the Rollout waits for
	// promote.
	// +optional
	Duration *intstr.IntOrString `json:"duration,omitempty"`
}

// SetCanaryScale sets the canary's replicas apart from its traffic weight.
type SetCanaryScale struct {
	// Weight is the canary's replicas as a percentage of spec.replicas.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Weight *int32 `json:"weight,omitempty"`
	// Replicas is the canary's replicas as a number.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Replicas *int32 `json:"replicas,omitempty"`
	// MatchTrafficWeight goes back to scaling the canary with its weight.
	// +optional
	MatchTrafficWeight bool `json:"matchTrafficWeight,omitempty"`
}

// SetHeaderRoute sends requests whose headers match to the canary.
type SetHeaderRoute struct {
	// Name is one of trafficRouting.managedRoutes.
	// +optional
	Name string `json:"name,omitempty"`
	// Match lists the header conditions, all of which must hold. An empty
	// list removes the route.
	// +optional
	// +listType=atomic
	Match []HeaderRoutingMatch `json:"match,omitempty"`
}

// HeaderRoutingMatch matches one request header.
type HeaderRoutingMatch struct {
	// +required
	// +kubebuilder:validation:MinLength=1
	HeaderName string `json:"headerName"`
	// +required
	HeaderValue *StringMatch `json:"headerValue"`
}

// StringMatch matches a string: exactly one of its fields is set.
type StringMatch struct {
	// +optional
	Exact string `json:"exact,omitempty"`
	// +optional
	Prefix string `json:"prefix,omitempty"`
	// Regex is an RE2 regular expression.
	// +optional
	Regex string `json:"regex,omitempty"`
}

// PodTemplateMetadata is extra labels and annotations for pods.
type PodTemplateMetadata struct {
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// RolloutAnalysisBackground is the canary's background analysis.
type RolloutAnalysisBackground struct {
	RolloutAnalysis `json:",inline"`
	// StartingStep is the step index at which the background analysis
	// starts (default 0).
	// +optional
	// +kubebuilder:validation:Minimum=0
	StartingStep *int32 `json:"startingStep,omitempty"`
}

// RolloutAnalysis says which templates make an AnalysisRun, with which
// arguments.
type RolloutAnalysis struct {
	// Templates are merged into one AnalysisRun.
	// +optional
	// +listType=atomic
	Templates []RolloutAnalysisTemplate `json:"templates,omitempty"`
	// Args are passed to the templates.
	// +optional
	// +listType=map
	// +listMapKey=name
	Args []AnalysisRunArgument `json:"args,omitempty"`
	// DryRun lists metrics whose results are recorded but never decide.
	// +optional
	// +listType=map
	// +listMapKey=metricName
	DryRun []DryRun `json:"dryRun,omitempty"`
	// MeasurementRetention sets how many measurements a metric keeps.
	// +optional
	// +listType=map
	// +listMapKey=metricName
	MeasurementRetention []MeasurementRetention `json:"measurementRetention,omitempty"`
	// AnalysisRunMetadata is added to the AnalysisRuns.
	// +optional
	AnalysisRunMetadata AnalysisRunMetadata `json:"analysisRunMetadata,omitempty"`
}

// RolloutAnalysisTemplate names an AnalysisTemplate or, with clusterScope,
// a ClusterAnalysisTemplate.
type RolloutAnalysisTemplate struct {
	// +optional
	TemplateName string `json:"templateName"`
	// +optional
	ClusterScope bool `json:"clusterScope,omitempty"`
}

// AnalysisRunArgument is an argument given to an AnalysisRun.
type AnalysisRunArgument struct {
	// +required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Value is the value; it excludes valueFrom.
	// +optional
	Value string `json:"value,omitempty"`
	// ValueFrom takes the value from the Rollout.
	// +optional
	ValueFrom *ArgumentValueFrom `json:"valueFrom,omitempty"`
}

// ArgumentValueFrom takes an argument's value from the Rollout.
type ArgumentValueFrom struct {
	// PodTemplateHashValue is the pod-template hash of the Stable or the
	// Latest ReplicaSet.
	// +optional
	// +kubebuilder:validation:Enum=Stable;Latest
	PodTemplateHashValue *ValueFromPodTemplateHash `json:"podTemplateHashValue,omitempty"`
	// FieldRef is a field of the Rollout, such as metadata.name.
	// +optional
	FieldRef *FieldRef `json:"fieldRef,omitempty"`
}

// ValueFromPodTemplateHash is Stable or Latest.
type ValueFromPodTemplateHash string

// The values of ValueFromPodTemplateHash.
const (
	Stable ValueFromPodTemplateHash = "Stable"
	Latest ValueFromPodTemplateHash = "Latest"
)

// FieldRef names a field by its path.
type FieldRef struct {
	// FieldPath is the path, such as metadata.labels['app'].
	// +required
	// +kubebuilder:validation:MinLength=1
	FieldPath string `json:"fieldPath"`
}

// AnalysisRunMetadata is extra labels and annotations for AnalysisRuns.
type AnalysisRunMetadata struct {
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// RolloutPhase is the Rollout's overall state.
type RolloutPhase string

// The Rollout phases, as Argo Rollouts reports them.
const (
	RolloutPhaseHealthy     RolloutPhase = "Healthy"
	RolloutPhaseProgressing RolloutPhase = "Progressing"
	RolloutPhasePaused      RolloutPhase = "Paused"
	RolloutPhaseDegraded    RolloutPhase = "Degraded"
)

// PauseReason is why the Rollout paused itself.
type PauseReason string

// The pause reasons.
const (
	PauseReasonInconclusiveAnalysis PauseReason = "InconclusiveAnalysisRun"
	PauseReasonCanaryPauseStep      PauseReason = "CanaryPauseStep"
	PauseReasonBlueGreenPause       PauseReason = "BlueGreenPause"
)

// PauseCondition is one reason the Rollout is paused, and since when.
type PauseCondition struct {
	// +required
	Reason PauseReason `json:"reason"`
	// +required
	StartTime metav1.Time `json:"startTime"`
}

// RolloutStatus is the observed state of a Rollout, as Argo Rollouts writes
// it (tools such as Argo CD and kubectl plugins read it).
type RolloutStatus struct {
	// Abort stops the update and sends all traffic back to stable.
	// +optional
	Abort bool `json:"abort,omitempty"`
	// PauseConditions are the reasons the controller paused the Rollout;
	// promote clears them.
	// +optional
	// +listType=atomic
	PauseConditions []PauseCondition `json:"pauseConditions,omitempty"`
	// ControllerPause is set when the controller paused the Rollout; with
	// no pause conditions left it means the user resumed it.
	// +optional
	ControllerPause bool `json:"controllerPause,omitempty"`
	// AbortedAt is when the controller handled the abort.
	// +optional
	AbortedAt *metav1.Time `json:"abortedAt,omitempty"`
	// CurrentPodHash is the pod-template hash of the desired template.
	// +optional
	CurrentPodHash string `json:"currentPodHash,omitempty"`
	// CurrentStepHash is the hash of the steps, to notice when they change.
	// +optional
	CurrentStepHash string `json:"currentStepHash,omitempty"`
	// Replicas is the number of non-terminated pods the Rollout targets.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// UpdatedReplicas is the number of those with the desired template.
	// +optional
	UpdatedReplicas int32 `json:"updatedReplicas,omitempty"`
	// ReadyReplicas is the number of ready pods.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// AvailableReplicas is the number of pods ready for minReadySeconds.
	// +optional
	AvailableReplicas int32 `json:"availableReplicas,omitempty"`
	// CurrentStepIndex is the canary step being run; len(steps) when all
	// have run.
	// +optional
	CurrentStepIndex *int32 `json:"currentStepIndex,omitempty"`
	// CollisionCount avoids ReplicaSet name collisions.
	// +optional
	CollisionCount *int32 `json:"collisionCount,omitempty"`
	// ObservedGeneration is the metadata.generation the controller last
	// acted on. Argo Rollouts writes it as a string; so does Meridian.
	// +optional
	ObservedGeneration string `json:"observedGeneration,omitempty"`
	// Conditions are the Rollout's conditions (Available, Progressing,
	// Paused, Completed, Healthy, InvalidSpec, ReplicaFailure).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []RolloutCondition `json:"conditions,omitempty"`
	// Canary is the canary strategy's state.
	// +optional
	Canary CanaryStatus `json:"canary,omitempty"`
	// BlueGreen is the blue-green strategy's state.
	// +optional
	BlueGreen BlueGreenStatus `json:"blueGreen,omitempty"`
	// HPAReplicas is the number of pods receiving traffic: the scale
	// subresource's status replicas.
	// +optional
	HPAReplicas int32 `json:"HPAReplicas,omitempty"`
	// Selector selects the pods receiving traffic, as a label-selector
	// string: the scale subresource's selector.
	// +optional
	Selector string `json:"selector,omitempty"`
	// StableRS is the pod-template hash of the stable ReplicaSet.
	// +optional
	StableRS string `json:"stableRS,omitempty"`
	// RestartedAt is when the pods were last restarted.
	// +optional
	RestartedAt *metav1.Time `json:"restartedAt,omitempty"`
	// PromoteFull skips the remaining steps, pauses and analyses.
	// +optional
	PromoteFull bool `json:"promoteFull,omitempty"`
	// Phase is Healthy, Progressing, Paused or Degraded; read it only when
	// observedGeneration is metadata.generation.
	// +optional
	// +kubebuilder:validation:Enum=Healthy;Progressing;Paused;Degraded
	Phase RolloutPhase `json:"phase,omitempty"`
	// Message says why the Rollout is in its phase.
	// +optional
	Message string `json:"message,omitempty"`
	// WorkloadObservedGeneration is the referenced workload's generation
	// the controller last acted on.
	// +optional
	WorkloadObservedGeneration string `json:"workloadObservedGeneration,omitempty"`
}

// CanaryStatus is the canary strategy's state.
type CanaryStatus struct {
	// +optional
	CurrentStepAnalysisRunStatus *RolloutAnalysisRunStatus `json:"currentStepAnalysisRunStatus,omitempty"`
	// +optional
	CurrentBackgroundAnalysisRunStatus *RolloutAnalysisRunStatus `json:"currentBackgroundAnalysisRunStatus,omitempty"`
	// Weights are the weights set on the data plane.
	// +optional
	Weights *TrafficWeights `json:"weights,omitempty"`
}

// BlueGreenStatus is the blue-green strategy's state.
type BlueGreenStatus struct {
	// PreviewSelector is the pod-template hash the preview Service selects.
	// +optional
	PreviewSelector string `json:"previewSelector,omitempty"`
	// ActiveSelector is the pod-template hash the active Service selects.
	// +optional
	ActiveSelector string `json:"activeSelector,omitempty"`
	// ScaleUpPreviewCheckPoint is set once the preview may scale up fully.
	// +optional
	ScaleUpPreviewCheckPoint bool `json:"scaleUpPreviewCheckPoint,omitempty"`
	// +optional
	PrePromotionAnalysisRunStatus *RolloutAnalysisRunStatus `json:"prePromotionAnalysisRunStatus,omitempty"`
	// +optional
	PostPromotionAnalysisRunStatus *RolloutAnalysisRunStatus `json:"postPromotionAnalysisRunStatus,omitempty"`
}

// TrafficWeights is how traffic is split.
type TrafficWeights struct {
	// +required
	Canary WeightDestination `json:"canary"`
	// +required
	Stable WeightDestination `json:"stable"`
	// +optional
	// +listType=atomic
	Additional []WeightDestination `json:"additional,omitempty"`
	// Verified says the data plane applied the weights.
	// +optional
	Verified *bool `json:"verified,omitempty"`
}

// WeightDestination is one destination's weight.
type WeightDestination struct {
	// Weight is the percentage of traffic sent here.
	// +required
	Weight int32 `json:"weight"`
	// +optional
	ServiceName string `json:"serviceName,omitempty"`
	// +optional
	PodTemplateHash string `json:"podTemplateHash,omitempty"`
}

// RolloutAnalysisRunStatus names an AnalysisRun and its phase.
type RolloutAnalysisRunStatus struct {
	// +required
	Name string `json:"name"`
	// +required
	Status AnalysisPhase `json:"status"`
	// +optional
	Message string `json:"message,omitempty"`
}

// RolloutConditionType is a Rollout condition's type.
type RolloutConditionType string

// The Rollout condition types.
const (
	InvalidSpec           RolloutConditionType = "InvalidSpec"
	RolloutAvailable      RolloutConditionType = "Available"
	RolloutProgressing    RolloutConditionType = "Progressing"
	RolloutReplicaFailure RolloutConditionType = "ReplicaFailure"
	RolloutPaused         RolloutConditionType = "Paused"
	RolloutCompleted      RolloutConditionType = "Completed"
	RolloutHealthy        RolloutConditionType = "Healthy"
)

// RolloutCondition is one condition of a Rollout.
type RolloutCondition struct {
	// +required
	Type RolloutConditionType `json:"type"`
	// +required
	Status corev1.ConditionStatus `json:"status"`
	// +required
	LastUpdateTime metav1.Time `json:"lastUpdateTime"`
	// +required
	LastTransitionTime metav1.Time `json:"lastTransitionTime"`
	// +required
	Reason string `json:"reason"`
	// +required
	Message string `json:"message"`
}
