package controller

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/controlplane/destination"
)

// The credentials of the workloads controllerYAML declares (their SHA-256
// is in the Pods' annotations).
const (
	webLocalCredential = "web-local-credential"
	web1Credential     = "web-1-credential"
)

const controllerYAML = `
apiVersion: v1
kind: Pod
metadata:
  name: web-local
  namespace: demo
  annotations:
    local.meridian.io/credential-sha256: 9ed598600ba3a3bfa7f38cc787e2c0dc06f27d6a42c6b034dfa9a5c3d32e304a
    local.meridian.io/services: web
spec: {serviceAccountName: web}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: demo
  annotations:
    local.meridian.io/credential-sha256: cb0bcb8a943f987f1bd51e646dfd8f8ca32b43d7857ea0ae4a389346f0f52197
    local.meridian.io/services: web
spec: {serviceAccountName: web}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: demo
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: ["10.1.0.1"]
---
apiVersion: v1
kind: Service
metadata: {name: web-stable, namespace: demo}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-canary, namespace: demo}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: web-rollout, namespace: demo}
spec:
  service: web
  backends:
  - {service: web-stable, weight: 900m}
  - {service: web-canary, weight: 100m}
`

// The controller in local mode, end to end: a directory of YAML in, the
// destination API, registration and the admin server out.
func TestControllerLocal(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "demo.yaml"), []byte(controllerYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Store: "dir:" + dir, DestinationAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
			ClusterDomain: "cluster.local", TrustDomain: "example.org", DefaultNamespace: "demo",
			DefaultOpaquePorts: DefaultOpaquePorts, Resync: time.Second,
			ShutdownGrace: 200 * time.Millisecond, // streams never end by themselves: the grace always runs out
		}, func(d, a string) { addrs <- [2]string{d, a} })
	}()
	var dstAddr, adminAddr string
	select {
	case a := <-addrs:
		dstAddr, adminAddr = a[0], a[1]
	case err := <-done:
		t.Fatalf("controller exited: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("controller did not start")
	}

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + adminAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if code, _ := get("/ready"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/ready never answered 200")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := get("/live"); code != http.StatusOK {
		t.Fatalf("/live = %d", code)
	}

	conn, err := grpc.NewClient(dstAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewDestinationClient(conn)
	// The streams' context is not the controller's: cancelling ctx must
	// stop the controller, not the client. (Derived from ctx, the client
	// cancelled its own streams at shutdown, and a removal sent on the
	// cancelled Register stream's behalf could still be read from the Get
	// stream: 5 failures in 300 runs.)
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()

	// Get by short name (local mode, default namespace).
	g, err := c.Get(sctx, &pb.GetDestination{Authority: "web:80"})
	if err != nil {
		t.Fatal(err)
	}
	u, err := g.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if a := u.GetAdd(); a == nil || len(a.Addrs) != 1 || a.Addrs[0].Addr.Ip != "10.1.0.1" || a.Addrs[0].Addr.Port != 8080 {
		t.Fatalf("first update = %v", u)
	}

	// The profile carries the split's 90/10 weights.
	p, err := c.GetProfile(sctx, &pb.GetDestination{Authority: "10.96.0.10:80"})
	if err != nil {
		t.Fatal(err)
	}
	prof, err := p.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(prof.DstOverrides) != 2 ||
		prof.DstOverrides[0].Authority != "web-stable.demo.svc.cluster.local:80" || prof.DstOverrides[0].Weight != 900 ||
		prof.DstOverrides[1].Authority != "web-canary.demo.svc.cluster.local:80" || prof.DstOverrides[1].Weight != 100 {
		t.Fatalf("profile = %v", prof)
	}

	// A registered workload joins the endpoints, with its identity.
	r, err := c.Register(metadata.AppendToOutgoingContext(sctx, destination.CredentialMetadata, webLocalCredential), &pb.Workload{Name: "web-local", Namespace: "demo", Service: "web", ServiceAccount: "web", Address: "127.0.0.1:4143"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Recv(); err != nil {
		t.Fatal(err)
	}
	u, err = g.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if a := u.GetAdd(); a == nil || len(a.Addrs) != 1 || a.Addrs[0].Addr.Ip != "127.0.0.1" || a.Addrs[0].Identity != "spiffe://example.org/ns/demo/sa/web" {
		t.Fatalf("update after Register = %v", u)
	}

	// Metrics count the open streams.
	_, metrics := get("/metrics")
	for _, want := range []string{`meridian_destination_streams{rpc="get"} 1`, `meridian_destination_streams{rpc="register"} 1`, "go_goroutines"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// Shutdown: streams end, runController returns.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("runController: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("controller did not stop")
	}
	// The server ended the streams: the next read fails, and the registered
	// workload was not withdrawn from the Get stream on the way out (a
	// stopping controller must not tell proxies a workload has left).
	if u, err := g.Recv(); err == nil {
		t.Fatalf("Get stream still open after shutdown: read %v", u)
	}
	if _, err := r.Recv(); err == nil {
		t.Fatal("Register stream still open after shutdown")
	}
}

func TestControllerFlags(t *testing.T) {
	for _, tc := range []struct {
		store string
		ok    bool
	}{
		{"kube", true}, {"dir:" + t.TempDir(), true}, {"dir:", false}, {"dir:/nonexistent", false}, {"etcd", false},
	} {
		_, err := parseStoreFlag(tc.store, nil)
		if (err == nil) != tc.ok {
			t.Errorf("--store=%s: err = %v", tc.store, err)
		}
	}
	err := Run(context.Background(), Options{Store: "dir:" + t.TempDir(), DefaultOpaquePorts: "x-y"}, nil)
	if err == nil || !strings.Contains(err.Error(), "--default-opaque-ports") {
		t.Fatalf("bad opaque ports: %v", err)
	}
}

// A stopping controller does not withdraw the registered workloads from
// the other proxies' endpoint sets on its way out: its streams end one
// connection at a time, and a registration whose connection ended first
// was withdrawn from the Get streams still open, so proxies dropped a
// healthy endpoint just before they reconnected elsewhere.
func TestControllerShutdownKeepsRegistrations(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "demo.yaml"), []byte(controllerYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Store: "dir:" + dir, DestinationAddr: "127.0.0.1:0",
			TrustDomain: "example.org", DefaultNamespace: "demo", ShutdownGrace: 50 * time.Millisecond,
		}, func(d, _ string) { addrs <- d })
	}()
	var dstAddr string
	select {
	case dstAddr = <-addrs:
	case err := <-done:
		t.Fatalf("controller exited: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("controller did not start")
	}
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	client := func() pb.DestinationClient {
		conn, err := grpc.NewClient(dstAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return pb.NewDestinationClient(conn)
	}
	// until reads g until its endpoint set holds want (and nothing is
	// left unread).
	until := func(g pb.Destination_GetClient, want ...string) {
		t.Helper()
		have := map[string]bool{}
		for {
			u, err := g.Recv()
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range u.GetAdd().GetAddrs() {
				have[a.Addr.Ip] = true
			}
			for _, a := range u.GetRemove().GetAddrs() {
				delete(have, a.Ip)
			}
			if len(have) == len(want) && func() bool {
				for _, w := range want {
					if !have[w] {
						return false
					}
				}
				return true
			}() {
				return
			}
		}
	}
	// The directory is loaded: the slice's endpoint is served.
	first, err := client().Get(sctx, &pb.GetDestination{Authority: "web:80"})
	if err != nil {
		t.Fatal(err)
	}
	until(first, "10.1.0.1")
	r, err := client().Register(metadata.AppendToOutgoingContext(sctx, destination.CredentialMetadata, webLocalCredential), &pb.Workload{Name: "web-local", Namespace: "demo", Service: "web", ServiceAccount: "web", Address: "127.0.0.1:4143"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Recv(); err != nil {
		t.Fatal(err)
	}
	// Many watchers, each on its own connection, all seeing the workload.
	const watchers = 40
	var gets []pb.Destination_GetClient
	for i := 0; i < watchers; i++ {
		g, err := client().Get(sctx, &pb.GetDestination{Authority: "web:80"})
		if err != nil {
			t.Fatal(err)
		}
		until(g, "10.1.0.1", "127.0.0.1")
		gets = append(gets, g)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("controller did not stop")
	}
	for i, g := range gets {
		if u, err := g.Recv(); err == nil {
			t.Fatalf("watcher %d read %v after shutdown, want the stream ended", i, u)
		}
	}
}

// runLocal runs a controller with o until the test ends and returns its
// context (done when the test ends) and its destination and admin
// addresses.
func runLocal(t *testing.T, o Options) (ctx context.Context, dst, admin string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o, func(d, a string) { addrs <- [2]string{d, a} }) }()
	select {
	case a := <-addrs:
		t.Cleanup(func() { cancel(); <-done })
		return ctx, a[0], a[1]
	case err := <-done:
		cancel()
		t.Fatalf("controller: %v", err)
	}
	return nil, "", ""
}
