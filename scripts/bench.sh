#!/usr/bin/env bash
# Runs every benchmark of the module and writes the raw output to
# bench.out. BENCHMARKS.md explains the method and records the results.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCHTIME=${BENCHTIME:-1s}
COUNT=${COUNT:-3}
go test -run '^$' -bench . -benchmem -benchtime "$BENCHTIME" -count "$COUNT" ./... | tee bench.out
