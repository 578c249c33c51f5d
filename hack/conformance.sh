#!/usr/bin/env bash
# hack/conformance.sh — the upstream Gateway API conformance suite (conformance/)
# against Meridian's gateway on the node hack/cluster runs: installs Meridian
# and a GatewayClass `meridian` (ClusterIP Services: the test process reaches
# cluster IPs on this node), loads the suite's images built from source (the
# node cannot pull registry.k8s.io), runs the GATEWAY-HTTP, GATEWAY-GRPC,
# GATEWAY-TLS, GATEWAY-TCP and GATEWAY-UDP profiles with every feature but those conformance/README.md
# lists as not supported, and writes the report to conformance/report.yaml;
# then the MESH-HTTP and MESH-GRPC profiles with the suite's namespaces
# meshed (conformance/report-mesh.yaml). CONFORMANCE_RUN=gateway or mesh runs
# only that one (extra arguments, e.g. -run-test=NAME, go to each run).
# The Gateway API CRDs are the experimental channel's (HTTPRoute's
# rules[].retry is an experimental field), applied over any standard ones.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(hack/cluster env)"
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}

make build images
# Meridian's CRDs and the Gateway API's experimental channel, always: plain
# `install --crds` prints no Gateway API CRDs once the cluster has some
# (standard ones from an earlier install, say), which these replace
# (--force-conflicts: another field manager may have applied those).
bin/meridian install --crds --gateway-api-channel=experimental --gateway-api-crds=always |
  kubectl apply --server-side --force-conflicts -f -
# Installed already (by hand, a run before): keep its identity issuer, which
# running proxies trust.
args=()
if kubectl -n meridian get secret meridian-identity-issuer >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  for f in ca.crt tls.crt tls.key; do
    kubectl -n meridian get secret meridian-identity-issuer -o "jsonpath={.data.${f//./\\.}}" | base64 -d >"$tmp/$f"
  done
  args=(--identity-trust-anchors-file "$tmp/ca.crt" --identity-issuer-certificate-file "$tmp/tls.crt" --identity-issuer-key-file "$tmp/tls.key")
fi
bin/meridian install "${args[@]}" | kubectl apply -f -
bin/meridian check --wait 5m

(cd conformance && ../hack/cluster load-images \
  registry.k8s.io/gateway-api/echo-advanced:v1.5.1=./echoadvanced/client \
  registry.k8s.io/gateway-api/echo-basic:v1.5.1=sigs.k8s.io/gateway-api/conformance/echo-basic \
  registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.2=sigs.k8s.io/gateway-api/conformance/echo-basic \
  registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.3=sigs.k8s.io/gateway-api/conformance/echo-basic)
(cd hack/cluster-tools/coredns && ../../cluster load-images registry.k8s.io/coredns/coredns:v1.12.2=.)

kubectl apply -f - <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata: {name: meridian-gateway-params, namespace: meridian}
data: {serviceType: ClusterIP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: meridian}
spec:
  controllerName: meridian.io/gateway-controller
  parametersRef: {group: "", kind: ConfigMap, name: meridian-gateway-params, namespace: meridian}
YAML

# A clean slate: a run stopped half-way leaves its objects behind (routes
# still attached to the base Gateways fail later runs' "no routes attached").
kubectl delete namespace --ignore-not-found --timeout=5m \
  gateway-conformance-infra gateway-conformance-app-backend gateway-conformance-web-backend \
  gateway-api-listenerset-not-allowed-ns gateway-api-listenerset-selector-allowed-ns \
  gateway-api-listenerset-selector-not-allowed-ns gateway-api-ls-cross-ns gateway-api-routes-allowed-ns \
  gateway-api-routes-not-allowed-ns gateway-api-listener-sets-test-reference-grant-ns \
  gateway-conformance-mesh gateway-conformance-mesh-consumer

# GatewayStaticAddresses: the Gateway's ClusterIP Service is given a usable
# address from hack/cluster's Service range (198.18.0.0/16,
# hack/cluster-tools/configs.go), near its top where the allocator, which
# starts from the bottom, is unlikely to have put a Service; the unusable one
# is outside it (TEST-NET-1), which the API server refuses.
usable=198.18.255.200 unusable=192.0.2.10

# Features Meridian does not claim (conformance/README.md says why).
exempt=$(grep -v '^#' conformance/exempt-features | grep -v '^$' | paste -sd, -)
# The mesh's features (MESH-HTTP, MESH-GRPC), claimed in a run of their own
# with every namespace the suite makes meshed (its pods get the sidecar):
# conformance/mesh-features.
mesh=$(grep -v '^#' conformance/mesh-features | grep -v '^$' | paste -sd, -)
cd conformance
common=(-gateway-class=meridian -allow-crds-mismatch
  -organization=meridian-mesh -project=meridian
  -url=https://github.com/meridian-mesh/meridian -version="$VERSION"
  -contact=https://github.com/meridian-mesh/meridian/issues)
run=${CONFORMANCE_RUN:-all}
case "$run" in all | gateway | mesh) ;; *) echo "CONFORMANCE_RUN=$run: allowed are all, gateway and mesh" >&2; exit 2 ;; esac
if [ "$run" != mesh ]; then
  go test -tags conformance -count=1 -timeout 45m -v . -args "${common[@]}" \
    -conformance-profiles=GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS,GATEWAY-TCP,GATEWAY-UDP \
    -all-features -exempt-features="$exempt" \
    -usable-address="$usable" -unusable-address="$unusable" \
    -report-output=report.yaml "$@"
fi
if [ "$run" != gateway ]; then
  go test -tags conformance -count=1 -timeout 30m -v . -args "${common[@]}" \
    -conformance-profiles=MESH-HTTP,MESH-GRPC -supported-features="$mesh" \
    -namespace-annotations=meridian.io/inject=enabled \
    -report-output=report-mesh.yaml "$@"
fi
