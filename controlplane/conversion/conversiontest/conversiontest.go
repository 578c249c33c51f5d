// Package conversiontest serves the TrafficSplit conversion webhook over
// TLS on loopback, and points CRDs at it, for tests with a real
// kube-apiserver (envtest) that write TrafficSplits: with the CRD's
// conversion strategy Webhook, a TrafficSplit written or read in a version
// other than the stored one fails unless the webhook answers.
package conversiontest

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/controlplane/conversion"
)

// Server is the conversion webhook on an httptest TLS server (127.0.0.1).
type Server struct {
	*httptest.Server
	// CABundle is the PEM the API server must trust to call it.
	CABundle []byte
}

// NewServer starts the webhook; Close stops it.
func NewServer() *Server {
	mux := http.NewServeMux()
	mux.Handle(conversion.Path, conversion.Handler(nil))
	srv := httptest.NewTLSServer(mux)
	return &Server{Server: srv, CABundle: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})}
}

// ClientConfig is a CRD webhook client configuration that reaches s.
func (s *Server) ClientConfig() *apiextensionsv1.WebhookClientConfig {
	return &apiextensionsv1.WebhookClientConfig{URL: ptr.To(s.URL + conversion.Path), CABundle: s.CABundle}
}

// Install installs the CRDs in dir into the API server of cfg, pointed at
// s (CRDs), and waits until they are served. Install them this way rather
// than with envtest.Environment's CRD options: when the Environment
// starts, it removes the conversion of every CRD whose types its scheme
// does not know as controller-runtime convertibles.
func (s *Server) Install(cfg *rest.Config, dir string) error {
	crds, err := s.CRDs(dir)
	if err != nil {
		return err
	}
	_, err = envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{CRDs: crds})
	return err
}

// CRDs reads the CRDs in dir (*.yaml, one CRD a file, as api/crds holds
// them) and points every conversion webhook among them at s, for
// envtest.Environment's CRDs.
func (s *Server) CRDs(dir string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no CRDs in %s (%v)", dir, err)
	}
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(b, crd); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if c := crd.Spec.Conversion; c != nil && c.Strategy == apiextensionsv1.WebhookConverter && c.Webhook != nil {
			c.Webhook.ClientConfig = s.ClientConfig()
		}
		out = append(out, crd)
	}
	return out, nil
}
