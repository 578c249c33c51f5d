// Command meridian-init is the first init container of a meshed pod: it
// installs the nftables rules that send the pod's TCP traffic through the
// sidecar proxy (see proxy/redirect), logs them, and exits. It talks to the
// kernel over netlink itself, so its image holds this one static binary and
// no iptables or nft.
//
// It needs root with NET_ADMIN in the pod's network namespace. Exit status:
// 0 done, 1 the rules could not be installed or removed, 2 bad flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"

	"github.com/meridian-mesh/meridian/internal/ports"
	"github.com/meridian-mesh/meridian/proxy/redirect"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg := redirect.DefaultConfig()
	fs := flag.NewFlagSet("meridian-init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	portFlag(fs, &cfg.InboundPort, "inbound-port", "the proxy's inbound `port`: inbound TCP is redirected here")
	portFlag(fs, &cfg.OutboundPort, "outbound-port", "the proxy's outbound `port`: outbound TCP is redirected here")
	fs.Func("proxy-uid", fmt.Sprintf("`uid` the proxy runs as; its connections are not redirected (default %d)", cfg.ProxyUID), func(v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return errors.New("not a uid (0-4294967295)")
		}
		cfg.ProxyUID = uint32(n)
		return nil
	})
	portsFlag(fs, &cfg.SkipInboundPorts, "skip-inbound-ports", "inbound destination `ports` that bypass the proxy, like 25,3306,4000-4010 (4190 and 4191 always do)")
	portsFlag(fs, &cfg.SkipOutboundPorts, "skip-outbound-ports", "outbound destination `ports` that bypass the proxy, like 25,3306,4000-4010")
	fs.Func("skip-outbound-cidrs", "outbound destination `CIDRs` that bypass the proxy, like 10.0.0.0/8,fd00::/8", func(v string) error {
		ps, err := redirect.ParseCIDRs(v)
		cfg.SkipOutboundCIDRs = append(cfg.SkipOutboundCIDRs, ps...)
		return err
	})
	remove := fs.Bool("remove", false, "delete the rules (the whole nftables table inet "+redirect.TableName+") instead of installing them")
	dryRun := fs.Bool("dry-run", false, "print the rules in nft syntax and change nothing")
	level := slog.LevelInfo
	fs.TextVar(&level, "log-level", level, "log `level`: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2 // the flag package has said what is wrong
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "meridian-init: unexpected argument %q: it takes flags only\n", fs.Arg(0))
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "meridian-init: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	switch {
	case *dryRun && *remove:
		fmt.Fprint(stdout, redirect.RemoveString())
		log.Info("dry run: nothing was removed")
	case *dryRun:
		fmt.Fprint(stdout, cfg.String())
		log.Info("dry run: nothing was installed")
	case *remove:
		if err := redirect.Remove(); err != nil {
			fmt.Fprintf(stderr, "meridian-init: %v\n", err)
			return 1
		}
		log.Info("removed the nftables table", "table", "inet "+redirect.TableName)
	default:
		if err := redirect.Apply(cfg); err != nil {
			fmt.Fprintf(stderr, "meridian-init: %v\n", err)
			return 1
		}
		log.Info("installed the nftables table", "table", "inet "+redirect.TableName,
			"inbound_port", cfg.InboundPort, "outbound_port", cfg.OutboundPort, "proxy_uid", cfg.ProxyUID)
		for _, r := range cfg.Rules() {
			log.Info("rule", "rule", r)
		}
	}
	return 0
}

// portFlag defines a flag holding one port, 1-65535.
func portFlag(fs *flag.FlagSet, p *uint16, name, usage string) {
	fs.Func(name, fmt.Sprintf("%s (default %d)", usage, *p), func(v string) error {
		n, err := ports.ParsePort(v)
		*p = n
		return err
	})
}

// portsFlag defines a flag holding a list of ports and ranges; repeating
// the flag adds to the list.
func portsFlag(fs *flag.FlagSet, p *[]ports.Range, name, usage string) {
	fs.Func(name, usage, func(v string) error {
		rs, err := ports.ParseRanges(v)
		*p = append(*p, rs...)
		return err
	})
}
