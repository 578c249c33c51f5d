#!/usr/bin/env bash
# Copies the Gateway API's CRDs of both release channels from the
# sigs.k8s.io/gateway-api module, byte for byte:
#
#   config/crd/standard     -> charts/meridian/crds/gateway-api/
#     (GatewayClass, Gateway, HTTPRoute, GRPCRoute, ReferenceGrant,
#     BackendTLSPolicy, ListenerSet, TLSRoute, TCPRoute, UDPRoute): the
#     chart's crds/, which Helm installs with the chart's own CRDs (skipping,
#     as Helm does, any that already exist) and `meridian install --crds`
#     prints unless the cluster already has Gateway API CRDs (cli/install);
#   config/crd/experimental -> charts/gateway-api-experimental/
#     (the same kinds with the experimental fields, such as HTTPRoute's
#     rules[].retry, and the gateway.networking.x-k8s.io kinds): outside the
#     chart, so that Helm never installs them; `meridian install --crds
#     --gateway-api-channel=experimental` prints them instead of the
#     standard ones.
#
# The upstream's ValidatingAdmissionPolicy in those directories
# (safe-upgrades) is not a CRD and is not copied.
#
# Usage: hack/gengatewaycrds.sh   (from anywhere; needs go on PATH; make generate runs it)
set -euo pipefail

# The bundle the gateway is built for. When go.mod requires the module, it
# must be this version: the CRDs and the Go types must agree.
GATEWAY_API_VERSION=v1.6.3

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if have="$(go list -m -f '{{.Version}}' sigs.k8s.io/gateway-api 2>/dev/null)" && [[ "$have" != "$GATEWAY_API_VERSION" ]]; then
	echo "gengatewaycrds: go.mod requires sigs.k8s.io/gateway-api $have, this script copies the CRDs of $GATEWAY_API_VERSION: set GATEWAY_API_VERSION in $0" >&2
	exit 1
fi

dir="$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"

# copy CHANNEL OUT copies the channel's CRDs into OUT.
copy() {
	local channel=$1 out=$2 src="$dir/config/crd/$1" n=0 f
	if [[ -z "$dir" || ! -d "$src" ]]; then
		echo "gengatewaycrds: no config/crd/$channel in sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION ($dir)" >&2
		exit 1
	fi
	# Remove stale copies first, so that a kind the next bundle drops goes too.
	rm -rf "$out"
	mkdir -p "$out"
	for f in "$src"/*.yaml; do
		if grep -q '^kind: CustomResourceDefinition$' "$f"; then
			install -m 0644 "$f" "$out/$(basename "$f")"
			n=$((n + 1))
		fi
	done
	echo "gengatewaycrds: $n Gateway API $GATEWAY_API_VERSION $channel-channel CRDs in $out" >&2
}

copy standard charts/meridian/crds/gateway-api
copy experimental charts/gateway-api-experimental
