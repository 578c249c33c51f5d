// Package gateway is the gateway API server: each gateway proxy watches its
// Gateway's snapshot (api/proto/gateway), computed once per Gateway however
// many replicas watch it, and sent again whole whenever it changes.
package gateway

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/validation"

	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	"github.com/meridian-mesh/meridian/controlplane/hub"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// Options configure a Server.
type Options struct {
	// Compile computes the snapshot of the Gateway key ("namespace/name"):
	// nil when there is no such Gateway of ours (yet), the store topics it
	// read, and warnings for the log. Required.
	Compile func(key string) (*gatewaypb.Snapshot, []store.Topic, []string)
	// Authorize decides whether the caller of ctx may watch the Gateway:
	// a snapshot carries the private keys of the Gateway's certificates.
	// Required; IdentityAuthorizer is the production one.
	Authorize func(ctx context.Context, namespace, name string) error
	// Synced, when not nil, is closed once the store is filled: no
	// snapshot is sent before, since one computed from a store still
	// filling would drop routes that exist.
	Synced <-chan struct{}
	Log    *slog.Logger
	// Metrics, when not nil, registers the server's metrics.
	Metrics prometheus.Registerer
}

// Server implements gatewaypb.GatewayServer over a store.
type Server struct {
	gatewaypb.UnimplementedGatewayServer
	o       Options
	hub     *hub.Hub[result]
	streams prometheus.Gauge
	sent    prometheus.Counter
}

// result is a computed snapshot; nil snap: no such Gateway.
type result struct{ snap *gatewaypb.Snapshot }

// New returns a server woken by n. Register it with
// gatewaypb.RegisterGatewayServer.
func New(n store.Notifier, o Options) *Server {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{o: o,
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_gateway_streams", Help: "Open gateway snapshot streams."}),
		sent:    prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_gateway_snapshots_sent_total", Help: "Gateway snapshots sent to proxies."}),
	}
	computes := prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_gateway_computes_total", Help: "Gateway snapshot computations (shared by the streams of one Gateway)."})
	if o.Metrics != nil {
		o.Metrics.MustRegister(s.streams, s.sent, computes)
	}
	s.hub = hub.New(hub.Options[result]{
		Notifier: n, Log: o.Log, Name: "gateway", RPC: "watch", KeyName: "gateway", Computes: computes,
		Compute: func(key string) (result, []store.Topic, []string) {
			snap, topics, warns := o.Compile(key)
			return result{snap: snap}, topics, warns
		},
		Equal: func(a, b *result) bool {
			if a.snap == nil || b.snap == nil {
				return a.snap == b.snap
			}
			return a.snap.GetVersion() == b.snap.GetVersion() && proto.Equal(a.snap, b.snap)
		},
	})
	return s
}

// Watch streams the Gateway's snapshot: the current one, then every new
// one, whole. While the Gateway does not exist (or is not ours) the stream
// stays open and sends nothing; it gets the first snapshot once it does.
// A stream that cannot send blocks only itself and, when it can again,
// gets the latest snapshot, not the ones in between.
func (s *Server) Watch(req *gatewaypb.WatchRequest, stream gatewaypb.Gateway_WatchServer) error {
	ns, name := req.GetNamespace(), req.GetName()
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return status.Errorf(codes.InvalidArgument, "WatchRequest.name %q: %s", name, errs[0])
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return status.Errorf(codes.InvalidArgument, "WatchRequest.namespace %q: %s", ns, errs[0])
	}
	ctx := stream.Context()
	if err := s.o.Authorize(ctx, ns, name); err != nil {
		s.o.Log.Warn("gateway: watch refused", "gateway", ns+"/"+name, "peer", peerAddr(ctx), "err", err)
		return status.Errorf(codes.PermissionDenied, "gateway %s/%s: %v", ns, name, err)
	}
	s.streams.Inc()
	defer s.streams.Dec()
	if s.o.Synced != nil {
		select {
		case <-s.o.Synced:
		case <-ctx.Done():
			return nil
		}
	}
	sub := s.hub.Subscribe(ns + "/" + name)
	defer sub.Close()
	var last *gatewaypb.Snapshot
	for {
		cur, ok := sub.Latest(ctx)
		if !ok {
			return nil
		}
		if cur.snap != nil && cur.snap != last {
			if err := stream.Send(cur.snap); err != nil {
				return err
			}
			s.sent.Inc()
			last = cur.snap
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sub.Wake():
		}
	}
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// IdentityAuthorizer allows a caller whose verified client certificate
// (mTLS, chained to the trust anchors the server's TLS configuration
// verifies client certificates with) carries the SPIFFE ID of the
// Gateway's service account, serviceAccount(namespace, name), in trust
// domain td.
func IdentityAuthorizer(td spiffeid.TrustDomain, serviceAccount func(namespace, name string) string) func(context.Context, string, string) error {
	return func(ctx context.Context, ns, name string) error {
		want, err := spiffeid.FromSegments(td, "ns", ns, "sa", serviceAccount(ns, name))
		if err != nil {
			return err
		}
		got, err := peerID(ctx)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("the caller is %s; only %s may watch this Gateway", got, want)
		}
		return nil
	}
}

// peerID is the SPIFFE ID of the caller's verified client certificate.
func peerID(ctx context.Context) (spiffeid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, errors.New("no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return spiffeid.ID{}, errors.New("the connection is not TLS: a client certificate is required")
	}
	if len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return spiffeid.ID{}, errors.New("no verified client certificate: present the gateway's workload certificate")
	}
	return leafID(info.State.VerifiedChains[0][0])
}

func leafID(c *x509.Certificate) (spiffeid.ID, error) {
	if len(c.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("the client certificate has %d URI SANs; a workload certificate has one SPIFFE ID", len(c.URIs))
	}
	return spiffeid.FromURI(c.URIs[0])
}
