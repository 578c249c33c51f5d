package controller

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/conversion/conversiontest"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/reconciler"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// With Options.Rollouts the controller reconciles Rollouts, as a writer
// under the Lease: a Rollout gets its ReplicaSet and a status.
func TestControllerKubeRollouts(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	conv := conversiontest.NewServer()
	defer conv.Close()
	cfg := apiserver.Start(t)
	if err := conv.Install(cfg, filepath.Join(filepath.Dir(file), "..", "..", "api", "crds")); err != nil {
		t.Fatal(err)
	}
	scheme := k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, ns := range []string{"shop", "meridian"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	go func() {
		done <- Run(runCtx, Options{Store: "kube", RestConfig: cfg, DestinationAddr: "127.0.0.1:0", ShutdownGrace: time.Second,
			Rollouts: true, LeaderElection: LeaderElectionOptions{Namespace: "meridian", RetryPeriod: 200 * time.Millisecond}}, nil)
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	}()

	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}},
	}
	ro := &v1alpha1.Rollout{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: v1alpha1.RolloutSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: &tmpl,
			Strategy: v1alpha1.RolloutStrategy{Canary: &v1alpha1.CanaryStrategy{}},
		},
	}
	if err := c.Create(ctx, ro); err != nil {
		t.Fatal(err)
	}
	name := "web-" + reconciler.PodTemplateHash(&tmpl, nil)
	for {
		var rs appsv1.ReplicaSet
		err := c.Get(ctx, types.NamespacedName{Namespace: "shop", Name: name}, &rs)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("ReplicaSet %s: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
