package main

// Closed-loop saturation: each peer's throughput with its core kept busy by
// C load generators (wrk for HTTP/1.1 and HTTPS, h2load for HTTP/2), which
// on the client core push three to four times what the Go open-loop
// generator can, so that the peer, not the generator, is what runs out.
// The backends are then nginx's (-backend nginx): the Go test servers cost
// more per request than the fastest peers and would be the limit instead.

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/meridian-mesh/meridian/bench/sut"
)

// closedRun is one generator run against one peer.
type closedRun struct {
	rps        float64 // successful requests per second
	cores      float64 // the peer's CPU over the run
	clientBusy float64 // the client CPUs' busy share over the run
	p99        string  // the generator's own (closed-loop: not corrected)
	errors     int64
}

// closedRow is a peer's runs for one protocol.
type closedRow struct {
	peer   string
	proto  protocol
	runs   []closedRun
	failed string // why a run failed (no more were made)
}

// median of f over the runs.
func (r *closedRow) median(f func(closedRun) float64) float64 {
	var v []float64
	for _, x := range r.runs {
		v = append(v, f(x))
	}
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// coreRPS is the rate a whole core would carry at the runs' CPU cost per
// request (the median of rps / cores): a peer whose core was not kept
// busy (the client CPUs ran out first: nginx and HAProxy, on two cores)
// is judged on it too.
func (r *closedRow) coreRPS() float64 {
	return r.median(func(x closedRun) float64 {
		if x.cores <= 0 {
			return 0
		}
		return x.rps / x.cores
	})
}

// usPerRequest is the peer's CPU time per request, in microseconds.
func (x closedRun) usPerRequest() float64 {
	if x.rps <= 0 {
		return 0
	}
	return x.cores / x.rps * 1e6
}

// closedSaturation runs the generators against every peer for each
// protocol, the peers in turn, -closed-reps times, -closed long each,
// after a -warmup run of each.
func closedSaturation(ctx context.Context, peers []*running, protos []protocol) []*closedRow {
	var rows []*closedRow
	for _, proto := range protos {
		if proto == pMixed {
			continue // no C generator alternates protocols
		}
		byPeer := map[string]*closedRow{}
		for _, r := range peers {
			if proto != pHTTP1 && r.kind == "evloop" {
				continue // plaintext only
			}
			byPeer[r.kind] = &closedRow{peer: r.kind, proto: proto}
			rows = append(rows, byPeer[r.kind])
		}
		for rep := 0; rep < *closedReps && ctx.Err() == nil; rep++ {
			for _, r := range peers {
				row := byPeer[r.kind]
				if row == nil {
					continue
				}
				if row.failed != "" {
					continue
				}
				if rep == 0 && *warmup > 0 {
					// Unmeasured, as the open-loop runs' warm-up: the
					// first run would count connections' set-up, the
					// collector's first cycles and cold caches.
					if _, err := closedOnce(ctx, proto, r, *warmup); err != nil {
						log.Printf("closed-loop %s %s warm-up: %v", r.kind, proto, err)
					}
				}
				x, err := closedOnce(ctx, proto, r, *closedDur)
				if err != nil {
					// The others go on; this peer's row says why it has none.
					log.Printf("closed-loop %s %s: %v", r.kind, proto, err)
					row.failed = strings.SplitN(err.Error(), "\n", 2)[0]
					continue
				}
				row.runs = append(row.runs, x)
				log.Printf("closed %-8s %-5s run %d: %.0f RPS, %.2f cores (%.1f us/request), client CPUs %.0f%% busy, p99 %s, %d errors",
					r.kind, proto, rep, x.rps, x.cores, x.usPerRequest(), 100*x.clientBusy, x.p99, x.errors)
			}
		}
	}
	return rows
}

// closedOnce runs the protocol's generator against r once, for d.
func closedOnce(ctx context.Context, proto protocol, r *running, d time.Duration) (closedRun, error) {
	secs := strconv.Itoa(max(1, int(d.Seconds())))
	var args []string
	switch proto {
	case pHTTP1, pHTTPS:
		url := "http://" + r.plain + "/api/x"
		if proto == pHTTPS {
			url = "https://" + r.tls + "/api/x"
		}
		args = []string{"wrk", "-t1", "-c" + strconv.Itoa(*closedConns), "-d" + secs + "s", "--latency", "-H", "Host: " + serverName, url}
	case pH2:
		// A few connections with many streams each, as browsers and
		// HTTP/2 clients open them.
		args = []string{"h2load", "-c" + strconv.Itoa(*closedH2Conns), "-m" + strconv.Itoa(*closedStreams), "-D" + secs,
			"-H", ":authority: " + serverName, "https://" + r.tls + "/api/x"}
	default:
		return closedRun{}, fmt.Errorf("no closed-loop generator for %q", proto)
	}
	if *clientCPU != "" {
		args = append([]string{"taskset", "-c", *clientCPU}, args...)
	}
	sut.CollectNow()
	cpu0, _ := r.proc.CPUSeconds()
	busy0, total0 := sut.CPUTicks(*clientCPU)
	t0 := time.Now()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	wall := time.Since(t0).Seconds()
	cpu1, _ := r.proc.CPUSeconds()
	busy1, total1 := sut.CPUTicks(*clientCPU)
	if err != nil {
		return closedRun{}, fmt.Errorf("%s: %v\n%s", args, err, out)
	}
	x := closedRun{cores: (cpu1 - cpu0) / wall}
	if total1 > total0 {
		x.clientBusy = (busy1 - busy0) / (total1 - total0)
	}
	if proto == pH2 {
		err = parseH2load(string(out), &x)
	} else {
		err = parseWrk(string(out), &x)
	}
	if err != nil {
		return closedRun{}, fmt.Errorf("%v\n%s", err, out)
	}
	return x, nil
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP99     = regexp.MustCompile(`(?m)^\s+99%\s+(\S+)`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkSockErr = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkTotal   = regexp.MustCompile(`(\d+) requests in ([0-9.]+)(m?s)`)
	h2Done     = regexp.MustCompile(`requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	h2Finished = regexp.MustCompile(`finished in ([0-9.]+)(m?s),`)
	h2Status   = regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
	h2Proto    = regexp.MustCompile(`Application protocol: (\S+)`)
)

// parseWrk reads wrk's report: successful requests per second (its total
// less non-2xx answers, over its time), p99, errors.
func parseWrk(out string, x *closedRun) error {
	m := wrkRPS.FindStringSubmatch(out)
	t := wrkTotal.FindStringSubmatch(out)
	if m == nil || t == nil {
		return fmt.Errorf("wrk printed no rate")
	}
	total, _ := strconv.ParseFloat(t[1], 64)
	secs, _ := strconv.ParseFloat(t[2], 64)
	if t[3] == "ms" {
		secs /= 1000
	}
	if p := wrkP99.FindStringSubmatch(out); p != nil {
		x.p99 = p[1]
	}
	var non2xx int64
	if n := wrkNon2xx.FindStringSubmatch(out); n != nil {
		non2xx, _ = strconv.ParseInt(n[1], 10, 64)
	}
	x.errors = non2xx
	if s := wrkSockErr.FindStringSubmatch(out); s != nil {
		for _, f := range s[1:] {
			v, _ := strconv.ParseInt(f, 10, 64)
			x.errors += v
		}
	}
	if secs > 0 {
		x.rps = (total - float64(non2xx)) / secs
	}
	return nil
}

// parseH2load reads h2load's report; every answer must have come over h2.
func parseH2load(out string, x *closedRun) error {
	if p := h2Proto.FindStringSubmatch(out); p == nil || p[1] != "h2" {
		return fmt.Errorf("h2load did not speak h2")
	}
	d, f, s := h2Done.FindStringSubmatch(out), h2Finished.FindStringSubmatch(out), h2Status.FindStringSubmatch(out)
	if d == nil || f == nil || s == nil {
		return fmt.Errorf("h2load printed no totals")
	}
	ok2xx, _ := strconv.ParseFloat(s[1], 64)
	for _, v := range append(d[2:], s[2:]...) {
		n, _ := strconv.ParseInt(v, 10, 64)
		x.errors += n
	}
	secs, _ := strconv.ParseFloat(f[1], 64)
	if f[2] == "ms" {
		secs /= 1000
	}
	if secs > 0 {
		x.rps = ok2xx / secs
	}
	x.p99 = "-" // h2load gives no percentiles of its request times
	return nil
}

func printClosed(rows []*closedRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Printf("\n## Closed-loop saturation: wrk -c %d (HTTP/1.1, HTTPS), h2load -c %d -m %d (h2), %v per run, %d runs per peer in turn; medians\n\n",
		*closedConns, *closedH2Conns, *closedStreams, *closedDur, *closedReps)
	fmt.Println("| peer | proto | RPS (median) | RPS (each run) | cores | one core's worth RPS | us CPU per request | client CPUs busy | p99 (closed loop) | errors |")
	fmt.Println("|---|---|---:|---|---:|---:|---:|---:|---|---:|")
	for _, r := range rows {
		var each []string
		var errs int64
		p99 := ""
		for _, x := range r.runs {
			each = append(each, fmt.Sprintf("%.0f", x.rps))
			errs += x.errors
			p99 = x.p99
		}
		rps := r.median(func(x closedRun) float64 { return x.rps })
		cores := r.median(func(x closedRun) float64 { return x.cores })
		us := r.median(closedRun.usPerRequest)
		busy := r.median(func(x closedRun) float64 { return x.clientBusy })
		if r.failed != "" {
			each = append(each, "failed: "+r.failed)
		}
		fmt.Printf("| %s | %s | %.0f | %s | %.2f | %.0f | %.1f | %.0f%% | %s | %d |\n", r.peer, r.proto, rps, strings.Join(each, ", "), cores, r.coreRPS(), us, 100*busy, p99, errs)
		fmt.Printf("RESULT gateway-closed peer=%s proto=%s rps=%.0f cores=%.2f core_rps=%.0f us_per_request=%.1f client_busy=%.2f runs=%d errors=%d\n",
			r.peer, r.proto, rps, cores, r.coreRPS(), us, busy, len(r.runs), errs)
	}
	// The throughput target: at least 0.8× nginx's, above both Go
	// peers', no request failed.
	for _, p := range []protocol{pHTTP1, pHTTPS, pH2} {
		var m, ng *closedRow
		others := map[string]*closedRow{}
		for _, r := range rows {
			if r.proto != p {
				continue
			}
			switch r.peer {
			case "meridian":
				m = r
			case "nginx":
				ng = r
			case "caddy", "traefik":
				others[r.peer] = r
			}
		}
		if m == nil || ng == nil {
			continue
		}
		rps := func(r *closedRow) float64 { return r.median(func(x closedRun) float64 { return x.rps }) }
		ratio, coreRatio := rps(m)/max(rps(ng), 1), m.coreRPS()/max(ng.coreRPS(), 1)
		met := ratio >= 0.8 && coreRatio >= 0.8
		kv := []string{"proto=" + string(p), fmt.Sprintf("rps_vs_nginx=%.2f", ratio), fmt.Sprintf("core_rps_vs_nginx=%.2f", coreRatio)}
		for _, g := range []string{"caddy", "traefik"} {
			if o := others[g]; o != nil {
				kv = append(kv, fmt.Sprintf("rps_vs_%s=%.2f", g, rps(m)/max(rps(o), 1)), fmt.Sprintf("core_rps_vs_%s=%.2f", g, m.coreRPS()/max(o.coreRPS(), 1)))
				met = met && rps(m) > rps(o) && m.coreRPS() > o.coreRPS()
			}
		}
		for _, x := range m.runs {
			met = met && x.errors == 0
		}
		kv = append(kv, fmt.Sprintf("target_met=%t", met))
		fmt.Println("RESULT gateway-closed-targets " + strings.Join(kv, " "))
	}
}

// nginxBackends serves the three backends from one nginx process on the
// client CPUs: "ok\n" on each port, keep-alive, at a fraction of the Go
// test server's cost per request.
func nginxBackends(dir string) ([]string, func(), error) {
	d := filepath.Join(dir, "backends")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return nil, nil, err
	}
	var addrs []string
	for range 3 {
		p, err := sut.FreePort()
		if err != nil {
			return nil, nil, err
		}
		addrs = append(addrs, sut.Addr(p))
	}
	path := filepath.Join(d, "nginx.conf")
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, err
	}
	err = nginxBackendConf.Execute(f, struct {
		Dir   string
		Addrs []string
	}{d, addrs})
	f.Close()
	if err != nil {
		return nil, nil, err
	}
	p, err := sut.Start("backends", *clientCPU, dir, "nginx", "-p", d, "-c", path)
	if err != nil {
		return nil, nil, err
	}
	for _, a := range addrs {
		if err := sut.WaitHTTP200(p, "http://"+a+"/", 10*time.Second); err != nil {
			p.Stop(time.Second)
			return nil, nil, err
		}
	}
	return addrs, func() { p.Stop(5 * time.Second) }, nil
}

var nginxBackendConf = template.Must(template.New("backends").Parse(`daemon off;
master_process off;
worker_processes 1;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path {{.Dir}};
    proxy_temp_path {{.Dir}};
    fastcgi_temp_path {{.Dir}};
    uwsgi_temp_path {{.Dir}};
    scgi_temp_path {{.Dir}};
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {
{{- range .Addrs}}
        listen {{.}};
{{- end}}
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
`))
