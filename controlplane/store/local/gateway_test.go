package local

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/meridian-mesh/meridian/controlplane/compile/gateway"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// A directory holding Gateway API objects fills the store, and the gateway
// compiler reads them from it.
func TestLoadGatewayAPI(t *testing.T) {
	objs, err := Load("testdata/gateway")
	if err != nil {
		t.Fatal(err)
	}
	st := store.New()
	if err := st.ReplaceAll(objs); err != nil {
		t.Fatal(err)
	}
	if len(st.GatewayClasses()) != 1 || len(st.HTTPRoutes()) != 1 {
		t.Fatalf("classes %d, routes %d", len(st.GatewayClasses()), len(st.HTTPRoutes()))
	}
	if gc := st.GatewayClasses()[0]; gc.Namespace != "" {
		t.Errorf("GatewayClass is cluster-scoped, got namespace %q", gc.Namespace)
	}
	if _, ok := st.Secret(store.Key{Namespace: "emojivoto", Name: "edge-cert"}); !ok {
		t.Error("tls secret missing")
	}
	if _, ok := st.ConfigMap(store.Key{Namespace: "emojivoto", Name: "web-ca"}); !ok {
		t.Error("ca configmap missing")
	}
	gw := types.NamespacedName{Namespace: "emojivoto", Name: "edge"}
	r := gateway.Compile(gateway.InputFrom(st, gw), gw, gateway.Options{})
	if !r.Owned || len(r.Snapshot.Ports) != 1 {
		t.Fatalf("compile: %+v", r)
	}
	b := r.Snapshot.Ports[0].Listeners[0].Hosts[0].Rules[0].Backends[0]
	if b.Authority != "web-svc.emojivoto.svc.cluster.local:80" {
		t.Errorf("backend %v", b)
	}
}

// A Gateway API object with a field of the wrong type is refused with its
// line and field, like any other kind.
func TestLoadGatewayAPIErrors(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "bad.yaml", "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\nspec:\n  hostnames: 3\n")
	_, err := Load(dir)
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:6") || !strings.Contains(err.Error(), "spec.hostnames") {
		t.Fatalf("a bad HTTPRoute: %v, want its line and field", err)
	}
}
