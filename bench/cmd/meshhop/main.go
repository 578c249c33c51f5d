// Command meshhop measures what two meshed hops add to a request:
//
//	client → outbound proxy → inbound proxy → server    against    client → server
//
// for meridian-proxy and, in the same run, the equivalent nginx and HAProxy
// chains, at fixed request rates over HTTP/1.1 and unary gRPC. The load
// generator and the backends share one CPU, the proxies get the other, so the
// proxies' CPU time and memory are theirs alone. It prints Markdown tables and
// ends with one RESULT line.
package main

import (
	"context"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	idpb "github.com/meridian-mesh/meridian/api/proto/identity"
	"github.com/meridian-mesh/meridian/bench/backend"
	"github.com/meridian-mesh/meridian/bench/loadgen"
	"github.com/meridian-mesh/meridian/bench/sut"
	"github.com/meridian-mesh/meridian/controlplane/identity"
)

var (
	proxyBin    = flag.String("proxy", "", "meridian-proxy binary; empty or missing runs the peers only")
	mtlsFlag    = flag.Bool("mtls", true, "also measure Meridian's chain with mutual TLS between the hops (target \"meridian-mtls\"; certificates from an identity API this program serves)")
	h2Hop       = flag.Bool("h2-hop", false, "also measure Meridian's HTTP/1.1 chains with the h2 hint a cluster's destination API gives a meshed pod's endpoint (targets \"meridian-h2hop\", and \"meridian-mtls-h2hop\" with -mtls): the hop between the proxies is then one HTTP/2 connection carrying the HTTP/1.1 requests (orig-proto), as in a cluster; without a hint it carries HTTP/1.1")
	baseline    = flag.String("baseline", "", "another meridian-proxy binary (e.g. built from the commit before a change), measured as target \"baseline\" (and \"baseline-mtls\" with -mtls, \"baseline-h2hop\" and \"baseline-mtls-h2hop\" with -h2-hop) in the same interleaved slices: a before/after in one run")
	targetsFlag = flag.String("targets", "", "keep only these targets (comma-separated kinds, e.g. \"meridian-mtls-h2hop,baseline-mtls-h2hop,nginx\"); empty: every target the other flags name")
	peersFlag   = flag.String("peers", "nginx,haproxy", "peer chains to run: nginx, haproxy (comma-separated, may be empty)")
	protosFlag  = flag.String("protocols", "http1,grpc", "protocols: http1, grpc")
	ratesFlag   = flag.String("rates", "100,1000,5000", "request rates (RPS), each run for -duration")
	duration    = flag.Duration("duration", 10*time.Second, "measured duration of each run")
	warmup      = flag.Duration("warmup", time.Second, "unmeasured run at the same rate before each measured one")
	concurrency = flag.Int("concurrency", 256, "cap on requests in flight")
	clientCPU   = flag.String("client-cpu", "0", "CPUs for this program (load generator + backends); empty: no pinning")
	sutCPU      = flag.String("sut-cpu", "1", "CPUs for the proxies; empty: no pinning")
	resultRPS   = flag.Float64("result-rps", 1000, "rate whose figures go on the RESULT line")
	nSlices     = flag.Int("slices", 5, "cut each -duration into this many slices, interleaved across targets")
	retries     = flag.Int("retries", 1, "at normal priority, repeat a slice up to this many times when other processes were busy during it")
	noisy       = flag.Float64("noisy", 0.1, "at normal priority, CPU cores used by other processes above which a run counts as disturbed")
	priority    = flag.String("priority", "normal", "scheduling of the harness and proxies: normal, nice (-20), fifo (SCHED_FIFO 10, shields a shared machine's other work) or rr (SCHED_RR 10: the same, with turns between threads of one CPU)")
	linger      = flag.Duration("linger", 15*time.Second, "idle time after the last run before the leak check")
	logDir      = flag.String("logdir", "", "where proxy configs and logs go (default: a new temp dir)")
)

// procStat is one hop's cost over the measured slices at one rate.
type procStat struct {
	CPUPerKRPS float64 // CPU cores used per 1000 RPS offered
	// CPUPerKRPSUnstalled is CPUPerKRPS over the slices the machine did not
	// stall (-1: none): the guest charges a stall to whichever thread was
	// on the CPU, as if it had run.
	CPUPerKRPSUnstalled float64
	CPUCores            float64 // CPU seconds / run seconds
	Peak                int64   // max VmHWM over the slices (reset before each)
	FDs                 int
	Goroutines          float64 // from /metrics, meridian only (-1: unknown)
}

type row struct {
	Kind     string
	Proto    sut.Protocol
	Rate     float64
	Sum      loadgen.Summary
	LagP99   time.Duration // how late the generator itself sent (its error floor)
	Other    float64       // CPU cores used by processes not in the benchmark
	Wait     float64       // ms per second our processes waited for a CPU
	Attempts int
	Errs     string
	Hops     []procStat      // out, in; empty for direct
	SliceP99 []time.Duration // p99 of each slice, in the order they ran
	Stalled  []bool          // whether a stall probe saw the machine stall during each slice
}

// addedP99 is the median, over the interleaved slices, of this row's slice
// p99 minus the direct slice p99 taken just before it. Direct slice k and
// chain slice k are seconds apart, so a burst of outside load spoils one
// pair rather than the whole comparison, as it does the difference of the
// merged p99s.
func (r row) addedP99(direct row) (time.Duration, bool) {
	return r.addedP99Where(direct, func(int) bool { return true })
}

// addedP99Unstalled is addedP99 over the pairs of slices during neither of
// which a stall probe saw the machine stall.
func (r row) addedP99Unstalled(direct row) (time.Duration, bool) {
	return r.addedP99Where(direct, func(k int) bool {
		return !(k < len(r.Stalled) && r.Stalled[k]) && !(k < len(direct.Stalled) && direct.Stalled[k])
	})
}

func (r row) addedP99Where(direct row, keep func(int) bool) (time.Duration, bool) {
	var d []time.Duration
	for k := 0; k < min(len(r.SliceP99), len(direct.SliceP99)); k++ {
		if keep(k) {
			d = append(d, r.SliceP99[k]-direct.SliceP99[k])
		}
	}
	if len(d) == 0 {
		return 0, false
	}
	return loadgen.Median(d), true
}

// isMeridian says whether a target's proxies are meridian-proxy (the
// binary under test or the baseline one), which serve /metrics.
func isMeridian(kind string) bool {
	switch kind {
	case "meridian", "meridian-mtls", "meridian-h2hop", "meridian-mtls-h2hop", "baseline", "baseline-mtls", "baseline-h2hop", "baseline-mtls-h2hop":
		return true
	}
	return false
}

func main() {
	if os.Getenv(probeEnv) != "" {
		runStallProbe()
		return
	}
	flag.Parse()
	log.SetFlags(log.Ltime)
	ctx, stop, dir := sut.Harness("meshhop", *clientCPU, sut.Priority(*priority), *logDir)
	defer stop()
	var err error
	if probes, err = startStallProbes(*clientCPU, *sutCPU); err != nil {
		log.Fatal(err)
	}
	defer probes.stop()
	rates, err := parseRates(*ratesFlag)
	if err != nil {
		log.Fatal(err)
	}
	kinds := splitList(*peersFlag)
	if *baseline != "" {
		if _, err := os.Stat(*baseline); err != nil {
			log.Fatalf("-baseline: %v", err)
		}
		kinds = append([]string{"baseline"}, kinds...)
		if *mtlsFlag {
			kinds = append([]string{"baseline-mtls"}, kinds...)
		}
		if *h2Hop && *mtlsFlag {
			kinds = append([]string{"baseline-mtls-h2hop"}, kinds...)
		}
		if *h2Hop {
			kinds = append([]string{"baseline-h2hop"}, kinds...)
		}
	}
	if *proxyBin != "" {
		if _, err := os.Stat(*proxyBin); err == nil {
			if *h2Hop && *mtlsFlag {
				kinds = append([]string{"meridian-mtls-h2hop"}, kinds...)
			}
			if *h2Hop {
				kinds = append([]string{"meridian-h2hop"}, kinds...)
			}
			if *mtlsFlag {
				kinds = append([]string{"meridian-mtls"}, kinds...)
			}
			kinds = append([]string{"meridian"}, kinds...)
		} else {
			log.Printf("meridian-proxy not found at %s: running peers only", *proxyBin)
		}
	}
	if keep := splitList(*targetsFlag); len(keep) > 0 {
		kinds = slices.DeleteFunc(kinds, func(k string) bool { return !slices.Contains(keep, k) })
		if len(kinds) == 0 {
			log.Fatalf("-targets %q: none of them is measured", *targetsFlag)
		}
	}
	log.Printf("logs and configs in %s; client CPU %q, proxies CPU %q; %s per run", dir, *clientCPU, *sutCPU, *duration)

	httpB, err := backend.StartHTTP("127.0.0.1:0", 0)
	if err != nil {
		log.Fatal(err)
	}
	defer httpB.Close()
	grpcB, err := backend.StartGRPC("127.0.0.1:0", 0)
	if err != nil {
		log.Fatal(err)
	}
	defer grpcB.Close()

	var idAddr, anchorsFile string
	if slices.ContainsFunc(kinds, func(k string) bool { return strings.Contains(k, "-mtls") }) {
		if idAddr, anchorsFile, err = identityService(ctx, dir); err != nil {
			log.Fatal(err)
		}
	}

	var rows []row
	var sweepRows []sweepRow
	idle := map[string][]sut.Status{}  // kind/proto → out, in at idle
	final := map[string][]sut.Status{} // after all runs and -linger
	extra := map[string][]finalExtra{}
	var problems []string
	for _, proto := range splitList(*protosFlag) {
		proto := sut.Protocol(proto)
		server := httpB.Addr
		if proto == sut.GRPC {
			server = grpcB.Addr
		}
		var chains []*sut.Chain
		for _, k := range kinds {
			var c *sut.Chain
			var err error
			if strings.HasSuffix(k, "-h2hop") && proto != sut.HTTP1 {
				continue // gRPC's hop is HTTP/2 either way
			}
			switch k {
			case "meridian":
				c, err = sut.Meridian(*proxyBin, proto, server, *sutCPU, dir, "")
			case "meridian-mtls":
				c, err = sut.MeridianMTLS(*proxyBin, proto, server, *sutCPU, dir, idAddr, anchorsFile, "")
			case "meridian-h2hop":
				if c, err = sut.Meridian(*proxyBin, proto, server, *sutCPU, dir, sut.HintH2); err == nil {
					c.Kind = k
				}
			case "meridian-mtls-h2hop":
				if c, err = sut.MeridianMTLS(*proxyBin, proto, server, *sutCPU, dir, idAddr, anchorsFile, sut.HintH2); err == nil {
					c.Kind = k
				}
			case "baseline":
				// The same chain from the other binary, under its own name
				// (its configs and logs go to a directory of their own).
				bdir := filepath.Join(dir, "baseline")
				if err = os.MkdirAll(bdir, 0o755); err == nil {
					if c, err = sut.Meridian(*baseline, proto, server, *sutCPU, bdir, ""); err == nil {
						c.Kind = "baseline"
					}
				}
			case "baseline-mtls":
				bdir := filepath.Join(dir, "baseline-mtls")
				if err = os.MkdirAll(bdir, 0o755); err == nil {
					if c, err = sut.MeridianMTLS(*baseline, proto, server, *sutCPU, bdir, idAddr, anchorsFile, ""); err == nil {
						c.Kind = "baseline-mtls"
					}
				}
			case "baseline-h2hop":
				bdir := filepath.Join(dir, k)
				if err = os.MkdirAll(bdir, 0o755); err == nil {
					if c, err = sut.Meridian(*baseline, proto, server, *sutCPU, bdir, sut.HintH2); err == nil {
						c.Kind = k
					}
				}
			case "baseline-mtls-h2hop":
				bdir := filepath.Join(dir, k)
				if err = os.MkdirAll(bdir, 0o755); err == nil {
					if c, err = sut.MeridianMTLS(*baseline, proto, server, *sutCPU, bdir, idAddr, anchorsFile, sut.HintH2); err == nil {
						c.Kind = k
					}
				}
			default:
				c, err = sut.Peer(k, proto, server, *sutCPU, dir)
			}
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s %s: cannot start: %v", k, proto, err))
				log.Print(problems[len(problems)-1])
				continue
			}
			chains = append(chains, c)
		}
		// Idle footprint: after start-up has settled, before any load.
		time.Sleep(time.Second)
		for _, c := range chains {
			idle[c.Kind+"/"+string(proto)] = statuses(c)
		}

		if *sweepFlag {
			targets := []target{{kind: "direct", addr: server}}
			for _, c := range chains {
				targets = append(targets, target{kind: c.Kind, addr: c.Entry, chain: c})
			}
			for _, t := range targets {
				if ctx.Err() == nil {
					sweepRows = append(sweepRows, sweep(ctx, proto, t))
				}
			}
		}
		for _, rate := range rates {
			if ctx.Err() != nil || *sweepFlag {
				break
			}
			targets := []target{{kind: "direct", addr: server}}
			for _, c := range chains {
				targets = append(targets, target{kind: c.Kind, addr: c.Entry, chain: c})
			}
			rows = append(rows, measureRate(ctx, proto, rate, targets)...)
			for _, c := range chains {
				for _, p := range c.Procs() {
					if exited, err := p.Exited(); exited {
						problems = append(problems, fmt.Sprintf("%s exited during the %v RPS runs: %v\n%s", p.Name, rate, err, p.LogTail(20)))
					}
				}
			}
		}
		// Leak check: every client has closed its connections; after -linger
		// a proxy should be back near its idle footprint (the peers' upstream
		// keep-alive pools may legitimately hold some connections open).
		lingerCPU := make([][]float64, len(chains))
		for i, c := range chains {
			for _, p := range c.Procs() {
				v, _ := p.CPUSeconds()
				lingerCPU[i] = append(lingerCPU[i], v)
			}
		}
		if *linger > 0 && ctx.Err() == nil {
			log.Printf("waiting %v with no load before the final leak check", *linger)
			select {
			case <-time.After(*linger):
			case <-ctx.Done():
			}
		}
		for i, c := range chains {
			key := c.Kind + "/" + string(proto)
			final[key] = statuses(c)
			for j, p := range c.Procs() {
				v, _ := p.CPUSeconds()
				after := finalExtra{goroutines: -1}
				if *linger > 0 {
					after.idleCores = (v - lingerCPU[i][j]) / linger.Seconds()
				}
				if isMeridian(c.Kind) {
					if g, ok, _ := sut.Scrape(ctx, "http://"+c.Admin[j]+"/metrics", "go_goroutines"); ok {
						after.goroutines = g
					}
				}
				extra[key] = append(extra[key], after)
			}
			if err := c.Stop(); err != nil {
				problems = append(problems, fmt.Sprintf("%s %s: %v", c.Kind, proto, err))
			}
		}
	}

	if *sweepFlag {
		printSweep(sweepRows)
		return
	}
	printReport(rows, idle, final, extra, kinds, problems, dir)
}

// finalExtra is what the leak check reads besides /proc/PID/status.
type finalExtra struct {
	idleCores  float64 // CPU used while idle during -linger
	goroutines float64 // meridian's go_goroutines; -1 for the peers
}

func statuses(c *sut.Chain) []sut.Status {
	var out []sut.Status
	for _, p := range c.Procs() {
		st, _ := p.Status()
		out = append(out, st)
	}
	return out
}

// client builds a request function aimed at addr, and a closer.
func client(proto sut.Protocol, addr string) (func(context.Context) error, func(), error) {
	if proto == sut.GRPC {
		cc, err := loadgen.GRPCConn(addr, sut.Authority)
		if err != nil {
			return nil, nil, err
		}
		return loadgen.GRPCHealth(cc), func() { cc.Close() }, nil
	}
	c := loadgen.HTTPClient(*concurrency)
	return loadgen.HTTPGet(c, "http://"+addr+"/", sut.Authority), c.CloseIdleConnections, nil
}

// target is one path under test at one rate: its client and accumulated
// measurements.
type target struct {
	kind  string
	addr  string
	chain *sut.Chain // nil for direct
	do    func(context.Context) error
	close func()

	res              *loadgen.Result
	cpu              []float64 // CPU seconds per hop, summed over slices
	cpuUnstalled     []float64 // the same over the slices the machine did not stall
	wallUnstalled    float64
	peak             []int64 // max VmHWM per hop over slices
	wall             float64 // seconds measured
	busy, ours, wait float64 // machine busy, our CPU, our run-queue wait (seconds)
	attempts         int
	sliceP99         []time.Duration
	stalled          []bool
}

// measureRate measures every target at rate. The measured duration is cut
// into -slices slices, taken round-robin across the targets (direct, meridian,
// nginx, haproxy, direct, ...), so a burst of outside load on a shared machine
// lands on all of them rather than on whichever happened to be running; each
// target's slices are merged into one histogram.
func measureRate(ctx context.Context, proto sut.Protocol, rate float64, targets []target) []row {
	n := max(1, *nSlices)
	slice := *duration / time.Duration(n)
	for i := range targets {
		t := &targets[i]
		var err error
		if t.do, t.close, err = client(proto, t.addr); err != nil {
			log.Fatal(err)
		}
		defer t.close()
		t.res = loadgen.NewResult(loadgen.Options{Rate: rate, Concurrency: *concurrency})
		hops := 0
		if t.chain != nil {
			hops = 2
		}
		t.cpu, t.cpuUnstalled, t.peak = make([]float64, hops), make([]float64, hops), make([]int64, hops)
		// Warm-up: opens the connections and warms caches, unmeasured.
		if *warmup > 0 {
			_, _ = loadgen.Run(ctx, loadgen.Options{Rate: rate, Duration: *warmup, Concurrency: *concurrency}, t.do)
		}
	}
	for s := 0; s < n && ctx.Err() == nil; s++ {
		for i := range targets {
			measureSlice(ctx, &targets[i], rate, slice)
		}
	}
	var rows []row
	for _, t := range targets {
		r := row{Kind: t.kind, Proto: proto, Rate: rate, Attempts: t.attempts, SliceP99: t.sliceP99, Stalled: t.stalled}
		if t.wall > 0 {
			r.Other = max(0, (t.busy-t.ours)/t.wall)
			r.Wait = 1000 * t.wait / t.wall
		}
		for i, p := range t.hopProcs() {
			cores := t.cpu[i] / t.wall
			ps := procStat{CPUCores: cores, CPUPerKRPS: cores / (rate / 1000), CPUPerKRPSUnstalled: -1, Peak: t.peak[i], Goroutines: -1}
			if t.wallUnstalled > 0 {
				ps.CPUPerKRPSUnstalled = t.cpuUnstalled[i] / t.wallUnstalled / (rate / 1000)
			}
			if st, err := p.Status(); err == nil {
				ps.FDs = st.FDs
			}
			if isMeridian(t.kind) {
				if g, ok, _ := sut.Scrape(ctx, "http://"+t.chain.Admin[i]+"/metrics", "go_goroutines"); ok {
					ps.Goroutines = g
				}
			}
			r.Hops = append(r.Hops, ps)
		}
		r.Sum = t.res.Summary()
		r.LagP99 = time.Duration(t.res.Lag.ValueAtQuantile(99)) * time.Microsecond
		r.Errs = t.res.ErrorString()
		log.Printf("%-8s %-5s %5.0f RPS: p50 %s p99 %s max %s ms, %d ok, %d errors %s (others %.2f cores, CPU wait %.1f ms/s)",
			t.kind, proto, rate, loadgen.Ms(r.Sum.P50), loadgen.Ms(r.Sum.P99), loadgen.Ms(r.Sum.Max),
			r.Sum.OK, r.Sum.Errors, r.Errs, r.Other, r.Wait)
		// Each slice's p99 in the log: a run's p99 is often one slice's stall,
		// and the slices show whether the others held.
		log.Printf("%-8s %-5s %5.0f RPS: slice p99s %s ms", t.kind, proto, rate, msList(t.sliceP99))
		rows = append(rows, r)
	}
	return rows
}

func (t *target) hopProcs() []*sut.Proc {
	if t.chain == nil {
		return nil
	}
	return t.chain.Procs()
}

// runDelay is the run-queue wait of this process and procs so far.
func runDelay(procs []*sut.Proc) float64 {
	d := sut.SelfRunDelay()
	for _, p := range procs {
		d += p.RunDelay()
	}
	return d
}

// measureSlice runs one slice against t and adds it to t's totals. At normal
// priority a slice during which other processes used more than -noisy cores
// is repeated, up to -retries times, keeping the quietest attempt: on a
// shared 2-core box a compile elsewhere easily adds milliseconds to a p99.
// Under SCHED_FIFO or SCHED_RR others only get the CPU time we leave idle, so their load
// does not count against a slice.
func measureSlice(ctx context.Context, t *target, rate float64, d time.Duration) {
	procs := t.hopProcs()
	type sample struct {
		res                    *loadgen.Result
		cpu                    []float64
		peak                   []int64
		wall, busy, ours, wait float64
		t0, t1                 time.Time
	}
	var best *sample
	for attempt := 0; attempt <= *retries && ctx.Err() == nil; attempt++ {
		t.attempts++
		sut.CollectNow() // the harness's GC runs here, never inside a slice
		cpu0 := make([]float64, len(procs))
		for i, p := range procs {
			_ = p.ResetPeak()
			cpu0[i], _ = p.CPUSeconds()
		}
		busy0, _ := sut.MachineBusySeconds()
		self0, _ := sut.SelfCPUSeconds()
		wait0 := runDelay(procs)
		t0 := time.Now()
		res, _ := loadgen.Run(ctx, loadgen.Options{Rate: rate, Duration: d, Concurrency: *concurrency}, t.do)
		sm := &sample{res: res, t0: t0, t1: time.Now(), cpu: make([]float64, len(procs)), peak: make([]int64, len(procs))}
		sm.wall = sm.t1.Sub(t0).Seconds()
		busy1, _ := sut.MachineBusySeconds()
		self1, _ := sut.SelfCPUSeconds()
		sm.wait = runDelay(procs) - wait0
		sm.busy, sm.ours = busy1-busy0, self1-self0
		for i, p := range procs {
			c1, _ := p.CPUSeconds()
			st, _ := p.Status()
			sm.cpu[i], sm.peak[i] = c1-cpu0[i], st.PeakRSS
			sm.ours += sm.cpu[i]
		}
		other := (sm.busy - sm.ours) / sm.wall
		if best == nil || other < (best.busy-best.ours)/best.wall {
			best = sm
		}
		if sut.Priority(*priority).RealTime() || other <= *noisy || attempt == *retries {
			break
		}
		log.Printf("  %s %.0f RPS: other processes used %.2f cores during a slice; repeating it", t.kind, rate, other)
	}
	if best == nil || best.res == nil {
		return
	}
	t.res.Merge(best.res)
	p99 := time.Duration(best.res.Latency.ValueAtQuantile(99)) * time.Microsecond
	t.sliceP99 = append(t.sliceP99, p99)
	worst, cpu := probes.worst(best.t0, best.t1, t.chain == nil)
	stalled := *stallThreshold > 0 && worst >= *stallThreshold
	t.stalled = append(t.stalled, stalled)
	if stalled {
		log.Printf("  %s %.0f RPS, slice %d: the machine stalled %s ms on CPU %d (slice p99 %s ms)", t.kind, rate, len(t.sliceP99), loadgen.Ms(worst), cpu, loadgen.Ms(p99))
	}
	for i := range procs {
		t.cpu[i] += best.cpu[i]
		if !stalled {
			t.cpuUnstalled[i] += best.cpu[i]
		}
		t.peak[i] = max(t.peak[i], best.peak[i])
	}
	t.wall += best.wall
	if !stalled {
		t.wallUnstalled += best.wall
	}
	t.busy += best.busy
	t.ours += best.ours
	t.wait += best.wait
}

func printReport(rows []row, idle, final map[string][]sut.Status, extra map[string][]finalExtra, kinds []string, problems []string, dir string) {
	direct := map[string]row{}
	for _, r := range rows {
		if r.Kind == "direct" {
			direct[fmt.Sprint(r.Proto, r.Rate)] = r
		}
	}
	ms := loadgen.Ms
	fmt.Printf("\n### Latency (ms, corrected for coordinated omission; +x = added over direct at the same quantile)\n\n")
	fmt.Println("| target | proto | RPS | achieved | p50 | p90 | p99 | max | +p50 | +p90 | +p99 | +max | +p99 slice median | stalled slices | +p99 slice median, unstalled | gen lag p99 | errors | other CPU | CPU wait ms/s | slices run |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		add := func(a, b time.Duration) string {
			if r.Kind == "direct" {
				return ""
			}
			return fmt.Sprintf("%+.3f", float64(a-b)/1e6)
		}
		d := direct[fmt.Sprint(r.Proto, r.Rate)]
		sliced, unstalled := "", ""
		if a, ok := r.addedP99(d); ok && r.Kind != "direct" {
			sliced = fmt.Sprintf("%+.3f", float64(a)/1e6)
		}
		if a, ok := r.addedP99Unstalled(d); ok && r.Kind != "direct" {
			unstalled = fmt.Sprintf("%+.3f", float64(a)/1e6)
		}
		fmt.Printf("| %s | %s | %.0f | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d/%d | %s | %s | %d | %.2f | %.1f | %d |\n",
			r.Kind, r.Proto, r.Rate, r.Sum.Rate, ms(r.Sum.P50), ms(r.Sum.P90), ms(r.Sum.P99), ms(r.Sum.Max),
			add(r.Sum.P50, d.Sum.P50), add(r.Sum.P90, d.Sum.P90), add(r.Sum.P99, d.Sum.P99), add(r.Sum.Max, d.Sum.Max),
			sliced, count(r.Stalled), len(r.Stalled), unstalled, ms(r.LagP99), r.Sum.Errors, r.Other, r.Wait, r.Attempts)
	}

	if *stallThreshold > 0 {
		fmt.Printf("\nStalled slices: slices during which a stall probe (SCHED_FIFO 99, pinned to the client's and the proxies' CPUs, waking every 10 ms) woke %v or more late (for the direct path, a probe on the client's CPUs): the machine (kernel or hypervisor) held the CPU from every process, the chain's or not. The unstalled median takes the pairs of slices (chain's and direct's) with no stall in either.\n", *stallThreshold)
	}
	fmt.Printf("\n### Proxy cost per hop during each run (CPU from /proc/PID/stat; peak = VmHWM, reset before each slice)\n\n")
	fmt.Println("| target | proto | RPS | out CPU cores | out cores/1k RPS | in CPU cores | in cores/1k RPS | out / in cores/1k RPS, unstalled slices | out peak RSS MB | in peak RSS MB | out/in fds | out/in goroutines |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		if len(r.Hops) != 2 {
			continue
		}
		o, i := r.Hops[0], r.Hops[1]
		gr := "n/a"
		if o.Goroutines >= 0 {
			gr = fmt.Sprintf("%.0f/%.0f", o.Goroutines, i.Goroutines)
		}
		unstalled := "n/a"
		if o.CPUPerKRPSUnstalled >= 0 {
			unstalled = fmt.Sprintf("%.3f / %.3f", o.CPUPerKRPSUnstalled, i.CPUPerKRPSUnstalled)
		}
		fmt.Printf("| %s | %s | %.0f | %.3f | %.3f | %.3f | %.3f | %s | %s | %s | %d/%d | %s |\n",
			r.Kind, r.Proto, r.Rate, o.CPUCores, o.CPUPerKRPS, i.CPUCores, i.CPUPerKRPS, unstalled,
			sut.MB(o.Peak), sut.MB(i.Peak), o.FDs, i.FDs, gr)
	}

	fmt.Printf("\n### Idle footprint: after start (before load), and %v after the last run (leak check)\n\n", *linger)
	fmt.Println("| target | proto | out idle RSS MB | in idle RSS MB | out/in idle fds | out/in threads | out RSS MB after | in RSS MB after | out/in fds after | out/in goroutines after | out/in idle CPU after (cores) |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, k := range kinds {
		for _, p := range splitList(*protosFlag) {
			key := k + "/" + p
			s, f, x := idle[key], final[key], extra[key]
			if len(s) != 2 || len(f) != 2 || len(x) != 2 {
				continue
			}
			gr := "n/a"
			if x[0].goroutines >= 0 {
				gr = fmt.Sprintf("%.0f/%.0f", x[0].goroutines, x[1].goroutines)
			}
			fmt.Printf("| %s | %s | %s | %s | %d/%d | %d/%d | %s | %s | %d/%d | %s | %.3f/%.3f |\n", k, p,
				sut.MB(s[0].RSS), sut.MB(s[1].RSS), s[0].FDs, s[1].FDs, s[0].Threads, s[1].Threads,
				sut.MB(f[0].RSS), sut.MB(f[1].RSS), f[0].FDs, f[1].FDs, gr, x[0].idleCores, x[1].idleCores)
		}
	}

	var totalErr int64
	for _, r := range rows {
		totalErr += r.Sum.Errors
		if r.Errs != "" {
			problems = append(problems, fmt.Sprintf("%s %s %.0f RPS: %s", r.Kind, r.Proto, r.Rate, r.Errs))
		}
	}
	if len(problems) > 0 {
		fmt.Printf("\n### Problems\n\n")
		for _, p := range problems {
			fmt.Println("- " + strings.ReplaceAll(p, "\n", "\n    "))
		}
	}
	fmt.Printf("\nLogs and configs: %s\n\n", dir)

	// The RESULT line: the figures the targets are stated in, at -result-rps.
	kv := []string{fmt.Sprintf("rps=%.0f", *resultRPS)}
	add := func(k string, v float64, format string) { kv = append(kv, k+"="+fmt.Sprintf(format, v)) }
	prefix := func(kind string, proto sut.Protocol) string {
		p := kind + "_"
		switch kind {
		case "meridian":
			p = "" // the proxy's own figures carry no prefix
		case "meridian-mtls":
			p = "mtls_"
		}
		if proto == sut.GRPC {
			p += "grpc_"
		}
		return p
	}
	for _, r := range rows {
		if r.Rate != *resultRPS {
			continue
		}
		if r.Kind == "direct" {
			add(prefix("meridian", r.Proto)+"direct_p99_ms", float64(r.Sum.P99)/1e6, "%.3f")
			continue
		}
		d := direct[fmt.Sprint(r.Proto, r.Rate)]
		a, _ := r.addedP99(d)
		add(prefix(r.Kind, r.Proto)+"added_p99_ms", float64(a)/1e6, "%.3f")
		if a, ok := r.addedP99Unstalled(d); ok {
			add(prefix(r.Kind, r.Proto)+"added_p99_unstalled_ms", float64(a)/1e6, "%.3f")
		}
		add(prefix(r.Kind, r.Proto)+"added_p50_ms", float64(r.Sum.P50-d.Sum.P50)/1e6, "%.3f")
	}
	for _, k := range kinds {
		p := prefix(k, "")
		if k == "meridian" {
			p = "proxy_"
		}
		var idleMax, peakMax int64
		cpuMax, cpuMaxUnstalled := 0.0, -1.0
		for key, s := range idle {
			if strings.HasPrefix(key, k+"/") {
				idleMax = max(idleMax, s[0].RSS, s[1].RSS)
			}
		}
		for _, r := range rows {
			if r.Kind == k && r.Rate == *resultRPS && len(r.Hops) == 2 {
				peakMax = max(peakMax, r.Hops[0].Peak, r.Hops[1].Peak)
				cpuMax = max(cpuMax, r.Hops[0].CPUPerKRPS, r.Hops[1].CPUPerKRPS)
				if r.Hops[0].CPUPerKRPSUnstalled >= 0 {
					cpuMaxUnstalled = max(cpuMaxUnstalled, r.Hops[0].CPUPerKRPSUnstalled, r.Hops[1].CPUPerKRPSUnstalled)
				}
			}
		}
		add(p+"idle_rss_mb", float64(idleMax)/(1<<20), "%.1f")
		add(p+"rss_mb", float64(peakMax)/(1<<20), "%.1f")
		add(p+"cpu_per_krps", cpuMax, "%.3f")
		if cpuMaxUnstalled >= 0 {
			add(p+"cpu_per_krps_unstalled", cpuMaxUnstalled, "%.3f")
		}
	}
	kv = append(kv, fmt.Sprintf("errors=%d", totalErr), fmt.Sprintf("problems=%d", len(problems)))
	fmt.Println("RESULT " + strings.Join(kv, " "))
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, f := range splitList(s) {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bad rate %q", f)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no rates")
	}
	slices.Sort(out)
	return out, nil
}

// identityService serves the identity API for the mTLS chain on the
// harness's CPU, from a new CA: a token is the service account it proves,
// in namespace bench. It returns the API's address and the trust anchors'
// PEM file.
func identityService(ctx context.Context, dir string) (addr, anchorsFile string, err error) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ca, err := identity.Generate(td)
	if err != nil {
		return "", "", err
	}
	v := identity.VerifierFunc(func(_ context.Context, tok []byte) (identity.Subject, error) {
		return identity.Subject{Namespace: "bench", ServiceAccount: strings.TrimSpace(string(tok))}, nil
	})
	g := grpc.NewServer()
	idpb.RegisterIdentityServer(g, identity.NewServer(ca, v, identity.Options{}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", err
	}
	go g.Serve(l)
	context.AfterFunc(ctx, g.Stop)
	var b []byte
	for _, c := range ca.Roots {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	anchorsFile = filepath.Join(dir, "trust-anchors.pem")
	return l.Addr().String(), anchorsFile, os.WriteFile(anchorsFile, b, 0o600)
}
