package rollout

import (
	"context"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/test/apiserver"
)

// A template patch whose test operation fails (the container list changed
// since it was read) is a conflict, which SetImage reads again after; a
// real validation error (a Deployment's bad image) is not.
func TestTemplatePatchTestIsConflict(t *testing.T) {
	cfg := apiserver.Start(t, filepath.Join("..", "..", "api", "crds"))
	c, err := NewClient(cfg, "default")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ro := canary(weight(50))
	ro.Namespace, ro.UID, ro.Generation = "default", "", 0
	sel := map[string]string{"app": "web"}
	ro.Spec.Selector = &metav1.LabelSelector{MatchLabels: sel}
	ro.Spec.Template = &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:v1"}}}}
	if err := c.C.Create(ctx, ro); err != nil {
		t.Fatal(err)
	}
	w := workload{kind: "Rollout", name: ro.Name, obj: ro, template: ro.Spec.Template}
	err = c.patchTemplate(ctx, ro, w, []map[string]any{
		{"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "other"},
		{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "app:v2"}})
	if !apierrors.IsConflict(err) {
		t.Fatalf("failed test operation: %v", err)
	}
	err = c.patchTemplate(ctx, ro, w, []map[string]any{
		{"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "app"},
		{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "app:v2"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Get(ctx, ro.Name); got.Spec.Template.Spec.Containers[0].Image != "app:v2" {
		t.Fatalf("image %s", got.Spec.Template.Spec.Containers[0].Image)
	}
	// An invalid object is an error, not a conflict.
	if testFailed(apierrors.NewInvalid(v1alpha1.GroupVersion.WithKind("Rollout").GroupKind(), "web", nil)) {
		t.Fatal("a validation error read as a failed test")
	}
}
