//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	splitv1alpha2 "github.com/meridian-mesh/meridian/api/split/v1alpha2"
)

// TestTrafficSplitConversion (issue 16): with Meridian installed, a
// TrafficSplit written as v1alpha1 with string weights (as Argo Rollouts
// writes it by default) is then read and updated through v1alpha2 by a
// typed client (Argo's --traffic-split-api-version=v1alpha2), and
// `kubectl get trafficsplit -o yaml` shows integer weights. The API server
// converts through the controller's webhook (/convert/trafficsplits on the
// meridian-controller Service), whose CA the controller writes into the
// CRD.
func TestTrafficSplitConversion(t *testing.T) {
	gone(t, "meridian", 3*time.Minute)
	crds := mustMeridian(t, "", "install", "--crds")
	kubectl(t, crds, "apply", "--server-side", "-f", "-")
	cp := mustMeridian(t, "", "install")
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := runKubectl("", "get", "crd", "trafficsplits.split.smi-spec.io", "-o", "jsonpath={.spec.conversion}")
			t.Logf("TrafficSplit CRD conversion:\n%s", out)
			logs, _ := runKubectl("", "--namespace", "meridian", "logs", "-l", "app.kubernetes.io/name=meridian-controller", "--tail=100", "--prefix")
			t.Logf("controller logs:\n%s", logs)
		}
		un := mustMeridian(t, "", "uninstall")
		runKubectl(un, "delete", "--ignore-not-found", "--wait=false", "-f", "-")
		gone(t, "meridian", 3*time.Minute)
	})
	kubectl(t, cp, "apply", "-f", "-")
	if out, errOut, err := meridian(t, "", "check", "--wait", "4m"); err != nil {
		t.Fatalf("meridian check --wait 4m: %v\n%s\n%s", err, out, errOut)
	}
	n := newNamespace(t)

	// Written as v1alpha1: the API server converts it to v1alpha4 to store
	// it, so the webhook must answer (the controller may still be patching
	// the CRD's caBundle in: retry).
	v1 := `apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata:
  name: web
spec:
  service: web
  backends:
  - service: web-stable
    weight: "80"
  - service: web-canary
    weight: "20"
`
	n.eventually("a v1alpha1 TrafficSplit with string weights to be accepted", 2*time.Minute, func() error {
		_, err := runKubectl(v1, "--namespace", n.name, "apply", "-f", "-")
		return err
	})

	// Updated through v1alpha2 by a typed client.
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := splitv1alpha2.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ts splitv1alpha2.TrafficSplit
	if err := c.Get(ctx, types.NamespacedName{Namespace: n.name, Name: "web"}, &ts); err != nil {
		t.Fatalf("reading the v1alpha1 split as v1alpha2: %v", err)
	}
	if len(ts.Spec.Backends) != 2 || ts.Spec.Backends[0].Weight != 80 || ts.Spec.Backends[1].Weight != 20 {
		t.Fatalf("v1alpha2 backends %+v, want web-stable 80, web-canary 20", ts.Spec.Backends)
	}
	ts.Spec.Backends[0].Weight, ts.Spec.Backends[1].Weight = 50, 50
	if err := c.Update(ctx, &ts); err != nil {
		t.Fatalf("updating through v1alpha2: %v", err)
	}

	// What kubectl shows (the preferred version, v1alpha4): integers.
	out := n.must("get", "trafficsplit", "web", "-o", "yaml")
	var shown struct {
		APIVersion string `json:"apiVersion"`
		Spec       struct {
			Backends []struct {
				Service string `json:"service"`
				Weight  any    `json:"weight"`
			} `json:"backends"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatalf("kubectl get -o yaml: %v\n%s", err, out)
	}
	got := shown.APIVersion
	for _, b := range shown.Spec.Backends {
		got += fmt.Sprintf(" %s=%#v", b.Service, b.Weight)
	}
	// sigs.k8s.io/yaml decodes YAML numbers as float64, strings as string.
	if want := "split.smi-spec.io/v1alpha4 web-stable=50 web-canary=50"; got != want {
		t.Fatalf("kubectl get trafficsplit -o yaml: %s, want %s\n%s", got, want, out)
	}
}
