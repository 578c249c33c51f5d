// Package destination serves the destination API (api/proto/destination):
// endpoint sets and profiles of authorities, streamed to proxies as the
// store changes, and the registration of local-mode workloads.
package destination

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/hub"
	"github.com/meridian-mesh/meridian/controlplane/store"
)

// DefaultResync is how often a stream whose authority names no service key
// yet (a cluster IP or short name that does not resolve) resolves it again.
// Streams with a key are woken by the store and never poll.
const DefaultResync = 5 * time.Second

// WorkloadRegistry records local-mode workloads in the store. unregister
// removes the workload again; it is called exactly once.
type WorkloadRegistry interface {
	Register(w store.Workload) (unregister func(), err error)
}

// RegistryFunc adapts a function, such as (*store.Store).RegisterWorkload,
// to WorkloadRegistry.
type RegistryFunc func(store.Workload) (unregister func(), err error)

// Register calls f.
func (f RegistryFunc) Register(w store.Workload) (func(), error) { return f(w) }

// Options configure a Server.
type Options struct {
	Compile compile.Options
	// Registry serves the Register RPC; nil answers it Unimplemented (kube
	// mode: pods do not register).
	Registry WorkloadRegistry
	// Admit, when set, decides whether a registration may be made, from the
	// workload claimed and the credential presented (gRPC metadata
	// CredentialMetadata), and returns the workload to record (the declared
	// service account and labels): local.Admit over the store. A refusal
	// is PermissionDenied. nil admits any workload (tests only: the token a
	// registration returns proves the claimed identity).
	// A ctx error (the stream ended while Admit waited, e.g. for the store's
	// first load) is returned as Unavailable.
	Admit func(ctx context.Context, w store.Workload, credential string) (store.Workload, error)
	// Resync is how often a stream whose authority names no service key
	// resolves it again; DefaultResync when 0.
	Resync time.Duration
	Log    *slog.Logger
	// Metrics registers the server's metrics when not nil.
	Metrics prometheus.Registerer
	// Synced, when not nil, is closed once the store holds the source's
	// state (Kubernetes: the informer caches synced; a directory: loaded).
	// Until then no Get stream is answered: an answer from a store still
	// filling would tell proxies to drop endpoints that exist. nil: the
	// store is complete from the start.
	Synced <-chan struct{}
	// StartupGrace is how long after Synced a stream's first answer that
	// has no endpoints is held, until the set has endpoints or the period
	// ends: a restarted local-mode controller knows its workloads only once
	// they register again, and an empty first answer would make proxies
	// drop endpoints that are about to come back. 0: none.
	StartupGrace time.Duration
}

// Server implements pb.DestinationServer over a store.
type Server struct {
	pb.UnimplementedDestinationServer

	r   store.Reader
	n   store.Notifier
	o   Options
	log *slog.Logger
	m   *metrics

	endpoints *hub.Hub[compile.EndpointSet]
	profiles  *hub.Hub[profileResult]

	synced   chan struct{} // closed when Options.Synced is
	syncedAt time.Time     // written before synced is closed

	mu     sync.Mutex
	tokens map[string]store.Workload
}

// New returns a server reading r and woken by n. Register it with
// pb.RegisterDestinationServer.
func New(r store.Reader, n store.Notifier, o Options) *Server {
	if o.Resync <= 0 {
		o.Resync = DefaultResync
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{r: r, n: n, o: o, log: o.Log, m: newMetrics(o.Metrics), tokens: map[string]store.Workload{},
		synced: make(chan struct{})}
	if o.Synced == nil {
		s.syncedAt = time.Now()
		close(s.synced)
	} else {
		go func() {
			<-o.Synced
			s.syncedAt = time.Now()
			close(s.synced)
		}()
	}
	warn := &hub.WarnLimiter{}
	s.endpoints = hub.New(hub.Options[compile.EndpointSet]{
		Notifier: n, Resync: o.Resync, Log: o.Log, Name: "destination", RPC: "get", KeyName: "authority", Warn: warn,
		Computes: s.m.computes.WithLabelValues("get"),
		Compute: func(authority string) (compile.EndpointSet, []store.Topic, []string) {
			es := compile.Endpoints(r, authority, o.Compile)
			return es, store.ServiceTopics(es.Deps), es.Warnings
		},
		Equal: func(a, b *compile.EndpointSet) bool { return a.Equal(*b) },
	})
	s.profiles = hub.New(hub.Options[profileResult]{
		Notifier: n, Resync: o.Resync, Log: o.Log, Name: "destination", RPC: "get_profile", KeyName: "authority", Warn: warn,
		Computes: s.m.computes.WithLabelValues("get_profile"),
		Compute: func(authority string) (profileResult, []store.Topic, []string) {
			p := compile.Profile(r, authority, o.Compile)
			return profileResult{p: p}, store.ServiceTopics(p.Deps), p.Warnings
		},
		Equal:   func(a, b *profileResult) bool { return a.p.Equal(b.p) },
		Prepare: func(r *profileResult) { r.msg = r.p.ToProto() },
	})
	return s
}

// WorkloadByToken returns the workload that registered with token while its
// registration stream is open (for the identity service in local mode).
func (s *Server) WorkloadByToken(token string) (store.Workload, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.tokens[token]
	return w, ok
}

// Get streams the endpoint set of an authority: the current state at once,
// then adds and removes as the store changes. An authority that names no
// known service gets NoEndpoints{exists: false} and the stream stays open:
// the service may appear later.
//
// The first answer waits for the store to be synced (Options.Synced), and
// during Options.StartupGrace an empty first answer waits for endpoints.
//
// A stream that cannot send (a slow or stuck client) blocks only itself: the
// authority's answer is computed by the hub, and the stream catches up with
// the latest answer, whatever happened meanwhile, when it can send again.
func (s *Server) Get(req *pb.GetDestination, stream pb.Destination_GetServer) error {
	ctx := stream.Context()
	open := s.m.streams.WithLabelValues("get")
	open.Inc()
	defer open.Dec()
	// Subscribed only once synced, so that the answer is computed from the
	// synced store (a result computed before might still be the latest).
	select {
	case <-s.synced:
	case <-ctx.Done():
		return nil
	}
	sub := s.endpoints.Subscribe(req.GetAuthority())
	defer sub.Close()

	var last *compile.EndpointSet // what the client has: nil before the first message
	for {
		var cur *compile.EndpointSet
		var ok bool
		if last == nil {
			if cur, ok = s.firstAnswer(ctx, sub, req.GetAuthority()); ok && !cur.Exists {
				s.m.notFound.Inc()
			}
		} else {
			cur, ok = sub.Latest(ctx)
		}
		if !ok {
			return nil
		}
		if err := s.sendEndpoints(stream, last, cur); err != nil {
			return err
		}
		last = cur
		select {
		case <-ctx.Done():
			return nil
		case <-sub.Wake():
		}
	}
}

// firstAnswer is a stream's first set (the store is synced): for
// a known service that is not a traffic split's apex, not empty while the
// startup grace period lasts unless it stays empty to the end of it.
func (s *Server) firstAnswer(ctx context.Context, sub *hub.Subscription[compile.EndpointSet], authority string) (*compile.EndpointSet, bool) {
	end := s.syncedAt.Add(s.o.StartupGrace)
	held := false
	for {
		cur, ok := sub.Latest(ctx)
		if !ok {
			return nil, false
		}
		left := time.Until(end)
		// Only a known service's empty set is held: an unknown authority's
		// proxy falls back to the original destination at once.
		if len(cur.Endpoints) > 0 || !cur.Exists || left <= 0 {
			if held {
				s.log.Debug("destination: startup grace: answering", "authority", authority, "endpoints", len(cur.Endpoints))
			}
			return cur, true
		}
		if !held {
			// A traffic split's apex routes to its backends (and a
			// service with HTTP routes, to theirs): its own empty set is
			// expected and is not worth a wait.
			if p := compile.Profile(s.r, authority, s.o.Compile); len(p.DstOverrides) > 0 || len(p.HTTPRoutes) > 0 {
				return cur, true
			}
			held = true
			s.m.held.Inc()
			s.log.Debug("destination: startup grace: holding an empty first answer until endpoints register", "authority", authority, "for", left.Round(time.Millisecond))
		}
		t := time.NewTimer(left)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, false
		case <-sub.Wake():
		case <-t.C:
		}
		t.Stop()
	}
}

// sendEndpoints sends what turns the client's view prev (nil: nothing sent
// yet) into cur. Adds (new or changed addresses) go before removes, so a
// proxy replacing every endpoint never sees an empty set in between.
func (s *Server) sendEndpoints(stream pb.Destination_GetServer, prev, cur *compile.EndpointSet) error {
	if len(cur.Endpoints) == 0 {
		if prev != nil && len(prev.Endpoints) == 0 && prev.Exists == cur.Exists {
			return nil
		}
		s.m.noEndpoints.Inc()
		return stream.Send(&pb.Update{Update: &pb.Update_NoEndpoints{NoEndpoints: &pb.NoEndpoints{Exists: cur.Exists}}})
	}
	var old []compile.Endpoint
	if prev != nil {
		old = prev.Endpoints
	}
	add := &pb.WeightedAddrSet{MetricLabels: cur.Labels}
	var remove []*pb.TcpAddress
	// Both lists are sorted by address: walk them together.
	i, j := 0, 0
	for i < len(old) || j < len(cur.Endpoints) {
		switch {
		case j == len(cur.Endpoints) || (i < len(old) && old[i].Addr.Compare(cur.Endpoints[j].Addr) < 0):
			a := old[i].Addr
			remove = append(remove, &pb.TcpAddress{Ip: a.Addr().String(), Port: uint32(a.Port())})
			i++
		case i == len(old) || old[i].Addr.Compare(cur.Endpoints[j].Addr) > 0:
			add.Addrs = append(add.Addrs, cur.Endpoints[j].ToProto())
			j++
		default: // same address
			if !old[i].Equal(cur.Endpoints[j]) {
				add.Addrs = append(add.Addrs, cur.Endpoints[j].ToProto())
			}
			i++
			j++
		}
	}
	if len(add.Addrs) > 0 {
		s.m.adds.Inc()
		if err := stream.Send(&pb.Update{Update: &pb.Update_Add{Add: add}}); err != nil {
			return err
		}
	}
	if len(remove) > 0 {
		s.m.removes.Inc()
		if err := stream.Send(&pb.Update{Update: &pb.Update_Remove{Remove: &pb.AddrSet{Addrs: remove}}}); err != nil {
			return err
		}
	}
	return nil
}

// GetProfile streams the authority's profile; a message is sent at once and
// then whenever the profile changes (identical recomputations are not sent).
// An unknown authority gets the default profile.
func (s *Server) GetProfile(req *pb.GetDestination, stream pb.Destination_GetProfileServer) error {
	ctx := stream.Context()
	open := s.m.streams.WithLabelValues("get_profile")
	open.Inc()
	defer open.Dec()
	select { // a profile from a store still filling would be the default
	case <-s.synced:
	case <-ctx.Done():
		return nil
	}
	sub := s.profiles.Subscribe(req.GetAuthority())
	defer sub.Close()

	var last *profileResult
	for {
		cur, ok := sub.Latest(ctx)
		if !ok {
			return nil
		}
		if cur != last {
			s.m.profiles.Inc()
			if err := stream.Send(cur.msg); err != nil {
				return err
			}
			last = cur
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sub.Wake():
		}
	}
}

// profileResult is a published profile and its proto form, shared by every
// stream of the authority (proto messages are safe to marshal concurrently).
type profileResult struct {
	p   compile.DestinationProfile
	msg *pb.DestinationProfile
}

// Register records a local-mode workload in the store while the stream is
// open, and sends one Registration.
func (s *Server) Register(w *pb.Workload, stream pb.Destination_RegisterServer) error {
	if s.o.Registry == nil {
		return status.Error(codes.Unimplemented, "workload registration is served in local mode only (--store=dir:PATH)")
	}
	sw, err := workloadFromProto(w)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if s.o.Admit != nil {
		if sw, err = s.o.Admit(stream.Context(), sw, credential(stream.Context())); err != nil {
			if ctxErr := stream.Context().Err(); ctxErr != nil {
				return status.FromContextError(ctxErr).Err()
			}
			s.log.Warn("destination: registration refused", "workload", w.GetNamespace()+"/"+w.GetName(), "peer", peerAddr(stream.Context()), "err", err)
			return status.Error(codes.PermissionDenied, err.Error())
		}
	}
	unregister, err := s.o.Registry.Register(sw)
	if err != nil {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	defer unregister()
	s.m.streams.WithLabelValues("register").Inc()
	defer s.m.streams.WithLabelValues("register").Dec()

	var b [16]byte
	_, _ = cryptoRead(b[:])
	token := hex.EncodeToString(b[:])
	s.mu.Lock()
	s.tokens[token] = sw
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.tokens, token)
		s.mu.Unlock()
	}()
	s.log.Info("destination: workload registered", "workload", sw.Namespace+"/"+sw.Name, "service", sw.Service, "address", sw.Address)
	defer s.log.Info("destination: workload unregistered", "workload", sw.Namespace+"/"+sw.Name)
	if err := stream.Send(&pb.Registration{Token: token}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

var cryptoRead = crand.Read

// CredentialMetadata is the gRPC metadata key of the credential a local-mode
// proxy presents with Register (proxy/dstclient sends it).
const CredentialMetadata = "meridian-workload-credential"

func credential(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(CredentialMetadata); len(v) == 1 {
		return v[0]
	}
	return ""
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

func workloadFromProto(w *pb.Workload) (store.Workload, error) {
	if w.GetName() == "" || w.GetNamespace() == "" {
		return store.Workload{}, fmt.Errorf("workload needs a name and a namespace")
	}
	ap, err := netip.ParseAddrPort(w.GetAddress())
	if err != nil || ap.Port() == 0 {
		return store.Workload{}, fmt.Errorf("workload %s/%s: address %q is not ip:port", w.GetNamespace(), w.GetName(), w.GetAddress())
	}
	if w.GetAppPort() > 65535 {
		return store.Workload{}, fmt.Errorf("workload %s/%s: app port %d is not a port", w.GetNamespace(), w.GetName(), w.GetAppPort())
	}
	labels := make(map[string]string, len(w.GetLabels()))
	for k, v := range w.GetLabels() {
		labels[k] = v
	}
	return store.Workload{
		Name:           w.GetName(),
		Namespace:      w.GetNamespace(),
		Service:        w.GetService(),
		ServiceAccount: w.GetServiceAccount(),
		Address:        ap.String(),
		AppPort:        w.GetAppPort(),
		Labels:         labels,
	}, nil
}
