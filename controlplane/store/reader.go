package store

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// Key names a namespaced object.
type Key struct{ Namespace, Name string }

func (k Key) String() string { return k.Namespace + "/" + k.Name }

// TrafficSplit is the normalized form of an SMI TrafficSplit of any version
// (split.smi-spec.io v1alpha1 with string weights through v1alpha4): the
// apex service's traffic goes to the backends by weight.
type TrafficSplit struct {
	Key      Key
	Service  string // apex service name, in Key.Namespace
	Backends []Backend
}

// Backend is one weighted service of a TrafficSplit.
type Backend struct {
	Service string
	Weight  int64 // any scale; 0 receives nothing
}

// Workload is a process that registered itself in local mode.
type Workload struct {
	Name, Namespace string
	Service         string // the service it serves; empty for a client-only workload
	ServiceAccount  string
	Address         string // ip:port of its proxy's inbound listener
	AppPort         uint32
	Labels          map[string]string
}

// Reader is the read side the compilers use. Every method returns objects
// the caller must not modify. Implementations are safe for concurrent use.
type Reader interface {
	Service(k Key) (*corev1.Service, bool)
	// ServiceByClusterIP finds the service owning a cluster IP.
	ServiceByClusterIP(ip string) (Key, bool)
	// EndpointSlices returns the slices labelled kubernetes.io/service-name=k.Name in k.Namespace.
	EndpointSlices(k Key) []*discoveryv1.EndpointSlice
	Pod(k Key) (*corev1.Pod, bool)
	Namespace(name string) (*corev1.Namespace, bool)
	// ServiceProfile returns the profile named for the service's FQDN
	// (<svc>.<ns>.svc.<cluster-domain>) in the service's namespace.
	ServiceProfile(k Key) (*v1alpha1.ServiceProfile, bool)
	// TrafficSplits returns the splits whose apex is the service k.
	TrafficSplits(k Key) []TrafficSplit
	// Workloads returns the registered workloads serving service k (local mode).
	Workloads(k Key) []Workload
	// MeshHTTPRoutes and MeshGRPCRoutes return the routes whose parentRefs
	// name Service k (GAMMA), in no order.
	MeshHTTPRoutes(k Key) []*gwv1.HTTPRoute
	MeshGRPCRoutes(k Key) []*gwv1.GRPCRoute
	// ReferenceGrants returns every ReferenceGrant (a mesh route's
	// backendRef to another namespace needs one there).
	ReferenceGrants() []*gwv1.ReferenceGrant
	// Rollouts returns the canary Rollouts whose stableService is k.
	Rollouts(k Key) []*v1alpha1.Rollout
}

// Notifier tells subscribers that something they depend on changed, by
// topic (topic.go). A Service topic wakes on a change to the Service, its
// EndpointSlices, the Pods behind them, its ServiceProfile, TrafficSplits
// naming it (as apex or backend), its registered Workloads, its
// Namespace's labels or annotations, HTTPRoutes and GRPCRoutes naming it
// as parent (GAMMA), or Rollouts naming it as stable or canary Service; a
// change wakes no other topic.
type Notifier interface {
	// Watch returns a channel that receives a value (coalesced: at most one
	// pending) after every change affecting topic t, and a cancel func.
	// Subscribers re-read the store when woken; they never block writers.
	Watch(t Topic) (changed <-chan struct{}, cancel func())
}
