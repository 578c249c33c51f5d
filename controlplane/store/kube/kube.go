// Package kube is the store's Kubernetes source: controller-runtime
// informers over Services, EndpointSlices, Pods, ServiceAccounts,
// Namespaces, ServiceProfiles, SMI TrafficSplits, Rollouts, and the mesh's
// HTTPRoutes, GRPCRoutes and ReferenceGrants (and, with
// WithGatewayAPI, the Gateway API kinds, TLS Secrets and CA ConfigMaps)
// whose events write into a store.Store.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	splitconversion "github.com/meridian-mesh/meridian/api/split/conversion"
	splitv1alpha1 "github.com/meridian-mesh/meridian/api/split/v1alpha1"
	splitv1alpha2 "github.com/meridian-mesh/meridian/api/split/v1alpha2"
	splitv1alpha3 "github.com/meridian-mesh/meridian/api/split/v1alpha3"
	splitv1alpha4 "github.com/meridian-mesh/meridian/api/split/v1alpha4"
	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// Scheme returns a scheme with every type the source reads: core/v1,
// discovery/v1, meridian.io/v1alpha1, split.smi-spec.io v1alpha1 to
// v1alpha4 and gateway.networking.k8s.io/v1.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme,
		discoveryv1.AddToScheme,
		v1alpha1.AddToScheme,
		splitv1alpha1.AddToScheme,
		splitv1alpha2.AddToScheme,
		splitv1alpha3.AddToScheme,
		splitv1alpha4.AddToScheme,
		gwv1.Install,
	} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Option configures Run.
type Option func(*options)

type options struct {
	log     *slog.Logger
	ready   func()
	gateway bool
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithReady calls f once every informer has synced, that is once the store
// holds the cluster's state.
func WithReady(f func()) Option { return func(o *options) { o.ready = f } }

// WithGatewayAPI also watches the Gateway API kinds the gateway compiler
// reads (gateway.networking.k8s.io/v1 GatewayClasses, Gateways,
// HTTPRoutes, GRPCRoutes, TLSRoutes, TCPRoutes, UDPRoutes, ListenerSets, ReferenceGrants,
// BackendTLSPolicies),
// kubernetes.io/tls Secrets and the ca.crt of ConfigMaps, those whose CRDs
// are installed (discovery says which; the others are logged once and
// skipped, and never hold up the sync). It is an option because it needs
// cluster-wide list and watch on those, which only a controller running
// the gateway is granted.
func WithGatewayAPI() Option { return func(o *options) { o.gateway = true } }

// gatewayKinds are the Gateway API kinds WithGatewayAPI watches, when
// served in v1.
var gatewayKinds = []gatewayKind{
	{"GatewayClass", func() client.Object { return &gwv1.GatewayClass{} }},
	{"Gateway", func() client.Object { return &gwv1.Gateway{} }},
	{"HTTPRoute", func() client.Object { return &gwv1.HTTPRoute{} }},
	{"GRPCRoute", func() client.Object { return &gwv1.GRPCRoute{} }},
	{"TLSRoute", func() client.Object { return &gwv1.TLSRoute{} }},
	{"TCPRoute", func() client.Object { return &gwv1.TCPRoute{} }},
	{"UDPRoute", func() client.Object { return &gwv1.UDPRoute{} }},
	{"ListenerSet", func() client.Object { return &gwv1.ListenerSet{} }},
	{"ReferenceGrant", func() client.Object { return &gwv1.ReferenceGrant{} }},
	{"BackendTLSPolicy", func() client.Object { return &gwv1.BackendTLSPolicy{} }},
}

type gatewayKind struct {
	kind string
	obj  func() client.Object
}

// meshKinds are the Gateway API kinds the mesh reads without the gateway:
// GAMMA routes and the grants of their cross-namespace backendRefs.
var meshKinds = []gatewayKind{
	{"HTTPRoute", func() client.Object { return &gwv1.HTTPRoute{} }},
	{"GRPCRoute", func() client.Object { return &gwv1.GRPCRoute{} }},
	{"ReferenceGrant", func() client.Object { return &gwv1.ReferenceGrant{} }},
}

// gatewayObjects returns the Gateway API kinds to watch (those served in
// gateway.networking.k8s.io/v1) and the names of those that are not.
func gatewayObjects(mapper meta.RESTMapper) (watch []client.Object, missing []string, err error) {
	return servedGatewayKinds(mapper, gatewayKinds)
}

func servedGatewayKinds(mapper meta.RESTMapper, kinds []gatewayKind) (watch []client.Object, missing []string, err error) {
	for _, k := range kinds {
		gk := schema.GroupKind{Group: gwv1.GroupName, Kind: k.kind}
		if _, err := mapper.RESTMapping(gk, gwv1.GroupVersion.Version); err != nil {
			if !meta.IsNoMatchError(err) {
				return nil, nil, fmt.Errorf("kube: looking up %s: %w", gk, err)
			}
			missing = append(missing, k.kind)
			continue
		}
		watch = append(watch, k.obj())
	}
	return watch, missing, nil
}

// caOnly keeps only a ConfigMap's ca.crt (what a BackendTLSPolicy reads),
// so that the cache of every ConfigMap in the cluster stays small.
func caOnly(obj any) (any, error) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return obj, nil
	}
	ca, has := cm.Data["ca.crt"]
	cm.Data, cm.BinaryData = nil, nil
	if has {
		cm.Data = map[string]string{"ca.crt": ca}
	}
	return cm, nil
}

// splitVersions are the TrafficSplit versions Run can watch, in order of
// preference; one is watched, as every version holds the same objects.
//
// v1alpha4 comes first: it is the storage version of Meridian's CRD, which
// the API server reads without calling the conversion webhook. Watching
// another version would make this store (and so the controller's
// readiness) depend on the controller's own webhook, reached through the
// controller's Service, which has no endpoint until a controller is ready:
// with TrafficSplits in the cluster, no controller would ever become ready
// on a cold start or an upgrade. It is watched unstructured and decoded
// with api/split/conversion, which also reads the v1alpha1 string weights
// that objects written while the CRD converted with strategy None (as SMI
// shipped it, and as other projects' copies of it still do) hold under
// v1alpha4; a typed informer would fail its whole list on one of them.
//
// Then v1alpha1, whose quantity weights also decode the integers later
// versions write, while a v1alpha2+ view of an object written as v1alpha1
// under strategy None would carry a string its integer field cannot hold.
var splitVersions = []struct {
	version string
	obj     func() client.Object
}{
	{"v1alpha4", func() client.Object { return &unstructured.Unstructured{} }},
	{"v1alpha1", func() client.Object { return &splitv1alpha1.TrafficSplit{} }},
	{"v1alpha3", func() client.Object { return &splitv1alpha3.TrafficSplit{} }},
	{"v1alpha2", func() client.Object { return &splitv1alpha2.TrafficSplit{} }},
}

var (
	profileGK = schema.GroupKind{Group: v1alpha1.GroupVersion.Group, Kind: "ServiceProfile"}
	rolloutGK = schema.GroupKind{Group: v1alpha1.GroupVersion.Group, Kind: "Rollout"}
	splitGK   = schema.GroupKind{Group: splitv1alpha1.GroupVersion.Group, Kind: "TrafficSplit"}
)

// Run fills st from the cluster cfg points at and keeps it up to date until
// ctx is done. It calls the WithReady func once the initial state is in the
// store. Kinds whose CRDs are not installed (ServiceProfile, TrafficSplit)
// are skipped with a log line; installing them later takes a restart. Run
// returns nil when ctx is done, or an error if the informers cannot start.
func Run(ctx context.Context, cfg *rest.Config, st *store.Store, opts ...Option) error {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, f := range opts {
		f(&o)
	}
	scheme, err := Scheme()
	if err != nil {
		return err
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	copts := cache.Options{
		HTTPClient:       httpClient,
		Scheme:           scheme,
		Mapper:           mapper,
		DefaultTransform: cache.TransformStripManagedFields(),
	}
	if o.gateway {
		strip := cache.TransformStripManagedFields()
		copts.ByObject = map[client.Object]cache.ByObject{
			// Certificates only: the API server filters by type.
			&corev1.Secret{}: {Field: fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS))},
			&corev1.ConfigMap{}: {Transform: func(obj any) (any, error) {
				obj, err := strip(obj)
				if err != nil {
					return nil, err
				}
				return caOnly(obj)
			}},
		}
	}
	c, err := cache.New(cfg, copts)
	if err != nil {
		return fmt.Errorf("kube: %w", err)
	}

	watched := []client.Object{
		&corev1.Namespace{},
		&corev1.Service{},
		&discoveryv1.EndpointSlice{},
		&corev1.Pod{},
		&corev1.ServiceAccount{},
	}
	if _, err := mapper.RESTMapping(profileGK, v1alpha1.GroupVersion.Version); err != nil {
		if !meta.IsNoMatchError(err) {
			return fmt.Errorf("kube: looking up %s: %w", profileGK, err)
		}
		o.log.Warn("ServiceProfile CRD not installed: profiles are not read", "crd", "serviceprofiles.meridian.io")
	} else {
		watched = append(watched, &v1alpha1.ServiceProfile{})
	}
	split, err := splitVersion(mapper)
	if err != nil {
		return err
	}
	if split == nil {
		o.log.Warn("TrafficSplit CRD not installed: SMI traffic splits are not read", "crd", "trafficsplits.split.smi-spec.io")
	} else {
		o.log.Info("reading SMI TrafficSplits", "version", split.GetObjectKind().GroupVersionKind().Version)
		watched = append(watched, split)
	}

	if _, err := mapper.RESTMapping(rolloutGK, v1alpha1.GroupVersion.Version); err != nil {
		if !meta.IsNoMatchError(err) {
			return fmt.Errorf("kube: looking up %s: %w", rolloutGK, err)
		}
		o.log.Warn("Rollout CRD not installed: Rollouts' traffic splits are not read", "crd", "rollouts.meridian.io")
	} else {
		watched = append(watched, &v1alpha1.Rollout{})
	}
	if !o.gateway {
		// The mesh reads HTTPRoutes and GRPCRoutes with a Service parent
		// (GAMMA) and the ReferenceGrants their backendRefs need, with or
		// without the gateway.
		ms, missing, err := servedGatewayKinds(mapper, meshKinds)
		if err != nil {
			return err
		}
		if len(missing) > 0 {
			o.log.Warn("Gateway API CRDs not installed: mesh routes of those kinds are not read", "group", gwv1.GroupName, "version", gwv1.GroupVersion.Version, "kinds", missing)
		}
		watched = append(watched, ms...)
	}
	if o.gateway {
		gws, missing, err := gatewayObjects(mapper)
		if err != nil {
			return err
		}
		if len(missing) > 0 {
			o.log.Warn("Gateway API CRDs not installed: those kinds are not read", "group", gwv1.GroupName, "version", gwv1.GroupVersion.Version, "kinds", missing)
		}
		watched = append(watched, gws...)
		watched = append(watched, &corev1.Secret{}, &corev1.ConfigMap{})
	}

	h := handler{st: st, log: o.log}
	for _, obj := range watched {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("kube: informer for %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(h); err != nil {
			return fmt.Errorf("kube: informer for %T: %w", obj, err)
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	startErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		startErr <- c.Start(ctx)
	}()
	defer wg.Wait()

	synced := make(chan bool, 1)
	go func() { synced <- c.WaitForCacheSync(ctx) }()
	select {
	case err := <-startErr:
		if err == nil {
			err = errors.New("informers stopped")
		}
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("kube: %w", err)
	case ok := <-synced:
		if !ok {
			return nil // ctx done before the caches synced
		}
	}
	o.log.Info("kubernetes store synced", "kinds", len(watched))
	if o.ready != nil {
		o.ready()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-startErr:
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("kube: %w", err)
		}
		return nil
	}
}

// splitVersion returns an object of the TrafficSplit version to watch, or nil
// if the CRD is not installed.
func splitVersion(mapper meta.RESTMapper) (client.Object, error) {
	mappings, err := mapper.RESTMappings(splitGK)
	if err != nil {
		if meta.IsNoMatchError(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("kube: looking up %s: %w", splitGK, err)
	}
	served := map[string]bool{}
	for _, m := range mappings {
		served[m.GroupVersionKind.Version] = true
	}
	for _, v := range splitVersions {
		if served[v.version] {
			obj := v.obj()
			obj.GetObjectKind().SetGroupVersionKind(splitGK.WithVersion(v.version))
			return obj, nil
		}
	}
	versions := make([]string, 0, len(served))
	for v := range served {
		versions = append(versions, v)
	}
	slices.Sort(versions)
	return nil, fmt.Errorf("kube: TrafficSplit is served in versions %v, none of which Meridian reads", versions)
}

// handler writes informer events into the store.
type handler struct {
	st  *store.Store
	log *slog.Logger
}

func (h handler) OnAdd(obj any, _ bool) { h.upsert(obj) }

func (h handler) OnUpdate(_, obj any) { h.upsert(obj) }

func (h handler) OnDelete(obj any) {
	if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	o, ok := obj.(runtime.Object)
	if !ok {
		h.log.Error("kube: deleted object of unexpected type", "type", fmt.Sprintf("%T", obj))
		return
	}
	o, err := typed(o)
	if err != nil {
		h.log.Error("kube: cannot read deleted object", "err", err)
		return
	}
	if err := h.st.Delete(o); err != nil {
		h.log.Error("kube: cannot delete from the store", "err", err)
	}
}

func (h handler) upsert(obj any) {
	o, ok := obj.(runtime.Object)
	if !ok {
		h.log.Error("kube: object of unexpected type", "type", fmt.Sprintf("%T", obj))
		return
	}
	o, err := typed(o)
	if err != nil {
		h.log.Error("kube: cannot read object", "err", err)
		return
	}
	if err := h.st.Upsert(o); err != nil {
		h.log.Error("kube: cannot store object", "err", err)
	}
}

// typed returns the typed TrafficSplit an unstructured one (the v1alpha4
// informer's, see splitVersions) decodes to, and any other object as it is.
func typed(o runtime.Object) (runtime.Object, error) {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return o, nil
	}
	if u.GroupVersionKind().GroupKind() != splitGK {
		return nil, fmt.Errorf("unstructured %s %s/%s: only TrafficSplits are watched unstructured", u.GroupVersionKind(), u.GetNamespace(), u.GetName())
	}
	raw, err := u.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return splitconversion.Decode(raw)
}
