# Meridian — build, test, bench, generate.
GO      ?= go
BIN     ?= bin
# Evaluated once: a recursive variable was re-read by each recipe, and an
# edit during a build gave the images a tag that bin/meridian did not know.
ifndef VERSION
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
endif
LDFLAGS := -s -w -X main.version=$(VERSION)
# Every binary is built as the images are (hack/cluster load-images:
# CGO_ENABLED=0, no libc mapped; without grpc-go's request tracing,
# golang.org/x/net/trace and the html/template it pulls in, which none
# serves: for the proxy 2.5 MB less binary and 1.5 MB less idle RSS,
# proxy/sidecar/README.md, Memory). The same flags share Go's build cache
# with the images: on a fresh machine `make build` after `make images` (or
# the e2e suite's images) compiled every dependency again, about 2 minutes.
TAGS := grpcnotrace

.PHONY: all build test deps unit lint fuzz bench bench-gateway bench-all generate verify-generate demo clean e2e conformance cluster-up cluster-down images

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN)/meridian ./cmd/meridian
	CGO_ENABLED=0 $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN)/meridian-controller ./cmd/meridian-controller
	CGO_ENABLED=0 $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN)/meridian-proxy ./cmd/meridian-proxy

# The README's test command: formatting, vet, and every test with the race detector.
test: deps lint unit

deps:
	./hack/test-deps.sh

# gofmt, go vet, and staticcheck (pinned; installed by the script when
# missing; its configuration is staticcheck.conf). With the e2e tag, so that
# the end-to-end suite is checked too (no other file needs its tag off).
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags e2e ./...
	./hack/staticcheck.sh -tags e2e ./...
	# The conformance module's own program (the mesh tests' echo image).
	cd conformance && $(GO) vet ./echoadvanced/...

# The tests against a real kube-apiserver (envtest) take etcd and
# kube-apiserver from KUBEBUILDER_ASSETS: hack/kube-assets.sh finds them in
# hack/cluster's cache (building them if it can). KUBEBUILDER_ASSETS=DIR uses
# other binaries; KUBEBUILDER_ASSETS=skip skips those tests.
unit:
	@assets='$(KUBEBUILDER_ASSETS)'; \
	if [ -z "$$assets" ]; then assets="$$(./hack/kube-assets.sh)" || exit 1; fi; \
	if [ "$$assets" = skip ]; then assets=; fi; \
	echo "KUBEBUILDER_ASSETS=$$assets"; \
	KUBEBUILDER_ASSETS="$$assets" $(GO) test -race -count=1 ./...
	# The gateway's tests again with its event loop on (proxy/gateway README,
	# Event loop), and with one loop that takes a processor of its own while
	# busy and gives it back after 2 ms idle (Hold); the loop's own tests
	# with that hold too.
	MERIDIAN_GATEWAY_EVENT_LOOP=1 $(GO) test -race -count=1 ./proxy/gateway/
	MERIDIAN_GATEWAY_EVENT_LOOP=hold $(GO) test -race -count=1 ./proxy/gateway/
	MERIDIAN_EVLOOP_HOLD=2ms $(GO) test -race -count=1 ./proxy/internal/evloop/
	# The sidecar's tests with its event loops on (proxy/sidecar README,
	# Event loops), then with one loop held as above.
	MERIDIAN_SIDECAR_EVENT_LOOP=1 $(GO) test -race -count=1 ./proxy/sidecar/
	MERIDIAN_SIDECAR_EVENT_LOOP=hold $(GO) test -race -count=1 ./proxy/sidecar/
	cd conformance && $(GO) test -race -count=1 ./echoadvanced/...

# End-to-end tests (test/e2e, build tag e2e) against the real single-node
# Kubernetes cluster that hack/cluster runs on this machine: `make cluster-up`
# first, `make cluster-down` after. See docs/development.md.
# hack/testsummary prints the output as -v does and repeats the failures'
# own lines at the end, below the logs a failed test dumps.
e2e:
	./hack/e2e-deps.sh
	$(GO) build -o $(BIN)/testsummary ./hack/testsummary
	$(BIN)/testsummary $(GO) test -json -tags e2e -count=1 -p 1 -timeout 30m ./test/e2e/...

# The upstream Gateway API conformance suite against the gateway on the node
# hack/cluster runs; writes conformance/report.yaml (conformance/README.md).
conformance:
	./hack/conformance.sh

# The product's images (controller, proxy, proxy-init) and the demo's, built
# without Docker (one static binary per image: the controller image's is
# cmd/meridian-controller, without the CLI) and loaded into the node that
# hack/cluster runs, tagged with the version `make build` stamps into
# bin/meridian, so `bin/meridian install` refers to them.
REGISTRY ?= ghcr.io/meridian-mesh
images:
	./hack/cluster load-images \
	  $(REGISTRY)/controller:$(VERSION)=./cmd/meridian-controller \
	  $(REGISTRY)/proxy:$(VERSION)=./cmd/meridian-proxy \
	  $(REGISTRY)/proxy-init:$(VERSION)=./cmd/meridian-init \
	  $(REGISTRY)/emojivoto:dev=./demo/emojivoto

cluster-up:
	./hack/cluster up

cluster-down:
	./hack/cluster down

# A short run of every fuzz target in the tree (func FuzzX in a _test.go
# file), FUZZTIME each; the seeds and the corpus in testdata/fuzz are
# replayed by `unit` as ordinary tests.
FUZZTIME ?= 10s
fuzz:
	@set -e; for f in $$(git grep -l --untracked '^func Fuzz' -- '*_test.go'); do \
	  for n in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
	    echo "fuzz: $$n ./$$(dirname $$f) for $(FUZZTIME)"; \
	    $(GO) test -run XXX -fuzz "^$$n\$$" -fuzztime $(FUZZTIME) ./$$(dirname $$f); \
	  done; \
	done

# The forwarding-path micro-benchmark (bench/README.md): time, bytes and
# allocations per request through two in-process proxies, HTTP/1.1, HTTP/2
# and gRPC, plaintext and mTLS; about a minute, one RESULT line, for review.
# MICROBENCH adds flags, e.g. MICROBENCH='-count 10 -out new.txt' for benchstat.
# Then a Rollout's setWeight step from its status write in envtest's
# kube-apiserver to 100 proxies (bench/rolloutstep; ~20 s, one RESULT line);
# ROLLOUTBENCH adds its flags, e.g. ROLLOUTBENCH='-steps 20'.
bench:
	$(GO) run ./bench/cmd/microbench -go '$(GO)' $(MICROBENCH)
	@assets='$(KUBEBUILDER_ASSETS)'; \
	if [ -z "$$assets" ]; then assets="$$(./hack/kube-assets.sh)" || exit 1; fi; \
	KUBEBUILDER_ASSETS="$$assets" $(GO) test -run '^$$' -bench SetWeight -benchtime 1x ./bench/rolloutstep $(ROLLOUTBENCH)

# The edge gateway against nginx, HAProxy, Caddy and Traefik, its RSS with
# 10,000 routes, and 1,000 HTTPRoutes applied at once (bench/gateway.sh;
# bench/README.md, "Edge gateway"). GATEWAYBENCH sets its environment, e.g.
# GATEWAYBENCH='DURATION=2s SWEEP_DURATION=0.5s' for a smoke run.
bench-gateway:
	$(GATEWAYBENCH) ./bench/gateway.sh

# Every benchmark under proxy/, then the proxy benchmarks against nginx and
# HAProxy whose figures live in bench/README.md (bench/run.sh, ~10 min).
bench-all:
	$(GO) test -run XXX -bench . -benchmem ./proxy/...
	./bench/run.sh

# Regenerate committed code (protobuf/gRPC stubs; Kubernetes API deepcopy and
# CRDs; the Gateway API CRDs copied from their module). The scripts install
# the pinned generators (and protoc) they need.
generate:
	./hack/genproto.sh
	./hack/gencrd.sh
	./hack/gengatewaycrds.sh

# make generate, then fail with the list of files it changed (CI runs it).
verify-generate:
	./hack/verify-generate.sh

demo:
	$(GO) run ./cmd/meridian demo

clean:
	rm -rf $(BIN)
