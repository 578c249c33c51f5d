package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/proxy/tlsid/tlsidtest"
)

// notifier is the narrow unit below the server: topics a test wakes by hand.
type notifier struct {
	mu   sync.Mutex
	subs map[store.Topic][]chan struct{}
}

func (n *notifier) Watch(t store.Topic) (<-chan struct{}, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.subs == nil {
		n.subs = map[store.Topic][]chan struct{}{}
	}
	ch := make(chan struct{}, 1)
	n.subs[t] = append(n.subs[t], ch)
	return ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		for i, c := range n.subs[t] {
			if c == ch {
				n.subs[t] = append(n.subs[t][:i], n.subs[t][i+1:]...)
				break
			}
		}
	}
}

func (n *notifier) wake(t store.Topic) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.subs[t] {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// snapshots is what the compiler would answer, by Gateway key.
type snapshots struct {
	mu       sync.Mutex
	m        map[string]*gatewaypb.Snapshot
	computes int
}

func (s *snapshots) set(key string, snap *gatewaypb.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = snap
}

func (s *snapshots) compile(key string) (*gatewaypb.Snapshot, []store.Topic, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.computes++
	ns, name, _ := cut(key)
	return s.m[key], []store.Topic{{Kind: store.TopicGateway, Key: store.Key{Namespace: ns, Name: name}}}, nil
}

func cut(key string) (string, string, bool) {
	for i := range key {
		if key[i] == '/' {
			return key[:i], key[i+1:], true
		}
	}
	return "", key, false
}

func topic(ns, name string) store.Topic {
	return store.Topic{Kind: store.TopicGateway, Key: store.Key{Namespace: ns, Name: name}}
}

// serve runs the server on loopback over TLS with the controller's
// identity, verifying client certificates when given, as the controller's
// API does.
func serve(t *testing.T, svc *tlsidtest.Service, n store.Notifier, snaps *snapshots) string {
	t.Helper()
	ctrl := svc.Identity(t, "meridian", "meridian-controller")
	pool := x509.NewCertPool()
	for _, c := range svc.CA.Roots {
		pool.AddCert(c)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			svid, err := ctrl.GetX509SVID()
			if err != nil {
				return nil, err
			}
			der := make([][]byte, len(svid.Certificates))
			for i, c := range svid.Certificates {
				der[i] = c.Raw
			}
			return &tls.Certificate{Certificate: der, PrivateKey: svid.PrivateKey}, nil
		},
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  pool,
	}
	s := New(n, Options{
		Compile:   snaps.compile,
		Authorize: IdentityAuthorizer(tlsidtest.TrustDomain, func(_, name string) string { return name + "-gateway" }),
	})
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	gatewaypb.RegisterGatewayServer(g, s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

// client dials addr presenting the identity ns/sa (none when sa is "").
func client(t *testing.T, svc *tlsidtest.Service, addr, ns, sa string) gatewaypb.GatewayClient {
	t.Helper()
	pool := x509.NewCertPool()
	for _, c := range svc.CA.Roots {
		pool.AddCert(c)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool,
		// The controller's certificate carries a SPIFFE ID, not a DNS name.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			inter := x509.NewCertPool()
			for _, r := range raw[1:] {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				inter.AddCert(c)
			}
			_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			return err
		},
	}
	if sa != "" {
		id := svc.Identity(t, ns, sa)
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			svid, err := id.GetX509SVID()
			if err != nil {
				return nil, err
			}
			der := make([][]byte, len(svid.Certificates))
			for i, c := range svid.Certificates {
				der[i] = c.Raw
			}
			return &tls.Certificate{Certificate: der, PrivateKey: svid.PrivateKey}, nil
		}
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return gatewaypb.NewGatewayClient(cc)
}

func recv(t *testing.T, s gatewaypb.Gateway_WatchClient) *gatewaypb.Snapshot {
	t.Helper()
	type res struct {
		m   *gatewaypb.Snapshot
		err error
	}
	ch := make(chan res, 1)
	go func() { m, err := s.Recv(); ch <- res{m, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Recv: %v", r.err)
		}
		return r.m
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot within 10s")
		return nil
	}
}

// The Gateway's own identity gets the current snapshot, then each new one
// whole; a recomputation that gives the same snapshot sends nothing; a
// Gateway that does not exist yet keeps the stream open until it does.
func TestWatchSendsSnapshots(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	n := &notifier{}
	snaps := &snapshots{m: map[string]*gatewaypb.Snapshot{}}
	addr := serve(t, svc, n, snaps)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := client(t, svc, addr, "edge", "public-gateway")

	snaps.set("edge/public", &gatewaypb.Snapshot{Version: "v1", Gateway: "edge/public"})
	s, err := c.Watch(ctx, &gatewaypb.WatchRequest{Namespace: "edge", Name: "public"})
	if err != nil {
		t.Fatal(err)
	}
	if got := recv(t, s); got.GetVersion() != "v1" {
		t.Fatalf("first snapshot %q, want v1", got.GetVersion())
	}
	n.wake(topic("edge", "public")) // same content: nothing sent
	snaps.set("edge/public", &gatewaypb.Snapshot{Version: "v2", Gateway: "edge/public", Ports: []*gatewaypb.Port{{Port: 8080, Protocol: gatewaypb.Port_HTTP}}})
	n.wake(topic("edge", "public"))
	if got := recv(t, s); got.GetVersion() != "v2" || len(got.GetPorts()) != 1 {
		t.Fatalf("second snapshot %v, want v2 with one port", got)
	}

	// Not there yet: the stream waits, and gets it once it exists.
	c2 := client(t, svc, addr, "edge", "later-gateway")
	s2, err := c2.Watch(ctx, &gatewaypb.WatchRequest{Namespace: "edge", Name: "later"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the stream subscribe and find nothing
	snaps.set("edge/later", &gatewaypb.Snapshot{Version: "l1"})
	n.wake(topic("edge", "later"))
	if got := recv(t, s2); got.GetVersion() != "l1" {
		t.Fatalf("snapshot %q, want l1", got.GetVersion())
	}
}

// A snapshot carries private keys: only the Gateway's own workload
// identity may watch it. Another identity, no client certificate, or a
// plaintext connection are refused with PermissionDenied (or fail the
// handshake), and a malformed name is InvalidArgument.
func TestWatchAuthorization(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	n := &notifier{}
	snaps := &snapshots{m: map[string]*gatewaypb.Snapshot{"edge/public": {Version: "v1"}}}
	addr := serve(t, svc, n, snaps)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watch := func(c gatewaypb.GatewayClient, ns, name string) error {
		s, err := c.Watch(ctx, &gatewaypb.WatchRequest{Namespace: ns, Name: name})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}
	for _, tc := range []struct {
		name     string
		ns, sa   string // the caller's identity; sa "" presents none
		gwNS, gw string
		code     codes.Code
	}{
		{"the gateway itself", "edge", "public-gateway", "edge", "public", codes.OK},
		{"another gateway", "edge", "other-gateway", "edge", "public", codes.PermissionDenied},
		{"same account name, other namespace", "emojivoto", "public-gateway", "edge", "public", codes.PermissionDenied},
		{"no client certificate", "", "", "edge", "public", codes.PermissionDenied},
		{"bad name", "edge", "public-gateway", "edge", "Public_GW", codes.InvalidArgument},
		{"bad namespace", "edge", "public-gateway", "Edge.ns", "public", codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := watch(client(t, svc, addr, tc.ns, tc.sa), tc.gwNS, tc.gw)
			if status.Code(err) != tc.code {
				t.Fatalf("Watch: %v, want %s", err, tc.code)
			}
		})
	}
	t.Run("plaintext", func(t *testing.T) {
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		if err := watch(gatewaypb.NewGatewayClient(cc), "edge", "public"); status.Code(err) == codes.OK {
			t.Fatal("a plaintext client got a snapshot")
		}
	})
}

// Many proxies of one Gateway share one computation per change.
func TestWatchSharesComputation(t *testing.T) {
	svc := tlsidtest.Start(t, time.Hour)
	n := &notifier{}
	snaps := &snapshots{m: map[string]*gatewaypb.Snapshot{"edge/public": {Version: "v1"}}}
	addr := serve(t, svc, n, snaps)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := client(t, svc, addr, "edge", "public-gateway")
	var streams []gatewaypb.Gateway_WatchClient
	for range 20 {
		s, err := c.Watch(ctx, &gatewaypb.WatchRequest{Namespace: "edge", Name: "public"})
		if err != nil {
			t.Fatal(err)
		}
		recv(t, s)
		streams = append(streams, s)
	}
	snaps.mu.Lock()
	before := snaps.computes
	snaps.mu.Unlock()
	snaps.set("edge/public", &gatewaypb.Snapshot{Version: "v2"})
	n.wake(topic("edge", "public"))
	for _, s := range streams {
		if got := recv(t, s); got.GetVersion() != "v2" {
			t.Fatalf("got %q, want v2", got.GetVersion())
		}
	}
	snaps.mu.Lock()
	defer snaps.mu.Unlock()
	if d := snaps.computes - before; d != 1 {
		t.Fatalf("%d computations for one change watched by 20 streams, want 1", d)
	}
}
