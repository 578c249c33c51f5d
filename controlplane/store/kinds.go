package store

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// kinds is the registry of everything the store holds. Each kind lives in
// a file of its own (its type, its table with the indexes, the topics a
// change wakes); adding a kind is adding that file and one line here.
// Upsert tries the kinds in this order.
var kinds = []*kind{
	&serviceKind,   // service.go
	&sliceKind,     // endpointslice.go
	&podKind,       // pod.go
	&namespaceKind, // namespace.go
	&accountKind,   // serviceaccount.go
	&profileKind,   // serviceprofile.go
	&splitKind,     // trafficsplit.go
	&workloadKind,  // workload.go
	&rolloutKind,   // rollout.go
	// The gateway's (gatewayapi.go holds their shared table).
	&gatewayClassKind,     // gatewayclass.go
	&gatewayKind,          // gateway.go
	&httpRouteKind,        // httproute.go
	&grpcRouteKind,        // grpcroute.go
	&tlsRouteKind,         // tlsroute.go
	&tcpRouteKind,         // tcproute.go
	&udpRouteKind,         // udproute.go
	&listenerSetKind,      // listenerset.go
	&referenceGrantKind,   // referencegrant.go
	&backendTLSPolicyKind, // backendtlspolicy.go
	&secretKind,           // secret.go
	&configMapKind,        // configmap.go
}

func init() {
	for i, k := range kinds {
		k.id = i
	}
}

// kind is one kind of object the store holds.
type kind struct {
	name string // as errors name it: "Service"
	// decode recognizes an object of this kind: its key and the value to
	// store, or ok false for an object of another kind. Nil for a kind
	// written only through methods of its own (Workload): Upsert, Delete
	// and ReplaceAll leave it alone.
	decode func(obj runtime.Object) (k Key, v any, ok bool, err error)
	// newTable returns the kind's empty table in a new store.
	newTable func(s *Store) table
	id       int // its position in kinds, the index of its table
}

// table is one kind's objects and indexes in one store. Its methods run
// under the store's write lock; each adds to a the topics the write
// affects, and nothing when the object is unchanged.
type table interface {
	upsert(k Key, v any, a affected)
	delete(k Key, a affected)
	// each calls f with every key held (ReplaceAll's deletions).
	each(f func(Key))
}

// object decodes a Kubernetes object of type T: namespaced unless cluster
// is set, in which case its key has no namespace.
func object[T interface {
	runtime.Object
	metav1.Object
}](name string, cluster bool) func(runtime.Object) (Key, any, bool, error) {
	return func(obj runtime.Object) (Key, any, bool, error) {
		o, ok := obj.(T)
		if !ok {
			return Key{}, nil, false, nil
		}
		k := Key{Namespace: o.GetNamespace(), Name: o.GetName()}
		if k.Name == "" {
			return Key{}, nil, true, fmt.Errorf("store: %s without metadata.name", name)
		}
		if cluster {
			k.Namespace = ""
		} else if k.Namespace == "" {
			return Key{}, nil, true, fmt.Errorf("store: %s %s without metadata.namespace (a %s is namespaced)", name, k.Name, name)
		}
		return k, obj, true, nil
	}
}

// item is one decoded write.
type item struct {
	kind *kind
	key  Key
	v    any
}

func decode(obj runtime.Object) (item, error) {
	if obj == nil {
		return item{}, fmt.Errorf("store: nil object")
	}
	for _, k := range kinds {
		if k.decode == nil {
			continue
		}
		key, v, ok, err := k.decode(obj)
		if err != nil {
			return item{}, err
		}
		if ok {
			return item{kind: k, key: key, v: v}, nil
		}
	}
	return item{}, fmt.Errorf("store: unsupported object %T: the store holds %s", obj, kindNames())
}

func kindNames() string {
	var names []string
	for _, k := range kinds {
		if k.decode != nil {
			names = append(names, k.name)
		}
	}
	return strings.Join(names, ", ")
}

// unchanged reports whether an update carries nothing new: the same
// resourceVersion when both have one (an informer's resync), else equal
// content (a reloaded file).
func unchanged(old, cur runtime.Object) bool {
	om, ok1 := old.(metav1.Object)
	cm, ok2 := cur.(metav1.Object)
	if ok1 && ok2 && om.GetResourceVersion() != "" && cm.GetResourceVersion() != "" {
		return om.GetResourceVersion() == cm.GetResourceVersion()
	}
	return equality.Semantic.DeepEqual(old, cur)
}
