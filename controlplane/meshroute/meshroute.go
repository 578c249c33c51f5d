// Package meshroute writes the status of the mesh's routes: the parent
// statuses of HTTPRoutes and GRPCRoutes for their Service parentRefs
// (GAMMA), as compile.MeshRouteParents computes them from the store, with
// controllerName meridian.io/mesh-controller. Entries of other controllers
// and of other parents (the gateway's Gateways) are kept.
package meshroute

import (
	"context"
	"log/slog"
	"reflect"
	"time"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/gateway/status"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// Options configure a Writer.
type Options struct {
	Store   *store.Store
	Client  gwclient.Interface
	Compile compile.Options
	Log     *slog.Logger
	// Synced, when set, is closed once the store holds the cluster's
	// state: nothing is written before (a status computed from a store
	// still filling would report Services missing that exist).
	Synced <-chan struct{}
	// Retry is the wait after a failed write (default 5 s).
	Retry time.Duration
}

// Writer keeps the mesh routes' statuses.
type Writer struct {
	o     Options
	w     *status.Writer
	last  map[routeKey][]gwv1.RouteParentStatus // what was last written, times cleared
	mesh  map[routeKey]bool                     // routes written for (to clear when a route leaves the mesh)
	watch map[store.Topic]watched
}

type routeKey struct{ kind, ns, name string }

type watched struct {
	ch     <-chan struct{}
	cancel func()
}

// New returns a Writer.
func New(o Options) *Writer {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Retry <= 0 {
		o.Retry = 5 * time.Second
	}
	return &Writer{
		o:     o,
		w:     &status.Writer{Client: o.Client, Controller: compile.MeshControllerName},
		last:  map[routeKey][]gwv1.RouteParentStatus{},
		mesh:  map[routeKey]bool{},
		watch: map[store.Topic]watched{},
	}
}

// serviceParents owns a route's Service parentRefs (status.Parents).
type serviceParents struct{}

func (serviceParents) Owns(p gwv1.ParentReference, _ string) bool { return store.IsServiceParent(p) }

// Start writes the statuses, then again whenever a mesh route, or a Service
// or ReferenceGrant one depends on, changes, until ctx ends.
func (w *Writer) Start(ctx context.Context) error {
	defer func() {
		for _, s := range w.watch {
			s.cancel()
		}
	}()
	if w.o.Synced != nil {
		select {
		case <-w.o.Synced:
		case <-ctx.Done():
			return nil
		}
	}
	for {
		topics := w.topics()
		w.subscribe(topics)
		var retry <-chan time.Time
		if err := w.Sync(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			w.o.Log.Error("mesh routes: writing statuses", "err", err)
			retry = time.After(w.o.Retry)
		}
		if !w.wait(ctx, retry) {
			return nil
		}
	}
}

// topics are what the statuses depend on: any mesh route, and the parent
// and backend Services of each (their topics also carry the grants).
func (w *Writer) topics() []store.Topic {
	ts := []store.Topic{store.MeshRoutesTopic}
	add := func(ns string, parents []gwv1.ParentReference, backends []store.Key) {
		for _, k := range store.ServiceParents(ns, parents) {
			ts = append(ts, store.ServiceTopic(k))
		}
		for _, k := range backends {
			ts = append(ts, store.ServiceTopic(k))
		}
	}
	for _, r := range w.o.Store.HTTPRoutes() {
		if len(store.ServiceParents(r.Namespace, r.Spec.ParentRefs)) > 0 {
			add(r.Namespace, r.Spec.ParentRefs, store.HTTPRouteServices(r))
		}
	}
	for _, r := range w.o.Store.GRPCRoutes() {
		if len(store.ServiceParents(r.Namespace, r.Spec.ParentRefs)) > 0 {
			add(r.Namespace, r.Spec.ParentRefs, store.GRPCRouteServices(r))
		}
	}
	return ts
}

func (w *Writer) subscribe(ts []store.Topic) {
	want := map[store.Topic]bool{}
	for _, t := range ts {
		want[t] = true
		if _, ok := w.watch[t]; !ok {
			ch, cancel := w.o.Store.Watch(t)
			w.watch[t] = watched{ch, cancel}
		}
	}
	for t, s := range w.watch {
		if !want[t] {
			s.cancel()
			delete(w.watch, t)
		}
	}
}

func (w *Writer) wait(ctx context.Context, retry <-chan time.Time) bool {
	cases := []reflect.SelectCase{
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(retry)},
	}
	for _, s := range w.watch {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(s.ch)})
	}
	chosen, _, _ := reflect.Select(cases)
	return chosen != 0
}

// Sync writes every mesh route's status that differs from what was last
// written (one pass; the routes that left the mesh get our entries
// removed).
func (w *Writer) Sync(ctx context.Context) error {
	seen := map[routeKey]bool{}
	var firstErr error
	write := func(k routeKey, route any, parents []gwv1.ParentReference) {
		isMesh := len(store.ServiceParents(k.ns, parents)) > 0
		if !isMesh && !w.mesh[k] {
			return
		}
		seen[k] = true
		ours := compile.MeshRouteParents(w.o.Store, route, w.o.Compile)
		if last, ok := w.last[k]; ok && status.Same(last, ours, status.ParentsTimes) {
			return
		}
		if _, err := w.w.Route(ctx, k.kind, k.ns, k.name, serviceParents{}, ours); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		w.last[k] = ours
		w.mesh[k] = isMesh
		if !isMesh {
			delete(w.mesh, k)
			delete(w.last, k)
		}
	}
	for _, r := range w.o.Store.HTTPRoutes() {
		write(routeKey{"HTTPRoute", r.Namespace, r.Name}, r, r.Spec.ParentRefs)
	}
	for _, r := range w.o.Store.GRPCRoutes() {
		write(routeKey{"GRPCRoute", r.Namespace, r.Name}, r, r.Spec.ParentRefs)
	}
	// Deleted routes: their status went with them.
	for k := range w.mesh {
		if !seen[k] {
			delete(w.mesh, k)
		}
	}
	for k := range w.last {
		if !seen[k] {
			delete(w.last, k)
		}
	}
	return firstErr
}
