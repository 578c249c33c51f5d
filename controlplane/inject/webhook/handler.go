// Package webhook is the proxy injector: a mutating admission webhook that
// runs inject.Pod on the pods being created, and the keeper of its serving
// certificate (a Secret shared by the controller's replicas, and the
// caBundle of the MutatingWebhookConfiguration).
package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/controlplane/webhookreview"
)

// Path is where the webhook configuration sends pods.
const Path = "/inject"

// maxReview bounds an AdmissionReview's size (the API server's own request
// limit is 3 MiB).
const maxReview = 8 << 20

// NamespaceAnnotations returns a namespace's annotations.
type NamespaceAnnotations func(ctx context.Context, namespace string) (map[string]string, error)

// Handler serves AdmissionReviews (admission.k8s.io/v1) for pods: a CREATE
// of a pod that its annotations or its namespace's ask to be meshed gets a
// JSON patch that injects the proxy; anything else is allowed unchanged. A
// pod that asks with a bad annotation value is denied, with the reason, so
// that it does not run silently without the mesh. When the namespace cannot
// be read the request fails (HTTP 500), and the webhook's failurePolicy
// decides.
func Handler(cfg inject.Config, ns NamespaceAnnotations, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &handler{cfg: cfg, ns: ns, log: log}
}

type handler struct {
	cfg inject.Config
	ns  NamespaceAnnotations
	log *slog.Logger
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var in admissionv1.AdmissionReview
	if !webhookreview.Decode(w, r, maxReview, "admission.k8s.io/v1 AdmissionReview", &in, func() bool { return in.Request != nil }) {
		return
	}
	resp, err := h.review(r.Context(), in.Request)
	if err != nil {
		h.log.Error("inject: failed", "namespace", in.Request.Namespace, "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	resp.UID = in.Request.UID
	webhookreview.Encode(w, admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Response: resp,
	})
}

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

func (h *handler) review(ctx context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, error) {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Resource != podResource || req.SubResource != "" || req.Operation != admissionv1.Create {
		return allow, nil
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return &admissionv1.AdmissionResponse{Result: &metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusBadRequest, Reason: metav1.StatusReasonBadRequest,
			Message: "meridian proxy injector: the object is not a pod: " + err.Error(),
		}}, nil
	}
	ns := req.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	nsAnn, err := h.ns(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	before, err := json.Marshal(&pod)
	if err != nil {
		return nil, err
	}
	changed, rep, err := inject.Pod(&pod.ObjectMeta, &pod.Spec, nsAnn, h.cfg)
	if err != nil {
		h.log.Info("inject: denied", "namespace", ns, "pod", name, "err", err)
		return &admissionv1.AdmissionResponse{Result: &metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusBadRequest, Reason: metav1.StatusReasonBadRequest,
			Message: "meridian proxy injection: " + err.Error(),
		}}, nil
	}
	if !changed {
		h.log.Debug("inject: skipped", "namespace", ns, "pod", name, "reason", rep.Skipped)
		if rep.Skipped == inject.SkipHostNetwork {
			allow.Warnings = []string{"meridian: the proxy is not injected into pods with hostNetwork"}
		}
		return allow, nil
	}
	after, err := json.Marshal(&pod)
	if err != nil {
		return nil, err
	}
	ops, err := inject.Diff(before, after, 2)
	if err != nil {
		return nil, err
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return nil, err
	}
	h.log.Info("inject: injected", "namespace", ns, "pod", name, "dry_run", req.DryRun != nil && *req.DryRun)
	pt := admissionv1.PatchTypeJSONPatch
	allow.Patch = patch
	allow.PatchType = &pt
	return allow, nil
}
