package main

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	idpb "github.com/meridian-mesh/meridian/api/proto/identity"
	"github.com/meridian-mesh/meridian/controlplane/identity"
	"github.com/meridian-mesh/meridian/internal/names"
)

// Two proxies with static destinations get their certificates from the
// identity API alone (--identity-addr) and speak mTLS to each other: the
// application behind the inbound proxy learns the caller's identity. A
// token the identity API does not accept gives no certificate, so that
// proxy never becomes ready.
func TestStaticDestinationsWithIdentity(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the proxy binary")
	}
	dir := t.TempDir()
	bin := buildProxy(t)

	// The identity API: a token is the service account it proves, in
	// namespace bench; "nobody" is refused.
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ca, err := identity.Generate(td)
	if err != nil {
		t.Fatal(err)
	}
	v := identity.VerifierFunc(func(_ context.Context, tok []byte) (identity.Subject, error) {
		if s := strings.TrimSpace(string(tok)); s != "nobody" {
			return identity.Subject{Namespace: "bench", ServiceAccount: s}, nil
		}
		return identity.Subject{}, fmt.Errorf("token refused")
	})
	g := grpc.NewServer()
	idpb.RegisterIdentityServer(g, identity.NewServer(ca, v, identity.Options{}))
	gl := listen(t)
	go g.Serve(gl)
	t.Cleanup(g.Stop)
	anchors := filepath.Join(dir, "anchors.pem")
	var pemBytes []byte
	for _, c := range ca.Roots {
		pemBytes = append(pemBytes, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	write(t, anchors, string(pemBytes))

	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get(names.HeaderClientID))
	})}
	al := listen(t)
	go app.Serve(al)
	t.Cleanup(func() { app.Close() })

	proxy := func(name, sa string, args ...string) (in, out, admin string) {
		in, out, admin = freeAddr(t), freeAddr(t), freeAddr(t)
		tok := filepath.Join(dir, name+".token")
		write(t, tok, sa)
		cmd := exec.Command(bin, append([]string{"--inbound-addr", in, "--outbound-addr", out, "--admin-addr", admin,
			"--identity-addr", gl.Addr().String(), "--identity-trust-anchors", anchors, "--identity-token-file", tok,
			"--workload-namespace", "bench", "--workload-service-account", sa}, args...)...)
		cmd.Stderr = &logWriter{t: t, prefix: name}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return in, out, admin
	}
	serverIn, _, serverAdmin := proxy("server", "server", "--inbound-forward", al.Addr().String())
	dests := filepath.Join(dir, "destinations.yaml")
	write(t, dests, fmt.Sprintf("destinations:\n- authority: app.bench:80\n  endpoints:\n  - addr: %s\n    identity: spiffe://cluster.local/ns/bench/sa/server\n", serverIn))
	_, clientOut, clientAdmin := proxy("client", "client", "--destinations", dests)
	_, _, nobodyAdmin := proxy("nobody", "nobody", "--dst", "app.bench:80="+serverIn)
	for _, a := range []string{serverAdmin, clientAdmin} {
		waitReady(t, a)
	}

	c := &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", clientOut)
	}}, Timeout: 10 * time.Second}
	resp, err := c.Get("http://app.bench/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got, want := string(b), "spiffe://cluster.local/ns/bench/sa/client"; resp.StatusCode != 200 || got != want {
		t.Errorf("through the client proxy: %d, the application saw caller %q, want 200 and %q", resp.StatusCode, got, want)
	}
	// The refused token: no certificate, so not ready (it asked when the
	// others did, and they have had theirs for a while now).
	if code := readyStatus(t, nobodyAdmin); code == 200 {
		t.Errorf("the proxy whose token was refused is ready")
	}
}

// readyStatus is the first answer of admin's /ready.
func readyStatus(t *testing.T, admin string) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := http.Get("http://" + admin + "/ready")
		if err == nil {
			r.Body.Close()
			return r.StatusCode
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy with admin %s does not answer: %v", admin, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// buildProxy builds this command into the test's temporary directory.
func buildProxy(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meridian-proxy")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// freeAddr is a loopback address nothing listens on at the moment; the
// proxy binds it right after (a race with other tests is unlikely within
// one package run).
func freeAddr(t *testing.T) string {
	t.Helper()
	l := listen(t)
	a := l.Addr().String()
	l.Close()
	return a
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func waitReady(t *testing.T, admin string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := http.Get("http://" + admin + "/ready")
		if err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy with admin %s not ready in 30s (last: %v)", admin, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type logWriter struct {
	t      *testing.T
	prefix string
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.t.Logf("[%s] %s", w.prefix, strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
