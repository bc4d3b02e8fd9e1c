# siot build, test and benchmark entry points. `make test` is what CI runs.
GO        ?= go
BIN       ?= bin/siot
FUZZTIME  ?= 60s
# Each fuzz target runs this long inside `make test`.
FUZZSHORT ?= 3s

.PHONY: build test unit fmtcheck vet tidycheck fuzz fuzz-short bench run clean

build:
	$(GO) build -trimpath -ldflags "-s -w" -o $(BIN) ./cmd/siot

test: fmtcheck vet tidycheck unit fuzz-short

# The store's big-node tests at full size and the edge footprint test
# (RSS is meaningless under the race detector) run again without -race, and
# so does the CLI's backup/restore round trip at 1,000,000 points.
unit:
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 -run 'Big|Footprint' ./store/
	$(GO) test -count=1 -run 'Big' ./cmd/siot/

fmtcheck:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

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
	rm -rf bin
