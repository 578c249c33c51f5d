package install

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meridian-mesh/meridian/internal/names"
)

// IssuerSecret is the Secret that holds the identity issuer.
const IssuerSecret = names.IssuerSecretName

// ErrInstalled is wrapped by the error ClusterChecker's func returns when
// the cluster already has an identity issuer.
var ErrInstalled = errors.New("meridian is already installed")

// ClusterChecker returns an Options.CheckCluster that refuses to generate
// a new identity issuer for a namespace where the cluster cfg reaches
// already has one: a new trust anchor would not be trusted by the proxies
// already running, and mTLS between meshed pods would break. It gives the
// API server timeout to answer.
func ClusterChecker(cfg *rest.Config, timeout time.Duration) func(ctx context.Context, namespace string) error {
	return func(ctx context.Context, namespace string) error {
		cfg := rest.CopyConfig(cfg)
		cfg.Timeout = timeout
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("checking the cluster: %w (--ignore-cluster renders without looking)", err)
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		_, err = cs.CoreV1().Secrets(namespace).Get(ctx, IssuerSecret, metav1.GetOptions{})
		switch {
		case err == nil:
			return fmt.Errorf("%w in this cluster: the Secret %s/%s holds its identity issuer, and the new trust anchor install would generate is one that running proxies do not trust. "+
				"Pass the current issuer (kubectl -n %s get secret %s -o jsonpath='{.data.ca\\.crt}' | base64 -d > ca.crt, likewise tls.crt and tls.key; then --identity-trust-anchors-file ca.crt --identity-issuer-certificate-file tls.crt --identity-issuer-key-file tls.key), "+
				"or --ignore-cluster to replace it", ErrInstalled, namespace, IssuerSecret, namespace, IssuerSecret)
		case apierrors.IsNotFound(err):
			return nil
		default:
			return fmt.Errorf("checking the cluster for an installed identity issuer (Secret %s/%s): %w (--ignore-cluster renders without looking)", namespace, IssuerSecret, err)
		}
	}
}
