// Package apiserver starts a real kube-apiserver and etcd for a test
// (controller-runtime's envtest, from the binaries KUBEBUILDER_ASSETS names;
// hack/kube-assets.sh fetches them and `make test` sets it), or skips the
// test when they are not there. Tests of code that talks to Kubernetes use
// it instead of a fake client.
package apiserver

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// Need skips the test unless KUBEBUILDER_ASSETS is set, and silences
// controller-runtime's logger (envtest logs through it).
func Need(t testing.TB) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: this test needs the etcd and kube-apiserver binaries; `make test` sets it (see hack/kube-assets.sh)")
	}
	ctrllog.SetLogger(logr.Discard())
}

// Start starts an API server of the test's own, with the CRDs of crdDirs
// installed (each directory must exist), stopped when the test ends, and
// returns its admin configuration.
func Start(t testing.TB, crdDirs ...string) *rest.Config {
	t.Helper()
	_, cfg := StartEnv(t, crdDirs...)
	return cfg
}

// StartEnv is Start for tests that need the Environment itself (to add
// users, say).
func StartEnv(t testing.TB, crdDirs ...string) (*envtest.Environment, *rest.Config) {
	t.Helper()
	Need(t)
	env := &envtest.Environment{CRDDirectoryPaths: crdDirs, ErrorIfCRDPathMissing: len(crdDirs) > 0}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting kube-apiserver and etcd from KUBEBUILDER_ASSETS=%s: %v", os.Getenv("KUBEBUILDER_ASSETS"), err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stopping kube-apiserver and etcd: %v", err)
		}
	})
	return env, cfg
}

// GatewayAPICRDs is the directory of the Gateway API CRDs the chart ships
// (charts/meridian/crds/gateway-api, copied from the module by make
// generate), for Start.
func GatewayAPICRDs() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "charts", "meridian", "crds", "gateway-api")
}
