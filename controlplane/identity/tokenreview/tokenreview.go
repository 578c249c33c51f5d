// Package tokenreview proves workload identity in Kubernetes: a pod's
// projected, audience-scoped ServiceAccount token checked with the API
// server's TokenReview. It is apart from package identity so that the CA
// and the Certify server carry no Kubernetes dependency.
package tokenreview

import (
	"context"
	"fmt"
	"slices"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meridian-mesh/meridian/controlplane/identity"
	"github.com/meridian-mesh/meridian/internal/names"
)

// Verifier checks a pod's projected ServiceAccount token with the
// API server's TokenReview, for audience.
func Verifier(cs kubernetes.Interface, audience string) identity.Verifier {
	if audience == "" {
		audience = names.TokenAudience
	}
	return identity.VerifierFunc(func(ctx context.Context, token []byte) (identity.Subject, error) {
		tr, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
			Spec: authnv1.TokenReviewSpec{Token: string(token), Audiences: []string{audience}},
		}, metav1.CreateOptions{})
		if err != nil {
			return identity.Subject{}, fmt.Errorf("TokenReview: %w", err)
		}
		st := tr.Status
		if !st.Authenticated {
			msg := st.Error
			if msg == "" {
				msg = "not authenticated"
			}
			return identity.Subject{}, fmt.Errorf("%w: %s", identity.ErrUnauthenticated, msg)
		}
		if !slices.Contains(st.Audiences, audience) {
			return identity.Subject{}, fmt.Errorf("%w: token is not for audience %s", identity.ErrUnauthenticated, audience)
		}
		ns, sa, ok := names.ParseServiceAccountUser(st.User.Username)
		if !ok {
			return identity.Subject{}, fmt.Errorf("%w: %q is not a service account", identity.ErrUnauthenticated, st.User.Username)
		}
		return identity.Subject{Namespace: ns, ServiceAccount: sa}, nil
	})
}
