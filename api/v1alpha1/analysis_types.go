package v1alpha1

import (
	"encoding/json"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// AnalysisTemplate says how to judge a release: metrics, how often to
// measure them, and the conditions that make a measurement a success or a
// failure. Its fields are Argo Rollouts' (v1.8).
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=at,categories=meridian
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`,description="Time since resource was created"
type AnalysisTemplate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec AnalysisTemplateSpec `json:"spec"`
}

// AnalysisTemplateList is a list of AnalysisTemplates.
//
// +kubebuilder:object:root=true
type AnalysisTemplateList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AnalysisTemplate `json:"items"`
}

// ClusterAnalysisTemplate is an AnalysisTemplate that Rollouts of every
// namespace can use (clusterScope: true).
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=cat,categories=meridian
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`,description="Time since resource was created"
type ClusterAnalysisTemplate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec AnalysisTemplateSpec `json:"spec"`
}

// ClusterAnalysisTemplateList is a list of ClusterAnalysisTemplates.
//
// +kubebuilder:object:root=true
type ClusterAnalysisTemplateList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterAnalysisTemplate `json:"items"`
}

// AnalysisTemplateSpec is the metrics and arguments of a template.
type AnalysisTemplateSpec struct {
	// Metrics are measured side by side; the run takes the worst result.
	// +required
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	Metrics []Metric `json:"metrics"`
	// Args are the template's parameters, used as {{args.NAME}}.
	// +optional
	// +listType=map
	// +listMapKey=name
	Args []Argument `json:"args,omitempty"`
	// DryRun lists metrics (or "*") whose results are recorded but never
	// decide the run.
	// +optional
	// +listType=map
	// +listMapKey=metricName
	DryRun []DryRun `json:"dryRun,omitempty"`
	// MeasurementRetention sets how many measurements a metric keeps
	// (default 10).
	// +optional
	// +listType=map
	// +listMapKey=metricName
	MeasurementRetention []MeasurementRetention `json:"measurementRetention,omitempty"`
}

// Metric is one thing measured, and how it is judged.
type Metric struct {
	// Name identifies the metric in the run's results.
	// +required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Interval is the time between measurements ("30s", "5m"). Without it
	// the metric is measured once (or count times, which then needs it).
	// +optional
	Interval Duration `json:"interval,omitempty"`
	// InitialDelay waits this long after the run starts before the first
	// measurement.
	// +optional
	InitialDelay Duration `json:"initialDelay,omitempty"`
	// Count is the number of measurements (a number, or "{{args.NAME}}").
	// Without count and interval it is 1; with only interval the metric
	// runs until the run is terminated.
	// +optional
	Count *intstr.IntOrString `json:"count,omitempty"`
	// SuccessCondition is an expression (expr-lang syntax, with `result`
	// the measured value) that makes a measurement Successful, such as
	// `result[0] >= 0.95`. Alone, a false result is a failure.
	// +optional
	SuccessCondition string `json:"successCondition,omitempty"`
	// FailureCondition is an expression that makes a measurement Failed.
	// With both conditions, a measurement that meets neither is
	// Inconclusive.
	// +optional
	FailureCondition string `json:"failureCondition,omitempty"`
	// FailureLimit is the number of Failed measurements tolerated: one more
	// fails the metric (default 0).
	// +optional
	FailureLimit *intstr.IntOrString `json:"failureLimit,omitempty"`
	// InconclusiveLimit is the number of Inconclusive measurements
	// tolerated: one more makes the metric Inconclusive (default 0).
	// +optional
	InconclusiveLimit *intstr.IntOrString `json:"inconclusiveLimit,omitempty"`
	// ConsecutiveErrorLimit is the number of measurement errors in a row
	// tolerated: one more makes the metric Error (default 4).
	// +optional
	ConsecutiveErrorLimit *intstr.IntOrString `json:"consecutiveErrorLimit,omitempty"`
	// Provider is where the measurement comes from: exactly one of its
	// fields is set.
	// +required
	Provider MetricProvider `json:"provider"`
}

// DryRun names a metric ("*": all of them) that runs without deciding.
type DryRun struct {
	// +required
	// +kubebuilder:validation:MinLength=1
	MetricName string `json:"metricName"`
}

// MeasurementRetention sets how many measurements a metric keeps.
type MeasurementRetention struct {
	// +required
	// +kubebuilder:validation:MinLength=1
	MetricName string `json:"metricName"`
	// +required
	// +kubebuilder:validation:Minimum=1
	Limit int32 `json:"limit"`
}

// MetricProvider is the source of a metric's measurements.
type MetricProvider struct {
	// Meridian measures the golden metrics the proxies record, with no
	// Prometheus needed.
	// +optional
	Meridian *MeridianMetric `json:"meridian,omitempty"`
	// Prometheus runs a PromQL query.
	// +optional
	Prometheus *PrometheusMetric `json:"prometheus,omitempty"`
	// Web fetches a JSON document over HTTP.
	// +optional
	Web *WebMetric `json:"web,omitempty"`
	// Job runs a Kubernetes Job: success or failure is its result.
	// +optional
	Job *JobMetric `json:"job,omitempty"`
}

// MeridianMetricName is one of the golden metrics.
//
// +kubebuilder:validation:Enum=success-rate;request-rate;latency-p50;latency-p95;latency-p99
type MeridianMetricName string

// The golden metrics the meridian provider measures.
const (
	MeridianSuccessRate MeridianMetricName = "success-rate"
	MeridianRequestRate MeridianMetricName = "request-rate"
	MeridianLatencyP50  MeridianMetricName = "latency-p50"
	MeridianLatencyP95  MeridianMetricName = "latency-p95"
	MeridianLatencyP99  MeridianMetricName = "latency-p99"
)

// MeridianTarget is the side of the rollout a meridian metric measures.
//
// +kubebuilder:validation:Enum=canary;stable
type MeridianTarget string

// The targets of a meridian metric.
const (
	MeridianTargetCanary MeridianTarget = "canary"
	MeridianTargetStable MeridianTarget = "stable"
)

// MeridianMetric is a golden metric of the canary's (or the stable's) pods,
// read from their proxies. The measured value, `result`, is a number: the
// success rate as a fraction from 0 to 1, the request rate in requests per
// second, a latency in milliseconds.
type MeridianMetric struct {
	// Metric is the golden metric.
	// +required
	Metric MeridianMetricName `json:"metric"`
	// Target is whose pods are measured: canary (the default) or stable.
	// +optional
	Target MeridianTarget `json:"target,omitempty"`
	// Window is the time the metric is computed over (default "1m").
	// +optional
	Window Duration `json:"window,omitempty"`
	// Route restricts the metric to one route of the service's profile
	// (its rt_route name).
	// +optional
	Route string `json:"route,omitempty"`
	// MinRequests is the least number of requests in the window for the
	// measurement to judge; with fewer the measurement is Inconclusive ("no
	// traffic"), never a success or a failure (default 1).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MinRequests *int64 `json:"minRequests,omitempty"`
}

// PrometheusMetric is a PromQL query.
type PrometheusMetric struct {
	// Address is the Prometheus server's URL.
	// +optional
	Address string `json:"address,omitempty"`
	// Query is the PromQL query; `result` is the vector's values (a list)
	// or the scalar.
	// +optional
	Query string `json:"query,omitempty"`
	// Timeout is the query's timeout in seconds.
	// +optional
	// +kubebuilder:validation:Minimum=1
	Timeout *int64 `json:"timeout,omitempty"`
	// Insecure skips TLS verification.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
	// Headers are sent with the query.
	// +optional
	// +listType=atomic
	Headers []WebMetricHeader `json:"headers,omitempty"`
}

// WebMetric is a JSON document fetched over HTTP.
type WebMetric struct {
	// Method is GET (the default), POST or PUT.
	// +optional
	// +kubebuilder:validation:Enum=GET;POST;PUT
	Method WebMetricMethod `json:"method,omitempty"`
	// URL is fetched.
	// +required
	// +kubebuilder:validation:MinLength=1
	URL string `json:"url"`
	// Headers are sent with the request.
	// +optional
	// +listType=atomic
	Headers []WebMetricHeader `json:"headers,omitempty"`
	// Body is sent with POST and PUT.
	// +optional
	Body string `json:"body,omitempty"`
	// TimeoutSeconds is the request's timeout (default 10).
	// +optional
	// +kubebuilder:validation:Minimum=1
	TimeoutSeconds int64 `json:"timeoutSeconds,omitempty"`
	// JSONPath selects `result` in the response (default "{$}").
	// +optional
	JSONPath string `json:"jsonPath,omitempty"`
	// Insecure skips TLS verification.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
	// JSONBody is sent as JSON with POST and PUT.
	// +optional
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	JSONBody json.RawMessage `json:"jsonBody,omitempty"`
}

// WebMetricMethod is an HTTP method.
type WebMetricMethod string

// WebMetricHeader is one HTTP header.
type WebMetricHeader struct {
	// +required
	Key string `json:"key"`
	// +required
	Value string `json:"value"`
}

// JobMetric runs a Job: it is Successful when the Job succeeds, Failed when
// it fails.
type JobMetric struct {
	// Metadata is the Job's labels and annotations (kept as written: a
	// CRD schema of a non-root ObjectMeta would drop them).
	// +optional
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	Metadata metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is the Job's spec; it is schemaless in the CRD (as the Rollout's
	// pod template is) and validated when the Job is created.
	// +required
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	Spec batchv1.JobSpec `json:"spec"`
}

// Argument is an argument of a template or a run.
type Argument struct {
	// +required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Value is the value (in a template, the default).
	// +optional
	Value *string `json:"value,omitempty"`
	// ValueFrom takes the value from a Secret or a field of the Rollout.
	// +optional
	ValueFrom *ValueFrom `json:"valueFrom,omitempty"`
}

// ValueFrom is where an argument's value comes from.
type ValueFrom struct {
	// +optional
	SecretKeyRef *SecretKeyRef `json:"secretKeyRef,omitempty"`
	// +optional
	FieldRef *FieldRef `json:"fieldRef,omitempty"`
}

// SecretKeyRef is a key of a Secret in the run's namespace.
type SecretKeyRef struct {
	// +required
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// +required
	// +kubebuilder:validation:MinLength=1
	Key string `json:"key"`
}

// AnalysisPhase is the phase of a run, a metric or a measurement.
type AnalysisPhase string

// The analysis phases.
const (
	AnalysisPhasePending      AnalysisPhase = "Pending"
	AnalysisPhaseRunning      AnalysisPhase = "Running"
	AnalysisPhaseSuccessful   AnalysisPhase = "Successful"
	AnalysisPhaseFailed       AnalysisPhase = "Failed"
	AnalysisPhaseError        AnalysisPhase = "Error"
	AnalysisPhaseInconclusive AnalysisPhase = "Inconclusive"
)

// Completed reports whether the phase is final.
func (p AnalysisPhase) Completed() bool {
	switch p {
	case AnalysisPhaseSuccessful, AnalysisPhaseFailed, AnalysisPhaseError, AnalysisPhaseInconclusive:
		return true
	}
	return false
}

// AnalysisRun is one judging of a release, made from AnalysisTemplates by a
// Rollout (or by hand).
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=ar,categories=meridian
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.phase`,description="AnalysisRun status"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`,description="Time since resource was created"
type AnalysisRun struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec AnalysisRunSpec `json:"spec"`
	// +optional
	Status AnalysisRunStatus `json:"status,omitempty"`
}

// AnalysisRunList is a list of AnalysisRuns.
//
// +kubebuilder:object:root=true
type AnalysisRunList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AnalysisRun `json:"items"`
}

// AnalysisRunSpec is the metrics and arguments of a run.
type AnalysisRunSpec struct {
	// +required
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	Metrics []Metric `json:"metrics"`
	// +optional
	// +listType=map
	// +listMapKey=name
	Args []Argument `json:"args,omitempty"`
	// Terminate stops the run: measurements in flight finish, none start.
	// +optional
	Terminate bool `json:"terminate,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=metricName
	DryRun []DryRun `json:"dryRun,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=metricName
	MeasurementRetention []MeasurementRetention `json:"measurementRetention,omitempty"`
}

// AnalysisRunStatus is the result of a run so far.
type AnalysisRunStatus struct {
	// Phase is Pending, Running, Successful, Failed, Error or Inconclusive.
	// +optional
	// +kubebuilder:validation:Enum=Pending;Running;Successful;Failed;Error;Inconclusive
	Phase AnalysisPhase `json:"phase,omitempty"`
	// Message says why the run has its phase.
	// +optional
	Message string `json:"message,omitempty"`
	// MetricResults are the metrics' results.
	// +optional
	// +listType=map
	// +listMapKey=name
	MetricResults []MetricResult `json:"metricResults,omitempty"`
	// StartedAt is when the run started.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// RunSummary counts the metrics by result.
	// +optional
	RunSummary RunSummary `json:"runSummary,omitempty"`
	// DryRunSummary counts the dry-run metrics by result.
	// +optional
	DryRunSummary *RunSummary `json:"dryRunSummary,omitempty"`
}

// RunSummary counts metrics by their result.
type RunSummary struct {
	// +optional
	Count int32 `json:"count,omitempty"`
	// +optional
	Successful int32 `json:"successful,omitempty"`
	// +optional
	Failed int32 `json:"failed,omitempty"`
	// +optional
	Inconclusive int32 `json:"inconclusive,omitempty"`
	// +optional
	Error int32 `json:"error,omitempty"`
}

// MetricResult is one metric's measurements and counters.
type MetricResult struct {
	// +required
	Name string `json:"name"`
	// +required
	Phase AnalysisPhase `json:"phase"`
	// Measurements are the most recent measurements.
	// +optional
	// +listType=atomic
	Measurements []Measurement `json:"measurements,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
	// Count is the number of measurements without error: successful +
	// failed + inconclusive.
	// +optional
	Count int32 `json:"count,omitempty"`
	// +optional
	Successful int32 `json:"successful,omitempty"`
	// +optional
	Failed int32 `json:"failed,omitempty"`
	// +optional
	Inconclusive int32 `json:"inconclusive,omitempty"`
	// Error is the number of measurements that errored.
	// +optional
	Error int32 `json:"error,omitempty"`
	// ConsecutiveError is the number of errors since the last measurement
	// without one.
	// +optional
	ConsecutiveError int32 `json:"consecutiveError,omitempty"`
	// DryRun says the metric does not decide the run.
	// +optional
	DryRun bool `json:"dryRun,omitempty"`
	// Metadata is the provider's state (such as the resolved query).
	// +optional
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Measurement is one measured value and its judgement.
type Measurement struct {
	// +required
	Phase AnalysisPhase `json:"phase"`
	// +optional
	Message string `json:"message,omitempty"`
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// +optional
	FinishedAt *metav1.Time `json:"finishedAt,omitempty"`
	// Value is the measured value as text.
	// +optional
	Value string `json:"value,omitempty"`
	// +optional
	Metadata map[string]string `json:"metadata,omitempty"`
	// ResumeAt is when to look at a measurement still in flight again.
	// +optional
	ResumeAt *metav1.Time `json:"resumeAt,omitempty"`
}
