# Meridian — build, test, bench, generate.
GO      ?= go
BIN     ?= bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: all build test deps unit lint fuzz bench generate demo clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/meridian ./cmd/meridian
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/meridian-proxy ./cmd/meridian-proxy

# The README's test command: formatting, vet, and every test with the race detector.
test: deps lint unit

deps:
	./hack/test-deps.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 ./...

# A short run of every fuzz target (the corpus in testdata/ is replayed by `unit`).
fuzz:
	$(GO) test -run XXX -fuzz FuzzClassify -fuzztime 30s ./proxy/detect/

# Benchmarks: micro-benchmarks, then the proxy benchmarks whose figures live in bench/README.md.
bench:
	$(GO) test -run XXX -bench . -benchmem ./proxy/...
	./bench/run.sh

# Regenerate committed code (protobuf/gRPC stubs).
generate:
	./hack/genproto.sh

demo:
	$(GO) run ./cmd/meridian demo

clean:
	rm -rf $(BIN)
