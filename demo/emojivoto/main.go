// Command emojivoto runs one service of the demo application as its own
// process, for Kubernetes: `emojivoto emoji|voting|web|vote-bot`. Services
// find each other by their Kubernetes DNS names; in a meshed pod the
// connections are redirected into the sidecar, with no change here.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meridian-mesh/meridian/demo/emoji"
	pb "github.com/meridian-mesh/meridian/demo/proto/emojivotopb"
	"github.com/meridian-mesh/meridian/demo/votebot"
	"github.com/meridian-mesh/meridian/demo/voting"
	"github.com/meridian-mesh/meridian/demo/web"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "emojivoto:", err)
		os.Exit(1)
	}
}

const usage = "usage: emojivoto emoji|voting|web|vote-bot [flags]"

func run(args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	service := args[0]
	fs := flag.NewFlagSet("emojivoto "+service, flag.ContinueOnError)
	addr := fs.String("addr", ":8080", "listen address (emoji, voting, web)")
	emojiAddr := fs.String("emoji-addr", "emoji-svc:8080", "web: the emoji service")
	votingAddr := fs.String("voting-addr", "voting-svc:8080", "web: the voting service")
	target := fs.String("target", "http://web-svc:80", "vote-bot: base URL of web")
	rate := fs.Float64("rate", 2, "vote-bot: votes per second")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	switch service {
	case "emoji", "voting":
		gs := grpc.NewServer()
		if service == "emoji" {
			emoji.Register(gs)
		} else {
			voting.Register(gs)
		}
		healthpb.RegisterHealthServer(gs, health.NewServer())
		lis, err := net.Listen("tcp", *addr)
		if err != nil {
			return err
		}
		go func() { <-ctx.Done(); gs.GracefulStop() }()
		log.Info("serving", "service", service, "addr", lis.Addr().String())
		return gs.Serve(lis)
	case "web":
		dial := func(a string) (*grpc.ClientConn, error) {
			return grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		}
		ec, err := dial(*emojiAddr)
		if err != nil {
			return fmt.Errorf("--emoji-addr: %w", err)
		}
		defer ec.Close()
		vc, err := dial(*votingAddr)
		if err != nil {
			return fmt.Errorf("--voting-addr: %w", err)
		}
		defer vc.Close()
		srv := &http.Server{Addr: *addr, Handler: web.New(pb.NewEmojiServiceClient(ec), pb.NewVotingServiceClient(vc)), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		}()
		log.Info("serving", "service", service, "addr", *addr)
		if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	case "vote-bot":
		bot := &votebot.Bot{Target: *target, Rate: *rate}
		log.Info("voting", "target", *target, "rate", *rate)
		err := bot.Run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	return fmt.Errorf("unknown service %q; %s", service, usage)
}
