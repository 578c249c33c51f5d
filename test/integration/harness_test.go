// Package integration runs the control plane and the proxies together, in
// local mode, over real sockets on loopback: the same compilers, the same
// destination API, the same proxies as production.
package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/controlplane/controller"
	"github.com/meridian-mesh/meridian/controlplane/store/local"
	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/dstclient"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// controlPlane starts a controller over a directory holding yaml and
// returns a client connection to its destination API.
func controlPlane(t *testing.T, yaml string) *grpc.ClientConn {
	t.Helper()
	cc, _ := controlPlaneLogged(t, yaml, quiet)
	return cc
}

// controlPlaneLogged is controlPlane logging to log, with an admin server
// (/metrics) whose address it returns too.
func controlPlaneLogged(t *testing.T, yaml string, log *slog.Logger) (*grpc.ClientConn, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "objects.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- controller.Run(ctx, controller.Options{Store: "dir:" + dir, DestinationAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Log: log},
			func(d, a string) { addrs <- [2]string{d, a} })
	}()
	var addr, admin string
	select {
	case a := <-addrs:
		addr, admin = a[0], a[1]
	case err := <-done:
		t.Fatalf("controller: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("controller did not start")
	}
	t.Cleanup(func() {
		cancel()
		<-done
	})
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	dirs.Store(cc, dir)
	return cc, admin
}

// dirs are the control planes' store directories, by client connection.
var dirs sync.Map

// declare returns the YAML declaring a workload of the default namespace
// (service account sa, serving service) whose credential is credential: a
// local-mode controller admits only declared workloads.
func declare(name, sa, service, credential string) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: default
  annotations: {%s: %q, %s: %q}
spec: {serviceAccountName: %s}
`, name, names.AnnotationCredentialSHA256, local.CredentialSHA256(credential), names.AnnotationServices, service, sa)
}

// register announces a workload serving service at addr for the test's life.
func register(t *testing.T, cc *grpc.ClientConn, service, addr string) {
	t.Helper()
	name := service + "-" + strconv.Itoa(int(time.Now().UnixNano()%1e6))
	cred := name + "-credential"
	dir, _ := dirs.Load(cc)
	if err := os.WriteFile(filepath.Join(dir.(string), name+".yaml"), []byte(declare(name, service, service, cred)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// Refused until the controller has read the declaration (it polls the
	// directory every second).
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := pb.NewDestinationClient(cc).Register(metadata.AppendToOutgoingContext(ctx, dstclient.CredentialMetadata, cred),
			&pb.Workload{Name: name, Namespace: "default", Service: service, ServiceAccount: service, Address: addr})
		if err == nil {
			_, err = s.Recv() // the acknowledgement
		}
		if err == nil {
			return
		}
		if status.Code(err) != codes.PermissionDenied || time.Now().After(deadline) {
			t.Fatalf("register %s: %v", service, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// meshed runs h as a meshed workload of service: the application on
// loopback, its sidecar in front, and the sidecar's inbound listener
// registered with the control plane (as every local-mode proxy does).
func meshed(t *testing.T, cc *grpc.ClientConn, service string, h http.Handler) *sidecar.Proxy {
	t.Helper()
	p := proxyFor(t, cc, backend(t, h))
	_, in, _ := p.Addrs()
	register(t, cc, service, in.String())
	return p
}

// proxy starts a client-side sidecar following the control plane.
func proxy(t *testing.T, cc *grpc.ClientConn) *sidecar.Proxy { return proxyFor(t, cc, "") }

func proxyFor(t *testing.T, cc *grpc.ClientConn, app string) *sidecar.Proxy {
	t.Helper()
	p, err := sidecar.New(sidecar.Config{
		OutboundAddr: "127.0.0.1:0", InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		InboundForward: app,
		Resolver:       dstclient.New(cc, dstclient.Options{Log: quiet}),
		Balancer:       balance.PeakEWMA, DrainTimeout: time.Second, Log: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

// backend serves h on loopback.
func backend(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// get sends one request for authority through the proxy's outbound listener.
func get(c *http.Client, p *sidecar.Proxy, authority, path string) (int, string, error) {
	out, _, _ := p.Addrs()
	req, _ := http.NewRequest("GET", "http://"+out.String()+path, nil)
	req.Host = authority
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func service(name string) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Service
metadata: {name: %s, namespace: default}
spec:
  ports: [{name: http, port: 80}]
`, name)
}
