package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// The chart carries the Gateway API's standard-channel CRDs of the bundle
// the gateway is built for, every kind the gateway serves among them.
func TestGatewayAPICRDs(t *testing.T) {
	ms, err := Options{}.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Write(&b, ms); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range parse(t, b.String()) {
		spec, _ := o.obj["spec"].(map[string]any)
		if spec["group"] != GatewayAPIGroup {
			if strings.Contains(o.source, "gateway-api") {
				t.Errorf("%s: group %v in crds/gateway-api", o.source, spec["group"])
			}
			continue
		}
		if !strings.HasPrefix(o.source, "meridian/crds/gateway-api/") {
			t.Errorf("%s: a Gateway API CRD outside crds/gateway-api", o.source)
		}
		if o.kind() != "CustomResourceDefinition" {
			t.Errorf("%s is a %s", o.source, o.kind())
		}
		ann, _ := o.obj["metadata"].(map[string]any)["annotations"].(map[string]any)
		if ann[GatewayAPIGroup+"/bundle-version"] != GatewayAPIBundleVersion || ann[GatewayAPIGroup+"/channel"] != "standard" {
			t.Errorf("%s: bundle %v channel %v, want %s standard", o.source, ann[GatewayAPIGroup+"/bundle-version"], ann[GatewayAPIGroup+"/channel"], GatewayAPIBundleVersion)
		}
		kinds = append(kinds, spec["names"].(map[string]any)["kind"].(string))
	}
	for _, k := range []string{"GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "ReferenceGrant", "BackendTLSPolicy", "TLSRoute", "ListenerSet"} {
		if !slices.Contains(kinds, k) {
			t.Errorf("no %s CRD among %v", k, kinds)
		}
	}
}

// The experimental channel's CRDs: every kind of the standard channel (and
// more), each annotated with the bundle and the experimental channel, and
// HTTPRoute with rules[].retry, which the standard channel prunes.
func TestGatewayAPIExperimentalCRDs(t *testing.T) {
	exp, err := GatewayAPIExperimentalCRDs()
	if err != nil {
		t.Fatal(err)
	}
	all, err := Options{}.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]bool{}
	for _, m := range exp {
		if !IsGatewayAPI(m) || !strings.HasPrefix(m.Source, "gateway-api-experimental/") {
			t.Errorf("%s: not recognised as a Gateway API CRD", m.Source)
		}
		files[path.Base(m.Source)] = true
	}
	for _, m := range all {
		if IsGatewayAPI(m) && !files[path.Base(m.Source)] {
			t.Errorf("%s has no experimental counterpart", m.Source)
		}
	}
	var b bytes.Buffer
	if err := Write(&b, exp); err != nil {
		t.Fatal(err)
	}
	retry := false
	for _, o := range parse(t, b.String()) {
		if o.kind() != "CustomResourceDefinition" {
			t.Errorf("%s is a %s", o.source, o.kind())
		}
		ann, _ := o.obj["metadata"].(map[string]any)["annotations"].(map[string]any)
		if ann[GatewayAPIGroup+"/bundle-version"] != GatewayAPIBundleVersion || ann[GatewayAPIGroup+"/channel"] != "experimental" {
			t.Errorf("%s: bundle %v channel %v, want %s experimental", o.source, ann[GatewayAPIGroup+"/bundle-version"], ann[GatewayAPIGroup+"/channel"], GatewayAPIBundleVersion)
		}
		if strings.HasSuffix(o.source, "_httproutes.yaml") {
			versions, _, _ := unstructured.NestedSlice(o.obj, "spec", "versions")
			for _, v := range versions {
				_, ok, _ := unstructured.NestedMap(v.(map[string]any), "schema", "openAPIV3Schema", "properties", "spec", "properties", "rules", "items", "properties", "retry")
				retry = ok
			}
		}
	}
	if !retry {
		t.Error("the experimental HTTPRoute CRD has no retry field")
	}
}

// What --crds prints in each mode, given what the cluster answers.
func TestPrintedCRDs(t *testing.T) {
	all, err := Options{}.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	own := slices.DeleteFunc(slices.Clone(all), IsGatewayAPI)
	if len(own) == 0 || len(own) == len(all) {
		t.Fatalf("%d CRDs of which %d Meridian's", len(all), len(own))
	}
	found := func(s string, err error) func(context.Context) (string, error) {
		return func(context.Context) (string, error) { return s, err }
	}
	for _, c := range []struct {
		name      string
		mode      GatewayAPIMode
		installed func(context.Context) (string, error)
		gateway   bool
		log       string
	}{
		{"auto, no cluster", GatewayAPIAuto, nil, true, ""},
		{"unset is auto", "", nil, true, ""},
		{"auto, none installed", GatewayAPIAuto, found("", nil), true, ""},
		{"auto, installed", GatewayAPIAuto, found("gateway.networking.k8s.io v1; bundle v1.2.0 standard channel", nil), false,
			"already has Gateway API CRDs (gateway.networking.k8s.io v1; bundle v1.2.0 standard channel)"},
		{"auto, cluster unreachable", GatewayAPIAuto, found("", errors.New("asking the cluster: connection refused")), true,
			"warning: asking the cluster: connection refused; printing the Gateway API CRDs"},
		{"always, installed", GatewayAPIAlways, found("gateway.networking.k8s.io v1", nil), true, ""},
		{"never", GatewayAPINever, found("", nil), false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var log bytes.Buffer
			ms, err := Options{GatewayAPICRDs: c.mode, GatewayAPIInstalled: c.installed, Log: &log}.PrintedCRDs(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			want := own
			if c.gateway {
				want = all
			}
			if !slices.Equal(ms, want) {
				t.Errorf("%d CRDs, want %d", len(ms), len(want))
			}
			if c.log == "" && log.Len() > 0 || !strings.Contains(log.String(), c.log) {
				t.Errorf("log %q, want %q", log.String(), c.log)
			}
		})
	}
	// The experimental channel: its CRDs in place of the standard ones,
	// first; left out like them when the cluster has Gateway API CRDs.
	exp, err := GatewayAPIExperimentalCRDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		mode      GatewayAPIMode
		installed func(context.Context) (string, error)
		want      []Manifest
		log       string
	}{
		{"auto, none installed", GatewayAPIAuto, found("", nil), append(slices.Clone(exp), own...), ""},
		{"auto, installed", GatewayAPIAuto, found("gateway.networking.k8s.io v1; bundle v1.6.3 standard channel", nil), own,
			"leaving out Meridian's (" + GatewayAPIBundleVersion + " experimental channel); --gateway-api-crds=always prints them"},
		{"always, installed", GatewayAPIAlways, found("gateway.networking.k8s.io v1", nil), append(slices.Clone(exp), own...), ""},
	} {
		t.Run("experimental, "+c.name, func(t *testing.T) {
			var log bytes.Buffer
			ms, err := Options{GatewayAPICRDs: c.mode, GatewayAPIInstalled: c.installed, GatewayAPIChannel: GatewayAPIExperimental, Log: &log}.PrintedCRDs(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ms, c.want) {
				t.Errorf("%d CRDs, want %d", len(ms), len(c.want))
			}
			if c.log == "" && log.Len() > 0 || !strings.Contains(log.String(), c.log) {
				t.Errorf("log %q, want %q", log.String(), c.log)
			}
		})
	}
	if _, err := (Options{GatewayAPICRDs: GatewayAPINever, GatewayAPIChannel: GatewayAPIExperimental}).PrintedCRDs(context.Background()); err == nil || !strings.Contains(err.Error(), "no Gateway API CRDs are printed") {
		t.Errorf("experimental with never: %v", err)
	}
	if _, err := (Options{GatewayAPIChannel: "beta"}).PrintedCRDs(context.Background()); err == nil || !strings.Contains(err.Error(), "allowed are standard and experimental") {
		t.Errorf("channel beta: %v", err)
	}
	var ch GatewayAPIChannel
	if ch.String() != "standard" || ch.Set("experimental") != nil || ch != GatewayAPIExperimental || ch.Set("alpha") == nil {
		t.Errorf("GatewayAPIChannel Set/String: %q", ch)
	}
	if _, err := (Options{GatewayAPICRDs: "sometimes"}).PrintedCRDs(context.Background()); err == nil || !strings.Contains(err.Error(), "auto, always and never") {
		t.Errorf("mode sometimes: %v", err)
	}
	var m GatewayAPIMode
	if err := m.Set("never"); err != nil || m != GatewayAPINever {
		t.Errorf("Set(never): %v, %q", err, m)
	}
	if err := m.Set("yes"); err == nil {
		t.Error("Set(yes) accepted")
	}
}

// A cluster that cannot be reached is an error (auto then prints the CRDs).
func TestGatewayAPICheckerUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = GatewayAPIChecker(&rest.Config{Host: "http://" + addr}, 2*time.Second)(context.Background())
	if err == nil || !strings.Contains(err.Error(), "asking the cluster for Gateway API CRDs") {
		t.Errorf("error %v", err)
	}
}

// emptyAPIServer starts a real kube-apiserver and etcd (envtest) with no
// CRDs, or skips the test without KUBEBUILDER_ASSETS (hack/kube-assets.sh).
// (main's test/apiserver.Start does the same: this file does not depend on
// it so that it builds on either side of that change.)
func emptyAPIServer(t *testing.T) *rest.Config {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: this test needs the etcd and kube-apiserver binaries (see hack/kube-assets.sh)")
	}
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting kube-apiserver and etcd from KUBEBUILDER_ASSETS=%s: %v", os.Getenv("KUBEBUILDER_ASSETS"), err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stopping envtest: %v", err)
		}
	})
	return cfg
}

// Against a real API server (envtest): with no Gateway API CRDs, auto
// prints Meridian's; once another implementation's (here an older bundle
// of the experimental channel) is established, auto leaves them out and
// says which it found, and always still prints them. Every printed CRD
// is accepted by the API server.
func TestGatewayAPIAutoAgainstAPIServer(t *testing.T) {
	cfg := emptyAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	check := GatewayAPIChecker(cfg, 10*time.Second)
	if found, err := check(ctx); err != nil || found != "" {
		t.Fatalf("empty cluster: found %q, %v", found, err)
	}
	var log bytes.Buffer
	o := Options{GatewayAPIInstalled: check, Log: &log}
	ms, err := o.PrintedCRDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ms, IsGatewayAPI) || log.Len() > 0 {
		t.Fatalf("empty cluster: Gateway API CRDs printed %v, log %q", slices.ContainsFunc(ms, IsGatewayAPI), log.String())
	}

	// Another implementation's GatewayClass CRD: ours, relabelled.
	var other string
	for _, m := range ms {
		if strings.HasSuffix(m.Source, "_gatewayclasses.yaml") {
			other = strings.NewReplacer(
				"gateway.networking.k8s.io/bundle-version: "+GatewayAPIBundleVersion, "gateway.networking.k8s.io/bundle-version: v1.5.1",
				"gateway.networking.k8s.io/channel: standard", "gateway.networking.k8s.io/channel: experimental",
			).Replace(m.Content)
		}
	}
	if other == "" {
		t.Fatal("no GatewayClass CRD")
	}
	for _, crd := range apply(t, ctx, c, other) {
		waitEstablished(t, ctx, c, crd.GetName())
	}
	var found string
	for found == "" && ctx.Err() == nil {
		// Discovery serves the group once the CRD is established.
		if found, err = check(ctx); err != nil {
			t.Fatal(err)
		}
		if found == "" {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if want := "gateway.networking.k8s.io v1, v1beta1; bundle v1.5.1 experimental channel"; found != want {
		t.Errorf("found %q, want %q", found, want)
	}
	log.Reset()
	ms, err = o.PrintedCRDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(ms, IsGatewayAPI) || len(ms) == 0 {
		t.Errorf("auto with Gateway API CRDs installed printed %d CRDs, Gateway API's among them: %v", len(ms), slices.ContainsFunc(ms, IsGatewayAPI))
	}
	if !strings.Contains(log.String(), "already has Gateway API CRDs (gateway.networking.k8s.io v1, v1beta1; bundle v1.5.1 experimental channel)") {
		t.Errorf("log %q", log.String())
	}

	// always prints them: the API server takes them over the other's.
	o.GatewayAPICRDs = GatewayAPIAlways
	ms, err = o.PrintedCRDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var stream bytes.Buffer
	if err := Write(&stream, ms); err != nil {
		t.Fatal(err)
	}
	for _, crd := range apply(t, ctx, c, stream.String()) {
		waitEstablished(t, ctx, c, crd.GetName())
	}
	if found, err := check(ctx); err != nil || !strings.Contains(found, "bundle "+GatewayAPIBundleVersion+" standard channel") {
		t.Errorf("after always: found %q, %v", found, err)
	}

	// The experimental channel, always, over the standard CRDs (as
	// hack/conformance.sh applies it): accepted, and HTTPRoute now keeps
	// rules[].retry, which the standard CRD pruned.
	n := 0
	retryOf := func() any {
		t.Helper()
		// A plain create (as the conformance suite's): the API server
		// prunes fields its schema does not declare.
		n++
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
			"metadata": map[string]any{"name": fmt.Sprintf("r%d", n), "namespace": "default"},
			"spec": map[string]any{"rules": []any{map[string]any{
				"retry": map[string]any{"attempts": int64(2), "codes": []any{int64(503)}},
			}}},
		}}
		if err := c.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
		rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
		if len(rules) != 1 {
			t.Fatalf("HTTPRoute rules %v", rules)
		}
		return rules[0].(map[string]any)["retry"]
	}
	if r := retryOf(); r != nil {
		t.Errorf("standard channel kept retry %v", r)
	}
	o.GatewayAPIChannel = GatewayAPIExperimental
	ms, err = o.PrintedCRDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Reset()
	if err := Write(&stream, ms); err != nil {
		t.Fatal(err)
	}
	for _, crd := range apply(t, ctx, c, stream.String()) {
		waitEstablished(t, ctx, c, crd.GetName())
	}
	if found, err := check(ctx); err != nil || !strings.Contains(found, "bundle "+GatewayAPIBundleVersion+" experimental channel") {
		t.Errorf("after experimental: found %q, %v", found, err)
	}
	var r any
	for deadline := time.Now().Add(30 * time.Second); r == nil && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		r = retryOf() // the API server takes the new schema in a moment
	}
	if want := map[string]any{"attempts": int64(2), "codes": []any{int64(503)}}; !reflect.DeepEqual(r, want) {
		t.Errorf("experimental channel: retry %#v, want %#v", r, want)
	}
}
