#!/usr/bin/env bash
# Runs `make generate` and fails, listing them, if it changed any file: the
# committed generated code (protobuf stubs, deepcopy, CRDs) must be what the
# generators make of the committed sources. On a dirty tree only the files
# that generate changes count (a file already modified counts when generate
# changes it again).
#
# Usage: hack/verify-generate.sh   (from anywhere; what make generate needs)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# snapshot lists each changed or untracked file with a hash of its content.
snapshot() {
	git status --porcelain --untracked-files=all | cut -c4- | LC_ALL=C sort | while read -r f; do
		printf '%s %s\n' "$f" "$( (sha256sum <"$f" 2>/dev/null || echo deleted) | cut -c1-16)"
	done
}

before="$(snapshot)"
make --no-print-directory generate
after="$(snapshot)"
changed="$(comm -3 <(echo "$before") <(echo "$after") | sed 's/^\t//' | cut -d' ' -f1 | LC_ALL=C sort -u)"
if [[ -n "$changed" ]]; then
	echo "verify-generate: make generate changed these files; run it and commit the result:" >&2
	echo "$changed" >&2
	exit 1
fi
echo "verify-generate: generated files are up to date"
