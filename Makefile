# intransit: make build | generate | test | demo | bench | lint | verify-generate
GO        ?= go
BIN       := bin/intransit
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/intransit/intransit/pkg/version.Version=$(VERSION)
GOFILES   := $(shell git ls-files '*.go' 2>/dev/null)

.PHONY: all build generate test test-unit demo bench lint verify-generate clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/intransit
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/demoserver ./tools/demoserver

# Rebuild the BPF objects with clang-16 (bpf2go is pinned in go.mod).
generate:
	cd pkg/bpfobj && $(GO) generate ./...

# Everything, privileged tests included when run as root (CI=true makes a
# privileged test that cannot run fail instead of skip).
test:
	$(GO) test -count=1 -timeout 20m ./...

# Only what runs without privileges, with the race detector.
test-unit:
	$(GO) test -count=1 -race ./pkg/config/ ./pkg/audit/ ./pkg/metrics/ ./pkg/upstream/ ./pkg/relay/

demo: build
	./tools/demo/demo.sh

bench: build
	$(GO) run ./tools/bench $(BENCHFLAGS)

lint:
	@out=$$(gofmt -l $(GOFILES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

verify-generate: generate
	git diff --exit-code -- pkg/bpfobj || (echo "generated BPF objects differ from the sources: run make generate and commit"; exit 1)

clean:
	rm -rf bin
