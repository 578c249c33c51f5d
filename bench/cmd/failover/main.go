// Command failover measures what a client sees when one of two replicas
// fails: client proxy → two server proxies (real meridian-proxy processes)
// → two HTTP backends. From -fault-at on, one backend either answers 500 at
// once (-mode 500) or is gone, its listener closed while its proxy stays up
// and registered (-mode down). The client sends open-loop at -rate for
// -duration through the client proxy's outbound listener. It reports the
// success rate overall and after the failing replica's ejection, the time
// from the fault to the first ejection (the client proxy's
// endpoint_ejections_total), the per-second error series, and one RESULT
// line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/bench/loadgen"
	"github.com/meridian-mesh/meridian/bench/sut"
)

var (
	proxyBin  = flag.String("proxy", "", "meridian-proxy binary (required)")
	mode      = flag.String("mode", "500", "how the failing replica fails: 500 (its backend answers 500 at once) or down (its backend's listener closed, its proxy up)")
	rate      = flag.Float64("rate", 1000, "requests per second")
	duration  = flag.Duration("duration", 60*time.Second, "measured duration")
	faultAt   = flag.Duration("fault-at", 5*time.Second, "when, into the run, the replica fails")
	service   = flag.Duration("service-time", time.Millisecond, "service time of both backends")
	clientCPU = flag.String("client-cpu", "0", "CPUs for this program (load generator + backends); empty: no pinning")
	sutCPU    = flag.String("sut-cpu", "1", "CPUs for the proxies; empty: no pinning")
	priority  = flag.String("priority", "normal", "scheduling of the harness and proxies: normal, nice (-20), fifo (SCHED_FIFO 10) or rr (SCHED_RR 10)")
	logDir    = flag.String("logdir", "", "where proxy logs go (default: a new temp dir)")
)

const authority = "failover.bench:8080"

func main() {
	flag.Parse()
	log.SetFlags(log.Ltime)
	if *proxyBin == "" {
		log.Fatal("-proxy is required")
	}
	if *mode != "500" && *mode != "down" {
		log.Fatalf("-mode %q: use 500 or down", *mode)
	}
	if *faultAt >= *duration {
		log.Fatalf("-fault-at %v must be within -duration %v", *faultAt, *duration)
	}
	ctx, stop, dir := sut.Harness("failover", *clientCPU, sut.Priority(*priority), *logDir)
	defer stop()
	if err := run(ctx, dir); err != nil {
		log.Fatal(err)
	}
}

// backend answers 200 after the service time, or 500 at once once failing.
type backend struct {
	addr    string
	srv     *http.Server
	failing atomic.Bool
	count   atomic.Int64
}

func startBackend() (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &backend{addr: ln.Addr().String()}
	b.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.count.Add(1)
		if b.failing.Load() {
			http.Error(w, "failing", http.StatusInternalServerError)
			return
		}
		time.Sleep(*service)
		w.Write([]byte("ok\n"))
	})}
	go b.srv.Serve(ln)
	return b, nil
}

// series counts outcomes per second of the run, by completion time.
type series struct {
	start time.Time
	mu    sync.Mutex
	ok    []int64
	fail  []int64
	done  []outcome // every completion, to judge "after ejection" at the end
}

type outcome struct {
	at time.Duration
	ok bool
}

func (s *series) record(ok bool) {
	at := time.Since(s.start)
	sec := int(at / time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.ok) <= sec {
		s.ok = append(s.ok, 0)
		s.fail = append(s.fail, 0)
	}
	if ok {
		s.ok[sec]++
	} else {
		s.fail[sec]++
	}
	s.done = append(s.done, outcome{at, ok})
}

func run(ctx context.Context, dir string) error {
	var backs [2]*backend
	for i := range backs {
		b, err := startBackend()
		if err != nil {
			return err
		}
		defer b.srv.Close()
		backs[i] = b
	}
	var ins []string
	var procs []*sut.Proc
	defer func() {
		for _, p := range procs {
			if err := p.Stop(10 * time.Second); err != nil {
				log.Printf("stopping %s: %v", p.Name, err)
			}
		}
	}()
	for i, b := range backs {
		_, in, admin, args, err := sut.MeridianArgs()
		if err != nil {
			return err
		}
		args = append(args, "--inbound-forward", b.addr)
		p, err := sut.StartMeridian(fmt.Sprintf("failover-server-%d", i), *sutCPU, dir, *proxyBin, admin, args)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		ins = append(ins, in)
	}
	out, _, admin, args, err := sut.MeridianArgs()
	if err != nil {
		return err
	}
	args = append(args, "--dst", authority+"="+strings.Join(ins, ","))
	client, err := sut.StartMeridian("failover-client", *sutCPU, dir, *proxyBin, admin, args)
	if err != nil {
		return err
	}
	procs = append(procs, client)

	c := loadgen.HTTPClient(256)
	defer c.CloseIdleConnections()
	get := loadgen.HTTPGet(c, "http://"+out+"/", authority)
	// A second of warm-up: both replicas measured before the fault.
	if _, err := loadgen.Run(ctx, loadgen.Options{Rate: *rate, Duration: time.Second, Concurrency: 256}, get); err != nil {
		return err
	}
	backs[0].count.Store(0)
	backs[1].count.Store(0)

	s := &series{start: time.Now()}
	do := func(ctx context.Context) error {
		err := get(ctx)
		s.record(err == nil)
		return err
	}
	// The fault, and the watch for the client proxy's first ejection.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var faultTime, ejectTime atomic.Int64 // ns since s.start; 0: not yet
	go func() {
		select {
		case <-time.After(time.Until(s.start.Add(*faultAt))):
		case <-runCtx.Done():
			return
		}
		if *mode == "500" {
			backs[1].failing.Store(true)
		} else {
			backs[1].srv.Close() // listener and connections: the process died
		}
		faultTime.Store(int64(time.Since(s.start)))
		log.Printf("fault (%s) at %v", *mode, time.Since(s.start).Round(time.Millisecond))
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
			}
			v, _, err := sut.Scrape(runCtx, "http://"+admin+"/metrics", "endpoint_ejections_total")
			if err == nil && v > 0 {
				ejectTime.Store(int64(time.Since(s.start)))
				log.Printf("first ejection at %v", time.Since(s.start).Round(time.Millisecond))
				return
			}
		}
	}()
	sut.CollectNow()
	lr, err := loadgen.Run(runCtx, loadgen.Options{Rate: *rate, Duration: *duration, Concurrency: 256}, do)
	cancel()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	for _, p := range procs {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("%s exited: %v\n%s", p.Name, err, p.LogTail(20))
		}
	}
	ejections, _, _ := sut.Scrape(ctx, "http://"+admin+"/metrics", "endpoint_ejections_total")

	s.mu.Lock()
	defer s.mu.Unlock()
	fault, eject := time.Duration(faultTime.Load()), time.Duration(ejectTime.Load())
	var all, allOK, after, afterOK int64
	for _, o := range s.done {
		all++
		if o.ok {
			allOK++
		}
		if eject > 0 && o.at >= eject {
			after++
			if o.ok {
				afterOK++
			}
		}
	}
	ratio := func(a, b int64) float64 {
		if b == 0 {
			return 0
		}
		return float64(a) / float64(b)
	}
	sum := lr.Summary()
	fmt.Printf("\n### Failover: two replicas, one failing (%s) from %v; %.0f RPS for %v through the client proxy\n\n", *mode, *faultAt, *rate, *duration)
	fmt.Println("| second | ok | failed |")
	fmt.Println("|---:|---:|---:|")
	for i := range s.ok {
		fmt.Printf("| %d | %d | %d |\n", i, s.ok[i], s.fail[i])
	}
	ejectMs := -1.0
	if eject > 0 && fault > 0 {
		ejectMs = float64(eject-fault) / float64(time.Millisecond)
	}
	fmt.Printf("\n- requests: %d, succeeded %.4f%%\n", all, 100*ratio(allOK, all))
	if eject > 0 {
		fmt.Printf("- after the first ejection (%v after the fault): %d requests, succeeded %.4f%%\n",
			time.Duration(ejectMs*float64(time.Millisecond)).Round(time.Millisecond), after, 100*ratio(afterOK, after))
	} else {
		fmt.Println("- no ejection was counted")
	}
	fmt.Printf("- ejections counted by the client proxy: %.0f\n", ejections)
	fmt.Printf("- backends served: healthy %d, failing %d\n", backs[0].count.Load(), backs[1].count.Load())
	fmt.Printf("- latency p50 %s p99 %s max %s ms; achieved %.0f RPS\n", loadgen.Ms(sum.P50), loadgen.Ms(sum.P99), loadgen.Ms(sum.Max), sum.Rate)
	if e := lr.ErrorString(); e != "" {
		fmt.Printf("- errors: %s\n", e)
	}
	fmt.Printf("\nLogs: %s\n\n", dir)
	fmt.Printf("RESULT mode=%s rps=%.0f duration_s=%.0f success=%.5f success_after_ejection=%.5f ejection_ms=%.0f ejections=%.0f errors=%d\n",
		*mode, *rate, duration.Seconds(), ratio(allOK, all), ratio(afterOK, after), ejectMs, ejections, all-allOK)
	return nil
}
