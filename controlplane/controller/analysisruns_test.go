package controller

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/analysisrun"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// With --analysis-run-workers the leader runs AnalysisRuns; Run stops it
// with the rest, leaving no goroutine behind.
func TestControllerRunsAnalysisRuns(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	cfg := apiserver.Start(t, filepath.Join(filepath.Dir(file), "..", "..", "api", "crds"))
	c, err := client.New(cfg, client.Options{Scheme: analysisrun.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "meridian"}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"ok": true}`) }))
	defer srv.Close()
	defer goleak.VerifyNone(t, leakOptions()...)

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(runCtx, Options{Store: "kube", RestConfig: cfg, DestinationAddr: "127.0.0.1:0", ShutdownGrace: time.Second, Log: quietLog(),
			AnalysisRunWorkers: 1,
			LeaderElection:     LeaderElectionOptions{Namespace: "meridian", Identity: "a", RetryPeriod: 250 * time.Millisecond}}, nil)
	}()
	run := &v1alpha1.AnalysisRun{}
	if err := yaml.UnmarshalStrict([]byte(`
metadata: {name: smoke, namespace: default}
spec:
  metrics:
  - name: ok
    successCondition: result.ok
    provider: {web: {url: `+srv.URL+`}}
`), run); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, run); err != nil {
		t.Fatal(err)
	}
	for run.Status.Phase != v1alpha1.AnalysisPhaseSuccessful {
		select {
		case err := <-done:
			t.Fatalf("controller stopped: %v", err)
		case <-ctx.Done():
			t.Fatalf("run not Successful: %+v", run.Status)
		case <-time.After(100 * time.Millisecond):
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(run), run); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
