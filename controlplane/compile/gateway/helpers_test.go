package gateway

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
)

var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = corev1.AddToScheme(s)
	_ = gwv1.Install(s)
	return s
}()

// class is the GatewayClass the testdata names as {GATEWAY_CLASS_NAME}.
func class() *gwv1.GatewayClass {
	return &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "meridian", Generation: 1}, Spec: gwv1.GatewayClassSpec{ControllerName: ControllerName}}
}

// load reads YAML files from testdata (the conformance suite's manifests
// are copied under testdata/conformance) into an Input with our class;
// kinds the compiler does not read (Deployments) are skipped.
func load(t testing.TB, files ...string) Input {
	t.Helper()
	in := Input{GatewayClasses: []*gwv1.GatewayClass{class()}}
	dec := serializer.NewCodecFactory(scheme).UniversalDeserializer()
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("{GATEWAY_CLASS_NAME}"), []byte("meridian"))
		r := utilyaml.NewYAMLReader(bufioReader(b))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 || !bytes.Contains(doc, []byte("kind:")) {
				continue
			}
			obj, _, err := dec.Decode(doc, nil, nil)
			if err != nil {
				if runtime.IsNotRegisteredError(err) {
					continue
				}
				t.Fatalf("%s: %v", f, err)
			}
			in = add(in, obj)
		}
	}
	return in
}

func add(in Input, objs ...runtime.Object) Input {
	for _, obj := range objs {
		if m, ok := obj.(metav1.Object); ok && m.GetGeneration() == 0 {
			m.SetGeneration(1)
		}
		switch o := obj.(type) {
		case *gwv1.GatewayClass:
			in.GatewayClasses = append(in.GatewayClasses, o)
		case *gwv1.Gateway:
			in.Gateways = append(in.Gateways, o)
		case *gwv1.HTTPRoute:
			in.HTTPRoutes = append(in.HTTPRoutes, o)
		case *gwv1.GRPCRoute:
			in.GRPCRoutes = append(in.GRPCRoutes, o)
		case *gwv1.TLSRoute:
			in.TLSRoutes = append(in.TLSRoutes, o)
		case *gwv1.TCPRoute:
			in.TCPRoutes = append(in.TCPRoutes, o)
		case *gwv1.UDPRoute:
			in.UDPRoutes = append(in.UDPRoutes, o)
		case *gwv1.ListenerSet:
			in.ListenerSets = append(in.ListenerSets, o)
		case *gwv1.ReferenceGrant:
			in.ReferenceGrants = append(in.ReferenceGrants, o)
		case *gwv1.BackendTLSPolicy:
			in.BackendTLSPolicies = append(in.BackendTLSPolicies, o)
		case *corev1.Service:
			in.Services = append(in.Services, o)
		case *corev1.Secret:
			in.Secrets = append(in.Secrets, o)
		case *corev1.Namespace:
			in.Namespaces = append(in.Namespaces, o)
		case *corev1.ConfigMap:
			in.ConfigMaps = append(in.ConfigMaps, o)
		}
	}
	return in
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

// certPEM returns a self-signed certificate and key for hosts.
func certPEM(t testing.TB, hosts ...string) (crt, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<33, 0),
		DNSNames: hosts, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

func tlsSecret(t testing.TB, ns, name string) *corev1.Secret {
	crt, key := certPEM(t, "*.example.com", "example.org")
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key},
	}
}

func key(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

// find returns condition typ of conds, or fails.
func find(t testing.TB, conds []metav1.Condition, typ string) metav1.Condition {
	t.Helper()
	for _, c := range conds {
		if c.Type == typ {
			return c
		}
	}
	t.Fatalf("no %s condition in %+v", typ, conds)
	return metav1.Condition{}
}

func wantCond(t testing.TB, what string, conds []metav1.Condition, typ string, status bool, reason string) {
	t.Helper()
	c := find(t, conds, typ)
	s := metav1.ConditionFalse
	if status {
		s = metav1.ConditionTrue
	}
	if c.Status != s || c.Reason != reason {
		t.Errorf("%s: %s = %s/%s (%s), want %s/%s", what, typ, c.Status, c.Reason, c.Message, s, reason)
	}
	if c.ObservedGeneration == 0 {
		t.Errorf("%s: %s without observedGeneration", what, typ)
	}
}

func listenerStatus(t testing.TB, r Result, name string) gwv1.ListenerStatus {
	t.Helper()
	for _, l := range r.Gateway.Listeners {
		if string(l.Name) == name {
			return l
		}
	}
	t.Fatalf("no listener %s in status", name)
	return gwv1.ListenerStatus{}
}

// parent returns the route's only parent status for this compile.
func parent(t testing.TB, r Result, kind, ns, name string) gwv1.RouteParentStatus {
	t.Helper()
	for _, rs := range r.Routes {
		if rs.Kind == kind && rs.Route == key(ns, name) {
			if len(rs.Parents) != 1 {
				t.Fatalf("%s %s/%s: %d parent statuses, want 1", kind, ns, name, len(rs.Parents))
			}
			return rs.Parents[0]
		}
	}
	t.Fatalf("no status for %s %s/%s", kind, ns, name)
	return gwv1.RouteParentStatus{}
}

// host returns the listener's Host hostname in the snapshot.
func host(t testing.TB, s *gatewaypb.Snapshot, listener, hostname string) *gatewaypb.Host {
	t.Helper()
	l := snapListener(t, s, listener)
	for _, h := range l.Hosts {
		if h.Hostname == hostname {
			return h
		}
	}
	var hs []string
	for _, h := range l.Hosts {
		hs = append(hs, h.Hostname)
	}
	t.Fatalf("listener %s has no host %q (has %q)", listener, hostname, hs)
	return nil
}

func snapListener(t testing.TB, s *gatewaypb.Snapshot, name string) *gatewaypb.Listener {
	t.Helper()
	for _, p := range s.Ports {
		for _, l := range p.Listeners {
			if l.Name == name {
				return l
			}
		}
	}
	t.Fatalf("snapshot has no listener %s", name)
	return nil
}

// routesOf lists "name/rule path" of a host's rules, in order.
func routesOf(h *gatewaypb.Host) []string {
	var out []string
	for _, r := range h.Rules {
		p := ""
		if r.Match.GetPath() != nil {
			p = r.Match.Path.Type.String() + " " + r.Match.Path.Value
		}
		out = append(out, strings.TrimSpace(r.Route.Name+"/"+r.Route.Rule+" "+p))
	}
	return out
}

func ptr[T any](v T) *T { return &v }
