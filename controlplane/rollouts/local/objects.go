package local

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// objects is the read side the meridian analysis provider needs, over
// local mode's own objects: the Rollouts the driver drives (spec from the
// directory, status as last written) and the instances ReplicaSets runs, as
// Pods. It reads only; anything else is an error naming the type.
type objects struct{ d *Driver }

var _ client.Reader = objects{}

func (o objects) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	ro, ok := obj.(*v1alpha1.Rollout)
	if !ok {
		return fmt.Errorf("local mode's rollout driver reads Rollouts and Pods, not %T", obj)
	}
	cur, _ := o.d.rollout(store.Key{Namespace: key.Namespace, Name: key.Name})
	if cur == nil {
		return apierrors.NewNotFound(schema.GroupResource{Group: v1alpha1.GroupVersion.Group, Resource: "rollouts"}, key.Name)
	}
	cur.DeepCopyInto(ro)
	return nil
}

func (o objects) List(_ context.Context, list client.ObjectList, opts ...client.ListOption) error {
	pl, ok := list.(*corev1.PodList)
	if !ok {
		return fmt.Errorf("local mode's rollout driver lists Pods only, not %T", list)
	}
	lo := (&client.ListOptions{}).ApplyOptions(opts)
	pl.Items = nil
	for _, p := range o.d.o.ReplicaSets.Pods(lo.Namespace) {
		if lo.LabelSelector == nil || lo.LabelSelector.Matches(labels.Set(p.Labels)) {
			pl.Items = append(pl.Items, *p.DeepCopy())
		}
	}
	return nil
}
