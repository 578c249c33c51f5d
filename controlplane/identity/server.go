package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/meridian-mesh/meridian/api/proto/identity"
)

// Subject is who a proof of identity establishes: a service account.
type Subject struct{ Namespace, ServiceAccount string }

// ErrUnauthenticated is returned (wrapped) by a Verifier for a token that
// proves nothing: forged, expired, for another audience, unknown.
var ErrUnauthenticated = errors.New("token not authenticated")

// Verifier checks a proof of identity.
type Verifier interface {
	Verify(ctx context.Context, token []byte) (Subject, error)
}

// VerifierFunc adapts a function to Verifier.
type VerifierFunc func(ctx context.Context, token []byte) (Subject, error)

// Verify calls f.
func (f VerifierFunc) Verify(ctx context.Context, token []byte) (Subject, error) {
	return f(ctx, token)
}

// Options configure a Server.
type Options struct {
	// Lifetime of leaf certificates; DefaultLeafLifetime when 0.
	Lifetime time.Duration
	Log      *slog.Logger
}

// Server implements pb.IdentityServer.
type Server struct {
	pb.UnimplementedIdentityServer
	ca CASource
	v  Verifier
	o  Options
}

// NewServer returns a Certify server signing with ca (the CA current at
// each request) for the subjects v proves.
func NewServer(ca CASource, v Verifier, o Options) *Server {
	if o.Lifetime <= 0 {
		o.Lifetime = DefaultLeafLifetime
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{ca: ca, v: v, o: o}
}

// ID is the SPIFFE ID of a service account in td.
func ID(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
}

// Certify checks the proof of identity, then signs the CSR for the SPIFFE ID
// the proof establishes.
func (s *Server) Certify(ctx context.Context, req *pb.CertifyRequest) (*pb.CertifyResponse, error) {
	if len(req.GetToken()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no token")
	}
	csr, err := x509.ParseCertificateRequest(req.GetCertificateSigningRequest())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate signing request: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate signing request signature: %v", err)
	}
	subj, err := s.v.Verify(ctx, req.GetToken())
	if err != nil {
		s.o.Log.Info("identity: refused", "err", err)
		if errors.Is(err, ErrUnauthenticated) {
			return nil, status.Errorf(codes.Unauthenticated, "%v", err)
		}
		return nil, status.Errorf(codes.Unavailable, "checking the token: %v", err)
	}
	ca := s.ca.Current()
	id, err := ID(ca.TrustDomain, subj.Namespace, subj.ServiceAccount)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "identity: %v", err)
	}
	if want := req.GetIdentity(); want != "" && want != id.String() {
		return nil, status.Errorf(codes.PermissionDenied, "the token proves %s, not %s", id, want)
	}
	for _, u := range csr.URIs {
		if u.String() != id.String() {
			return nil, status.Errorf(codes.PermissionDenied, "the CSR asks for %s; the token proves %s", u, id)
		}
	}
	leaf, chain, err := ca.Issue(id, csr.PublicKey, s.o.Lifetime)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "issuing: %v", err)
	}
	s.o.Log.Info("identity: certified", "id", id.String(), "valid_until", leaf.NotAfter)
	return &pb.CertifyResponse{LeafCertificate: chain[0], IntermediateCertificates: chain[1:],
		ValidUntil: timestamppb.New(leaf.NotAfter)}, nil
}

// LocalVerifier checks local-mode tokens: those the destination API's
// Register returned to a workload still registered (lookup is
// (*destination.Server).WorkloadByToken, adapted).
func LocalVerifier(lookup func(token string) (Subject, bool)) Verifier {
	return VerifierFunc(func(_ context.Context, token []byte) (Subject, error) {
		sub, ok := lookup(string(token))
		if !ok {
			return Subject{}, fmt.Errorf("%w: no registered workload holds this token", ErrUnauthenticated)
		}
		if sub.ServiceAccount == "" {
			sub.ServiceAccount = "default"
		}
		return sub, nil
	})
}
