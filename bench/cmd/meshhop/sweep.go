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
	sweepFlag     = flag.Bool("sweep", false, "instead of -rates: find each chain's saturation rate (the highest rate, stepping by -sweep-step from -sweep-start, whose p99 (p90 if the machine stalled during the step: -stall-threshold) stays under -sweep-p99 with 97% of the rate achieved and no errors, in one of -sweep-tries tries), then measure p99 at 80% of it in -sweep-slices slices")
	sweepStart    = flag.Float64("sweep-start", 1000, "first rate of the sweep (RPS)")
	sweepStep     = flag.Float64("sweep-step", 500, "rate step of the sweep (RPS)")
	sweepMax      = flag.Float64("sweep-max", 30000, "highest rate tried (RPS)")
	sweepP99      = flag.Duration("sweep-p99", 10*time.Millisecond, "p99 above which a chain counts as saturated")
	sweepDuration = flag.Duration("sweep-duration", 3*time.Second, "measured duration of each sweep step (after a -warmup at the same rate)")
	sweepTries    = flag.Int("sweep-tries", 2, "tries of a sweep step before its rate counts as past saturation: a stall of the machine's (bench/README.md, \"Host stalls\") spoils one short step, not several")
	sweepSlices   = flag.Int("sweep-slices", 2, "runs of -sweep-duration at 80% of the saturation rate; the p99 over all of them and the median of their p99s are reported")
)

// sweepRow is one target's saturation for one protocol.
type sweepRow struct {
	kind        string
	proto       sut.Protocol
	sat         float64 // highest rate that held; 0 if even -sweep-start did not
	steps       int     // rates tried
	at80        loadgen.Summary
	at80P99s    []time.Duration // p99 of each slice at 80%
	at80Stalled []bool          // whether the machine stalled during each slice at 80%
	peakRSS     int64           // largest VmHWM of a hop at the saturation rate
	failedAt    string          // what stopped the sweep
	cpuAtSat    []float64       // cores per hop at the saturation rate
	p99AtSat    time.Duration   // p99 at the saturation rate
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
	step := func(rate float64, d time.Duration) (*loadgen.Result, []float64, int64, time.Duration) {
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
		t1 := time.Now()
		wall := t1.Sub(t0).Seconds()
		stall, _ := probes.worst(t0, t1, t.chain == nil)
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
			res = loadgen.NewResult(loadgen.Options{Rate: rate, Duration: d})
		}
		return res, cores, peak, stall
	}
	for rate := *sweepStart; rate <= *sweepMax && ctx.Err() == nil; rate += *sweepStep {
		// A step that fails is tried again: one burst of outside work must
		// not end a sweep.
		for try := 0; try < max(1, *sweepTries); try++ {
			r.steps++
			r.failedAt = ""
			res, cores, peak, stall := step(rate, *sweepDuration)
			s := res.Summary()
			note := ""
			if *stallThreshold > 0 && stall >= *stallThreshold {
				note = fmt.Sprintf(" (the machine stalled %s ms)", loadgen.Ms(stall))
			}
			log.Printf("sweep %-13s %-5s %6.0f RPS: achieved %6.0f, p50 %s p90 %s p99 %s ms, %d errors%s", t.kind, proto, rate, s.Rate, loadgen.Ms(s.P50), loadgen.Ms(s.P90), loadgen.Ms(s.P99), s.Errors, note)
			// A step during which the machine stalled (a probe woke late,
			// which nothing a chain does can cause) is judged by its p90: a
			// stall of 40-100 ms delays a few percent of a 2 s step's
			// requests, not a tenth, unless the chain lacks the headroom to
			// catch up, which is what the sweep looks for.
			tail, tailName := s.P99, "p99"
			if note != "" {
				tail, tailName = s.P90, "p90 (the machine stalled)"
			}
			switch {
			case s.Errors > 0:
				r.failedAt = fmt.Sprintf("%.0f RPS: %d errors", rate, s.Errors)
			case s.Rate < 0.97*rate:
				r.failedAt = fmt.Sprintf("%.0f RPS: achieved %.0f", rate, s.Rate)
			case tail > *sweepP99:
				r.failedAt = fmt.Sprintf("%.0f RPS: %s %s ms", rate, tailName, loadgen.Ms(tail))
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
		all := loadgen.NewResult(loadgen.Options{Rate: 0.8 * r.sat})
		for i := 0; i < max(1, *sweepSlices) && ctx.Err() == nil; i++ {
			res, _, _, stall := step(0.8*r.sat, *sweepDuration)
			all.Merge(res)
			r.at80P99s = append(r.at80P99s, time.Duration(res.Latency.ValueAtQuantile(99))*time.Microsecond)
			r.at80Stalled = append(r.at80Stalled, *stallThreshold > 0 && stall >= *stallThreshold)
		}
		r.at80 = all.Summary()
		log.Printf("sweep %-13s %-5s %6.0f RPS (80%%): p50 %s p99 %s ms, slice p99s %s ms, %d stalled", t.kind, proto, 0.8*r.sat, loadgen.Ms(r.at80.P50), loadgen.Ms(r.at80.P99), msList(r.at80P99s), count(r.at80Stalled))
	}
	return r
}

func printSweep(rows []sweepRow) {
	fmt.Printf("\n## Saturation: rate sweep (from %.0f RPS by %.0f, %v per step after a %v warm-up; saturated when p99 (p90 in a step the machine stalled) > %v, errors, or under 97%% of the rate achieved)\n\n",
		*sweepStart, *sweepStep, *sweepDuration, *warmup, *sweepP99)
	fmt.Println("| target | proto | saturation RPS | p99 there | what stopped it | p50 / p99 at 80% | slice p99 median at 80% | stalled slices at 80% | slice p99 median at 80%, unstalled | out / in cores there | peak RSS MB there |")
	fmt.Println("|---|---|---:|---:|---|---|---:|---:|---:|---|---:|")
	kv := []string{}
	for _, r := range rows {
		cores := make([]string, len(r.cpuAtSat))
		for i, c := range r.cpuAtSat {
			cores[i] = fmt.Sprintf("%.2f", c)
		}
		unstalled := "n/a"
		if q, ok := r.unstalledAt80(); ok {
			unstalled = loadgen.Ms(q)
		}
		fmt.Printf("| %s | %s | %.0f | %s | %s | %s / %s | %s | %d/%d | %s | %s | %s |\n", r.kind, r.proto, r.sat, loadgen.Ms(r.p99AtSat), r.failedAt,
			loadgen.Ms(r.at80.P50), loadgen.Ms(r.at80.P99), loadgen.Ms(loadgen.Median(r.at80P99s)), count(r.at80Stalled), len(r.at80Stalled), unstalled,
			strings.Join(cores, " / "), sut.MB(r.peakRSS))
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
		kv = append(kv, fmt.Sprintf("%ssat_rps=%.0f", p, r.sat), fmt.Sprintf("%sp99_at_80pct_ms=%.3f", p, float64(r.at80.P99)/1e6),
			fmt.Sprintf("%sp99_at_80pct_slice_median_ms=%.3f", p, float64(loadgen.Median(r.at80P99s))/1e6))
		if q, ok := r.unstalledAt80(); ok {
			kv = append(kv, fmt.Sprintf("%sp99_at_80pct_unstalled_ms=%.3f", p, float64(q)/1e6))
		}
		if r.kind != "direct" {
			kv = append(kv, fmt.Sprintf("%ssat_rss_mb=%.1f", p, float64(r.peakRSS)/(1<<20)))
		}
	}
	fmt.Println("\nRESULT sweep " + strings.Join(kv, " "))
}

// msList is ds in milliseconds, space-separated.
func msList(ds []time.Duration) string {
	ms := make([]string, len(ds))
	for i, d := range ds {
		ms[i] = loadgen.Ms(d)
	}
	return strings.Join(ms, " ")
}

// unstalledAt80 is the median p99 of the slices at 80% during which the
// machine did not stall; false if it stalled during all of them.
func (r sweepRow) unstalledAt80() (time.Duration, bool) {
	var q []time.Duration
	for i, d := range r.at80P99s {
		if i >= len(r.at80Stalled) || !r.at80Stalled[i] {
			q = append(q, d)
		}
	}
	return loadgen.Median(q), len(q) > 0
}

// count is how many of bs are true.
func count(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}
