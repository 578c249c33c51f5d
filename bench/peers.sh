#!/usr/bin/env bash
# Builds the Go peers of the gateway benchmark, Caddy and Traefik, each from
# its wrapper module (bench/peers/caddy, bench/peers/traefik: their versions
# are those go.mod's) into a cache, once per version: a second run finds
# them and prints their paths.
#
#   bench/peers.sh            # → $PEERS_CACHE/caddy-<v>, $PEERS_CACHE/traefik-<v>
#
# PEERS_CACHE defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/meridian-bench-peers.
# A cold build downloads and compiles some 600 modules (Traefik's providers
# and ACME DNS clients): 15–30 min on two busy cores (Traefik: 19 min here).
set -euo pipefail
peers="$(cd "$(dirname "$0")/peers" && pwd)"
cache=${PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meridian-bench-peers}
mkdir -p "$cache"
for tool in github.com/caddyserver/caddy/v2/cmd/caddy github.com/traefik/traefik/v3/cmd/traefik; do
	name=${tool##*/}
	cd "$peers/$name"
	mod=$(go list -m -f '{{.Path}}' "${tool%/cmd/*}")
	ver=$(go list -m -f '{{.Version}}' "$mod")
	bin="$cache/$name-$ver"
	if [ ! -x "$bin" ]; then
		echo "building $name $ver into $bin" >&2
		# Stripped and without cgo, as both projects ship their binaries.
		CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$bin.tmp" "$tool"
		mv "$bin.tmp" "$bin"
	fi
	echo "$bin"
done
