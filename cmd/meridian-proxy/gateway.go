package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meridian-mesh/meridian/internal/gctune"
	"github.com/meridian-mesh/meridian/internal/memrelease"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/dstclient"
	"github.com/meridian-mesh/meridian/proxy/gateway"
	"github.com/meridian-mesh/meridian/proxy/gwclient"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
)

// runGateway is `meridian-proxy gateway`: the gateway proxy (proxy/gateway)
// instead of a sidecar. Its snapshots come from a file (--gateway-config)
// or the control plane's gateway API (--gateway-addr); its endpoints from
// the destination API or static destinations, as the sidecar's; its
// identity from the identity API, as the sidecar's.
func runGateway(args []string) error {
	fs := flag.NewFlagSet("meridian-proxy gateway", flag.ContinueOnError)
	var cfg gateway.Config
	fs.StringVar(&cfg.AdminAddr, "admin-addr", sidecar.DefaultAdminAddr, "admin listeners, comma-separated: /metrics, /ready, /live, /gateway (the snapshot serving, its listeners, routes and certificates, and what was rejected); /ready and /live are open to all, the rest follows --default-inbound-policy (meshed clients over mTLS under the authenticated ones and deny)")
	policyFlags(fs, &cfg.Authz, "who may read the admin port beyond /live and /ready, as a sidecar's: "+policies)
	fs.IntVar(&cfg.MaxConnections, "max-connections", sidecar.DefaultMaxConnections(), "connections each of the snapshot's ports holds open; more are accepted and closed at once, before a byte is read, and counted in tcp_connections_refused_total; default 20000 or a quarter of the file descriptor limit if lower; -1: no bound")
	fs.DurationVar(&cfg.UDPIdleTimeout, "udp-idle-timeout", 60*time.Second, "a UDP session (a client address's datagrams, with its upstream socket and endpoint) ends after this long with no datagram either way; the client's next datagram starts a new one")
	fs.BoolVar(&cfg.EventLoop, "event-loop", true, "serve HTTP/1.1 requests (plaintext HTTP ports, and HTTPS connections that settle HTTP/1.1) on event loops where they can (no goroutine per connection; Linux), the others on goroutines as with --event-loop=false (proxy/gateway README, Event loop)")
	fs.BoolVar(&cfg.EventLoopH2, "event-loop-h2", true, "with --event-loop, serve HTTP/2 connections (h2c, and HTTPS that settles h2 without a client certificate) on the loops too: their frames on a loop, the requests without a body that need no more than routing carried to their endpoints there, the others served on goroutines; false: HTTP/2 on goroutines only (proxy/gateway README, HTTP/2 on the loops)")
	fs.IntVar(&cfg.EventLoops, "event-loops", 0, "with --event-loop, how many loops serve connections (each in turn gets the next one); 0: one per processor the runtime uses (GOMAXPROCS)")
	fs.DurationVar(&cfg.EventLoopHold, "event-loop-hold", time.Second, "with --event-loop, how long a loop keeps a processor of its own after its last event (GOMAXPROCS one higher while it does), waiting for the next in its own epoll_pwait: one system call per wake-up instead of the Go runtime poller's four; 0: never (proxy/gateway README, Event loop)")
	fs.IntVar(&cfg.EventLoopHoldRate, "event-loop-hold-rate", 500, "with --event-loop-hold, how many times a second a loop must wake for events (counted over 100 ms) before it takes a processor of its own; it gives it back when idle for --event-loop-hold or waking less than half as often: below a few hundred wake-ups a second, holding costs more CPU than it saves (proxy/gateway README, Event loop); 0: from its first event")
	bindHost := fs.String("bind-host", "", "the address the snapshot's ports are opened on (default: every address of both families)")
	configFile := fs.String("gateway-config", "", "a gateway snapshot in protojson (api/proto/gateway Snapshot), reloaded when it changes; a file that does not parse or compile is refused and the last good snapshot keeps serving")
	gwAddr := fs.String("gateway-addr", "", "the control plane's gateway API (host:port; default --destination-addr when --gateway-name is set)")
	gwName := fs.String("gateway-name", "", "NAMESPACE/NAME of the Gateway whose snapshots to watch on the gateway API")
	destFile := fs.String("destinations", "", "static destinations YAML file, reloaded when it changes")
	dstAddr := fs.String("destination-addr", "", "the control plane's destination API (host:port); replaces static destinations")
	dstID := fs.String("destination-identity", "", "the control plane's SPIFFE ID: set, the control plane's APIs are reached over TLS, verified with the trust anchors")
	var flagDests []discover.Destination
	fs.Func("dst", "static destination AUTHORITY=ADDR[,ADDR...] (repeatable)", func(v string) error {
		d, err := discover.ParseFlag(v)
		if err == nil {
			flagDests = append(flagDests, d)
		}
		return err
	})
	anchors := fs.String("identity-trust-anchors", "", "PEM file of the mesh's trust anchors; set, the gateway gets a workload certificate and speaks mTLS to meshed backends")
	idAddr := fs.String("identity-addr", "", "the control plane's identity API (default: --destination-addr)")
	trustDomain := fs.String("identity-trust-domain", "cluster.local", "the SPIFFE trust domain")
	tokenFile := fs.String("identity-token-file", "", "the proof of identity: a projected ServiceAccount token file (its subject names the gateway's namespace and service account)")
	ns := fs.String("workload-namespace", "default", "the gateway's namespace, without a token file")
	sa := fs.String("workload-service-account", "default", "the gateway's service account, without a token file")
	lb := fs.String("balancer", "p2c-ewma", "load balancing: p2c-ewma or round-robin")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", time.Second, "timeout for connecting to an endpoint")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 30*time.Second, "how long requests and streams may take to finish on a port a snapshot removed, and on every port after SIGTERM")
	fs.DurationVar(&cfg.HeaderTimeout, "header-timeout", 30*time.Second, "how long a client has, from accept, to send its TLS ClientHello and its request's headers")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", 0, "requests handled at once; more are refused with 503. 0: derived from the memory limit as the sidecar's; -1: no bound")
	gcHeadroom := fs.Int("gc-headroom-mib", 32, "while the live heap is small, raise GOGC (up to 400) so that the collector's heap goal is this many MiB over it: a collection every few milliseconds at saturation otherwise; GOGC 100 once the live heap is over it; GOGC in the environment wins; 0: the runtime's default (internal/gctune)")
	releaseAfter := fs.Duration("release-memory-after", 5*time.Second, "once the gateway has allocated less than 1 MiB/s for this long after its heap grew (a snapshot applied, a burst served), return the free heap to the OS at once, at most every 10s; 0: never")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", *level)
	}
	if *gcHeadroom < 0 {
		return fmt.Errorf("--gc-headroom-mib %d: 0 or more", *gcHeadroom)
	}
	if err := holdFlags(cfg.EventLoopHold, cfg.EventLoopHoldRate); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	cfg.Log = log
	gcCtx, stopGC := context.WithCancel(context.Background())
	defer stopGC()
	gctune.Start(gcCtx, uint64(*gcHeadroom)<<20)
	// Compiling a snapshot (parsing it and the destinations, building
	// 10,000 routes) leaves garbage several times the table it builds;
	// without this the heap it grew to stays the process's RSS for
	// minutes (bench/README.md, Edge gateway: 121 MB with 10,000 routes,
	// against ~40 MB retained). Started before the load, so that the load
	// is not taken for the floor.
	if *releaseAfter > 0 {
		relCtx, stopRel := context.WithCancel(context.Background())
		defer stopRel()
		memrelease.Start(relCtx, memrelease.Config{Quiet: *releaseAfter, Released: func(before, after uint64) {
			log.Debug("heap returned to the OS", "retained_before", before, "retained_after", after)
		}})
	}
	strategy, err := balance.ParseStrategy(*lb)
	if err != nil {
		return fmt.Errorf("--balancer: %w", err)
	}
	cfg.Balancer = strategy
	if h := *bindHost; h != "" {
		if strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
			h = "[" + h + "]"
		}
		cfg.Bind = func(p uint32) string { return h + ":" + strconv.FormatUint(uint64(p), 10) }
	}
	if cfg.MaxInFlight == 0 {
		memLimit, memSource := sidecar.MemoryLimit()
		sidecar.SetGoMemoryLimit(memLimit, memSource)
		cfg.MaxInFlight = sidecar.MaxInFlightFor(memLimit)
	}
	if (*configFile == "") == (*gwName == "") {
		return errors.New("give the snapshots' source: --gateway-config FILE or --gateway-name NAMESPACE/NAME (with --gateway-addr or --destination-addr), one of them")
	}
	gwNS, gwN, ok := strings.Cut(*gwName, "/")
	if *gwName != "" && (!ok || gwNS == "" || gwN == "") {
		return fmt.Errorf("--gateway-name %q: must be NAMESPACE/NAME", *gwName)
	}
	if *gwName != "" && *gwAddr == "" {
		*gwAddr = *dstAddr
		if *gwAddr == "" {
			return errors.New("--gateway-name needs --gateway-addr or --destination-addr")
		}
	}

	anchorsPEM, err := trustAnchors(*anchors)
	if err != nil {
		return err
	}
	creds, err := controlPlaneCreds(*dstID, anchorsPEM)
	if err != nil {
		return err
	}
	var static *discover.Static
	if *dstAddr != "" {
		if *destFile != "" || len(flagDests) > 0 {
			return errors.New("--destination-addr and static destinations (--destinations, --dst) exclude each other")
		}
		cc, err := grpc.NewClient("passthrough:///"+*dstAddr, dstclient.DialOptions(creds)...)
		if err != nil {
			return fmt.Errorf("--destination-addr: %w", err)
		}
		defer cc.Close()
		cfg.Resolver = dstclient.New(cc, dstclient.Options{Token: *ns + "/gateway", Log: log})
	} else {
		dests := flagDests
		if *destFile != "" {
			fromFile, err := discover.ParseFile(*destFile)
			if err != nil {
				return err
			}
			dests = append(fromFile, flagDests...)
		}
		if static, err = discover.NewStatic(dests); err != nil {
			return err
		}
		cfg.Resolver = static
	}
	if anchorsPEM != nil {
		addr := *idAddr
		if addr == "" {
			addr = *dstAddr
		}
		if addr == "" || *tokenFile == "" {
			return errors.New("--identity-trust-anchors needs the identity API (--identity-addr or --destination-addr) and --identity-token-file")
		}
		if *dstAddr != "" {
			// In Kubernetes the token says who the gateway runs as.
			if *ns, *sa, err = tokenSubject(*tokenFile); err != nil {
				return err
			}
			cfg.Namespace = *ns
		}
		token := func() ([]byte, error) { return os.ReadFile(*tokenFile) }
		id, closeID, err := newIdentity(anchorsPEM, addr, creds, *trustDomain, *ns, *sa, token, log)
		if err != nil {
			return err
		}
		defer closeID()
		cfg.Identity = id
	}

	g, err := gateway.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if cfg.Identity != nil {
		go cfg.Identity.Run(ctx)
	}
	if static != nil && *destFile != "" {
		go static.WatchFile(ctx, *destFile, flagDests, 2*time.Second, log)
	}
	if *configFile != "" {
		s, stamp, err := gateway.LoadFile(*configFile)
		if err != nil {
			return fmt.Errorf("--gateway-config: %w", err)
		}
		if err := g.Apply(s); err != nil {
			return fmt.Errorf("--gateway-config: %w", err)
		}
		go g.WatchFile(ctx, *configFile, stamp, 2*time.Second)
	} else {
		gwCreds := creds
		if cfg.Identity != nil && *dstID != "" {
			// The gateway API serves a Gateway's snapshot (its
			// certificates' keys included) to that Gateway's workload:
			// the connection presents the gateway's certificate, and
			// still verifies the controller's.
			sid, err := spiffeid.FromString(*dstID)
			if err != nil {
				return fmt.Errorf("--destination-identity %q: %w", *dstID, err)
			}
			gwCreds = credentials.NewTLS(cfg.Identity.ClientConfig(sid, "h2"))
		}
		cc, err := grpc.NewClient("passthrough:///"+*gwAddr, dstclient.DialOptions(gwCreds)...)
		if err != nil {
			return fmt.Errorf("--gateway-addr: %w", err)
		}
		defer cc.Close()
		token := *ns + "/" + *sa
		go gwclient.New(cc, gwclient.Options{Namespace: gwNS, Name: gwN, Token: token, Log: log}).Run(ctx, g.Apply)
	}
	trimStartup(ctx, cfg.Identity, log)
	return g.Run(ctx)
}
