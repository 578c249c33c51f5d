#!/usr/bin/env bash
# Runs staticcheck (configuration: staticcheck.conf at the root) on the
# packages given (default ./...), installing the pinned version first when
# the binary in GOBIN is missing, of another version, or built by another
# Go (staticcheck must be built by the Go that builds the code it checks).
#
# Usage: hack/staticcheck.sh [packages]   (from anywhere; needs go on PATH)
set -euo pipefail

STATICCHECK_VERSION=0.8.2

cd "$(dirname "${BASH_SOURCE[0]}")/.."

gobin="$(go env GOBIN)"
if [[ -z "$gobin" ]]; then
	gobin="$(go env GOPATH)/bin"
fi
bin="$gobin/staticcheck"

have="" built=""
if [[ -x "$bin" ]]; then
	have="$("$bin" -version 2>/dev/null | sed -n 's/.*(\(.*\))$/\1/p')"
	built="$("$bin" -debug.version 2>/dev/null | sed -n 's/^Compiled with Go version: //p')"
fi
if [[ "$have" != "$STATICCHECK_VERSION" || "$built" != "$(go env GOVERSION)" ]]; then
	echo "staticcheck: installing honnef.co/go/tools/cmd/staticcheck@v$STATICCHECK_VERSION" >&2
	# `go install pkg@version` builds outside this module: go.mod is untouched.
	GOBIN="$gobin" GOFLAGS= go install "honnef.co/go/tools/cmd/staticcheck@v$STATICCHECK_VERSION"
fi

if [[ $# -eq 0 ]]; then
	set -- ./...
fi
exec "$bin" "$@"
