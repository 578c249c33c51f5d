// Package launch runs the demo application meshed on one machine: every
// service on loopback with its own sidecar proxy beside it, services talking
// to each other only through those proxies, and a bot generating traffic.
// It is what `meridian demo` runs.
package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"

	"github.com/meridian-mesh/meridian/demo/dial"
	"github.com/meridian-mesh/meridian/demo/emoji"
	pb "github.com/meridian-mesh/meridian/demo/proto/emojivotopb"
	"github.com/meridian-mesh/meridian/demo/votebot"
	"github.com/meridian-mesh/meridian/demo/voting"
	"github.com/meridian-mesh/meridian/demo/web"
	"github.com/meridian-mesh/meridian/proxy/balance"
	"github.com/meridian-mesh/meridian/proxy/discover"
	"github.com/meridian-mesh/meridian/proxy/sidecar"
)

// The authorities the services use for each other, shaped like Kubernetes
// service names so the same manifests and dashboards make sense later.
const (
	EmojiAuthority  = "emoji-svc.emojivoto:8080"
	VotingAuthority = "voting-svc.emojivoto:8080"
	WebAuthority    = "web-svc.emojivoto:80"
)

// Options configure a demo run.
type Options struct {
	// WebAddr is where the browser reaches the web UI: the web service's
	// sidecar inbound listener (a non-meshed client, like an ingress).
	WebAddr string
	// VoteRate is the bot's votes per second; 0 disables the bot.
	VoteRate float64
	Log      *slog.Logger
}

// Service is one running demo workload and its proxy.
type Service struct {
	Name     string
	App      net.Addr // the application's own listener
	Outbound net.Addr
	Inbound  net.Addr
	Admin    net.Addr
	Proxy    *sidecar.Proxy
}

// Demo is a running demo.
type Demo struct {
	Services []*Service
	WebURL   string
	Bot      *votebot.Bot

	wg      sync.WaitGroup
	cancel  context.CancelFunc
	cleanup []func()
	errs    chan error
}

// Start brings the demo up and returns once every proxy is serving.
func Start(ctx context.Context, o Options) (_ *Demo, err error) {
	if o.WebAddr == "" {
		o.WebAddr = "127.0.0.1:8080"
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

	// emoji and voting: gRPC servers behind their proxies.
	emojiSvc, err := d.grpcService(runCtx, o, "emoji", func(s *grpc.Server) { emoji.Register(s) }, nil)
	if err != nil {
		return nil, err
	}
	votingSvc, err := d.grpcService(runCtx, o, "voting", func(s *grpc.Server) { voting.Register(s) }, nil)
	if err != nil {
		return nil, err
	}

	// web: calls emoji and voting through its own proxy's outbound listener.
	webDests := []discover.Destination{
		{Authority: EmojiAuthority, Endpoints: []discover.Endpoint{{Addr: emojiSvc.Inbound.String(), Protocol: discover.HintH2}}},
		{Authority: VotingAuthority, Endpoints: []discover.Endpoint{{Addr: votingSvc.Inbound.String(), Protocol: discover.HintH2}}},
	}
	webApp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	webSvc, err := d.proxy(runCtx, o, "web", webApp.Addr(), o.WebAddr, webDests)
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

	// vote-bot: a client-only workload; its proxy routes web-svc to web's proxy.
	botDests := []discover.Destination{
		{Authority: WebAuthority, Endpoints: []discover.Endpoint{{Addr: webSvc.Inbound.String()}}},
	}
	botSvc, err := d.proxy(runCtx, o, "vote-bot", nil, "127.0.0.1:0", botDests)
	if err != nil {
		return nil, err
	}
	if o.VoteRate > 0 {
		d.Bot = &votebot.Bot{Target: "http://" + botSvc.Outbound.String(), Host: WebAuthority, Rate: o.VoteRate}
		d.goServe("vote-bot", func() error { return d.Bot.Run(runCtx) })
	}
	return d, nil
}

// grpcService starts a gRPC application on loopback and its proxy.
func (d *Demo) grpcService(ctx context.Context, o Options, name string, register func(*grpc.Server), dests []discover.Destination) (*Service, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer()
	register(srv)
	d.goServe(name, func() error { return srv.Serve(ln) })
	d.cleanup = append(d.cleanup, srv.GracefulStop)
	return d.proxy(ctx, o, name, ln.Addr(), "127.0.0.1:0", dests)
}

// proxy starts a sidecar for the application at app (nil for a client-only
// workload), with static destinations for its outbound traffic.
func (d *Demo) proxy(ctx context.Context, o Options, name string, app net.Addr, inboundAddr string, dests []discover.Destination) (*Service, error) {
	resolver, err := discover.NewStatic(dests)
	if err != nil {
		return nil, err
	}
	cfg := sidecar.Config{
		OutboundAddr: "127.0.0.1:0",
		InboundAddr:  inboundAddr,
		AdminAddr:    "127.0.0.1:0",
		Resolver:     resolver,
		Balancer:     balance.PeakEWMA,
		DrainTimeout: 2 * time.Second,
		Log:          o.Log.With("proxy", name),
	}
	if app != nil {
		cfg.InboundForward = app.String()
	}
	p, err := sidecar.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s proxy: %w", name, err)
	}
	out, in, admin := p.Addrs()
	s := &Service{Name: name, App: app, Outbound: out, Inbound: in, Admin: admin, Proxy: p}
	d.Services = append(d.Services, s)
	d.goServe(name+" proxy", func() error { return p.Run(ctx) })
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
	fmt.Fprintf(w, "Meridian demo: emojivoto, meshed on loopback (Ctrl-C to stop)\n\n")
	fmt.Fprintf(w, "  web UI      %s\n\n", d.WebURL)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SERVICE\tAPP\tPROXY OUTBOUND\tPROXY INBOUND\tMETRICS")
	for _, s := range d.Services {
		app := "-"
		if s.App != nil {
			app = s.App.String()
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\thttp://%s/metrics\n", s.Name, app, s.Outbound, s.Inbound, s.Admin)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n  Golden metrics, e.g.: curl -s http://%s/metrics | grep ^response_total\n", d.Services[0].Admin)
}

// Counts are a service's inbound responses so far, by classification.
type Counts struct{ Success, Failure float64 }

// Inbound returns each served service's inbound response counts, read from
// its proxy's metrics, the same numbers /metrics exposes.
func (d *Demo) Inbound() (map[string]Counts, error) {
	out := map[string]Counts{}
	for _, s := range d.Services {
		if s.App == nil {
			continue
		}
		mfs, err := s.Proxy.Metrics().Gatherer().Gather()
		if err != nil {
			return nil, err
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
				if labels["direction"] != "inbound" {
					continue
				}
				if labels["classification"] == "success" {
					c.Success += m.GetCounter().GetValue()
				} else {
					c.Failure += m.GetCounter().GetValue()
				}
			}
		}
		out[s.Name] = c
	}
	return out, nil
}
