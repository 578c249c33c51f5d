#!/usr/bin/env bash
# Copies the Gateway API's standard-channel CRDs (GatewayClass, Gateway,
# HTTPRoute, GRPCRoute, ReferenceGrant, BackendTLSPolicy, ListenerSet,
# TLSRoute, TCPRoute, UDPRoute) from the sigs.k8s.io/gateway-api module
# (config/crd/standard) into charts/meridian/crds/gateway-api/, byte for
# byte: `meridian install --crds` prints them unless the cluster already has
# Gateway API CRDs (cli/install), and Helm installs them with the chart's
# own CRDs (skipping, as Helm does, any that already exist). The upstream's
# ValidatingAdmissionPolicy in that directory (safe-upgrades) is not a CRD
# and is not copied.
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
src="$dir/config/crd/standard"
if [[ -z "$dir" || ! -d "$src" ]]; then
	echo "gengatewaycrds: no config/crd/standard in sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION ($dir)" >&2
	exit 1
fi

out=charts/meridian/crds/gateway-api
# Remove stale copies first, so that a kind the next bundle drops goes too.
rm -rf "$out"
mkdir -p "$out"
n=0
for f in "$src"/*.yaml; do
	if grep -q '^kind: CustomResourceDefinition$' "$f"; then
		install -m 0644 "$f" "$out/$(basename "$f")"
		n=$((n + 1))
	fi
done
echo "gengatewaycrds: $n Gateway API $GATEWAY_API_VERSION standard-channel CRDs in $out" >&2
