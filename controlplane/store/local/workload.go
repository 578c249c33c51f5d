package local

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/internal/names"
)

// A Pod in the store directory declares a local-mode workload with the
// annotations names.AnnotationCredentialSHA256 and names.AnnotationServices:
// the process registering as that Pod's namespace/name must hold the
// credential whose SHA-256 the first holds, runs as the Pod's
// spec.serviceAccountName, and may serve only the services the second lists.
// The directory holds the hash, never the credential.

// CredentialSHA256 is the value of names.AnnotationCredentialSHA256 for credential.
func CredentialSHA256(credential string) string {
	sum := sha256.Sum256([]byte(credential))
	return hex.EncodeToString(sum[:])
}

// Admit checks a registration against what the operator declared, and
// returns the workload to record: in local mode any process that reaches
// the controller can ask to register, so only a declared workload whose
// credential matches is admitted, with the declared service account (an
// empty one in w means the declared one) and labels, and only for a service
// the declaration lists. The errors name the Pod and the annotation at fault.
func Admit(r store.Reader, w store.Workload, credential string) (store.Workload, error) {
	k := store.Key{Namespace: w.Namespace, Name: w.Name}
	pod, ok := r.Pod(k)
	if !ok {
		return w, fmt.Errorf("workload %s is not declared: the store directory needs a Pod %s with the annotation %s", k, k, names.AnnotationCredentialSHA256)
	}
	want := strings.ToLower(strings.TrimSpace(pod.Annotations[names.AnnotationCredentialSHA256]))
	if want == "" {
		return w, fmt.Errorf("Pod %s: annotation %s is missing: the workload cannot register until its credential's SHA-256 is declared", k, names.AnnotationCredentialSHA256)
	}
	if credential == "" {
		return w, fmt.Errorf("workload %s: no credential presented", k)
	}
	if subtle.ConstantTimeCompare([]byte(CredentialSHA256(credential)), []byte(want)) != 1 {
		return w, fmt.Errorf("workload %s: the credential does not match Pod %s's annotation %s", k, k, names.AnnotationCredentialSHA256)
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default" // as the API server defaults it
	}
	if w.ServiceAccount != "" && w.ServiceAccount != sa {
		return w, fmt.Errorf("workload %s: service account %q is not the declared %q (Pod %s spec.serviceAccountName)", k, w.ServiceAccount, sa, k)
	}
	w.ServiceAccount = sa
	if w.Service != "" && !slices.Contains(declaredServices(pod.Annotations[names.AnnotationServices]), w.Service) {
		return w, fmt.Errorf("workload %s: service %q is not declared for it (Pod %s annotation %s: %q)", k, w.Service, k, names.AnnotationServices, pod.Annotations[names.AnnotationServices])
	}
	if len(pod.Labels) > 0 {
		labels := make(map[string]string, len(pod.Labels))
		for k, v := range pod.Labels {
			labels[k] = v
		}
		w.Labels = labels
	}
	return w, nil
}

func declaredServices(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
