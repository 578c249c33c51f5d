#!/usr/bin/env bash
# Regenerates the Go code for every .proto file in the repository's proto
# roots. Each root is its own include path and output directory, and
# paths=source_relative puts the generated files next to their .proto, so a
# proto's directory under its root is also its Go package directory.
#
# Usage: hack/genproto.sh   (from anywhere; needs go on PATH, and installs
# protoc with apt-get, as root or with sudo, when it is missing)
set -euo pipefail

# Pinned so that regenerating is reproducible and the generated headers do
# not churn between machines.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
# protoc's version is written into every generated file's header: it is
# Debian 12's protobuf-compiler, which this script installs when protoc is
# missing. Another protoc works but changes those headers (and so fails
# make verify-generate).
PROTOC_VERSION=3.21.12

# Proto roots. A root without .proto files is skipped, so roots can be listed
# before anything lives in them.
ROOTS=(demo/proto api/proto)

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v protoc >/dev/null; then
	sudo_cmd=""
	if [[ "$(id -u)" -ne 0 ]]; then
		command -v sudo >/dev/null || { echo "genproto: protoc not found; need root or sudo to apt-get install protobuf-compiler" >&2; exit 1; }
		sudo_cmd="sudo"
	fi
	command -v apt-get >/dev/null || { echo "genproto: protoc not found; install protoc $PROTOC_VERSION" >&2; exit 1; }
	echo "genproto: installing protobuf-compiler (protoc)" >&2
	$sudo_cmd apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq protobuf-compiler >/dev/null
fi
if [[ "$(protoc --version | awk '{print $NF}')" != "$PROTOC_VERSION" ]]; then
	echo "genproto: warning: $(protoc --version), not $PROTOC_VERSION: the generated files' headers will differ" >&2
fi

gobin="$(go env GOBIN)"
if [[ -z "$gobin" ]]; then
	gobin="$(go env GOPATH)/bin"
fi

# ensure_plugin NAME PACKAGE VERSION installs NAME unless the binary in $gobin
# already reports VERSION. `go install pkg@version` runs outside this module,
# so it never touches go.mod.
ensure_plugin() {
	local name=$1 pkg=$2 version=$3 have=""
	if [[ -x "$gobin/$name" ]]; then
		have="$("$gobin/$name" --version 2>/dev/null | awk '{print $NF}')"
	fi
	if [[ "${have#v}" != "${version#v}" ]]; then
		echo "genproto: installing $pkg@$version" >&2
		GOBIN="$gobin" GOFLAGS= go install "$pkg@$version"
	fi
}

ensure_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
ensure_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

for root in "${ROOTS[@]}"; do
	[[ -d "$root" ]] || continue
	mapfile -t protos < <(cd "$root" && find . -name '*.proto' -type f | sed 's|^\./||' | LC_ALL=C sort)
	if [[ ${#protos[@]} -eq 0 ]]; then
		continue
	fi
	echo "genproto: $root: ${protos[*]}" >&2
	protoc \
		--plugin=protoc-gen-go="$gobin/protoc-gen-go" \
		--plugin=protoc-gen-go-grpc="$gobin/protoc-gen-go-grpc" \
		-I "$root" \
		--go_out="$root" --go_opt=paths=source_relative \
		--go-grpc_out="$root" --go-grpc_opt=paths=source_relative \
		"${protos[@]/#/$root/}"
done
