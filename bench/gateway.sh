#!/usr/bin/env bash
# The edge gateway's benchmarks (bench/README.md, "Edge gateway"): the gateway
# against nginx, HAProxy, Caddy and Traefik, each on one pinned core routing
# /api/ to three backends, over HTTP/1.1, HTTPS and HTTP/2 (saturation sweep
# and p99 at a fixed rate); its RSS with 10,000 routes; each peer's
# closed-loop saturation (wrk and h2load keeping its core busy, against nginx
# backends: gatewaybench -closed); and 1,000 HTTPRoutes applied at once to a
# real kube-apiserver until all serve. Output goes to
# the terminal and to $OUT; every RESULT line is repeated at the end.
#
#   bench/gateway.sh                                   # ~25 min (plus a first build of the Go peers)
#   DURATION=2s SWEEP_DURATION=0.5s CLOSED=1s CLOSED_REPS=1 bench/gateway.sh   # smoke run, ~9 min
#
# Environment: DURATION (fixed-rate time per peer and protocol, default 15s,
# in SLICES slices, default 5: the p99 target is judged on their median),
# RATE (default 1000), SWEEP_DURATION (per step, default 2s; 0: no sweep),
# SWEEP_STEP (default 1000), PEERS (default meridian,nginx,haproxy,caddy,traefik),
# PROTOCOLS (default http1,https,h2), ROUTES (RSS, default 10000),
# APPLY_ROUTES (default 1000; 0 skips the kube-apiserver part), OUT
# (default /tmp/meridian-gateway-bench), CLIENT_CPU / SUT_CPU (default 0 / 1),
# SUT_SHARE (each peer held to this share of its CPU by a CFS quota, e.g. 0.3:
# the load generator's core then saturates no peer before the peer's own
# share does; default 0, the whole CPU), PRIORITY (default rr, or fifo, as
# bench/run.sh; normal with SUT_SHARE, which real-time tasks would escape),
# CLOSED (closed-loop run length, default 5s; 0 skips them), CLOSED_REPS
# (runs per peer and protocol, the peers in turn, default 5).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/meridian-gateway-bench}
SUT_SHARE=${SUT_SHARE:-0}
share="$SUT_SHARE of a CPU"
if [ "$SUT_SHARE" = 0 ]; then PRIORITY=${PRIORITY:-rr} share="a whole CPU"; else PRIORITY=${PRIORITY:-normal}; fi
mkdir -p "$OUT"
rm -f "$OUT/closed.txt" "$OUT/routes.txt" # an earlier run's

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v taskset >/dev/null || need+=(util-linux)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
if ((${#need[@]})); then
	echo "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# nginx-light carries ssl and http2 (both needed here).
mapfile -t gopeers < <(bench/peers.sh)

CGO_ENABLED=0 go build -tags grpcnotrace -o "$OUT/meridian-proxy" ./cmd/meridian-proxy
go build -o "$OUT/gatewaybench" ./bench/cmd/gatewaybench

{
	echo "- $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); kernel $(uname -r); $(go version)"
	echo "- nginx $(nginx -v 2>&1 | sed 's/.*: //'), HAProxy $(haproxy -v | head -1 | awk '{print $3}'), ${gopeers[*]##*/}"
	echo "- meridian-proxy from $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git status --porcelain -- cmd proxy 2>/dev/null | grep -q . && echo ' + uncommitted changes')"
	echo "- $(date -u +%FT%TZ); scheduling $PRIORITY; each peer on $share; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/machine.md"

"$OUT/gatewaybench" -proxy "$OUT/meridian-proxy" -caddy "${gopeers[0]}" -traefik "${gopeers[1]}" \
	-peers "${PEERS:-meridian,nginx,haproxy,caddy,traefik}" -protocols "${PROTOCOLS:-http1,https,h2}" \
	-rate "${RATE:-1000}" -duration "${DURATION:-15s}" -slices "${SLICES:-5}" -sweep-duration "${SWEEP_DURATION:-2s}" \
	-sweep-step "${SWEEP_STEP:-1000}" -rss-routes "${ROUTES:-10000}" \
	-client-cpu "${CLIENT_CPU-0}" -sut-cpu "${SUT_CPU-1}" -sut-share "$SUT_SHARE" -priority "$PRIORITY" -logdir "$OUT/logs" 2>&1 |
	tee "$OUT/gatewaybench.txt"

if [ "${CLOSED:-5s}" != 0 ]; then
	# Normal scheduling: the C generators run as children of the harness.
	"$OUT/gatewaybench" -proxy "$OUT/meridian-proxy" -caddy "${gopeers[0]}" -traefik "${gopeers[1]}" \
		-peers "${PEERS:-meridian,nginx,haproxy,caddy,traefik}" -protocols "${PROTOCOLS:-http1,https,h2}" \
		-backend nginx -closed "${CLOSED:-5s}" -closed-reps "${CLOSED_REPS:-5}" -duration 0 -sweep-duration 0 -rss-routes 0 \
		-client-cpu "${CLIENT_CPU-0}" -sut-cpu "${SUT_CPU-1}" -priority normal -logdir "$OUT/logs-closed" 2>&1 |
		tee "$OUT/closed.txt"
fi

if [ "${APPLY_ROUTES:-1000}" != 0 ]; then
	KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS:-$(hack/kube-assets.sh)}
	KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS go test -run '^$' -bench RoutesApplied -benchtime 1x \
		./bench/gatewayscale -args -routes "${APPLY_ROUTES:-1000}" 2>&1 | tee "$OUT/routes.txt"
fi

echo
echo "results in $OUT:"
results=("$OUT/gatewaybench.txt")
[ -f "$OUT/closed.txt" ] && results+=("$OUT/closed.txt")
[ -f "$OUT/routes.txt" ] && results+=("$OUT/routes.txt") # not with APPLY_ROUTES=0
grep -h '^RESULT' "${results[@]}"
