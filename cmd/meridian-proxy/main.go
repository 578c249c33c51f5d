// Command meridian-proxy is Meridian's data plane: the sidecar that sits
// beside every meshed application, and, as `meridian-proxy gateway`, the
// gateway proxy at the front door (gateway.go). It imports nothing from
// Kubernetes.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	idpb "github.com/meridian-mesh/meridian/api/proto/identity"
	"github.com/meridian-mesh/meridian/internal/exetrim"
	"github.com/meridian-mesh/meridian/internal/memrelease"
	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/internal/ports"
	"github.com/meridian-mesh/meridian/proxy/authz"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/dstclient"
	"github.com/meridian-mesh/meridian/proxy/httpproxy"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "meridian-proxy:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "gateway" {
		return runGateway(args[1:])
	}
	fs := flag.NewFlagSet("meridian-proxy", flag.ContinueOnError)
	var cfg sidecar.Config
	fs.StringVar(&cfg.OutboundAddr, "outbound-addr", sidecar.DefaultOutboundAddr, "outbound listeners, comma-separated (applications' connections are redirected here); IPv6 ones are skipped where there is no IPv6")
	fs.StringVar(&cfg.InboundAddr, "inbound-addr", sidecar.DefaultInboundAddr, "inbound listeners, comma-separated")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", sidecar.DefaultAdminAddr, "admin listeners, comma-separated: /metrics, /identity, /ready, /live; /ready and /live are open to all, the rest follows --default-inbound-policy (meshed clients over mTLS under the authenticated ones and deny)")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", 0, fmt.Sprintf("HTTP requests and gRPC streams each direction handles at once; more are refused at once with 503 (gRPC UNAVAILABLE). 0: derived from the memory limit (the container's cgroup limit, else GOMEMLIMIT) as (limit - %d MiB) / (2 x %d KiB), within [100, %d]; %d without a limit. -1: no bound", sidecar.MemoryBaseline>>20, sidecar.InFlightBudget>>10, sidecar.DefaultMaxInFlight, sidecar.DefaultMaxInFlight))
	fs.IntVar(&cfg.H2StreamWindow, "h2-stream-window", httpproxy.DefaultH2StreamWindow, "bytes an HTTP/2 peer (client or endpoint) may send per stream before the proxy reads them: bounds the memory a slow reader holds, and one stream's throughput to this/RTT (1-2147483647)")
	fs.IntVar(&cfg.H2ConnectionWindow, "h2-connection-window", httpproxy.DefaultH2ConnectionWindow, "bytes an HTTP/2 peer may send per connection, all streams together, before the proxy reads them (65535-2147483647)")
	fs.StringVar(&cfg.InboundForward, "inbound-forward", "", "application address for inbound traffic (default: each connection's original destination)")
	destFile := fs.String("destinations", "", "static destinations YAML file (one document with a destinations list; empty files are refused), reloaded when it changes; a bad reload keeps the last good set")
	dstAddr := fs.String("destination-addr", "", "the control plane's destination API (host:port); replaces static destinations")
	dstID := fs.String("destination-identity", "", "the control plane's SPIFFE ID: set, the destination and identity APIs are reached over TLS, verified with the trust anchors")
	var wl dstclient.Workload
	fs.StringVar(&wl.Name, "workload-name", "", "local mode: register this workload with the control plane under this name")
	fs.StringVar(&wl.Namespace, "workload-namespace", "default", "local mode: the workload's namespace")
	fs.StringVar(&wl.Service, "workload-service", "", "local mode: the service the workload serves (empty: a client only)")
	fs.StringVar(&wl.ServiceAccount, "workload-service-account", "default", "local mode: the workload's service account")
	credFile := fs.String("workload-credential-file", "", "local mode: file holding the workload's credential, whose SHA-256 the operator declared on the workload's Pod in the controller's directory (annotation "+names.AnnotationCredentialSHA256+"; or $"+EnvWorkloadCredential+" holding the credential); without it the controller refuses the registration")
	advertise := fs.String("advertise-addr", "", "local mode: the inbound address peers should dial (default: the inbound listener's address)")
	var flagDests []discover.Destination
	fs.Func("dst", "static destination AUTHORITY=ADDR[,ADDR...] (repeatable)", func(v string) error {
		d, err := discover.ParseFlag(v)
		if err == nil {
			flagDests = append(flagDests, d)
		}
		return err
	})
	opaquePorts := fs.String("opaque-ports", ports.DefaultOpaque, "comma-separated destination ports never to detect, only copied as bytes (server-speaks-first protocols such as SMTP or MySQL); the default is Linkerd's list, applied in static mode only: with --destination-addr the control plane's opaque hints apply and the default list is empty unless this flag is given; empty (--opaque-ports=): none")
	policyFlags(fs, &cfg.Authz, "who may reach the application: "+policies+"; the --probe-paths are always allowed")
	fs.Func("probe-paths", "comma-separated PORT/PATH of the application's HTTP probes, always allowed whatever the policy (e.g. 8080/healthz); plaintext requests to them are counted with route=\"probe\" in the inbound metrics", func(v string) error {
		ps, err := authz.ParseProbes(v)
		cfg.Authz.Probes = append(cfg.Authz.Probes, ps...)
		return err
	})
	anchors := fs.String("identity-trust-anchors", "", "PEM file of the mesh's trust anchors (or $"+names.EnvTrustAnchors+" holding the PEM); set, the proxy gets a workload certificate and speaks mTLS with meshed peers")
	idAddr := fs.String("identity-addr", "", "the control plane's identity API (default: --destination-addr); with static destinations (--dst, --destinations) it alone gives the proxy its certificate, for the identity --workload-namespace/--workload-service-account proven by --identity-token-file, and mTLS goes to the endpoints whose destinations name an identity")
	trustDomain := fs.String("identity-trust-domain", "cluster.local", "the SPIFFE trust domain")
	tokenFile := fs.String("identity-token-file", "", "the proof of identity: a projected ServiceAccount token file (Kubernetes); empty: the token of the local-mode registration")
	lb := fs.String("balancer", "p2c-ewma", "load balancing: p2c-ewma or round-robin")
	fs.DurationVar(&cfg.DetectTimeout, "detect-timeout", time.Second, "how long to wait for a client's first bytes before treating the connection as opaque (a server-speaks-first protocol); a client that has sent part of a request line by then gets until --header-timeout to complete it")
	fs.DurationVar(&cfg.HeaderTimeout, "header-timeout", 30*time.Second, "how long a client has, from accept and protocol detection included, to send an HTTP/1 request line and headers; a request line still incomplete then is closed")
	fs.DurationVar(&cfg.OpaqueIdleTimeout, "opaque-idle-timeout", sidecar.DefaultOpaqueIdleTimeout, "close an opaque TCP stream that carried no byte either way for this long; -1s: never")
	fs.IntVar(&cfg.MaxConnections, "max-connections", sidecar.DefaultMaxConnections(), "connections each listener (outbound, inbound) holds open; more are accepted and closed at once and counted in tcp_connections_refused_total; default 20000 or a quarter of the file descriptor limit if lower; -1: no bound")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 30*time.Second, "how long in-flight requests may take to finish after SIGTERM")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", time.Second, "timeout for connecting to an endpoint")
	fs.BoolVar(&cfg.EventLoop, "event-loop", true, "serve HTTP/1.1 requests on event loops where they can (no goroutine per connection; Linux): those that need no more than routing (no service profile's routes, splits, retries or timeouts), both sides, plaintext and mTLS; the others on goroutines as with --event-loop=false (proxy/sidecar README, Event loops)")
	fs.BoolVar(&cfg.EventLoopH2, "event-loop-h2", true, "with --event-loop, serve HTTP/2 connections (h2c, and mTLS whose ALPN settled h2: gRPC, the peer proxies' hop) on the loops too: a stream that needs no more than routing relayed there to the loop's own HTTP/2 connection to its endpoint, body and trailers, under both sides' flow control; the others by the side's handler on a goroutine each (proxy/sidecar README, Event loops)")
	fs.IntVar(&cfg.EventLoops, "event-loops", 0, "with --event-loop, how many loops serve connections (each in turn gets the next one); 0: one per processor the runtime uses (GOMAXPROCS)")
	fs.DurationVar(&cfg.EventLoopHold, "event-loop-hold", time.Second, "with --event-loop, how long a loop keeps a processor of its own after its last event (GOMAXPROCS one higher while it does), waiting for the next in its own epoll_pwait: one system call per wake-up instead of the Go runtime poller's four; 0: never, the loops park through the runtime's poller (proxy/sidecar README, Event loops)")
	fs.IntVar(&cfg.EventLoopHoldRate, "event-loop-hold-rate", 500, "with --event-loop-hold, how many times a second a loop must wake for events (counted over 100 ms) before it takes a processor of its own; it gives it back when idle for --event-loop-hold or waking less than half as often: below a few hundred wake-ups a second, holding costs more CPU than it saves (proxy/sidecar README, Event loops); 0: from its first event")
	fs.DurationVar(&cfg.AppProbeInterval, "app-probe-interval", sidecar.DefaultAppProbeInterval, "when the application refuses an inbound connection, /ready fails (and in local mode the workload's registration is withdrawn) until a TCP probe sent this often connects again")
	releaseAfter := fs.Duration("release-memory-after", 5*time.Second, "once the proxy has allocated less than 1 MiB/s for this long after its heap grew (by 4 MiB, or a quarter of its connections closed), return the free heap to the OS at once, at most every 10s, instead of the minutes Go takes by itself; 0: never")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	err := fs.Parse(args)
	if err != nil {
		return err
	}
	if cfg.OpaquePorts, err = opaquePortsFlag(fs, *opaquePorts, *dstAddr != ""); err != nil {
		return err
	}
	for _, w := range []struct {
		name   string
		v, min int
	}{{"h2-stream-window", cfg.H2StreamWindow, 1}, {"h2-connection-window", cfg.H2ConnectionWindow, 65535}} {
		if w.v < w.min || w.v > math.MaxInt32 {
			return fmt.Errorf("--%s %d: must be %d-%d bytes", w.name, w.v, w.min, math.MaxInt32)
		}
	}
	if err := holdFlags(cfg.EventLoopHold, cfg.EventLoopHoldRate); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", *level)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	strategy, err := balance.ParseStrategy(*lb)
	if err != nil {
		return fmt.Errorf("--balancer: %w", err)
	}
	cfg.Balancer = strategy
	cfg.Log = log
	// Shed before the kernel kills the proxy: the runtime collects harder
	// near the limit, and the in-flight bound fits in it.
	memLimit, memSource := sidecar.MemoryLimit()
	soft := sidecar.SetGoMemoryLimit(memLimit, memSource)
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = sidecar.MaxInFlightFor(memLimit)
	}
	log.Info("memory", "limit", memLimit, "source", memSource, "gomemlimit", soft, "max_in_flight", cfg.MaxInFlight)
	// After a burst, give the heap back to the OS once quiet rather than
	// over the minutes the runtime takes.
	if *releaseAfter > 0 {
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		memrelease.Start(ctx, memrelease.Config{Quiet: *releaseAfter, Released: func(before, after uint64) {
			log.Debug("heap returned to the OS", "retained_before", before, "retained_after", after)
		}})
	}

	if *dstAddr != "" {
		if *destFile != "" || len(flagDests) > 0 {
			return fmt.Errorf("--destination-addr and static destinations (--destinations, --dst) exclude each other")
		}
		anchorsPEM, err := trustAnchors(*anchors)
		if err != nil {
			return err
		}
		creds, err := controlPlaneCreds(*dstID, anchorsPEM)
		if err != nil {
			return err
		}
		cc, err := grpc.NewClient("passthrough:///"+*dstAddr, dstclient.DialOptions(creds)...)
		if err != nil {
			return fmt.Errorf("--destination-addr: %w", err)
		}
		defer cc.Close()
		client := dstclient.New(cc, dstclient.Options{Token: wl.Namespace + "/" + wl.Name, Log: log})
		cfg.Resolver = client
		if anchorsPEM != nil {
			token := client.RegistrationToken
			if *tokenFile != "" {
				token = func() ([]byte, error) { return os.ReadFile(*tokenFile) }
				// In Kubernetes the token says who the pod runs as.
				if wl.Namespace, wl.ServiceAccount, err = tokenSubject(*tokenFile); err != nil {
					return err
				}
				// Short names are the pod's namespace's services.
				cfg.Namespace = wl.Namespace
			}
			addr := *idAddr
			if addr == "" {
				addr = *dstAddr
			}
			id, closeID, err := newIdentity(anchorsPEM, addr, creds, *trustDomain, wl.Namespace, wl.ServiceAccount, token, log)
			if err != nil {
				return err
			}
			defer closeID()
			cfg.Identity = id
		}
		var register func(ctx context.Context, inbound string, appReady dstclient.Readiness)
		if wl.Name != "" {
			credential, err := workloadCredential(*credFile)
			if err != nil {
				return err
			}
			register = func(ctx context.Context, inbound string, appReady dstclient.Readiness) {
				wl.Address = inbound
				if *advertise != "" {
					wl.Address = *advertise
				}
				ready := appReady
				if id := cfg.Identity; id != nil && *tokenFile == "" {
					// The registration's token is the proof for the first
					// certificate: withdraw only once the proxy holds one.
					ready = func() (bool, <-chan struct{}) {
						ok, changed := appReady()
						return ok || !id.HasCert(), changed
					}
				}
				wl.Credential = credential
				client.RegisterWhile(ctx, wl, ready, func() {
					log.Info("registered with the control plane", "workload", wl.Namespace+"/"+wl.Name, "address", wl.Address)
				})
			}
		}
		return serve(cfg, nil, "", nil, register)
	}
	dests := flagDests
	if *destFile != "" {
		fromFile, err := discover.ParseFile(*destFile)
		if err != nil {
			return err
		}
		dests = append(fromFile, flagDests...)
	}
	static, err := discover.NewStatic(dests)
	if err != nil {
		return err
	}
	cfg.Resolver = static
	if *idAddr != "" {
		// Static destinations with mTLS: the identity API alone issues the
		// certificate (benchmarks, and meshes without a destination API).
		// The endpoints' identities come from the destinations file.
		id, closeID, err := staticIdentity(*anchors, *idAddr, *dstID, *tokenFile, *trustDomain, wl.Namespace, wl.ServiceAccount, log)
		if err != nil {
			return err
		}
		defer closeID()
		cfg.Identity = id
	}
	return serve(cfg, static, *destFile, flagDests, nil)
}

// staticIdentity is the workload certificate of a proxy with static
// destinations: ns/sa are --workload-namespace and
// --workload-service-account, proven by the token file's content.
func staticIdentity(anchorsFile, addr, serverID, tokenFile, trustDomain, ns, sa string, log *slog.Logger) (*tlsid.Identity, func(), error) {
	anchorsPEM, err := trustAnchors(anchorsFile)
	if err != nil {
		return nil, nil, err
	}
	if anchorsPEM == nil {
		return nil, nil, fmt.Errorf("--identity-addr with static destinations needs the trust anchors (--identity-trust-anchors or $%s)", names.EnvTrustAnchors)
	}
	if tokenFile == "" {
		return nil, nil, fmt.Errorf("--identity-addr with static destinations needs --identity-token-file (the proof of the identity --workload-namespace/--workload-service-account)")
	}
	creds, err := controlPlaneCreds(serverID, anchorsPEM)
	if err != nil {
		return nil, nil, err
	}
	token := func() ([]byte, error) { return os.ReadFile(tokenFile) }
	// /ready waits for the first certificate (sidecar.New).
	return newIdentity(anchorsPEM, addr, creds, trustDomain, ns, sa, token, log)
}

// EnvWorkloadCredential holds the local-mode workload credential when
// --workload-credential-file is not given (a file keeps it out of the
// process's environment, which other processes of the user may read).
const EnvWorkloadCredential = "MERIDIAN_PROXY_WORKLOAD_CREDENTIAL"

// workloadCredential is the credential of --workload-credential-file, else
// of $MERIDIAN_PROXY_WORKLOAD_CREDENTIAL.
func workloadCredential(file string) (string, error) {
	if file == "" {
		return os.Getenv(EnvWorkloadCredential), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--workload-credential-file: %w", err)
	}
	c := strings.TrimSpace(string(b))
	if c == "" {
		return "", fmt.Errorf("--workload-credential-file %s: empty; it must hold the credential whose SHA-256 the workload's Pod declares", file)
	}
	return c, nil
}

// opaquePortsFlag is --opaque-ports: its value when given, else Linkerd's
// default list in static mode and none with a control plane, whose
// destination API says which endpoints are opaque.
func opaquePortsFlag(fs *flag.FlagSet, value string, controlPlane bool) ([]uint16, error) {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "opaque-ports" })
	if !set && controlPlane {
		return nil, nil
	}
	ps, err := ports.Parse(value)
	if err != nil {
		return nil, fmt.Errorf("--opaque-ports: %w", err)
	}
	return ps, nil
}

// serve runs the proxy until SIGTERM or Ctrl-C, then drains.
func serve(cfg sidecar.Config, static *discover.Static, destFile string, flagDests []discover.Destination, register func(context.Context, string, dstclient.Readiness)) error {
	p, err := sidecar.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if cfg.Identity != nil {
		go cfg.Identity.Run(ctx)
	}
	if register != nil {
		_, in, _ := p.Addrs()
		go register(ctx, in.String(), p.AppReady)
	}
	if destFile != "" {
		go static.WatchFile(ctx, destFile, flagDests, 2*time.Second, cfg.Log)
	}
	trimStartup(ctx, cfg.Identity, cfg.Log)
	return p.Run(ctx)
}

// trimStartup unmaps the code and read-only data that starting touched
// (internal/exetrim): an idle proxy's RSS was mostly its binary's pages,
// most of them mapped for package initialisation and set-up only. With an
// identity it waits for the first certificate, whose request (key, CSR, the
// identity service's TLS and gRPC) is start-up too.
func trimStartup(ctx context.Context, id *tlsid.Identity, log *slog.Logger) {
	if id == nil {
		trim(log)
		return
	}
	go func() {
		select {
		case <-id.Ready():
			trim(log)
		case <-ctx.Done():
		}
	}()
}

func trim(log *slog.Logger) {
	before, after, err := exetrim.Trim()
	if err != nil {
		log.Warn("start-up pages left mapped", "err", err)
		return
	}
	log.Debug("start-up pages of the executable unmapped", "rss_file_before", before, "rss_file_after", after)
}

// trustAnchors reads the trust anchors PEM from the flag's file, or from
// $MERIDIAN_PROXY_TRUST_ANCHORS; nil when neither is set (no identity).
func trustAnchors(file string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--identity-trust-anchors: %w", err)
		}
		return b, nil
	}
	if v := os.Getenv(names.EnvTrustAnchors); v != "" {
		return []byte(v), nil
	}
	return nil, nil
}

// newIdentity builds the proxy's workload identity for ns/sa of trustDomain.
func newIdentity(b []byte, addr string, creds credentials.TransportCredentials, trustDomain, ns, sa string, token func() ([]byte, error), log *slog.Logger) (*tlsid.Identity, func(), error) {
	roots, err := parseAnchors(b)
	if err != nil {
		return nil, nil, err
	}
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, nil, fmt.Errorf("--identity-trust-domain: %w", err)
	}
	id, err := spiffeid.FromSegments(td, "ns", ns, "sa", sa)
	if err != nil {
		return nil, nil, fmt.Errorf("identity of %s/%s: %w", ns, sa, err)
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, dstclient.DialOptions(creds)...)
	if err != nil {
		return nil, nil, fmt.Errorf("--identity-addr: %w", err)
	}
	ident, err := tlsid.New(tlsid.Config{ID: id, Roots: roots, Client: idpb.NewIdentityClient(cc), Token: token, Log: log})
	if err != nil {
		cc.Close()
		return nil, nil, err
	}
	return ident, func() { cc.Close() }, nil
}

// policies lists the default inbound policies, for flag usages.
const policies = "all-unauthenticated (default), cluster-unauthenticated, all-authenticated (meshed clients only), cluster-authenticated or deny"

// policyFlags are the default inbound policy's flags, the sidecar's and the
// gateway's (whose admin port follows it); usage says what the policy
// governs.
func policyFlags(fs *flag.FlagSet, cfg *authz.Config, usage string) {
	fs.Func("default-inbound-policy", usage, func(v string) error {
		pol, err := authz.ParsePolicy(v)
		cfg.Default = pol
		return err
	})
	fs.Func("cluster-networks", "comma-separated CIDRs of the cluster's pods and nodes, for the cluster-* policies (default: the private ranges 10/8, 100.64/10, 172.16/12, 192.168/16, fd00::/8)", func(v string) error {
		cfg.ClusterNetworks = nil
		for _, s := range strings.Split(v, ",") {
			pfx, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("%q is not a CIDR (like 10.0.0.0/8)", s)
			}
			cfg.ClusterNetworks = append(cfg.ClusterNetworks, pfx.Masked())
		}
		return nil
	})
}

// holdFlags checks --event-loop-hold and --event-loop-hold-rate, the
// sidecar's and the gateway's.
func holdFlags(d time.Duration, rate int) error {
	if d < 0 {
		return fmt.Errorf("--event-loop-hold %v: 0 (never) or more", d)
	}
	if rate < 0 {
		return fmt.Errorf("--event-loop-hold-rate %d: wake-ups a second, 0 (from the first event) or more", rate)
	}
	return nil
}
