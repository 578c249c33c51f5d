#!/usr/bin/env bash
# Regenerates the Kubernetes API code under api/ with controller-gen:
# zz_generated.deepcopy.go beside the types, and the CRD manifests in
# api/crds/ (meridian.io ServiceProfile, and the SMI TrafficSplit with every
# served version), copied as they are into the Helm chart's
# charts/meridian/crds/ (charts/charts_test.go checks the two are the same).
#
# Usage: hack/gencrd.sh   (from anywhere; needs go on PATH)
set -euo pipefail

# Pinned so that regenerating is reproducible; v0.19 is the release built
# against Kubernetes 1.34, the API version in go.mod.
CONTROLLER_GEN_VERSION=v0.19.0

# API packages: each Go package with +kubebuilder markers. Packages of one
# group (api/split/...) become one CRD with a version per package.
APIS=(./api/v1alpha1/... ./api/split/...)

cd "$(dirname "${BASH_SOURCE[0]}")/.."

gobin="$(go env GOBIN)"
if [[ -z "$gobin" ]]; then
	gobin="$(go env GOPATH)/bin"
fi

have=""
if [[ -x "$gobin/controller-gen" ]]; then
	have="$("$gobin/controller-gen" --version 2>/dev/null | awk '{print $NF}')"
fi
if [[ "$have" != "$CONTROLLER_GEN_VERSION" ]]; then
	echo "gencrd: installing controller-gen@$CONTROLLER_GEN_VERSION" >&2
	# `go install pkg@version` builds outside this module: go.mod is untouched.
	GOBIN="$gobin" GOFLAGS= go install "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_GEN_VERSION"
fi

paths=()
for p in "${APIS[@]}"; do
	paths+=("paths=$p")
done

echo "gencrd: deepcopy and CRDs for ${APIS[*]}" >&2
"$gobin/controller-gen" object "${paths[@]}"
# Remove stale manifests first, so that a renamed or deleted kind does not
# leave its CRD behind.
rm -f api/crds/*.yaml
"$gobin/controller-gen" crd "${paths[@]}" output:crd:dir=api/crds

# The TrafficSplit CRD converts between its versions with the controller's
# conversion webhook (controlplane/conversion): controller-gen has no marker
# for spec.conversion, so it is added here. The Service is the controller's
# webhook Service in the default install namespace, meridian: the CRDs are
# static files (`meridian install --crds` prints them as they are), and an
# install to another namespace must patch clientConfig.service.namespace.
# The controller patches the caBundle in (controlplane/inject/webhook).
split_crd=api/crds/split.smi-spec.io_trafficsplits.yaml
awk '
	!done && $0 == "spec:" {
		print
		print "  conversion:"
		print "    strategy: Webhook"
		print "    webhook:"
		print "      clientConfig:"
		print "        service:"
		print "          name: meridian-controller"
		print "          namespace: meridian"
		print "          path: /convert/trafficsplits"
		print "          port: 443"
		print "      conversionReviewVersions:"
		print "      - v1"
		done = 1
		next
	}
	{ print }
	END { if (!done) { print "gencrd: no top-level spec: in the TrafficSplit CRD" > "/dev/stderr"; exit 1 } }
' "$split_crd" >"$split_crd.tmp"
mv "$split_crd.tmp" "$split_crd"

# The chart installs the same CRDs (Helm applies crds/ before templates;
# `meridian install --crds` prints them).
rm -f charts/meridian/crds/*.yaml
mkdir -p charts/meridian/crds
cp api/crds/*.yaml charts/meridian/crds/
