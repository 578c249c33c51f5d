#!/usr/bin/env bash
# Runs Meridian's proxy benchmarks: meshed-hop latency and cost against nginx
# and HAProxy, balancing with one slow endpoint, then failover with one
# failing replica of two. Output goes to the terminal and to $OUT. Bounded:
# every run has a fixed rate and duration.
#
#   bench/run.sh                      # full run, 10 s per measurement, failover 2×60 s (~10 min)
#   DURATION=1s WARMUP=0.5s FAILOVER_DURATION=10s bench/run.sh   # CI smoke (~2 min)
#
# Environment: DURATION, WARMUP, RATES (default 100,1000,5000), SWEEP (0: no
# saturation sweep), SWEEP_STEP (RPS, default 1000), SWEEP_DURATION (default 2s),
# BALANCE_RUNS (default 10), BALANCE_DURATION (default 5s), FAILOVER_DURATION
# (default 60s; must exceed the 5 s fault time), PEERS
# (default nginx,haproxy), PROTOCOLS (default http1,grpc), RETRIES (repeat a
# run disturbed by other processes, default 1), OUT (default
# /tmp/meridian-bench), CLIENT_CPU / SUT_CPU (default 0 / 1), PRIORITY
# (default rr: the harness, the backends and every proxy run SCHED_RR so
# builds and tests that share the machine cannot delay a request, with turns
# between the threads of one CPU, which a proxy holding a processor needs;
# fifo: SCHED_FIFO, without the turns, bench/README.md; use normal
# on a dedicated machine to measure plain CFS scheduling), BASELINE (another
# meridian-proxy binary, e.g. built from the commit before a change: meshhop
# measures it as target "baseline" in the same interleaved slices), H2_HOP
# (default 1: also the HTTP/1.1 chains with the h2 hint a cluster gives a
# meshed pod, one HTTP/2 connection between the proxies; 0: not),
# SWEEP_TRIES (tries of a failing sweep step, default 2), SWEEP_SLICES (2 s
# slices at 80% of saturation, default 5), STALL_THRESHOLD (default 5ms: a
# slice during which a probe at SCHED_FIFO 99 on a pinned CPU woke that late
# is reported as stalled by the machine; 0: no probes), PAUSE_DAMON (1: turn
# the kernel's DAMON monitors off for the run, as root; bench/README.md, "Host
# stalls").
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
RATES=${RATES:-100,1000,5000}
PEERS=${PEERS-nginx,haproxy}
PROTOCOLS=${PROTOCOLS:-http1,grpc}
RETRIES=${RETRIES:-1}
OUT=${OUT:-/tmp/meridian-bench}
CLIENT_CPU=${CLIENT_CPU-0}
SUT_CPU=${SUT_CPU-1}
PRIORITY=${PRIORITY:-rr}
BASELINE=${BASELINE:-}
H2_HOP=${H2_HOP:-1}
PAUSE_DAMON=${PAUSE_DAMON:-0}
mkdir -p "$OUT"

# DAMON's monitoring threads (kdamond), where a kernel runs them (a VM's
# memory reclaim, say), walk memory for milliseconds at a time without giving
# the CPU up, even to real-time threads: 1-17 ms stalls of every chain
# (bench/README.md, "Host stalls"). PAUSE_DAMON=1 turns each running one off
# for the run and back on when the script ends.
damon_paused=()
resume_damon() {
	local s
	for s in "${damon_paused[@]}"; do echo on >"$s" || echo "warning: could not turn $s back on" >&2; done
	damon_paused=()
}
trap resume_damon EXIT
trap 'exit 130' INT TERM
damon_state=none
for s in /sys/kernel/mm/damon/admin/kdamonds/*/state; do
	[ -r "$s" ] && [ "$(cat "$s")" = on ] || continue
	if [ "$PAUSE_DAMON" = 1 ]; then
		if ! echo off 2>/dev/null >"$s"; then
			echo "warning: could not turn $s off (PAUSE_DAMON needs root); measuring with it on" >&2
			damon_state=on
			continue
		fi
		damon_paused+=("$s")
		damon_state=paused
	else
		damon_state=on
		echo "note: DAMON ($s) is on and stalls the CPUs now and then; PAUSE_DAMON=1 turns it off for the run" >&2
	fi
done

# The peers and taskset. A fresh machine has neither nginx nor HAProxy.
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v taskset >/dev/null || need+=(util-linux) # taskset, chrt
if ((${#need[@]})); then
	echo "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ "$(nproc)" -lt 2 ]; then
	echo "warning: $(nproc) CPU; load generator and proxies will share it" >&2
	CLIENT_CPU= SUT_CPU=
fi

# As the Makefile and the images build it: no libc, no grpc request tracing
# (proxy/sidecar/README.md, Memory).
CGO_ENABLED=0 go build -tags grpcnotrace -o "$OUT/meridian-proxy" ./cmd/meridian-proxy
go build -o "$OUT/meshhop" ./bench/cmd/meshhop
go build -o "$OUT/balance" ./bench/cmd/balance
go build -o "$OUT/failover" ./bench/cmd/failover

{
	echo "## Machine"
	echo
	echo "- nproc: $(nproc)"
	echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "- kernel: $(uname -r)"
	echo "- $(go version)"
	echo "- nginx: $(nginx -v 2>&1 | sed 's/.*: //'), HAProxy: $(haproxy -v | head -1 | awk '{print $3}')"
	echo "- meridian-proxy: built from $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git status --porcelain -- cmd proxy 2>/dev/null | grep -q . && echo ' + uncommitted changes in cmd/ proxy/')"
	echo "- date: $(date -u +%FT%TZ); scheduling: $PRIORITY; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- DAMON (kdamond): $damon_state; stall probes: ${STALL_THRESHOLD:-5ms} (0: none)"
	echo
} | tee "$OUT/machine.md"

h2hop=()
[ "$H2_HOP" = 1 ] && h2hop=(-h2-hop)
"$OUT/meshhop" -proxy "$OUT/meridian-proxy" ${BASELINE:+-baseline "$BASELINE"} "${h2hop[@]}" -peers "$PEERS" -protocols "$PROTOCOLS" \
	-rates "$RATES" -duration "$DURATION" -warmup "$WARMUP" -retries "$RETRIES" -stall-threshold "${STALL_THRESHOLD:-5ms}" \
	-client-cpu "$CLIENT_CPU" -sut-cpu "$SUT_CPU" -priority "$PRIORITY" -logdir "$OUT/meshhop-logs" 2>&1 |
	tee "$OUT/meshhop.txt"

# Saturation: each chain's highest rate with p99 under 10 ms, and its p99 at
# 80% of that (SWEEP=0 skips it; ~5 min).
if [ "${SWEEP:-1}" != 0 ]; then
	"$OUT/meshhop" -proxy "$OUT/meridian-proxy" -peers "$PEERS" -protocols "$PROTOCOLS" -sweep \
		-sweep-step "${SWEEP_STEP:-1000}" -sweep-duration "${SWEEP_DURATION:-2s}" -sweep-tries "${SWEEP_TRIES:-2}" \
		-sweep-slices "${SWEEP_SLICES:-5}" -stall-threshold "${STALL_THRESHOLD:-5ms}" -warmup "$WARMUP" -linger 0s \
		-client-cpu "$CLIENT_CPU" -sut-cpu "$SUT_CPU" -priority "$PRIORITY" -logdir "$OUT/sweep-logs" 2>&1 |
		tee "$OUT/sweep.txt"
fi

# The balancing target is stated over 10 runs (median and worst): BALANCE_RUNS
# fresh proxies per balancer and protocol, each BALANCE_DURATION.
"$OUT/balance" -proxy "$OUT/meridian-proxy" -protocols "$PROTOCOLS" -runs "${BALANCE_RUNS:-10}" \
	-duration "${BALANCE_DURATION:-5s}" -warmup "$WARMUP" \
	-client-cpu "$CLIENT_CPU" -sut-cpu "$SUT_CPU" -priority "$PRIORITY" -logdir "$OUT/balance-logs" 2>&1 |
	tee "$OUT/balance.txt"

# One replica of two failing: 60 s each (FAILOVER_DURATION), as the target is stated.
for mode in 500 down; do
	"$OUT/failover" -proxy "$OUT/meridian-proxy" -mode "$mode" -duration "${FAILOVER_DURATION:-60s}" \
		-client-cpu "$CLIENT_CPU" -sut-cpu "$SUT_CPU" -priority "$PRIORITY" -logdir "$OUT/failover-logs" 2>&1 |
		tee "$OUT/failover-$mode.txt"
done

echo
echo "results in $OUT:"
if [ "${SWEEP:-1}" != 0 ]; then grep -h '^RESULT' "$OUT/sweep.txt"; fi
grep -h '^RESULT' "$OUT/meshhop.txt" "$OUT/balance.txt" "$OUT/failover-500.txt" "$OUT/failover-down.txt"
