// Package webhookreview reads and answers the reviews the API server POSTs to a
// webhook (an AdmissionReview, a ConversionReview): one bounded read and
// decode, one JSON answer, and the same HTTP errors for every webhook.
package webhookreview

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// Decode reads the POSTed review into v: a JSON object of at most max
// bytes. kind names the review in errors (e.g. "admission.k8s.io/v1
// AdmissionReview"), and hasRequest reports whether the decoded review
// carries its request. Decode returns false after answering the HTTP error
// (405, 400 or 413) when there is no such review.
func Decode(w http.ResponseWriter, r *http.Request, max int64, kind string, v any, hasRequest func() bool) bool {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST an "+kind, http.StatusMethodNotAllowed)
		return false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		http.Error(w, "reading the request: "+err.Error(), http.StatusBadRequest)
		return false
	}
	if int64(len(body)) > max {
		http.Error(w, fmt.Sprintf("%s larger than %d bytes", kind, max), http.StatusRequestEntityTooLarge)
		return false
	}
	if err := json.Unmarshal(body, v); err != nil || !hasRequest() {
		http.Error(w, fmt.Sprintf("not an %s with a request (%v)", kind, err), http.StatusBadRequest)
		return false
	}
	return true
}

// Encode answers with v as JSON.
func Encode(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}
