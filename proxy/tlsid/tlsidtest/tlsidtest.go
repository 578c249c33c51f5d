// Package tlsidtest runs a real identity service (controlplane/identity) on
// loopback for tests and benchmarks of mutual TLS between proxies.
package tlsidtest

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/meridian-mesh/meridian/api/proto/identity"
	"github.com/meridian-mesh/meridian/controlplane/identity"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
)

// TrustDomain is the tests' trust domain.
var TrustDomain = spiffeid.RequireTrustDomainFromString("cluster.local")

// Service is an identity service whose tokens are "<ns>/<sa>".
type Service struct {
	CA     *identity.CA
	Client pb.IdentityClient
	// Down makes Certify fail with UNAVAILABLE (an outage).
	Down      atomic.Bool
	Certified atomic.Int64
	// Attempts counts Certify calls, failed ones included.
	Attempts atomic.Int64
	// Refresh is the Identities' tlsid.Config.Refresh (0: the default).
	Refresh float64
}

type flaky struct {
	pb.IdentityServer
	s *Service
}

func (f flaky) Certify(ctx context.Context, r *pb.CertifyRequest) (*pb.CertifyResponse, error) {
	f.s.Attempts.Add(1)
	if f.s.Down.Load() {
		return nil, status.Error(codes.Unavailable, "identity service down (test)")
	}
	resp, err := f.IdentityServer.Certify(ctx, r)
	if err == nil {
		f.s.Certified.Add(1)
	}
	return resp, err
}

// Start runs an identity service issuing certificates valid for lifetime.
func Start(t testing.TB, lifetime time.Duration) *Service {
	t.Helper()
	ca, err := identity.Generate(TrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	v := identity.VerifierFunc(func(_ context.Context, tok []byte) (identity.Subject, error) {
		for i, c := range tok {
			if c == '/' {
				return identity.Subject{Namespace: string(tok[:i]), ServiceAccount: string(tok[i+1:])}, nil
			}
		}
		return identity.Subject{}, identity.ErrUnauthenticated
	})
	s := &Service{CA: ca}
	g := grpc.NewServer()
	pb.RegisterIdentityServer(g, flaky{identity.NewServer(ca, v, identity.Options{Lifetime: lifetime}), s})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	cc, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); g.Stop() })
	s.Client = pb.NewIdentityClient(cc)
	return s
}

// ID is the SPIFFE ID of ns/sa.
func ID(ns, sa string) spiffeid.ID {
	id, _ := identity.ID(TrustDomain, ns, sa)
	return id
}

// Identity returns a running tlsid.Identity for ns/sa that already holds
// its first certificate; it stops with the test.
func (s *Service) Identity(t testing.TB, ns, sa string) *tlsid.Identity {
	t.Helper()
	id, err := tlsid.New(tlsid.Config{ID: ID(ns, sa), Roots: s.CA.Roots, Client: s.Client,
		Token:    func() ([]byte, error) { return []byte(ns + "/" + sa), nil },
		Refresh:  s.Refresh,
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); id.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	select {
	case <-id.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("no certificate within 5s")
	}
	return id
}
