package rollout

import (
	"context"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// settle gathers the events of one change (a controller writes several
// objects at once) into one redraw, as Argo's plugin's 200 ms does.
const settle = 200 * time.Millisecond

// Watch calls fn with the Rollout name and what it owns, then again after
// each change to the Rollout, its ReplicaSets, their pods or its
// AnalysisRuns (the API server's watch, re-listed after each change), and
// every refresh (0: only on changes) so ages move on. It returns nil when
// fn says it is done or ctx ends, or the error of a read or of fn.
func (c *Client) Watch(ctx context.Context, name string, refresh time.Duration, fn func(*Info, *v1alpha1.Rollout) (bool, error)) error {
	for {
		s, err := c.snapshot(ctx, name)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if done, err := fn(s.info, s.ro); done || err != nil {
			return err
		}
		c.waitChange(ctx, name, s.rvs, refresh)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// waitChange returns after the first change since the resource versions
// rvs (and settle), after refresh, when a watch ends (the caller lists
// again) or when ctx ends.
func (c *Client) waitChange(ctx context.Context, name string, rvs [4]string, refresh time.Duration) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hashedSel := client.MatchingLabelsSelector{Selector: hashed()}
	lists := []struct {
		list client.ObjectList
		opts []client.ListOption
	}{
		{&v1alpha1.RolloutList{}, []client.ListOption{client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", name)}}},
		{&appsv1.ReplicaSetList{}, []client.ListOption{hashedSel}},
		{&corev1.PodList{}, []client.ListOption{hashedSel}},
		{&v1alpha1.AnalysisRunList{}, nil},
	}
	changed := make(chan bool, len(lists))
	for i, l := range lists {
		opts := append([]client.ListOption{client.InNamespace(c.Namespace),
			&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rvs[i], AllowWatchBookmarks: true}}}, l.opts...)
		w, err := c.C.Watch(ctx, l.list, opts...)
		if err != nil {
			// Not watchable now (gone resource version, a network
			// error): list again, after a pause so a lasting error
			// does not spin.
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
			return
		}
		defer w.Stop()
		go func() {
			for ev := range w.ResultChan() {
				if ev.Type == watch.Bookmark {
					continue
				}
				changed <- true
				return
			}
			changed <- false // the watch ended
		}()
	}
	var tick <-chan time.Time
	if refresh > 0 {
		t := time.NewTimer(refresh)
		defer t.Stop()
		tick = t.C
	}
	select {
	case ch := <-changed:
		if ch {
			select {
			case <-time.After(settle):
			case <-ctx.Done():
			}
		}
	case <-tick:
	case <-ctx.Done():
	}
}
