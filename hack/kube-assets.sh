#!/usr/bin/env bash
# Prints the directory holding the etcd and kube-apiserver binaries that the
# tests against a real API server (controller-runtime's envtest) take from
# KUBEBUILDER_ASSETS. They are the binaries hack/cluster builds from source
# into its cache (~/.cache/meridian-cluster/kubernetes-<version>-etcd-<version>/).
# When none are cached and hack/cluster offers a `build` command (binaries
# only, no node), it runs that first: a cold build takes about 8 minutes on
# 2 cores.
#
# Usage: export KUBEBUILDER_ASSETS="$(hack/kube-assets.sh)"
#
# A KUBEBUILDER_ASSETS already set to a directory with both binaries is
# printed as it is. Exits 1, saying why on stderr, when there are none.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The same default as hack/cluster.
cache="${MERIDIAN_CLUSTER_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/meridian-cluster}"

has_assets() { [[ -x "$1/etcd" && -x "$1/kube-apiserver" ]]; }

# find_cached prints the newest complete build in the cache.
find_cached() {
	local d
	while IFS= read -r d; do
		d="${d%/}"
		case "$d" in *.tmp) continue ;; esac
		if has_assets "$d"; then
			echo "$d"
			return 0
		fi
	done < <(ls -1dt "$cache"/kubernetes-*/ 2>/dev/null)
	return 1
}

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]] && has_assets "$KUBEBUILDER_ASSETS"; then
	echo "$KUBEBUILDER_ASSETS"
	exit 0
fi
if find_cached; then
	exit 0
fi
if [[ -x hack/cluster ]] && hack/cluster help 2>/dev/null | grep -qE '^[[:space:]]+build([[:space:]]|$)'; then
	echo "kube-assets: no cached etcd and kube-apiserver; building them with hack/cluster build" >&2
	hack/cluster build >&2
	if find_cached; then
		exit 0
	fi
fi
cat >&2 <<MSG
kube-assets: no etcd and kube-apiserver binaries found in $cache/kubernetes-*/,
and no 'hack/cluster build' to build them. The tests against a real API server
need them: build them with hack/cluster (they land in that cache), or point
KUBEBUILDER_ASSETS at a directory holding etcd and kube-apiserver, or run
'make test KUBEBUILDER_ASSETS=skip' to skip those tests.
MSG
exit 1
