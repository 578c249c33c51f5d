// Package conversion is the TrafficSplit CRD's conversion webhook: an HTTP
// handler of apiextensions.k8s.io/v1 ConversionReviews that converts
// split.smi-spec.io TrafficSplits between v1alpha1 and v1alpha4 with
// api/split/conversion. The controller serves it beside the proxy injector
// on the webhook's TLS server (controlplane/inject/webhook).
package conversion

import (
	"log/slog"
	"net/http"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	splitconversion "github.com/meridian-mesh/meridian/api/split/conversion"
	"github.com/meridian-mesh/meridian/controlplane/webhookreview"
)

// Path is where the TrafficSplit CRD's spec.conversion sends reviews.
const Path = "/convert/trafficsplits"

// CRDName is the CRD whose conversion this serves.
const CRDName = "trafficsplits.split.smi-spec.io"

// maxReview bounds a ConversionReview's size (a list of TrafficSplits; the
// API server's own request limit is 3 MiB per object).
const maxReview = 32 << 20

// Handler serves ConversionReviews (apiextensions.k8s.io/v1) of
// TrafficSplits. A conversion that fails answers HTTP 200 with result
// Failure and the reason, which the API server shows to the client; only a
// request that is not a ConversionReview gets an HTTP error.
func Handler(log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &handler{log: log}
}

type handler struct{ log *slog.Logger }

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var in apiextensionsv1.ConversionReview
	if !webhookreview.Decode(w, r, maxReview, "apiextensions.k8s.io/v1 ConversionReview", &in, func() bool { return in.Request != nil }) {
		return
	}
	resp := Review(in.Request)
	if resp.Result.Status == metav1.StatusFailure {
		h.log.Warn("conversion: failed", "to", in.Request.DesiredAPIVersion, "err", resp.Result.Message)
	}
	webhookreview.Encode(w, apiextensionsv1.ConversionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: apiextensionsv1.SchemeGroupVersion.String(), Kind: "ConversionReview"},
		Response: resp,
	})
}

// Review converts a request's objects: all of them, or none and a Failure
// result naming the first that failed.
func Review(req *apiextensionsv1.ConversionRequest) *apiextensionsv1.ConversionResponse {
	resp := &apiextensionsv1.ConversionResponse{UID: req.UID, ConvertedObjects: []runtime.RawExtension{}}
	for _, obj := range req.Objects {
		out, err := splitconversion.ConvertJSON(obj.Raw, req.DesiredAPIVersion)
		if err != nil {
			resp.ConvertedObjects = nil
			resp.Result = metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonBadRequest, Message: err.Error()}
			return resp
		}
		resp.ConvertedObjects = append(resp.ConvertedObjects, runtime.RawExtension{Raw: out})
	}
	resp.Result = metav1.Status{Status: metav1.StatusSuccess}
	return resp
}
