// Command balance measures how meridian-proxy's balancers treat one slow
// endpoint: three backends behind one authority, one of them -slow (10 ms)
// against -fast (1 ms) for the others. The client sends at a fixed rate to the
// proxy's outbound listener; the backends count what they get. Peak-EWMA
// should starve the slow one, round-robin gives it a third. With -runs N each
// balancer and protocol is measured N times (a fresh proxy and backends each
// time) and the RESULT line gives the median share and the largest. Ends with
// one RESULT line.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"slices"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/bench/backend"
	"github.com/meridian-mesh/meridian/bench/loadgen"
	"github.com/meridian-mesh/meridian/bench/sut"
)

var (
	proxyBin   = flag.String("proxy", "", "meridian-proxy binary (required)")
	balancers  = flag.String("balancers", "p2c-ewma,round-robin", "values of --balancer to compare")
	protosFlag = flag.String("protocols", "http1,grpc", "protocols: http1, grpc")
	rate       = flag.Float64("rate", 1000, "requests per second")
	duration   = flag.Duration("duration", 10*time.Second, "measured duration per balancer and protocol")
	warmup     = flag.Duration("warmup", time.Second, "unmeasured run first (backend counters are reset after it)")
	runs       = flag.Int("runs", 1, "measurements per balancer and protocol, each with a fresh proxy and backends")
	fast       = flag.Duration("fast", time.Millisecond, "service time of the two fast endpoints")
	slow       = flag.Duration("slow", 10*time.Millisecond, "service time of the slow endpoint")
	clientCPU  = flag.String("client-cpu", "0", "CPUs for this program (load generator + backends); empty: no pinning")
	sutCPU     = flag.String("sut-cpu", "1", "CPUs for the proxy; empty: no pinning")
	priority   = flag.String("priority", "normal", "scheduling of the harness and proxies: normal, nice (-20), fifo (SCHED_FIFO 10, shields a shared machine's other work) or rr (SCHED_RR 10)")
	logDir     = flag.String("logdir", "", "where proxy logs go (default: a new temp dir)")
)

const authority = "slow.bench:8080"

type result struct {
	balancer  string
	proto     sut.Protocol
	sum       loadgen.Summary
	counts    [3]int64
	slowShare float64
	errs      string
}

func main() {
	flag.Parse()
	log.SetFlags(log.Ltime)
	if *proxyBin == "" {
		log.Fatal("-proxy is required")
	}
	if *runs < 1 {
		log.Fatalf("-runs %d: must be at least 1", *runs)
	}
	ctx, stop, dir := sut.Harness("balance", *clientCPU, sut.Priority(*priority), *logDir)
	defer stop()

	var results []result
	var problems []string
	for _, proto := range strings.Split(*protosFlag, ",") {
		proto := sut.Protocol(strings.TrimSpace(proto))
		for _, bal := range strings.Split(*balancers, ",") {
			for range *runs {
				if ctx.Err() != nil {
					break
				}
				r, err := run(ctx, proto, strings.TrimSpace(bal), dir)
				if err != nil {
					problems = append(problems, fmt.Sprintf("%s %s: %v", bal, proto, err))
					log.Print(problems[len(problems)-1])
					continue
				}
				if r.errs != "" {
					problems = append(problems, fmt.Sprintf("%s %s: %d errors: %s", bal, proto, r.sum.Errors, r.errs))
				}
				results = append(results, r)
			}
		}
	}

	fmt.Printf("\n### One endpoint %v, two %v: %0.f RPS for %v through one proxy's outbound\n\n", *slow, *fast, *rate, *duration)
	fmt.Println("| balancer | proto | slow share | fast1 | fast2 | slow | p50 ms | p90 ms | p99 ms | max ms | achieved RPS | errors |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	ms := loadgen.Ms
	for _, r := range results {
		fmt.Printf("| %s | %s | %.1f%% | %d | %d | %d | %s | %s | %s | %s | %.0f | %d |\n",
			r.balancer, r.proto, 100*r.slowShare, r.counts[0], r.counts[1], r.counts[2],
			ms(r.sum.P50), ms(r.sum.P90), ms(r.sum.P99), ms(r.sum.Max), r.sum.Rate, r.sum.Errors)
	}
	if len(problems) > 0 {
		fmt.Printf("\n### Problems\n\n")
		for _, p := range problems {
			fmt.Println("- " + strings.ReplaceAll(p, "\n", "\n    "))
		}
	}
	fmt.Printf("\nLogs: %s\n\n", dir)

	kv := []string{fmt.Sprintf("rps=%.0f", *rate)}
	var totalErr int64
	for _, g := range groups(results) {
		p := map[string]string{"p2c-ewma": "ewma", "round-robin": "rr"}[g[0].balancer]
		if p == "" {
			p = g[0].balancer
		}
		if g[0].proto == sut.GRPC {
			p += "_grpc"
		}
		shares, p99s := make([]float64, len(g)), make([]float64, len(g))
		for i, r := range g {
			shares[i], p99s[i] = r.slowShare, float64(r.sum.P99)
			totalErr += r.sum.Errors
		}
		kv = append(kv, fmt.Sprintf("%s_slow_share=%.3f", p, median(shares)),
			fmt.Sprintf("%s_p99_ms=%s", p, ms(time.Duration(median(p99s)))))
		if len(g) > 1 {
			kv = append(kv, fmt.Sprintf("%s_slow_share_max=%.3f", p, slices.Max(shares)),
				fmt.Sprintf("%s_runs=%d", p, len(g)))
			fmt.Printf("%s %s: slow share per run %s; median %.1f%%, max %.1f%%\n", g[0].balancer, g[0].proto,
				percents(shares), 100*median(shares), 100*slices.Max(shares))
		}
	}
	kv = append(kv, fmt.Sprintf("errors=%d", totalErr), fmt.Sprintf("problems=%d", len(problems)))
	fmt.Println("RESULT " + strings.Join(kv, " "))
}

// groups splits results, in order, into runs of the same balancer and protocol.
func groups(results []result) [][]result {
	var gs [][]result
	for _, r := range results {
		if n := len(gs); n > 0 && gs[n-1][0].balancer == r.balancer && gs[n-1][0].proto == r.proto {
			gs[n-1] = append(gs[n-1], r)
			continue
		}
		gs = append(gs, []result{r})
	}
	return gs
}

// median of xs (the mean of the middle two for an even count); xs is not modified.
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func percents(xs []float64) string {
	p := make([]string, len(xs))
	for i, x := range xs {
		p[i] = fmt.Sprintf("%.1f%%", 100*x)
	}
	return strings.Join(p, " ")
}

// run starts fresh backends and a fresh proxy, so no balancer inherits
// another's latency estimates or connections.
func run(ctx context.Context, proto sut.Protocol, bal, dir string) (result, error) {
	res := result{balancer: bal, proto: proto}
	start := backend.StartHTTP
	if proto == sut.GRPC {
		start = backend.StartGRPC
	}
	var backs []*backend.Server
	defer func() {
		for _, b := range backs {
			b.Close()
		}
	}()
	var addrs []string
	for _, d := range []time.Duration{*fast, *fast, *slow} {
		b, err := start("127.0.0.1:0", d)
		if err != nil {
			return res, err
		}
		backs = append(backs, b)
		addrs = append(addrs, b.Addr)
	}

	out, _, admin, args, err := sut.MeridianArgs()
	if err != nil {
		return res, err
	}
	args = append(args, "--inbound-forward", addrs[0], "--balancer", bal,
		"--dst", authority+"="+strings.Join(addrs, ","))
	p, err := sut.StartMeridian("balance-"+bal+"-"+string(proto), *sutCPU, dir, *proxyBin, admin, args)
	if err != nil {
		return res, err
	}
	defer func() {
		if err := p.Stop(10 * time.Second); err != nil {
			log.Printf("stopping proxy: %v", err)
		}
	}()

	var do func(context.Context) error
	if proto == sut.GRPC {
		cc, err := loadgen.GRPCConn(out, authority)
		if err != nil {
			return res, err
		}
		defer cc.Close()
		do = loadgen.GRPCHealth(cc)
	} else {
		c := loadgen.HTTPClient(256)
		defer c.CloseIdleConnections()
		do = loadgen.HTTPGet(c, "http://"+out+"/", authority)
	}
	opts := loadgen.Options{Rate: *rate, Duration: *warmup, Concurrency: 256}
	if *warmup > 0 {
		if _, err := loadgen.Run(ctx, opts, do); err != nil {
			return res, err
		}
	}
	for _, b := range backs {
		b.Reset()
	}
	opts.Duration = *duration
	sut.CollectNow() // the harness's GC runs here, not during the run
	lr, err := loadgen.Run(ctx, opts, do)
	if err != nil {
		return res, err
	}
	if exited, err := p.Exited(); exited {
		return res, fmt.Errorf("proxy exited: %v\n%s", err, p.LogTail(20))
	}
	var total int64
	for i, b := range backs {
		res.counts[i] = b.Count()
		total += res.counts[i]
	}
	if total > 0 {
		res.slowShare = float64(res.counts[2]) / float64(total)
	}
	res.sum = lr.Summary()
	res.errs = lr.ErrorString()
	log.Printf("%-11s %-5s: slow share %.1f%% (%v), p99 %s ms, %d errors %s",
		bal, proto, 100*res.slowShare, res.counts, loadgen.Ms(res.sum.P99), res.sum.Errors, res.errs)
	return res, nil
}
