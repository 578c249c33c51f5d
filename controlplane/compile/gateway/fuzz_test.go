package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// FuzzCompileManifests: any set of objects compiles without a panic, for
// every Gateway among them, and compiles the same twice.
func FuzzCompileManifests(f *testing.F) {
	files, _ := filepath.Glob("testdata/conformance/*.yaml")
	for _, file := range files {
		if filepath.Base(file) == "manifests.yaml" {
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(bytes.ReplaceAll(b, []byte("{GATEWAY_CLASS_NAME}"), []byte("meridian")))
	}
	dec := serializer.NewCodecFactory(scheme).UniversalDeserializer()
	f.Fuzz(func(t *testing.T, b []byte) {
		in := Input{GatewayClasses: []*gwv1.GatewayClass{class()}}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for range 64 {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) || err != nil {
				break
			}
			obj, _, err := dec.Decode(doc, nil, nil)
			if err != nil {
				continue
			}
			in = add(in, obj)
		}
		for _, g := range in.Gateways {
			a := Compile(in, key(g.Namespace, g.Name), Options{})
			b := Compile(in, key(g.Namespace, g.Name), Options{})
			if a.Owned && a.Snapshot.Version != b.Snapshot.Version {
				t.Fatalf("two compiles of %s/%s differ", g.Namespace, g.Name)
			}
		}
	})
}

// FuzzCompileFields drives the fields the compiler parses (hostnames,
// paths, regular expressions, durations, ports, section names) directly.
func FuzzCompileFields(f *testing.F) {
	f.Add("*.example.com", "a.example.com", "/foo/", "PathPrefix", "x-a", ".*", "10s", int32(80), int32(80), "http", "/new")
	f.Add("", "*.b.c", "(", "RegularExpression", "", "[", "1h2m", int32(1), int32(0), "", "")
	f.Fuzz(func(t *testing.T, lhost, rhost, path, ptype, hname, hre, dur string, lport, pport int32, section, replace string) {
		l := lis(section, lport, gwv1.HTTPProtocolType, lhost)
		route := hroute("gw", "r", []string{rhost}, gwv1.HTTPRouteRule{
			Matches: []gwv1.HTTPRouteMatch{{
				Path:    &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchType(ptype)), Value: &path},
				Headers: []gwv1.HTTPHeaderMatch{{Name: gwv1.HTTPHeaderName(hname), Type: ptr(gwv1.HeaderMatchRegularExpression), Value: hre}},
			}},
			Filters:     []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterURLRewrite, URLRewrite: &gwv1.HTTPURLRewriteFilter{Path: &gwv1.HTTPPathModifier{Type: gwv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: &replace}}}},
			BackendRefs: []gwv1.HTTPBackendRef{bref("a", pport)},
			Timeouts:    &gwv1.HTTPRouteTimeouts{Request: ptr(gwv1.Duration(dur))},
		})
		route.Spec.ParentRefs[0].SectionName = ptr(gwv1.SectionName(section))
		route.Spec.ParentRefs[0].Port = &pport
		r := compile(base(t, gw(l, lis("other", lport, gwv1.HTTPSProtocolType, rhost)), route))
		if !r.Owned || r.Snapshot.Version == "" || len(r.Routes) != 1 {
			t.Fatalf("result %+v", r)
		}
	})
}
