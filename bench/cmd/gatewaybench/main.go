// Command gatewaybench measures the edge gateway (`meridian-proxy gateway`)
// against nginx, HAProxy, Caddy and Traefik doing the same job in one run:
// each peer, alone on one pinned core, routes the prefix /api/ to three
// loopback backends, and is measured for HTTP/1.1 keep-alive (plaintext),
// HTTPS (TLS terminated at the peer, HTTP/1.1) and HTTP/2 over TLS:
//
//   - saturation: a rate sweep, one peer at a time, until p99 passes
//     -sweep-p99, requests fail, or the achieved rate falls under 97% of
//     the offered one (throughput stopped growing);
//   - p50/p99 at a fixed rate (-rate), measured in -slices slices taken in
//     turn across the peers so that outside load lands on all of them; the
//     p99 target is judged on the median of the slices' p99s (a slice a
//     burst of outside work hits sets the pooled p99);
//   - RSS of the gateway with -rss-routes routes (file mode) after it
//     served a request on a sample of them.
//
// Each peer/protocol ends with a `RESULT gateway ...` line, the targets with
// `RESULT gateway-targets ...`. bench/gateway.sh builds what it needs.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meridian-mesh/meridian/bench/backend"
	"github.com/meridian-mesh/meridian/bench/loadgen"
	"github.com/meridian-mesh/meridian/bench/sut"
)

var (
	proxyBin      = flag.String("proxy", "", "meridian-proxy binary")
	baseBin       = flag.String("baseline", "", "another meridian-proxy binary, measured as peer baseline (add it to -peers) for a same-run A/B")
	caddyBin      = flag.String("caddy", "", "caddy binary (bench/peers.sh builds it)")
	traefikBin    = flag.String("traefik", "", "traefik binary (bench/peers.sh builds it)")
	evloopBin     = flag.String("evloop", "", "bench/cmd/evloop binary: the Go event loop's ceiling (HTTP/1.1 only; bench/README.md)")
	peersFlag     = flag.String("peers", "meridian,nginx,haproxy,caddy,traefik", "peers to measure, comma-separated (also: baseline, loop: -proxy with --event-loop, goroutines: -proxy with --event-loop=false, evloop)")
	protosFlag    = flag.String("protocols", "http1,https,h2", "protocols: http1 (plaintext keep-alive), https (TLS terminated, HTTP/1.1), h2 (HTTP/2 over TLS), mixed (http1 and h2 in turn, request by request)")
	rate          = flag.Float64("rate", 1000, "the fixed rate (RPS) whose p99 is compared")
	duration      = flag.Duration("duration", 6*time.Second, "measured time at the fixed rate per peer and protocol (cut in -slices)")
	nSlices       = flag.Int("slices", 3, "slices of -duration, taken in turn across the peers")
	warmup        = flag.Duration("warmup", time.Second, "unmeasured run at the same rate before each measured one")
	concurrency   = flag.Int("concurrency", 256, "cap on requests in flight")
	sweepStart    = flag.Float64("sweep-start", 1000, "first rate of the saturation sweep (RPS)")
	sweepStep     = flag.Float64("sweep-step", 1000, "rate step of the sweep (RPS)")
	sweepMax      = flag.Float64("sweep-max", 40000, "highest rate tried (RPS)")
	sweepP99      = flag.Duration("sweep-p99", 10*time.Millisecond, "p99 above which a peer counts as saturated")
	sweepDur      = flag.Duration("sweep-duration", 2*time.Second, "measured time of each sweep step (0: no sweep)")
	rssRoutes     = flag.Int("rss-routes", 10000, "routes in the gateway snapshot whose RSS is measured (0: skip)")
	rssSettle     = flag.Duration("rss-settle", 20*time.Second, "wait after the sampled requests before the RSS figure is read")
	rssSample     = flag.Int("rss-sample", 500, "routes of those that get a request before RSS is read")
	clientCPU     = flag.String("client-cpu", "0", "CPUs for this program (load generator + backends); empty: no pinning")
	sutCPU        = flag.String("sut-cpu", "1", "CPUs for the peers; empty: no pinning")
	sutShare      = flag.Float64("sut-share", 0, "above 0: each peer gets at most this share of one CPU (a CFS quota of its own; bench/README.md), so that it saturates before the load generator does")
	priority      = flag.String("priority", "normal", "scheduling of the harness and peers: normal, nice, fifo or rr (see bench/README.md)")
	bodySize      = flag.Int("body", 0, "request body bytes: above 0, each request is a POST with that many bytes (Content-Length); 0: GET")
	logDir        = flag.String("logdir", "", "where configs and logs go (default: a new temp dir)")
	backendKind   = flag.String("backend", "go", "the three backends: go (test servers in this program) or nginx (one nginx on -client-cpu: cheaper per request, for -closed)")
	closedDur     = flag.Duration("closed", 0, "above 0: closed-loop saturation, each run this long: wrk (http1, https) and h2load (h2) on -client-cpu against each peer (closed.go)")
	closedReps    = flag.Int("closed-reps", 5, "closed-loop runs per peer and protocol, the peers in turn")
	closedConns   = flag.Int("closed-conns", 64, "wrk's connections")
	closedH2Conns = flag.Int("closed-h2-conns", 4, "h2load's connections")
	closedStreams = flag.Int("closed-streams", 32, "h2load's streams in flight per connection")
)

type protocol string

const (
	pHTTP1 protocol = "http1"
	pHTTPS protocol = "https"
	pH2    protocol = "h2"
	// pMixed alternates plaintext HTTP/1.1 and HTTP/2 over TLS request by
	// request: the loops and the goroutine path busy at once (a loop that
	// holds its processor must leave the other goroutines theirs).
	pMixed protocol = "mixed"
)

// client is the request function for proto against peer r, and how to
// close its connections.
func client(proto protocol, r *running, roots *x509.CertPool) (func(context.Context) error, func(), error) {
	tlsConf := &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}
	var (
		rt  http.RoundTripper
		url string
	)
	if proto == pMixed {
		do1, close1, err := client(pHTTP1, r, roots)
		if err != nil {
			return nil, nil, err
		}
		do2, close2, err := client(pH2, r, roots)
		if err != nil {
			return nil, nil, err
		}
		var n atomic.Uint64
		do := func(ctx context.Context) error {
			if n.Add(1)%2 == 0 {
				return do1(ctx)
			}
			return do2(ctx)
		}
		return do, func() { close1(); close2() }, nil
	}
	dial := (&net.Dialer{Timeout: 2 * time.Second}).DialContext
	switch proto {
	case pHTTP1:
		rt, url = loadgen.HTTPClient(*concurrency).Transport, "http://"+r.plain+"/api/x"
	case pHTTPS:
		tlsConf.NextProtos = []string{"http/1.1"}
		rt = &http.Transport{DialContext: dial, TLSClientConfig: tlsConf, MaxIdleConns: *concurrency, MaxIdleConnsPerHost: *concurrency,
			IdleConnTimeout: 90 * time.Second, DisableCompression: true}
		url = "https://" + r.tls + "/api/x"
	case pH2:
		// HTTP/2 only; one connection, more only when the peer's stream
		// limit is reached: as a browser or an HTTP/2 client library does.
		var only http.Protocols
		only.SetHTTP2(true)
		rt = &http.Transport{DialContext: dial, TLSClientConfig: tlsConf, Protocols: &only, DisableCompression: true,
			IdleConnTimeout: 90 * time.Second}
		url = "https://" + r.tls + "/api/x"
	default:
		return nil, nil, fmt.Errorf("unknown protocol %q (http1, https, h2, mixed)", proto)
	}
	c := &http.Client{Transport: rt}
	wantProto := map[protocol]int{pHTTP1: 1, pHTTPS: 1, pH2: 2}[proto]
	payload := bytes.Repeat([]byte("b"), *bodySize)
	do := func(ctx context.Context) error {
		method, body := http.MethodGet, io.Reader(nil)
		if len(payload) > 0 {
			method, body = http.MethodPost, bytes.NewReader(payload)
		}
		req, err := http.NewRequestWithContext(ctx, method, url, body)
		if err != nil {
			return err
		}
		req.Host = serverName
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		if resp.ProtoMajor != wantProto {
			return fmt.Errorf("answered over %s, want HTTP/%d", resp.Proto, wantProto)
		}
		return err
	}
	closeFn := func() {
		if t, ok := rt.(interface{ CloseIdleConnections() }); ok {
			t.CloseIdleConnections()
		}
	}
	return do, closeFn, nil
}

// row is one peer's figures for one protocol.
type row struct {
	peer         string
	proto        protocol
	sat          float64 // highest rate that held
	maxAchieved  float64 // highest rate achieved in the sweep
	p99AtSat     time.Duration
	coresAtSat   float64
	rssAtSat     int64
	stoppedBy    string
	fixed        *loadgen.Result
	fixedCores   float64 // CPU cores over the fixed-rate slices
	fixedSeconds float64
	sliceP99     []time.Duration // each fixed-rate slice's p99
}

// p99Median is the median of the slices' p99s: one slice hit by a burst
// of outside work (on this VM, single slices of every peer, nginx's
// included, reach 30-60 ms) moves it no more than any other slice, where
// it sets the pooled p99.
func (r *row) p99Median() time.Duration { return loadgen.Median(r.sliceP99) }

func main() {
	flag.Parse()
	if *sutShare > 0 && sut.Priority(*priority).RealTime() {
		log.Fatal("-sut-share: the CFS quota does not hold real-time (-priority fifo or rr) tasks back")
	}
	ctx, stop, dir := sut.Harness("gatewaybench", *clientCPU, sut.Priority(*priority), *logDir)
	defer stop()
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.Printf("configs and logs in %s; load average %s", dir, loadavg())

	var backends []string
	switch *backendKind {
	case "go":
		for range 3 {
			b, err := backend.StartHTTP("127.0.0.1:0", 0)
			if err != nil {
				log.Fatal(err)
			}
			defer b.Close()
			backends = append(backends, b.Addr)
		}
	case "nginx":
		var stopBackends func()
		var err error
		if backends, stopBackends, err = nginxBackends(dir); err != nil {
			log.Fatalf("nginx backends: %v", err)
		}
		defer stopBackends()
	default:
		log.Fatalf("-backend %q: go or nginx", *backendKind)
	}
	c, err := newCerts(dir)
	if err != nil {
		log.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(c.certPEM)

	bins := map[string]string{"meridian": *proxyBin, "baseline": *baseBin, "nginx": "nginx", "haproxy": "haproxy", "caddy": *caddyBin, "traefik": *traefikBin, "evloop": *evloopBin, "loop": *proxyBin, "goroutines": *proxyBin}
	var peers []*running
	for _, kind := range split(*peersFlag) {
		bin := bins[kind]
		if bin == "" {
			log.Fatalf("peer %s: give its binary (-proxy, -baseline, -caddy, -traefik)", kind)
		}
		r, err := startPeer(kind, bin, *sutCPU, dir, backends, c)
		if err != nil {
			log.Fatal(err)
		}
		if *sutShare > 0 {
			if err := r.proc.LimitCPU(*sutShare); err != nil {
				r.proc.Stop(time.Second)
				log.Fatalf("%s: %v", kind, err)
			}
		}
		defer func() {
			if err := r.proc.Stop(10 * time.Second); err != nil {
				log.Printf("%s: %v", r.kind, err)
			}
		}()
		peers = append(peers, r)
	}
	protos := []protocol{}
	for _, p := range split(*protosFlag) {
		protos = append(protos, protocol(p))
	}
	// Every peer answers every protocol before anything is measured.
	for _, r := range peers {
		for _, proto := range protos {
			do, closeFn, err := client(proto, r, roots)
			if err != nil {
				log.Fatal(err)
			}
			if err := waitOK(ctx, r, do); err != nil {
				log.Fatalf("%s %s: %v\n%s", r.kind, proto, err, r.proc.LogTail(20))
			}
			closeFn()
		}
		st, _ := r.proc.Status()
		log.Printf("%s ready: plain %s, tls %s, idle RSS %s MB", r.kind, r.plain, r.tls, sut.MB(st.RSS))
	}

	var rows []*row
	for _, proto := range protos {
		byPeer := map[string]*row{}
		for _, r := range peers {
			rw := &row{peer: r.kind, proto: proto, fixed: loadgen.NewResult(loadgen.Options{Rate: *rate})}
			byPeer[r.kind] = rw
			rows = append(rows, rw)
			if *sweepDur > 0 {
				sweep(ctx, proto, r, roots, rw)
			}
		}
		// The fixed rate, slices in turn across the peers.
		slice := *duration / time.Duration(max(1, *nSlices))
		for i := 0; i < max(1, *nSlices) && ctx.Err() == nil && *duration > 0; i++ {
			for _, r := range peers {
				rw := byPeer[r.kind]
				do, closeFn, err := client(proto, r, roots)
				if err != nil {
					log.Fatal(err)
				}
				if *warmup > 0 {
					_, _ = loadgen.Run(ctx, loadgen.Options{Rate: *rate, Duration: *warmup, Concurrency: *concurrency}, do)
				}
				sut.CollectNow()
				cpu0, _ := r.proc.CPUSeconds()
				t0 := time.Now()
				res, _ := loadgen.Run(ctx, loadgen.Options{Rate: *rate, Duration: slice, Concurrency: *concurrency}, do)
				wall := time.Since(t0).Seconds()
				cpu1, _ := r.proc.CPUSeconds()
				closeFn()
				if res == nil {
					continue
				}
				rw.fixed.Merge(res)
				rw.fixedCores += cpu1 - cpu0
				rw.fixedSeconds += wall
				s := res.Summary()
				rw.sliceP99 = append(rw.sliceP99, s.P99)
				log.Printf("fixed %-8s %-5s %5.0f RPS slice %d: p50 %s p99 %s ms, %d errors", r.kind, proto, *rate, i, loadgen.Ms(s.P50), loadgen.Ms(s.P99), s.Errors)
			}
		}
	}
	if *duration > 0 || *sweepDur > 0 {
		printRows(rows)
		printTargets(rows, protos)
	}
	if *closedDur > 0 {
		printClosed(closedSaturation(ctx, peers, protos))
	}

	if *rssRoutes > 0 && *proxyBin != "" && ctx.Err() == nil {
		if err := measureRSS(ctx, *proxyBin, *sutCPU, dir, backends); err != nil {
			log.Fatal(err)
		}
	}
	log.Printf("load average after: %s", loadavg())
}

// sweep finds r's saturation rate for proto.
func sweep(ctx context.Context, proto protocol, r *running, roots *x509.CertPool, rw *row) {
	for rate := *sweepStart; rate <= *sweepMax && ctx.Err() == nil; rate += *sweepStep {
		// A step that fails is tried once more: one burst of outside work
		// must not end a sweep.
		failed := ""
		for try := 0; try < 2; try++ {
			do, closeFn, err := client(proto, r, roots)
			if err != nil {
				log.Fatal(err)
			}
			if *warmup > 0 {
				_, _ = loadgen.Run(ctx, loadgen.Options{Rate: rate, Duration: *warmup, Concurrency: *concurrency}, do)
			}
			_ = r.proc.ResetPeak()
			sut.CollectNow()
			cpu0, thr0 := cpuOf(r)
			t0 := time.Now()
			res, _ := loadgen.Run(ctx, loadgen.Options{Rate: rate, Duration: *sweepDur, Concurrency: *concurrency}, do)
			wall := time.Since(t0).Seconds()
			cpu1, thr1 := cpuOf(r)
			closeFn()
			if res == nil {
				return
			}
			s := res.Summary()
			rw.maxAchieved = max(rw.maxAchieved, s.Rate)
			log.Printf("sweep %-8s %-5s %6.0f RPS: achieved %6.0f, p50 %s p99 %s ms, %d errors, %.2f cores (held back %.0f%% of the time) %s", r.kind, proto, rate, s.Rate, loadgen.Ms(s.P50), loadgen.Ms(s.P99), s.Errors, (cpu1-cpu0)/wall, 100*(thr1-thr0)/wall, res.ErrorString())
			switch {
			case s.Errors > 0:
				failed = fmt.Sprintf("%.0f RPS: %d errors", rate, s.Errors)
			case s.Rate < 0.97*rate:
				failed = fmt.Sprintf("%.0f RPS: achieved %.0f", rate, s.Rate)
			case s.P99 > *sweepP99:
				failed = fmt.Sprintf("%.0f RPS: p99 %s ms", rate, loadgen.Ms(s.P99))
			default:
				failed = ""
			}
			if failed == "" {
				rw.sat, rw.p99AtSat, rw.coresAtSat = rate, s.P99, (cpu1-cpu0)/wall
				if st, err := r.proc.Status(); err == nil {
					rw.rssAtSat = st.PeakRSS
				}
				break
			}
		}
		if failed != "" {
			rw.stoppedBy = failed
			return
		}
	}
	rw.stoppedBy = fmt.Sprintf("none up to %.0f RPS", *sweepMax)
}

// cpuOf is r's CPU seconds so far and the seconds its CPU share held it back.
func cpuOf(r *running) (cpu, throttled float64) {
	cpu, _ = r.proc.CPUSeconds()
	return cpu, r.proc.Throttled()
}

// waitOK polls do until it succeeds (the peer is up and routes), for 30 s.
func waitOK(ctx context.Context, r *running, do func(context.Context) error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := do(rctx)
		cancel()
		if err == nil {
			return nil
		}
		if exited, xerr := r.proc.Exited(); exited {
			return fmt.Errorf("exited (%v) while starting: %w", xerr, err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func printRows(rows []*row) {
	share := "a whole CPU each"
	if *sutShare > 0 {
		share = fmt.Sprintf("%.2f of a CPU each", *sutShare)
	}
	fmt.Printf("\n## Edge gateway, peers on %s: saturation (sweep from %.0f by %.0f RPS, %v per step after %v warm-up; saturated when p99 > %v, errors, or < 97%% achieved) and p99 at %.0f RPS (%v in %d slices)\n\n",
		share, *sweepStart, *sweepStep, *sweepDur, *warmup, *sweepP99, *rate, *duration, *nSlices)
	fmt.Println("| peer | proto | saturation RPS | most achieved RPS | p99 there ms | cores there | one core's worth RPS | peak RSS MB there | what stopped it | p50 / p99 ms at fixed rate | p99 slice median ms | cores per 1k RPS at fixed rate | errors |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|")
	for _, r := range rows {
		s := r.fixed.Summary()
		cpk := 0.0
		if r.fixedSeconds > 0 {
			cpk = r.fixedCores / r.fixedSeconds / (*rate / 1000)
		}
		fmt.Printf("| %s | %s | %.0f | %.0f | %s | %.2f | %.0f | %s | %s | %s / %s | %s | %.3f | %d |\n", r.peer, r.proto, r.sat, r.maxAchieved,
			loadgen.Ms(r.p99AtSat), r.coresAtSat, r.capacity(), sut.MB(r.rssAtSat), r.stoppedBy, loadgen.Ms(s.P50), loadgen.Ms(s.P99), loadgen.Ms(r.p99Median()), cpk, s.Errors)
		fmt.Printf("RESULT gateway peer=%s proto=%s sat_rps=%.0f max_achieved_rps=%.0f p99_at_sat_ms=%.3f cores_at_sat=%.2f core_rps=%.0f rss_at_sat_mb=%s fixed_rps=%.0f p50_ms=%.3f p99_ms=%.3f p99_slice_median_ms=%.3f cores_per_krps=%.3f errors=%d body_bytes=%d cpu_share=%.2f\n",
			r.peer, r.proto, r.sat, r.maxAchieved, ms(r.p99AtSat), r.coresAtSat, r.capacity(), sut.MB(r.rssAtSat), *rate, ms(s.P50), ms(s.P99), ms(r.p99Median()), cpk, s.Errors, *bodySize, *sutShare)
	}
}

// printTargets states the targets per protocol: saturation at least
// 0.8× nginx's and above both Go peers'; p99 at the fixed rate no worse
// than nginx's, judged on the slices' median (p99Median; the pooled ratio
// is shown too).
func printTargets(rows []*row, protos []protocol) {
	find := func(peer string, p protocol) *row {
		for _, r := range rows {
			if r.peer == peer && r.proto == p {
				return r
			}
		}
		return nil
	}
	for _, p := range protos {
		m, ng := find("meridian", p), find("nginx", p)
		if m == nil {
			continue
		}
		kv := []string{"proto=" + string(p)}
		// A peer that did not hold even the sweep's first rate has no
		// saturation figure to compare: the target is not shown to be met.
		met := m.sat > 0 && ng != nil && ng.sat > 0
		if ng != nil && ng.sat > 0 {
			ratio := m.sat / ng.sat
			kv = append(kv, fmt.Sprintf("sat_vs_nginx=%.2f", ratio), fmt.Sprintf("core_rps_vs_nginx=%.2f", m.capacity()/max(ng.capacity(), 1)))
			met = met && ratio >= 0.8 && m.capacity() >= 0.8*ng.capacity()
			p99m, p99n := m.fixed.Summary().P99, ng.fixed.Summary().P99
			medm, medn := m.p99Median(), ng.p99Median()
			kv = append(kv, fmt.Sprintf("p99_vs_nginx=%.2f", float64(p99m)/float64(max(p99n, 1))),
				fmt.Sprintf("p99_slice_median_vs_nginx=%.2f", float64(medm)/float64(max(medn, 1))))
			met = met && medm <= medn
		}
		for _, g := range []string{"caddy", "traefik"} {
			if o := find(g, p); o != nil {
				kv = append(kv, fmt.Sprintf("sat_vs_%s=%.2f", g, m.sat/max(o.sat, 1)), fmt.Sprintf("core_rps_vs_%s=%.2f", g, m.capacity()/max(o.capacity(), 1)))
				met = met && m.sat >= o.sat && m.capacity() > o.capacity()
			}
		}
		kv = append(kv, fmt.Sprintf("targets_met=%t", met))
		fmt.Println("RESULT gateway-targets " + strings.Join(kv, " "))
	}
}

// capacity is the rate one full core would carry at the CPU cost per
// request measured at the saturation rate. On two cores the load generator
// (one core, with the backends) runs out before the fastest peers do, and
// then the sweep's saturation is the generator's; this is the peer's.
func (r *row) capacity() float64 {
	if r.coresAtSat <= 0 {
		return 0
	}
	return r.sat / r.coresAtSat
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
