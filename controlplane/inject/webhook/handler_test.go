package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meridian-mesh/meridian/controlplane/inject"
	"github.com/meridian-mesh/meridian/internal/names"
)

const testAnchors = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

func testInjectConfig() inject.Config {
	c := inject.DefaultConfig("v1.0.0", "meridian")
	c.TrustAnchorsPEM = testAnchors
	return c
}

var namespaces = map[string]map[string]string{
	"shop":  {names.AnnotationInject: names.InjectEnabled},
	"plain": nil,
}

func nsLookup(_ context.Context, name string) (map[string]string, error) {
	ann, ok := namespaces[name]
	if !ok {
		return nil, errors.New("namespace " + name + " not found")
	}
	return ann, nil
}

func review(t *testing.T, h http.Handler, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, int) {
	t.Helper()
	body, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  req,
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		return nil, rec.Code
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil || out.Response.UID != req.UID {
		t.Fatalf("response %+v", out)
	}
	return out.Response, rec.Code
}

func podRequest(ns string, pod *corev1.Pod) *admissionv1.AdmissionRequest {
	raw, _ := json.Marshal(pod)
	return &admissionv1.AdmissionRequest{
		UID:       types.UID("uid-" + pod.GenerateName),
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: ns,
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}
}

func newPod(ann map[string]string) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{GenerateName: "web-", Annotations: ann},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}},
	}
}

// applyPatch applies the response's JSON patch to the request's pod.
func applyPatch(t *testing.T, req *admissionv1.AdmissionRequest, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v", resp.PatchType)
	}
	var ops []inject.Op
	var raw []map[string]any
	if err := json.Unmarshal(resp.Patch, &raw); err != nil {
		t.Fatal(err)
	}
	for _, r := range raw {
		ops = append(ops, inject.Op{Op: r["op"].(string), Path: r["path"].(string), Value: r["value"]})
	}
	var doc map[string]any
	_ = json.Unmarshal(req.Object.Raw, &doc)
	if err := inject.Apply(doc, ops); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(doc)
	var pod corev1.Pod
	if err := json.Unmarshal(b, &pod); err != nil {
		t.Fatal(err)
	}
	return &pod
}

func TestHandler(t *testing.T) {
	h := Handler(testInjectConfig(), nsLookup, nil)

	// A pod in an enabled namespace: patched with the proxy.
	req := podRequest("shop", newPod(nil))
	resp, _ := review(t, h, req)
	if !resp.Allowed || resp.Patch == nil {
		t.Fatalf("response %+v", resp)
	}
	pod := applyPatch(t, req, resp)
	var containers []string
	for _, c := range pod.Spec.InitContainers {
		containers = append(containers, c.Name)
	}
	if !slices.Equal(containers, []string{"meridian-init", "meridian-proxy"}) || pod.Annotations[names.AnnotationProxyVersion] != "v1.0.0" {
		t.Fatalf("patched pod %+v", pod)
	}

	// Disabled on the pod, or a namespace that does not ask: no patch.
	for _, req := range []*admissionv1.AdmissionRequest{
		podRequest("shop", newPod(map[string]string{names.AnnotationInject: names.InjectDisabled})),
		podRequest("plain", newPod(nil)),
	} {
		resp, _ := review(t, h, req)
		if !resp.Allowed || resp.Patch != nil || resp.PatchType != nil {
			t.Fatalf("response %+v", resp)
		}
	}

	// hostNetwork: allowed unchanged, with a warning.
	hn := newPod(nil)
	hn.Spec.HostNetwork = true
	resp, _ = review(t, h, podRequest("shop", hn))
	if !resp.Allowed || resp.Patch != nil || len(resp.Warnings) != 1 {
		t.Fatalf("hostNetwork response %+v", resp)
	}

	// A bad annotation value: denied, saying why.
	resp, _ = review(t, h, podRequest("shop", newPod(map[string]string{names.AnnotationSkipInboundPorts: "http"})))
	if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, names.AnnotationSkipInboundPorts) ||
		resp.Result.Code != http.StatusBadRequest {
		t.Fatalf("bad annotation response %+v", resp)
	}

	// Not a pod CREATE: allowed untouched.
	upd := podRequest("shop", newPod(nil))
	upd.Operation = admissionv1.Update
	if resp, _ := review(t, h, upd); !resp.Allowed || resp.Patch != nil {
		t.Fatalf("update response %+v", resp)
	}
	other := podRequest("shop", newPod(nil))
	other.Resource = metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	if resp, _ := review(t, h, other); !resp.Allowed || resp.Patch != nil {
		t.Fatalf("deployment response %+v", resp)
	}

	// The namespace cannot be read: the call fails (failurePolicy decides).
	if _, code := review(t, h, podRequest("gone", newPod(nil))); code != http.StatusInternalServerError {
		t.Fatalf("unknown namespace: HTTP %d", code)
	}

	// Not an AdmissionReview, not a POST.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, Path, strings.NewReader(`{"kind":"nope"}`)))
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("garbage: HTTP %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, Path, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET: HTTP %d", rec.Code)
	}
}
