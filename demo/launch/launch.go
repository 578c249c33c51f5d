// Package launch runs the demo application meshed on one machine: the
// control plane in local mode over the demo's manifests, every service on
// loopback with its own sidecar proxy beside it (each proxy registers its
// workload and follows the destination API), services talking to each other
// only through those proxies, an edge gateway in front of web (HTTPS with a
// certificate generated for the run) and a bot sending its traffic through
// the gateway. It is what `meridian demo` runs.
package launch

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	idpb "github.com/meridian-mesh/meridian/api/proto/identity"
	"github.com/meridian-mesh/meridian/controlplane/compile"
	"github.com/meridian-mesh/meridian/controlplane/controller"
	"github.com/meridian-mesh/meridian/controlplane/identity"
	rolloutlocal "github.com/meridian-mesh/meridian/controlplane/rollouts/local"
	"github.com/meridian-mesh/meridian/controlplane/store/local"
	"github.com/meridian-mesh/meridian/demo/dial"
	"github.com/meridian-mesh/meridian/demo/emoji"
	pb "github.com/meridian-mesh/meridian/demo/proto/emojivotopb"
	"github.com/meridian-mesh/meridian/demo/votebot"
	"github.com/meridian-mesh/meridian/demo/voting"
	"github.com/meridian-mesh/meridian/demo/web"
	"github.com/meridian-mesh/meridian/internal/names"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/dstclient"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
	"github.com/meridian-mesh/meridian/proxy/tlsid"
)

// The authorities the services use for each other, shaped like Kubernetes
// service names so the same manifests and dashboards make sense later.
const (
	EmojiAuthority  = "emoji-svc.emojivoto:8080"
	VotingAuthority = "voting-svc.emojivoto:8080"
)

//go:embed manifests
var manifests embed.FS

// Namespace is the demo's workloads' namespace.
const Namespace = "emojivoto"

// Options configure a demo run.
type Options struct {
	// WebAddr is the web service's sidecar inbound listener. Default
	// 127.0.0.1:0: browsers and the bot come through the gateway.
	WebAddr string
	// GatewayAddr is where the gateway's HTTPS listener (the Gateway's
	// port 8443) is opened: the web UI's address. Default 127.0.0.1:8443.
	GatewayAddr string
	// GatewayHTTPAddr is where its HTTP listener (port 8080), which
	// redirects to HTTPS, is opened. Default 127.0.0.1:8080.
	GatewayHTTPAddr string
	// VoteRate is the bot's votes per second; 0 disables the bot.
	VoteRate float64
	// Manifests is a directory of objects for the control plane's local
	// store; empty: the demo's own (manifests/), copied to a temporary
	// directory. Edit the files while the demo runs and the mesh follows.
	Manifests string
	// Rollout runs voting as the Rollout of voting-rollout.yaml and rolls
	// out a voting v2 (zero: off, voting is a plain workload).
	Rollout RolloutOptions
	Log     *slog.Logger
}

// Service is one running demo workload and its proxy.
type Service struct {
	Name     string
	App      net.Addr // the application's own listener
	Outbound net.Addr
	Inbound  net.Addr
	Admin    net.Addr
	Proxy    *sidecar.Proxy
	// Identity is the proxy's workload identity (mTLS with every peer).
	Identity *tlsid.Identity

	registered chan struct{} // closed once the control plane knows the workload
}

// Demo is a running demo.
type Demo struct {
	Services []*Service
	// Gateway is the edge gateway in front of web; URL its HTTPS address.
	Gateway *Gateway
	URL     string
	// WebURL is web's proxy's inbound listener, plaintext (not the way in
	// from outside: that is URL).
	WebURL string
	Bot    *votebot.Bot
	// Manifests is the directory the control plane serves; Destination its API.
	Manifests   string
	Destination string
	// CA is the control plane's identity issuer, generated for the run.
	CA *identity.CA

	// Rollout drives the Rollout voting (nil when Options.Rollout is off).
	Rollout   *rolloutlocal.Driver
	instances *instances

	cc *grpc.ClientConn // to the control plane
	// credentials are the workloads' registration secrets, by name.
	credentials map[string]string
	wg          sync.WaitGroup
	cancel      context.CancelFunc
	cleanup     []func()
	errs        chan error
}

// Start brings the demo up and returns once every proxy is serving.
func Start(ctx context.Context, o Options) (_ *Demo, err error) {
	if o.WebAddr == "" {
		o.WebAddr = "127.0.0.1:0"
	}
	if o.GatewayAddr == "" {
		o.GatewayAddr = "127.0.0.1:8443"
	}
	if o.GatewayHTTPAddr == "" {
		o.GatewayHTTPAddr = "127.0.0.1:8080"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	runCtx, cancel := context.WithCancel(context.Background())
	d := &Demo{cancel: cancel, errs: make(chan error, 16)}
	defer func() {
		if err != nil {
			d.stop()
		}
	}()

	roots, err := d.startControlPlane(runCtx, &o)
	if err != nil {
		return nil, err
	}

	// emoji and voting: gRPC servers behind their proxies.
	if _, err := d.grpcService(runCtx, o, "emoji", "emoji-svc", func(s *grpc.Server) { emoji.Register(s) }); err != nil {
		return nil, err
	}
	if o.Rollout.Version == RolloutOff {
		if _, err := d.grpcService(runCtx, o, "voting", "voting-svc", func(s *grpc.Server) { voting.Register(s) }); err != nil {
			return nil, err
		}
	} else if err := d.startRollout(runCtx, ctx, o); err != nil {
		return nil, err
	}

	// web: calls emoji and voting through its own proxy's outbound listener.
	webApp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	webSvc, err := d.proxy(runCtx, o, "web", "web-svc", webApp.Addr(), o.WebAddr)
	if err != nil {
		webApp.Close()
		return nil, err
	}
	emojiConn, err := dial.GRPC(ctx, webSvc.Outbound.String(), EmojiAuthority)
	if err != nil {
		return nil, err
	}
	votingConn, err := dial.GRPC(ctx, webSvc.Outbound.String(), VotingAuthority)
	if err != nil {
		return nil, err
	}
	d.cleanup = append(d.cleanup, func() { emojiConn.Close(); votingConn.Close() })
	webSrv := &http.Server{
		Handler:           web.New(pb.NewEmojiServiceClient(emojiConn), pb.NewVotingServiceClient(votingConn)),
		ReadHeaderTimeout: 10 * time.Second,
	}
	d.goServe("web", func() error { return webSrv.Serve(webApp) })
	d.cleanup = append(d.cleanup, func() {
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		webSrv.Shutdown(sctx)
	})
	d.WebURL = "http://" + webSvc.Inbound.String()

	if err := d.awaitRegistrations(ctx); err != nil {
		return nil, err
	}
	// The edge gateway in front of web, and the bot, a client from outside
	// the mesh, sending its traffic through it over HTTPS.
	if err := d.startGateway(runCtx, ctx, o, roots); err != nil {
		return nil, err
	}
	d.URL = "https://" + d.Gateway.HTTPS.String()
	if o.VoteRate > 0 {
		d.Bot = &votebot.Bot{Target: d.URL, Rate: o.VoteRate, Client: d.Gateway.Client(10 * time.Second)}
		d.goServe("vote-bot", func() error { return d.Bot.Run(runCtx) })
	}
	if o.Rollout.Version != RolloutOff {
		d.scheduleV2(runCtx, o)
	}
	return d, nil
}

// startControlPlane runs the controller in local mode over the manifests,
// with the gateway's certificate written beside them; it returns the
// certificate as a trust anchor.
func (d *Demo) startControlPlane(ctx context.Context, o *Options) (*x509.CertPool, error) {
	dir := o.Manifests
	if dir == "" {
		tmp, err := os.MkdirTemp("", "meridian-demo-")
		if err != nil {
			return nil, err
		}
		d.cleanup = append(d.cleanup, func() { os.RemoveAll(tmp) })
		b, err := manifests.ReadFile("manifests/emojivoto.yaml")
		if err != nil {
			return nil, err
		}
		b, err = redirectPort(b, o.GatewayAddr)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(tmp, "emojivoto.yaml"), b, 0o644); err != nil {
			return nil, err
		}
		if o.Rollout.Version != RolloutOff {
			r, err := rolloutManifest(o.Rollout)
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(tmp, RolloutFile), r, 0o644); err != nil {
				return nil, err
			}
		}
		dir = tmp
	} else if o.Rollout.Version != RolloutOff {
		if _, err := os.Stat(filepath.Join(dir, RolloutFile)); err != nil {
			return nil, fmt.Errorf("--rollout=%s needs the Rollout voting in %s (copy demo/launch/manifests/%s there): %w", o.Rollout.Version, RolloutFile, RolloutFile, err)
		}
	}
	d.Manifests = dir
	certFile, roots, err := writeGatewayCert(dir)
	if err != nil {
		return nil, fmt.Errorf("the gateway's certificate: %w", err)
	}
	d.cleanup = append(d.cleanup, func() { os.Remove(certFile) })
	ca, err := identity.Generate(spiffeid.RequireTrustDomainFromString(compile.DefaultTrustDomain))
	if err != nil {
		return nil, err
	}
	d.CA = ca
	// Each workload the demo starts is declared with a credential of its
	// own, handed only to its proxy: the controller admits no other process.
	decl, err := d.declareWorkloads(dir, o.Rollout.Version != RolloutOff)
	if err != nil {
		return nil, err
	}
	d.cleanup = append(d.cleanup, func() { os.Remove(decl) })
	apiID, err := identity.ID(ca.TrustDomain, ControllerNamespace, ControllerServiceAccount)
	if err != nil {
		return nil, err
	}
	addrs := make(chan string, 1)
	d.goServe("controller", func() error {
		return controller.Run(ctx, controller.Options{Store: "dir:" + dir, DestinationAddr: "127.0.0.1:0",
			DefaultNamespace: Namespace, ShutdownGrace: time.Second, Log: o.Log.With("component", "controller"),
			IdentityCA: ca, APIIdentity: apiID.String()},
			func(dst, _ string) { addrs <- dst })
	})
	select {
	case d.Destination = <-addrs:
	case err := <-d.errs:
		return nil, err
	case <-time.After(10 * time.Second):
		return nil, errors.New("the control plane did not start within 10s")
	}
	// The API is served over TLS with the controller's identity, verified
	// with the mesh's trust anchors, as meridian-proxy --destination-identity does.
	tlsCfg := tlsconfig.TLSClientConfig(x509bundle.FromX509Authorities(ca.TrustDomain, ca.Roots), tlsconfig.AuthorizeID(apiID))
	tlsCfg.MinVersion = tls.VersionTLS13
	cc, err := grpc.NewClient("passthrough:///"+d.Destination, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, err
	}
	d.cc = cc
	d.cleanup = append(d.cleanup, func() { cc.Close() })
	return roots, nil
}

// The controller's identity in the demo, as the chart names it.
const (
	ControllerNamespace      = "meridian"
	ControllerServiceAccount = "meridian-controller"
)

// demoWorkloads are the workloads the demo starts and the service each serves.
var demoWorkloads = []struct{ name, service string }{
	{"emoji", "emoji-svc"}, {"voting", "voting-svc"}, {"web", "web-svc"},
	{GatewayWorkload, ""}, // client-only: the gateway is no endpoint of any service
}

// declareWorkloads writes the declaration of every demo workload into dir
// (a Pod each, with the SHA-256 of a credential generated for this run) and
// keeps the credentials for the proxies. It returns the file written.
func (d *Demo) declareWorkloads(dir string, rollout bool) (string, error) {
	d.credentials = map[string]string{}
	var b strings.Builder
	b.WriteString("# Written by meridian demo for this run: the workloads its proxies may register,\n" +
		"# each with the SHA-256 of a credential only that proxy was given.\n")
	for _, w := range demoWorkloads {
		if rollout && w.name == "voting" {
			continue // the Rollout's instances declare themselves (rollout.go)
		}
		var raw [32]byte
		if _, err := crand.Read(raw[:]); err != nil {
			return "", err
		}
		cred := hex.EncodeToString(raw[:])
		d.credentials[w.name] = cred
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n  labels: {app: %s}\n"+
			"  annotations:\n    %s: %q\n    %s: %q\nspec:\n  serviceAccountName: %s\n  containers: [{name: %s}]\n",
			w.name, Namespace, w.name, names.AnnotationCredentialSHA256, local.CredentialSHA256(cred),
			names.AnnotationServices, w.service, w.name, w.name)
	}
	path := filepath.Join(dir, "demo-workloads.yaml")
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

// awaitRegistrations waits until every workload is registered and its
// proxy holds its certificate, so that the first requests find their
// endpoints and go over mTLS.
func (d *Demo) awaitRegistrations(ctx context.Context) error {
	for _, s := range d.Services {
		for what, ch := range map[string]<-chan struct{}{"register with the control plane": s.registered,
			"obtain its certificate": s.Identity.Ready()} {
			select {
			case <-ch:
			case err := <-d.errs:
				return err
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Second):
				return fmt.Errorf("%s did not %s within 10s", s.Name, what)
			}
		}
	}
	return nil
}

// grpcService starts a gRPC application on loopback and its proxy.
func (d *Demo) grpcService(ctx context.Context, o Options, name, service string, register func(*grpc.Server)) (*Service, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer()
	register(srv)
	d.goServe(name, func() error { return srv.Serve(ln) })
	d.cleanup = append(d.cleanup, srv.GracefulStop)
	return d.proxy(ctx, o, name, service, ln.Addr(), "127.0.0.1:0")
}

// proxy starts a sidecar for the application at app that follows the
// control plane and registers its workload as serving service.
func (d *Demo) proxy(ctx context.Context, o Options, name, service string, app net.Addr, inboundAddr string) (*Service, error) {
	s, err := d.startProxy(ctx, o, sidecarSpec{name: name, account: name, service: service, app: app,
		inboundAddr: inboundAddr, credential: d.credentials[name], labels: map[string]string{"app": name}})
	if err != nil {
		return nil, err
	}
	d.Services = append(d.Services, s)
	return s, nil
}

// sidecarSpec is a workload's proxy to start.
type sidecarSpec struct {
	name, account, service string
	app                    net.Addr
	inboundAddr            string
	credential             string
	labels                 map[string]string
	// backoffMax bounds the registration's retries (0: dstclient's
	// default): an instance the Rollout starts retries until the control
	// plane has loaded its declaration.
	backoffMax time.Duration
	// registerAfter delays the registration: the control plane loads a new
	// declaration at its next look at the directory (every second).
	registerAfter time.Duration
}

// startProxy starts a sidecar as sp says and registers its workload; it
// runs until ctx ends.
func (d *Demo) startProxy(ctx context.Context, o Options, sp sidecarSpec) (*Service, error) {
	name, service := sp.name, sp.service
	resolver := dstclient.New(d.cc, dstclient.Options{Token: "emojivoto/" + name, Log: o.Log.With("proxy", name), BackoffMax: sp.backoffMax})
	// The proxy's identity: the workload's service account, proven by the
	// token its registration returns.
	spiffeID, err := identity.ID(d.CA.TrustDomain, Namespace, sp.account)
	if err != nil {
		return nil, err
	}
	id, err := tlsid.New(tlsid.Config{ID: spiffeID, Roots: d.CA.Roots, Client: idpb.NewIdentityClient(d.cc),
		Token: resolver.RegistrationToken, RetryMin: 50 * time.Millisecond, RetryMax: 2 * time.Second,
		Log: o.Log.With("proxy", name)})
	if err != nil {
		return nil, err
	}
	d.goServe(name+" identity", func() error { id.Run(ctx); return nil })
	cfg := sidecar.Config{
		OutboundAddr:   "127.0.0.1:0",
		InboundAddr:    sp.inboundAddr,
		AdminAddr:      "127.0.0.1:0",
		Resolver:       resolver,
		Balancer:       balance.PeakEWMA,
		DrainTimeout:   2 * time.Second,
		Log:            o.Log.With("proxy", name),
		Identity:       id,
		InboundForward: sp.app.String(),
		// As meridian-proxy's default, with one loop each and, unlike
		// it, none held: the demo's proxies share one process, whose
		// GOMAXPROCS would grow by one per loop held.
		EventLoop:  true,
		EventLoops: 1,
	}
	p, err := sidecar.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s proxy: %w", name, err)
	}
	out, in, admin := p.Addrs()
	s := &Service{Name: name, App: sp.app, Outbound: out, Inbound: in, Admin: admin, Proxy: p, Identity: id}
	d.goServe(name+" proxy", func() error { return p.Run(ctx) })
	// The registration's token is the workload's proof of identity.
	s.registered = make(chan struct{})
	var once sync.Once
	w := dstclient.Workload{Name: name, Namespace: Namespace, Service: service, ServiceAccount: sp.account,
		Address: in.String(), Labels: sp.labels, Credential: sp.credential}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if sp.registerAfter > 0 {
			select {
			case <-time.After(sp.registerAfter):
			case <-ctx.Done():
				return
			}
		}
		resolver.Register(ctx, w, func() { once.Do(func() { close(s.registered) }) })
	}()
	return s, nil
}

func (d *Demo) goServe(name string, f func() error) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
			select {
			case d.errs <- fmt.Errorf("%s: %w", name, err):
			default:
			}
		}
	}()
}

// Errors reports a component that stopped on its own.
func (d *Demo) Errors() <-chan error { return d.errs }

// Stop stops the bot, drains the proxies and stops the applications.
func (d *Demo) Stop() { d.stop() }

func (d *Demo) stop() {
	d.cancel()
	for i := len(d.cleanup) - 1; i >= 0; i-- {
		d.cleanup[i]()
	}
	d.wg.Wait()
}

// PrintSummary writes where to look.
func (d *Demo) PrintSummary(w io.Writer) {
	fmt.Fprintf(w, "Meridian demo: emojivoto, meshed on loopback with mutual TLS (Ctrl-C to stop)\n\n")
	fmt.Fprintf(w, "  web UI         %s (the edge gateway; its certificate is self-signed, made for this run)\n", d.URL)
	fmt.Fprintf(w, "                 http://%s redirects there\n", d.Gateway.HTTP)
	fmt.Fprintf(w, "  control plane  %s (destination, identity and gateway APIs), serving %s\n\n", d.Destination, d.Manifests)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SERVICE\tAPP\tPROXY OUTBOUND\tPROXY INBOUND\tMETRICS")
	for _, s := range d.Services {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\thttp://%s/metrics\n", s.Name, s.App, s.Outbound, s.Inbound, s.Admin)
	}
	if d.instances != nil {
		for _, p := range d.instances.Instances() {
			fmt.Fprintf(tw, "  %s\t(rollout %s/%s)\t-\t-\thttp://%s/metrics\n", p.Name, Namespace, RolloutName, p.Admin)
		}
	}
	g := d.Gateway
	fmt.Fprintf(tw, "  %s\t(gateway %s/%s)\t-\t%s %s\thttp://%s/metrics\n", g.Name, Namespace, GatewayName, g.HTTPS, g.HTTP, g.Admin)
	tw.Flush()
	var proxies []string
	for _, p := range d.Proxies() {
		proxies = append(proxies, p.Name+"="+p.Admin.String())
	}
	fmt.Fprintf(w, "\n  Golden metrics:  meridian viz stat %s\n", strings.Join(proxies, " "))
	fmt.Fprintf(w, "  Who calls whom:  meridian viz edges %s\n", strings.Join(proxies, " "))
}

// Proxy names a proxy of the demo (a sidecar or the gateway) and its admin
// listener (/metrics).
type Proxy struct {
	Name    string
	Admin   net.Addr
	Metrics prometheus.Gatherer
	Gateway bool
}

// Proxies are the demo's sidecars, then its gateway.
func (d *Demo) Proxies() []Proxy {
	var out []Proxy
	for _, s := range d.Services {
		out = append(out, Proxy{Name: s.Name, Admin: s.Admin, Metrics: s.Proxy.Metrics().Gatherer()})
	}
	if d.instances != nil {
		out = append(out, d.instances.Instances()...)
	}
	if g := d.Gateway; g != nil {
		out = append(out, Proxy{Name: g.Name, Admin: g.Admin, Metrics: g.Proxy.Metrics().Gatherer(), Gateway: true})
	}
	return out
}

// Counts are a service's inbound responses so far, by classification.
type Counts struct{ Success, Failure float64 }

// Inbound returns the response counts of each served service's proxy
// (inbound) and of the gateway (the requests it forwarded from outside),
// read from their metrics, the same numbers /metrics exposes.
func (d *Demo) Inbound() (map[string]Counts, error) {
	out := map[string]Counts{}
	for _, p := range d.Proxies() {
		c, err := p.Counts()
		if err != nil {
			return nil, err
		}
		out[p.Name] = c
	}
	return out, nil
}

// Counts are the proxy's inbound responses so far (the gateway's: those it
// forwarded from outside).
func (p Proxy) Counts() (Counts, error) {
	mfs, err := p.Metrics.Gather()
	if err != nil {
		return Counts{}, err
	}
	var c Counts
	for _, mf := range mfs {
		if mf.GetName() != "response_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			// The gateway's requests leave it for backends: its series
			// are outbound, each labelled with the Gateway.
			if labels["direction"] != "inbound" && (!p.Gateway || labels["gateway"] == "") {
				continue
			}
			if labels["classification"] == "success" {
				c.Success += m.GetCounter().GetValue()
			} else {
				c.Failure += m.GetCounter().GetValue()
			}
		}
	}
	return c, nil
}

// redirectPort makes the HTTP listener's redirect of the demo's own
// manifests name the port the HTTPS listener is served on (--gateway-addr),
// when that is not the Gateway's own 8443 (nor chosen by the system).
func redirectPort(manifest []byte, gatewayAddr string) ([]byte, error) {
	_, port, err := net.SplitHostPort(gatewayAddr)
	if err != nil {
		return nil, fmt.Errorf("gateway address %q: %w", gatewayAddr, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("gateway address %q: port %q is not a port number", gatewayAddr, port)
	}
	if n == 0 || n == GatewayHTTPSPort {
		return manifest, nil
	}
	const redirect = "requestRedirect: {scheme: https, port: 8443, statusCode: 301}"
	if !bytes.Contains(manifest, []byte(redirect)) {
		return nil, errors.New("the demo's manifest has no HTTP redirect to port 8443 to point to the gateway's address")
	}
	return bytes.Replace(manifest, []byte(redirect), []byte(fmt.Sprintf("requestRedirect: {scheme: https, port: %d, statusCode: 301}", n)), 1), nil
}
