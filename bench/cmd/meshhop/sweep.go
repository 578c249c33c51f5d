package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/bench/loadgen"
	"github.com/meridian-mesh/meridian/bench/sut"
)

var (
	sweepFlag     = flag.Bool("sweep", false, "instead of -rates: find each chain's saturation rate (the highest rate, stepping by -sweep-step from -sweep-start, whose p99 stays under -sweep-p99 with 97% of the rate achieved and no errors, in one of two tries), then measure p99 at 80% of it")
	sweepStart    = flag.Float64("sweep-start", 1000, "first rate of the sweep (RPS)")
	sweepStep     = flag.Float64("sweep-step", 500, "rate step of the sweep (RPS)")
	sweepMax      = flag.Float64("sweep-max", 30000, "highest rate tried (RPS)")
	sweepP99      = flag.Duration("sweep-p99", 10*time.Millisecond, "p99 above which a chain counts as saturated")
	sweepDuration = flag.Duration("sweep-duration", 3*time.Second, "measured duration of each sweep step (after a -warmup at the same rate)")
)

// sweepRow is one target's saturation for one protocol.
type sweepRow struct {
	kind     string
	proto    sut.Protocol
	sat      float64 // highest rate that held; 0 if even -sweep-start did not
	steps    int     // rates tried
	at80     loadgen.Summary
	peakRSS  int64         // largest VmHWM of a hop at the saturation rate
	failedAt string        // what stopped the sweep
	cpuAtSat []float64     // cores per hop at the saturation rate
	p99AtSat time.Duration // p99 at the saturation rate
}

// sweep finds t's saturation rate, one target at a time (saturating one
// chain must not disturb the others' measurements), then measures it at 80%
// of that rate for twice -sweep-duration.
func sweep(ctx context.Context, proto sut.Protocol, t target) sweepRow {
	r := sweepRow{kind: t.kind, proto: proto}
	do, closeFn, err := client(proto, t.addr)
	if err != nil {
		log.Fatal(err)
	}
	defer closeFn()
	step := func(rate float64, d time.Duration) (loadgen.Summary, []float64, int64) {
		if *warmup > 0 {
			_, _ = loadgen.Run(ctx, loadgen.Options{Rate: rate, Duration: *warmup, Concurrency: *concurrency}, do)
		}
		procs := t.hopProcs()
		cpu0 := make([]float64, len(procs))
		for i, p := range procs {
			_ = p.ResetPeak()
			cpu0[i], _ = p.CPUSeconds()
		}
		sut.CollectNow()
		t0 := time.Now()
		res, _ := loadgen.Run(ctx, loadgen.Options{Rate: rate, Duration: d, Concurrency: *concurrency}, do)
		wall := time.Since(t0).Seconds()
		cores := make([]float64, len(procs))
		var peak int64
		for i, p := range procs {
			c1, _ := p.CPUSeconds()
			cores[i] = (c1 - cpu0[i]) / wall
			if st, err := p.Status(); err == nil {
				peak = max(peak, st.PeakRSS)
			}
		}
		if res == nil {
			return loadgen.Summary{}, cores, peak
		}
		return res.Summary(), cores, peak
	}
	for rate := *sweepStart; rate <= *sweepMax && ctx.Err() == nil; rate += *sweepStep {
		// A step that fails is tried once more: one burst of outside work
		// must not end a sweep.
		for try := 0; try < 2; try++ {
			r.steps++
			r.failedAt = ""
			s, cores, peak := step(rate, *sweepDuration)
			log.Printf("sweep %-13s %-5s %6.0f RPS: achieved %6.0f, p50 %s p99 %s ms, %d errors", t.kind, proto, rate, s.Rate, loadgen.Ms(s.P50), loadgen.Ms(s.P99), s.Errors)
			switch {
			case s.Errors > 0:
				r.failedAt = fmt.Sprintf("%.0f RPS: %d errors", rate, s.Errors)
			case s.Rate < 0.97*rate:
				r.failedAt = fmt.Sprintf("%.0f RPS: achieved %.0f", rate, s.Rate)
			case s.P99 > *sweepP99:
				r.failedAt = fmt.Sprintf("%.0f RPS: p99 %s ms", rate, loadgen.Ms(s.P99))
			}
			if r.failedAt == "" {
				r.sat, r.cpuAtSat, r.peakRSS, r.p99AtSat = rate, cores, peak, s.P99
				break
			}
		}
		if r.failedAt != "" {
			break
		}
	}
	if r.failedAt == "" {
		r.failedAt = fmt.Sprintf("none up to %.0f RPS", *sweepMax)
	}
	if r.sat > 0 && ctx.Err() == nil {
		r.at80, _, _ = step(0.8*r.sat, 2**sweepDuration)
	}
	return r
}

func printSweep(rows []sweepRow) {
	fmt.Printf("\n## Saturation: rate sweep (from %.0f RPS by %.0f, %v per step after a %v warm-up; saturated when p99 > %v, errors, or under 97%% of the rate achieved)\n\n",
		*sweepStart, *sweepStep, *sweepDuration, *warmup, *sweepP99)
	fmt.Println("| target | proto | saturation RPS | p99 there | what stopped it | p50 / p99 at 80% | out / in cores there | peak RSS MB there |")
	fmt.Println("|---|---|---:|---:|---|---|---|---:|")
	kv := []string{}
	for _, r := range rows {
		cores := make([]string, len(r.cpuAtSat))
		for i, c := range r.cpuAtSat {
			cores[i] = fmt.Sprintf("%.2f", c)
		}
		fmt.Printf("| %s | %s | %.0f | %s | %s | %s / %s | %s | %s |\n", r.kind, r.proto, r.sat, loadgen.Ms(r.p99AtSat), r.failedAt,
			loadgen.Ms(r.at80.P50), loadgen.Ms(r.at80.P99), strings.Join(cores, " / "), sut.MB(r.peakRSS))
		p := r.kind + "_"
		switch r.kind {
		case "meridian":
			p = ""
		case "meridian-mtls":
			p = "mtls_"
		}
		if r.proto == sut.GRPC {
			p += "grpc_"
		}
		kv = append(kv, fmt.Sprintf("%ssat_rps=%.0f", p, r.sat), fmt.Sprintf("%sp99_at_80pct_ms=%.3f", p, float64(r.at80.P99)/1e6))
		if r.kind != "direct" {
			kv = append(kv, fmt.Sprintf("%ssat_rss_mb=%.1f", p, float64(r.peakRSS)/(1<<20)))
		}
	}
	fmt.Println("\nRESULT sweep " + strings.Join(kv, " "))
}
