package gateway

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meridian-mesh/meridian/controlplane/store"
)

// InputFrom over a store holding the conformance manifests compiles to
// what the same objects compile to when passed whole.
func TestInputFromStore(t *testing.T) {
	in := add(load(t, "conformance/manifests.yaml", "conformance/httproute-reference-grant.yaml", "conformance/httproute-matching-across-routes.yaml", "conformance/tlsroute-simple-same-namespace.yaml"),
		tlsSecret(t, infra, "tls-validity-checks-certificate"))
	st := store.New()
	var objs []runtime.Object
	for _, o := range in.GatewayClasses {
		objs = append(objs, o)
	}
	for _, o := range in.Gateways {
		objs = append(objs, o)
	}
	for _, o := range in.HTTPRoutes {
		objs = append(objs, o)
	}
	for _, o := range in.TLSRoutes {
		objs = append(objs, o)
	}
	for _, o := range in.ReferenceGrants {
		objs = append(objs, o)
	}
	for _, o := range in.Services {
		objs = append(objs, o)
	}
	for _, o := range in.Secrets {
		objs = append(objs, o)
	}
	for _, o := range in.Namespaces {
		objs = append(objs, o)
	}
	if err := st.ReplaceAll(objs); err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"same-namespace", "same-namespace-with-https-listener", "gateway-tlsroute", "backend-namespaces"} {
		want := Compile(in, key(infra, g), Options{})
		from := InputFrom(st, key(infra, g))
		got := Compile(from, key(infra, g), Options{})
		if !got.Owned || got.Snapshot.Version != want.Snapshot.Version {
			t.Errorf("%s: from the store %v, whole %v", g, got.Snapshot, want.Snapshot)
		}
		if len(from.Services) >= len(in.Services) && g == "same-namespace" {
			t.Errorf("%s: read %d services, want only those routes name", g, len(from.Services))
		}
	}
	if got := InputFrom(st, key(infra, "nope")); got.Gateways != nil {
		t.Error("a missing gateway yields objects")
	}
}

// InputFrom reads the CA ConfigMaps of the Gateway's spec.tls.frontend,
// its own namespace's and another's: the snapshot (which carries the CAs)
// and the listeners' status equal the whole input's.
func TestInputFromStoreFrontend(t *testing.T) {
	for _, f := range []struct{ file, gw string }{
		{"gateway-with-clientcertificate-validation.yaml", "client-validation-default"},
		{"gateway-with-invalid-clientcertificate-validation.yaml", "gateway-with-invalid-client-cert-validation"},
	} {
		in, _ := frontendInput(t, f.file)
		st := store.New()
		var objs []runtime.Object
		for _, o := range in.GatewayClasses {
			objs = append(objs, o)
		}
		for _, o := range in.Gateways {
			objs = append(objs, o)
		}
		for _, o := range in.HTTPRoutes {
			objs = append(objs, o)
		}
		for _, o := range in.Secrets {
			objs = append(objs, o)
		}
		for _, o := range in.ConfigMaps {
			objs = append(objs, o)
		}
		for _, o := range in.Services {
			objs = append(objs, o)
		}
		for _, o := range in.ReferenceGrants {
			objs = append(objs, o)
		}
		for _, o := range in.Namespaces {
			objs = append(objs, o)
		}
		if err := st.ReplaceAll(objs); err != nil {
			t.Fatal(err)
		}
		want := Compile(in, key(infra, f.gw), Options{})
		from := InputFrom(st, key(infra, f.gw))
		got := Compile(from, key(infra, f.gw), Options{})
		if !got.Owned || got.Snapshot.Version != want.Snapshot.Version {
			t.Errorf("%s: from the store %v, whole %v", f.gw, got.Snapshot, want.Snapshot)
		}
		if len(from.ConfigMaps) == 0 {
			t.Errorf("%s: no CA ConfigMap read", f.gw)
		}
	}
}

// InputFrom reads the ListenerSets naming the Gateway, their namespaces
// (allowedListeners selectors), their certificates and the routes naming
// them: the snapshot and every status equal the whole input's.
func TestInputFromStoreListenerSets(t *testing.T) {
	for _, f := range []struct{ file, gw string }{
		{"listenerset-allowed-routes-namespaces.yaml", "gateway-with-listener-sets-test-allowed-routes"},
		{"listenerset-allowed-namespace-selector.yaml", "gateway-allows-listenerset-in-selected-namespace"},
		{"listenerset-reference-grant.yaml", "gateway-with-listener-sets-test-reference-grant"},
		{"listenerset-http-routing.yaml", "gateway-with-listener-sets-http-routing"},
	} {
		in := add(load(t, "conformance/manifests.yaml", "conformance/"+f.file), tlsSecret(t, "gateway-conformance-web-backend", "certificate"))
		st := store.New()
		var objs []runtime.Object
		for _, o := range in.GatewayClasses {
			objs = append(objs, o)
		}
		for _, o := range in.Gateways {
			objs = append(objs, o)
		}
		for _, o := range in.ListenerSets {
			objs = append(objs, o)
		}
		for _, o := range in.HTTPRoutes {
			objs = append(objs, o)
		}
		for _, o := range in.Secrets {
			objs = append(objs, o)
		}
		for _, o := range in.Services {
			objs = append(objs, o)
		}
		for _, o := range in.ReferenceGrants {
			objs = append(objs, o)
		}
		for _, o := range in.Namespaces {
			objs = append(objs, o)
		}
		if err := st.ReplaceAll(objs); err != nil {
			t.Fatal(err)
		}
		want := Compile(in, key(infra, f.gw), Options{})
		got := Compile(InputFrom(st, key(infra, f.gw)), key(infra, f.gw), Options{})
		if !got.Owned || got.Snapshot.Version != want.Snapshot.Version {
			t.Errorf("%s: from the store %v, whole %v", f.gw, got.Snapshot, want.Snapshot)
		}
		if !equality.Semantic.DeepEqual(got.ListenerSets, want.ListenerSets) || !equality.Semantic.DeepEqual(got.Routes, want.Routes) || len(want.ListenerSets) == 0 {
			t.Errorf("%s: statuses from the store\n%v\n%v\nwhole\n%v\n%v", f.gw, got.ListenerSets, got.Routes, want.ListenerSets, want.Routes)
		}
	}
}
