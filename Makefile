# siot build, test and benchmark entry points. `make test` is what CI runs.
GO        ?= go
BIN       ?= bin/siot
FUZZTIME  ?= 60s
# Each fuzz target runs this long inside `make test`.
FUZZSHORT ?= 3s

# The version `siot version` reports, stamped at link time; VERSION=v1.2.3
# overrides it.
ifeq ($(origin VERSION), undefined)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
endif
# Flags of every binary this file builds (the Dockerfile uses the same;
# TestDockerfile checks it): no local paths, no symbol table or DWARF.
BUILDFLAGS := -trimpath
LDFLAGS    := -s -w -X main.stampedVersion=$(VERSION)
# The lean edge build: build tag lean (the in-house broker transport/bus
# instead of nats-server; siot version says lean) and no inlining, the one flag that shrinks the binary by megabytes, except in
# the packages a running edge spends its CPU in (the runtime, basic std,
# crypto, siot, Badger, msgpack, the NATS client, compression): not
# inlining those made a store write 1.8 times slower. The embedded NATS
# server, TLS setup, HTTP, protobuf (Badger's manifest), flags and fmt
# lose it (BENCHMARKS.md, "Binary size").
LEANHOT    := runtime/... sync/... bytes strings slices sort maps encoding/binary hash/... math/... time crypto/... \
	github.com/siot-io/siot/... github.com/dgraph-io/... github.com/vmihailenco/... github.com/nats-io/nats.go/... \
	github.com/klauspost/compress/... github.com/cespare/xxhash/v2 github.com/google/uuid
LEANFLAGS  := -tags lean -gcflags=all=-l $(foreach p,$(LEANHOT),-gcflags=$(p)=)
LEANBIN    ?= bin/siot-lean

.PHONY: build lean release test unit web-test web-build web-check fmtcheck vet tidycheck fuzz fuzz-short bench run clean

build:
	$(GO) build $(BUILDFLAGS) -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/siot

# A static binary, like the release ones.
lean:
	CGO_ENABLED=0 $(GO) build $(BUILDFLAGS) $(LEANFLAGS) -ldflags "$(LDFLAGS)" -o $(LEANBIN) ./cmd/siot

# Static binaries for linux amd64, arm64 and armv7, the full and the lean
# build of each, and their SHA256SUMS, in dist/. Pure Go: every target
# cross-compiles from any machine.
# $(call xbuild,GOARCH,GOARM,NAME,FLAGS)
define xbuild
	CGO_ENABLED=0 GOOS=linux GOARCH=$(1) GOARM=$(2) $(GO) build $(BUILDFLAGS) $(4) -ldflags "$(LDFLAGS)" -o dist/$(3) ./cmd/siot

endef
release:
	rm -rf dist && mkdir -p dist
	$(call xbuild,amd64,,siot-$(VERSION)-linux-amd64,)
	$(call xbuild,arm64,,siot-$(VERSION)-linux-arm64,)
	$(call xbuild,arm,7,siot-$(VERSION)-linux-armv7,)
	$(call xbuild,amd64,,siot-lean-$(VERSION)-linux-amd64,$(LEANFLAGS))
	$(call xbuild,arm64,,siot-lean-$(VERSION)-linux-arm64,$(LEANFLAGS))
	$(call xbuild,arm,7,siot-lean-$(VERSION)-linux-armv7,$(LEANFLAGS))
	cd dist && sha256sum siot-* > SHA256SUMS
	@ls -l dist

test: fmtcheck vet tidycheck unit web-test fuzz-short

# The browser replica's TypeScript (web/): the crdt port against
# testdata/crdt. Needs Node.js 20+ and npm; npm ci runs again when
# web/package-lock.json is newer than web/node_modules. esbuild bundles each
# web/test/*.test.ts into web/.build/test/, tsc checks the types, node --test
# runs them. web/test/link.test.ts needs the Go toolchain: it builds
# ./cmd/siot into a temporary directory (about 3 s with a warm build cache)
# and runs the browser link against siot serve, killed and restarted
# (about 6 s in all).
web/node_modules: web/package-lock.json
	npm ci --prefix web --no-audit --no-fund
	@touch web/node_modules

#
# web/test/ui.test.ts drives the web UI in Debian's Chromium
# ($(CHROMIUM), package chromium; .ci/run installs it) with playwright-core,
# against a cloud and an edge built from this tree; screenshots land in
# web/.build/screenshots/.
CHROMIUM ?= /usr/bin/chromium
web-test: web/node_modules web-check
	@test -x $(CHROMIUM) || { echo "web-test: no Chromium at $(CHROMIUM): apt-get install chromium (or CHROMIUM=path)" >&2; exit 1; }
	node web/scripts/build-tests.mjs
	web/node_modules/.bin/tsc --noEmit -p web
	GO=$(GO) CHROMIUM=$(CHROMIUM) node --test --test-reporter=spec web/.build/test/

# The web UI's bundle, web/dist, is committed: go build embeds it (package
# web), so building siot needs no Node.js. web-build rebuilds it from
# web/src and web/static; web-check fails when the committed bundle is not
# what its sources build to.
web-build: web/node_modules
	node web/scripts/build-ui.mjs

web-check: web/node_modules
	@rm -rf web/.build/dist-check
	@node web/scripts/build-ui.mjs web/.build/dist-check >/dev/null
	@diff -r web/dist web/.build/dist-check >/dev/null || { echo "web/dist does not match its sources: run make web-build and commit web/dist" >&2; exit 1; }
	@echo "web-check: web/dist matches its sources"

# The store's big-node tests at full size and the edge footprint test
# (RSS is meaningless under the race detector) run again without -race, and
# so does the CLI's backup/restore round trip at 1,000,000 points. The lean
# build's server (transport/bus under transport.Server) runs the server and
# client suites too (about 45 s on 2 cores; the whole transport package
# under -tags lean takes 2 minutes, its framing and repair tests do not
# touch the server); TestLeanEdgeSyncsWithCloud, in ./cmd/siot, runs a lean
# edge under a full cloud; the lean CLI's own tests check that /nats and
# the web UI answer that they are not in that build.
unit:
	$(GO) test -race -count=1 -timeout 30m ./...
	$(GO) test -tags lean -race -count=1 -run 'Server|Dial|Lean|SignIn' ./transport/
	$(GO) test -tags lean -race -count=1 ./client/
	$(GO) test -tags lean -race -count=1 -run 'WebsocketLean|WebUILean|UIHandler' ./cmd/siot/
	$(GO) test -count=1 -run 'Big|Footprint' ./store/
	$(GO) test -count=1 -run 'Big' ./cmd/siot/

fmtcheck:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	$(GO) vet -tags lean ./...
	@if $(GO) list -deps -tags lean ./cmd/siot | grep -q nats-server; then echo "the lean build links nats-server"; exit 1; fi

tidycheck:
	@cp go.mod /tmp/siot-go.mod.bak; cp go.sum /tmp/siot-go.sum.bak; \
	$(GO) mod tidy; \
	if ! cmp -s go.mod /tmp/siot-go.mod.bak || ! cmp -s go.sum /tmp/siot-go.sum.bak; then \
		cp /tmp/siot-go.mod.bak go.mod; cp /tmp/siot-go.sum.bak go.sum; \
		echo "go mod tidy changes go.mod or go.sum: run it and commit"; exit 1; fi

# Every fuzz target, briefly (make test) or for FUZZTIME (make fuzz), under a
# virtual-memory limit so an unbounded allocation fails instead of taking the
# machine down.
fuzz-short:
	@FUZZTIME=$(FUZZSHORT) scripts/fuzz.sh

fuzz:
	@FUZZTIME=$(FUZZTIME) scripts/fuzz.sh
	$(GO) test -count=1 -run 'PlacementSimulation' ./crdt/ -rapid.checks=50000

bench:
	scripts/bench.sh

run: build
	./$(BIN) serve

clean:
	rm -rf bin dist
