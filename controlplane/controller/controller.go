// Package controller assembles Meridian's control plane: a store filled by
// a source (the Kubernetes API or a directory), the destination API over it,
// and an admin server. `meridian controller` runs it; `meridian demo` and
// the integration tests run it in-process.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	pb "github.com/meridian-mesh/meridian/api/proto/destination"
	gatewaypb "github.com/meridian-mesh/meridian/api/proto/gateway"
	idpb "github.com/meridian-mesh/meridian/api/proto/identity"
	"github.com/meridian-mesh/meridian/api/v1alpha1"
	"github.com/meridian-mesh/meridian/controlplane/compile"
	compilegateway "github.com/meridian-mesh/meridian/controlplane/compile/gateway"
	"github.com/meridian-mesh/meridian/controlplane/controller/runnable"
	"github.com/meridian-mesh/meridian/controlplane/destination"
	gatewayserver "github.com/meridian-mesh/meridian/controlplane/gateway"
	"github.com/meridian-mesh/meridian/controlplane/gateway/provision"
	"github.com/meridian-mesh/meridian/controlplane/identity"
	"github.com/meridian-mesh/meridian/controlplane/identity/tokenreview"
	"github.com/meridian-mesh/meridian/controlplane/rollouts/traffic"
	"github.com/meridian-mesh/meridian/controlplane/store"
	"github.com/meridian-mesh/meridian/controlplane/store/kube"
	"github.com/meridian-mesh/meridian/controlplane/store/local"
	"github.com/meridian-mesh/meridian/internal/adminmux"
	"github.com/meridian-mesh/meridian/internal/ports"
)

// Options configure a controller; the fields mirror `meridian controller`'s flags.
type Options struct {
	Store      string // "kube" or "dir:PATH"
	Kubeconfig string
	// RestConfig, when set, is used for --store=kube instead of Kubeconfig
	// (tests and embedders that already hold one).
	RestConfig *rest.Config
	// DestinationAddr is the gRPC API's address; empty: DefaultKubeDestinationAddr
	// or, in local mode, DefaultLocalDestinationAddr.
	DestinationAddr    string
	AdminAddr          string // empty: no admin server
	ClusterDomain      string
	TrustDomain        string
	DefaultNamespace   string
	DefaultOpaquePorts string
	Resync             time.Duration
	ShutdownGrace      time.Duration
	// StartupGrace (local mode) is how long after the store is loaded an
	// empty endpoint set is not sent as a stream's first answer, so that a
	// restarted controller does not tell proxies to drop workloads that
	// have not registered again yet; 0 is DefaultStartupGrace, negative
	// none. Kubernetes mode needs none: nothing is answered before the
	// informer caches sync.
	StartupGrace time.Duration
	Log          *slog.Logger

	// IdentityIssuerDir holds the identity issuer in the shape of a
	// cert-manager Secret (tls.crt, tls.key, ca.crt). In local mode a missing
	// or empty directory gets a generated trust anchor and issuer written to
	// it; empty: generated and kept in memory. In kube mode, without it the
	// identity service is off.
	IdentityIssuerDir string
	// IdentityCA, when set, is the CA to sign with (embedders that made one).
	IdentityCA *identity.CA
	// IdentityIssuerReload is how often IdentityIssuerDir is looked at for a
	// renewed issuer (default 1m; the kubelet updates a mounted Secret about
	// as often).
	IdentityIssuerReload time.Duration
	// IdentityLifetime is the workload certificates' lifetime (default 24h).
	IdentityLifetime time.Duration
	// IdentityAudience is the audience of the ServiceAccount tokens proxies
	// present in kube mode (default identity.meridian.io).
	IdentityAudience string

	// APIIdentity, when set, is the SPIFFE ID of the controller's own
	// certificate: the gRPC API (destination and identity) is then served
	// over TLS with a certificate from the identity issuer, and proxies
	// verify it (meridian-proxy --destination-identity). Empty: plaintext
	// (local mode on loopback).
	APIIdentity string

	// Webhook are the proxy injector's options (kube mode only; it needs
	// the identity issuer, whose trust anchors it gives the proxies).
	Webhook WebhookOptions

	// Writers are more runnables that write to the API server (rollouts
	// attach here), beside the injector's certificate keeper: in kube mode
	// they run only on the replica that holds the Lease, in local mode at
	// once.
	Writers []runnable.Runnable
	// LeaderElection configures the Lease the writers run under (kube mode,
	// when there are writers).
	LeaderElection LeaderElectionOptions

	// Rollouts runs the Rollout reconciler (kube mode, a leader-only
	// writer; `meridian controller` turns it on unless --rollouts=false).
	Rollouts bool
	// RolloutRouters gives the reconciler the traffic Router of a Rollout
	// with trafficRouting; nil: Meridian's own (controlplane/rollouts/traffic).
	RolloutRouters func(*v1alpha1.Rollout) (traffic.Router, error)

	// AnalysisRunWorkers > 0 runs the AnalysisRun runner (kube mode, a
	// writer) with that many workers; 0: off. See analysisruns.go.
	AnalysisRunWorkers int
}

// DefaultOpaquePorts are the ports Linkerd treats as opaque unless told
// otherwise: SMTP, MySQL, Galera, PostgreSQL, Redis, Elasticsearch and
// memcached, whose server-speaks-first protocols defeat detection. The list
// lives in internal/ports, shared with meridian-proxy's static mode.
const DefaultOpaquePorts = ports.DefaultOpaque

// The destination API's default addresses: every interface in a pod (kube
// mode), loopback in local mode, where the API admits processes of this
// machine.
const (
	DefaultKubeDestinationAddr  = ":8086"
	DefaultLocalDestinationAddr = "127.0.0.1:8086"
)

// destinationAddr is the API's address: addr, else the mode's default.
func destinationAddr(addr string, local bool) string {
	switch {
	case addr != "":
		return addr
	case local:
		return DefaultLocalDestinationAddr
	}
	return DefaultKubeDestinationAddr
}

func loopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// DefaultStartupGrace is Options.StartupGrace's default: proxies reconnect
// within 10 s (dstclient.ConnectParams) and register at once.
const DefaultStartupGrace = 15 * time.Second

// Ready is told the addresses a running controller listens on (callers use
// it with :0 addresses).
type Ready func(destinationAddr, adminAddr string)

// Run runs the controller until ctx ends or a component fails. The
// components are runnables (see the runnable package): the readers (the
// store's source, the destination and identity API, the admin server, the
// issuer watch, the injector's server) run on every replica; the writers
// (the injector's certificate and caBundle, Options.Writers) run in kube
// mode only on the replica that holds the Lease (see the leader package),
// in local mode at once. One failing stops the others, and Run returns
// only once every one has returned.
func Run(ctx context.Context, o Options, onListen Ready) error {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = compile.DefaultClusterDomain
	}
	if o.TrustDomain == "" {
		o.TrustDomain = compile.DefaultTrustDomain
	}
	if o.DefaultNamespace == "" {
		o.DefaultNamespace = local.DefaultNamespace
	}
	if o.Resync == 0 {
		o.Resync = destination.DefaultResync
	}
	if o.ShutdownGrace == 0 {
		o.ShutdownGrace = 5 * time.Second
	}
	if o.DefaultOpaquePorts == "" {
		o.DefaultOpaquePorts = DefaultOpaquePorts
	}

	opaque, errs := compile.ParsePorts(o.DefaultOpaquePorts)
	if len(errs) > 0 {
		return fmt.Errorf("--default-opaque-ports: %v", errors.Join(errs...))
	}
	if o.Store == "kube" && o.RestConfig == nil {
		// Read once: the store's source, token reviews, the injector and
		// the leader election all use it.
		var err error
		if o.RestConfig, err = restConfig(o.Kubeconfig); err != nil {
			return err
		}
	}
	src, err := parseStoreFlag(o.Store, o.RestConfig)
	if err != nil {
		return err
	}
	copts := compile.Options{
		ClusterDomain:      o.ClusterDomain,
		TrustDomain:        o.TrustDomain,
		Local:              src.local,
		DefaultNamespace:   o.DefaultNamespace,
		DefaultOpaquePorts: opaque,
	}

	st := store.New(store.WithClusterDomain(o.ClusterDomain))
	synced := make(chan struct{}) // closed once the source's first view is in st
	var syncedOnce sync.Once
	// destination.New waits for synced in a goroutine of its own: release
	// it when the store never synced (stopped first), so that it does not
	// outlive Run.
	defer syncedOnce.Do(func() { close(synced) })
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if src.files != nil {
		reg.MustRegister(src.files)
	}
	// stopping is set once shutdown begins: from then on, registrations
	// are not withdrawn. The streams end one connection at a time, and a
	// workload withdrawn because its Register stream ended first would
	// reach the proxies still connected as the removal of a healthy
	// endpoint, just before they reconnect elsewhere. The store goes with
	// the process anyway.
	var stopping atomic.Bool
	// Streams are answered once the source has filled the store.
	dopts := destination.Options{Compile: copts, Resync: o.Resync, Log: log, Metrics: reg, Synced: synced}
	if src.local {
		dopts.Registry = destination.RegistryFunc(func(w store.Workload) (func(), error) {
			unregister, err := st.RegisterWorkload(w)
			if err != nil {
				return nil, err
			}
			return func() {
				if !stopping.Load() {
					unregister()
				}
			}, nil
		})
		dopts.StartupGrace = o.StartupGrace
		if dopts.StartupGrace == 0 {
			dopts.StartupGrace = DefaultStartupGrace
		}
		// Any process that reaches the API may ask: admit only the
		// workloads the directory declares, with their credential, and
		// never as the controller itself.
		dopts.Admit = func(ctx context.Context, w store.Workload, credential string) (store.Workload, error) {
			// The declarations are in the directory: wait for its first load.
			select {
			case <-synced:
			case <-ctx.Done():
				return w, ctx.Err()
			}
			w, err := local.Admit(st, w, credential)
			if err == nil && o.APIIdentity != "" {
				td, _ := spiffeid.TrustDomainFromString(o.TrustDomain) // checked by identityServer
				if id, ierr := identity.ID(td, w.Namespace, w.ServiceAccount); ierr == nil && id.String() == o.APIIdentity {
					err = fmt.Errorf("workload %s/%s: service account %s/%s is the controller's identity (--api-identity %s)", w.Namespace, w.Name, w.Namespace, w.ServiceAccount, o.APIIdentity)
				}
			}
			return w, err
		}
	}
	dst := destination.New(st, st, dopts)

	o.DestinationAddr = destinationAddr(o.DestinationAddr, src.local)
	lis, err := net.Listen("tcp", o.DestinationAddr)
	if err != nil {
		return fmt.Errorf("--destination-addr: %w", err)
	}
	defer lis.Close()
	if src.local && !loopback(lis.Addr()) {
		log.Warn("controller: local mode's API listens beyond loopback: any host that reaches it can ask for registration "+
			"(only declared workloads with their credential are admitted); serve it over TLS (--api-identity) or bind it to 127.0.0.1",
			"destination_addr", lis.Addr().String(), "tls", o.APIIdentity != "")
	}
	var adminLis net.Listener
	if o.AdminAddr != "" {
		adminLis, err = net.Listen("tcp", o.AdminAddr)
		if err != nil {
			return fmt.Errorf("--admin-addr: %w", err)
		}
		defer adminLis.Close()
	}

	idSrv, auth, err := identityServer(o, src, dst, log)
	if err != nil {
		return err
	}
	var parts runnable.Group
	if auth != nil {
		if w := watchIssuer(o, auth, reg, log); w != nil {
			parts = append(parts, w)
		}
	}
	sopts := []grpc.ServerOption{
		// Streams live for as long as proxies do: find dead peers, and let
		// proxies keep idle connections alive through NATs and balancers.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	if o.APIIdentity != "" {
		if auth == nil {
			return fmt.Errorf("--api-identity needs the identity issuer (--identity-issuer-dir)")
		}
		cert, err := newAPICert(auth, o.APIIdentity, o.IdentityLifetime)
		if err != nil {
			return err
		}
		sopts = append(sopts, grpc.Creds(credentials.NewTLS(cert.tlsConfig(auth.Current().Roots))))
		log.Info("controller: API served over TLS", "identity", o.APIIdentity)
	}
	g := grpc.NewServer(sopts...)
	pb.RegisterDestinationServer(g, dst)
	if idSrv != nil {
		idpb.RegisterIdentityServer(g, idSrv)
	}
	// The gateway API: each gateway proxy watches its Gateway's snapshot,
	// which only the Gateway's own workload identity may read.
	td, err := spiffeid.TrustDomainFromString(o.TrustDomain)
	if err != nil {
		return fmt.Errorf("--trust-domain %q: %w", o.TrustDomain, err)
	}
	gatewaypb.RegisterGatewayServer(g, gatewayserver.New(st, gatewayserver.Options{
		Compile: func(key string) (*gatewaypb.Snapshot, []store.Topic, []string) {
			ns, name, _ := strings.Cut(key, "/")
			k := types.NamespacedName{Namespace: ns, Name: name}
			res := compilegateway.Compile(compilegateway.InputFrom(st, k), k, compilegateway.Options{ClusterDomain: o.ClusterDomain})
			topics := []store.Topic{store.GatewayTopic(store.Key{Namespace: ns, Name: name})}
			if !res.Owned {
				return nil, topics, nil
			}
			return res.Snapshot, topics, nil
		},
		Authorize: gatewayserver.IdentityAuthorizer(td, func(_, name string) string { return provision.Name(name) }),
		Synced:    synced,
		Log:       log,
		Metrics:   reg,
	}))
	injector, err := proxyInjector(o, src, auth, log)
	if err != nil {
		return err
	}
	writers := runnable.Group(o.Writers)
	if injector.serve != nil {
		parts = append(parts, runnable.Named("proxy injector", injector.serve))
		writers = append(writers, runnable.Named("proxy injector certificate", injector.keep))
		// Gateways of Meridian's class run proxies configured as the
		// injected ones are.
		rec, err := gatewayReconciler(o, st, synced, injector.proxy, log)
		if err != nil {
			return err
		}
		writers = append(writers, runnable.Named("gateway provisioning and status", rec))
		mesh, err := meshRouteWriter(o, copts, st, synced, log)
		if err != nil {
			return err
		}
		writers = append(writers, runnable.Named("mesh route status", mesh))
	}
	if o.Rollouts && !src.local {
		rec, err := rolloutsReconciler(o, st, copts, log)
		if err != nil {
			return err
		}
		writers = append(writers, runnable.Named("rollouts reconciler", rec))
	}
	if ar, err := analysisRunner(o, log); err != nil {
		return err
	} else if ar != nil {
		writers = append(writers, ar)
	}
	elected, err := electWriters(o, src, writers, reg, log)
	if err != nil {
		return err
	}
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(g, hs)

	var ready atomic.Bool
	// The API stops first (not ready, then its streams drained); the
	// store's source and the admin server keep going until it has, as
	// streams still open may see changes and balancers still probe.
	apiStopped := make(chan struct{})
	api := runnable.Func(func(ctx context.Context) error {
		defer close(apiStopped)
		return serveAPI(ctx, g, lis, hs, o.ShutdownGrace, func() { ready.Store(false); stopping.Store(true) })
	})
	source := runnable.Func(func(ctx context.Context) error {
		err := src.run(ctx, st, log, func() {
			ready.Store(true)
			syncedOnce.Do(func() { close(synced) })
			hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
			log.Info("controller: store synced", "store", o.Store)
		})
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("store %s: %w", o.Store, err)
		}
		return nil
	})
	parts = append(parts,
		runnable.Named("destination API", api),
		stopsAfter(apiStopped, source))
	if adminLis != nil {
		mux := adminMux(reg, &ready)
		if src.files != nil {
			mux.Handle("GET /store", src.files)
		}
		admin := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		parts = append(parts, stopsAfter(apiStopped, runnable.Named("admin server", serveHTTP(admin, adminLis))))
	}
	if elected != nil {
		parts = append(parts, elected)
	}
	adminAddr := ""
	if adminLis != nil {
		adminAddr = adminLis.Addr().String()
	}
	log.Info("controller: serving", "destination", lis.Addr().String(), "admin", adminAddr, "store", o.Store)
	if onListen != nil {
		onListen(lis.Addr().String(), adminAddr)
	}
	stopped := context.AfterFunc(ctx, func() { log.Info("controller: shutting down") })
	defer stopped()
	err = parts.Start(ctx)
	if err != nil {
		log.Error("controller: stopped", "err", err)
	}
	return err
}

// serveAPI serves the gRPC API on lis until ctx ends. Then, not ready
// first (notReady, and the health service), so balancers stop sending new
// proxies here; then it ends the streams (proxies reconnect to another
// replica), bounded by grace since streams never end by themselves.
func serveAPI(ctx context.Context, g *grpc.Server, lis net.Listener, hs *health.Server, grace time.Duration, notReady func()) error {
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	select {
	case err := <-served:
		return err // Serve returns only on a listener's failure here
	case <-ctx.Done():
	}
	notReady()
	hs.Shutdown()
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(grace):
		g.Stop()
		<-stopped
	}
	<-served
	return nil
}

// serveHTTP serves srv on lis until ctx ends.
func serveHTTP(srv *http.Server, lis net.Listener) runnable.Runnable {
	return runnable.Func(func(ctx context.Context) error {
		served := make(chan error, 1)
		go func() { served <- srv.Serve(lis) }()
		select {
		case err := <-served:
			return err
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
}

// stopsAfter runs r under a context that ends once ctx has ended and done
// is closed: r outlasts the runnable that closes done.
func stopsAfter(done <-chan struct{}, r runnable.Runnable) runnable.Runnable {
	return runnable.Func(func(ctx context.Context) error {
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		stop := context.AfterFunc(ctx, func() { <-done; cancel() })
		defer stop()
		return r.Start(rctx)
	})
}

// identityServer builds the identity service and returns it with its CA,
// or nils when it is off (kube mode without an issuer).
func identityServer(o Options, src source, dst *destination.Server, log *slog.Logger) (*identity.Server, *identity.Authority, error) {
	td, err := spiffeid.TrustDomainFromString(o.TrustDomain)
	if err != nil {
		return nil, nil, fmt.Errorf("--trust-domain: %w", err)
	}
	ca := o.IdentityCA
	if ca == nil && o.IdentityIssuerDir != "" {
		ca, err = identity.Load(td, o.IdentityIssuerDir)
		if err != nil && src.local && errors.Is(err, os.ErrNotExist) {
			ca = nil // generated below, and written there
		} else if err != nil {
			return nil, nil, err
		}
	}
	if ca == nil {
		if !src.local {
			log.Warn("controller: identity service off: no issuer (--identity-issuer-dir)")
			return nil, nil, nil
		}
		if ca, err = identity.Generate(td); err != nil {
			return nil, nil, err
		}
		if o.IdentityIssuerDir != "" {
			if err := os.MkdirAll(o.IdentityIssuerDir, 0o700); err != nil {
				return nil, nil, err
			}
			if err := ca.WriteDir(o.IdentityIssuerDir); err != nil {
				return nil, nil, err
			}
		}
		log.Info("controller: generated an identity trust anchor and issuer", "trust_domain", td.Name(), "dir", o.IdentityIssuerDir)
	}
	var v identity.Verifier
	if src.local {
		v = identity.LocalVerifier(func(token string) (identity.Subject, bool) {
			w, ok := dst.WorkloadByToken(token)
			return identity.Subject{Namespace: w.Namespace, ServiceAccount: w.ServiceAccount}, ok
		})
	} else {
		cs, err := kubernetes.NewForConfig(o.RestConfig)
		if err != nil {
			return nil, nil, err
		}
		v = tokenreview.Verifier(cs, o.IdentityAudience)
	}
	auth := identity.NewAuthority(ca)
	return identity.NewServer(auth, v, identity.Options{Lifetime: o.IdentityLifetime, Log: log}), auth, nil
}

// watchIssuer exports the issuer's expiry and, when the issuer comes from
// --identity-issuer-dir (a mounted Secret), takes a renewed one without a
// restart: cert-manager renews the issuer before it expires, and a refused
// renewal (bad files, other trust anchors) is logged and counted while the
// current issuer keeps signing.
func watchIssuer(o Options, auth *identity.Authority, reg *prometheus.Registry, log *slog.Logger) runnable.Runnable {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "identity_issuer_expiration_timestamp_seconds",
		Help: "When the identity issuer certificate in use expires (Unix seconds).",
	}, func() float64 { return float64(auth.Current().Issuer.NotAfter.Unix()) }))
	if o.IdentityCA != nil || o.IdentityIssuerDir == "" {
		return nil
	}
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "identity_issuer_reloads_total",
		Help: "Changes of --identity-issuer-dir seen, by result: loaded, or refused (the issuer in use kept).",
	}, []string{"result"})
	reg.MustRegister(reloads)
	every := o.IdentityIssuerReload
	if every <= 0 {
		every = time.Minute
	}
	return runnable.Func(func(ctx context.Context) error {
		auth.WatchDir(ctx, o.IdentityIssuerDir, every, func(ca *identity.CA, err error) {
			if err != nil {
				reloads.WithLabelValues("refused").Inc()
				log.Error("identity: the issuer in --identity-issuer-dir changed but was not taken; still signing with the previous one",
					"err", err, "dir", o.IdentityIssuerDir, "issuer_expires", ca.Issuer.NotAfter)
				return
			}
			reloads.WithLabelValues("loaded").Inc()
			log.Info("identity: issuer renewed", "dir", o.IdentityIssuerDir, "issuer", ca.Issuer.Subject.String(), "expires", ca.Issuer.NotAfter)
		})
		return nil
	})
}

var errNotSynced = errors.New("not ready: the store has not synced")

func adminMux(reg *prometheus.Registry, ready *atomic.Bool) *http.ServeMux {
	return adminmux.New(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), func() error {
		if !ready.Load() {
			return errNotSynced
		}
		return nil
	})
}

// source fills the store: run blocks until ctx ends, and calls synced once
// the store holds a complete first view.
type source struct {
	local bool
	files *storeFiles // local mode: the directory's files, as last loaded
	run   func(ctx context.Context, st *store.Store, log *slog.Logger, synced func()) error
}

func parseStoreFlag(v string, restCfg *rest.Config) (source, error) {
	switch {
	case v == "kube":
		return kubeSource(restCfg), nil
	case strings.HasPrefix(v, "dir:"):
		dir := strings.TrimPrefix(v, "dir:")
		if dir == "" {
			return source{}, fmt.Errorf("--store=dir:PATH needs a path")
		}
		fi, err := os.Stat(dir)
		if err != nil {
			return source{}, fmt.Errorf("--store: %w", err)
		}
		if !fi.IsDir() {
			return source{}, fmt.Errorf("--store: %s is not a directory", dir)
		}
		return dirSource(dir), nil
	}
	return source{}, fmt.Errorf("--store=%q: use kube or dir:PATH", v)
}

func dirSource(dir string) source {
	files := &storeFiles{dir: dir}
	return source{local: true, files: files, run: func(ctx context.Context, st *store.Store, log *slog.Logger, synced func()) error {
		var once sync.Once
		// Synced after the first load, rejected files or not: the
		// controller serves whatever is valid (see local.Watch).
		return local.Watch(ctx, dir, st, log, local.OnStatus(func(s local.Status) {
			files.set(s)
			once.Do(synced)
		}))
	}}
}

func kubeSource(cfg *rest.Config) source {
	return source{run: func(ctx context.Context, st *store.Store, log *slog.Logger, synced func()) error {
		return kube.Run(ctx, cfg, st, kube.WithLogger(log), kube.WithReady(synced), kube.WithGatewayAPI())
	}}
}

// restConfig is the in-cluster config, or the kubeconfig (the --kubeconfig
// file, else $KUBECONFIG, else ~/.kube/config) outside a cluster.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return withRate(cfg), nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("no Kubernetes configuration (not in a cluster, and no usable kubeconfig): %w", err)
	}
	return withRate(cfg), nil
}

// withRate lifts client-go's default client-side limit (5 requests per
// second, bursts of 10), which made the writers (gateway statuses and
// provisioning, webhook caBundles) queue behind each other; the API
// server's own priority and fairness still applies. kubectl uses the same.
func withRate(cfg *rest.Config) *rest.Config {
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	return cfg
}
