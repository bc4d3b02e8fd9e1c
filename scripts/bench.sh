#!/usr/bin/env bash
# Runs every benchmark of the module and writes the raw output to
# bench.out. BENCHMARKS.md explains the method and records the results.
#
# The store's ingest and footprint benchmarks time themselves: one op
# writes 1,000,000 points (and, for ingest, the raw Badger baseline
# interleaved with it), so the store package takes about a minute per
# count. STORE_COUNT (default COUNT) sets its count apart from the rest.
# BenchmarkChecksums (in the store run) compares each workload with and
# without checksum verification in one run and reports the ratio; its
# ingest ops write 200,000 points twice (SIOT_BENCH_POINTS shortens it).
# Registers' histories (issue 16), also in the store run:
# BenchmarkHistoryIngest writes 1,000,000 readings (SIOT_BENCH_POINTS)
# in batches of 10,000 with and without history, interleaved, per op;
# BenchmarkHistoryQuery builds a year of 1 Hz history once (about 15 s;
# SIOT_BENCH_DAYS shortens it), then times 1,000-step summaries of it and
# the stream of a day.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCHTIME=${BENCHTIME:-1s}
COUNT=${COUNT:-3}
STORE_COUNT=${STORE_COUNT:-$COUNT}
others=$(go list ./... | grep -v -e '^github.com/siot-io/siot/store$' -e '^github.com/siot-io/siot/replica$' -e '^github.com/siot-io/siot/client$')
{
	# shellcheck disable=SC2086 # one package per word
	go test -run '^$' -bench . -benchmem -benchtime "$BENCHTIME" -count "$COUNT" $others
	go test -run '^$' -bench . -benchmem -benchtime "$BENCHTIME" -count "$STORE_COUNT" -timeout 30m ./store/
	# The client against a server in the process: SetBatch writes 100,000
	# points an op; the round trip and the import line latency take their
	# percentiles over 5,000 calls and 300 lines (20 ms apart).
	go test -run '^$' -bench SetBatch -benchtime 3x -count "$COUNT" ./client/
	go test -run '^$' -bench SetRoundTrip -benchtime 5000x -count "$COUNT" ./client/
	go test -run '^$' -bench ImportLine -benchtime 300x -count "$COUNT" ./client/
	# Replication: propagation samples 3,000 writes; resume and repair
	# time one whole scenario per op (fixtures of up to 10^6 points).
	go test -run '^$' -bench Propagation -benchtime 3000x -count "$COUNT" ./replica/
	# What authentication and checks cost, against the same work with them
	# bypassed in the same run: 300 pairs of 1,000-point imports, 2,000
	# pairs of propagated writes.
	go test -run '^$' -bench 'AuthCost/ingest' -benchtime 300x -count "$COUNT" ./replica/
	go test -run '^$' -bench 'AuthCost/propagation' -benchtime 2000x -count "$COUNT" ./replica/
	# An idle link's bytes, in compressed time (a minute per count).
	go test -run '^$' -bench 'IdleLink|PointBytes' -benchtime 1x -count "$COUNT" ./replica/
	# A fleet of simulated edges linking to one cloud at once (SIOT_FLEET
	# sets the sizes; default 200,1000), the cloud restarted under 1,000
	# (SIOT_FLEET_RESTART), 1,000 writing a point a second (SIOT_FANIN), and
	# 1,000 against `siot serve` in a process of its own (SIOT_FLEET_PROC;
	# SIOT_CLOUD_GOMEMLIMIT sets its GOMEMLIMIT).
	# scripts/fleet-plot.py < bench.out draws docs/fleet-scaling.svg.
	go test -run '^$' -bench '^BenchmarkFleet' -benchtime 1x -count 1 -timeout 60m ./replica/
	go test -run '^$' -bench 'Resume|Repair|FirstLink' -benchtime 1x -count "$COUNT" -timeout 60m ./replica/
	# A day offline (issue 16): an edge cut off records 864,000 readings,
	# then the link is restored; one op is the whole scenario (about 10 s):
	# the upload's time, its bytes on the wire and on the cloud's disk.
	go test -run '^$' -bench HistoryUpload -benchtime 1x -count "$COUNT" -timeout 30m ./replica/
	# Rules (issue 17): a change to a rule's action read back, 2,000
	# crossings; then 10,000 rules under 10,000 changes a second for 10 s
	# (SIOT_RULES_RATE, SIOT_RULES_SECONDS, SIOT_RULES_EXCURSION), against
	# the same load without rules in the same op (about 40 s an op).
	go test -run '^$' -bench RuleLatency -benchtime 2000x -count "$COUNT" ./replica/
	go test -run '^$' -bench RuleFleet -benchtime 1x -count "$COUNT" -timeout 30m ./replica/
	# The browser replica in Chromium (web/bench/ui.bench.ts, about 8 min at
	# the default sizes): edge-to-page propagation (SIOT_UI_SAMPLES writes a
	# round), the first load of a 10,100-node scope into an empty IndexedDB
	# and warm reloads, and the bundle's size; SIOT_UI_RUNS rounds of each
	# (default COUNT). Needs Node.js 20+ and Chromium at $CHROMIUM
	# (/usr/bin/chromium), as make web-test does. SIOT_UI=0 leaves it out.
	if [ "${SIOT_UI:-1}" != 0 ]; then
		test -x "${CHROMIUM:-/usr/bin/chromium}" || { echo "bench: no Chromium at ${CHROMIUM:-/usr/bin/chromium} (CHROMIUM=path, or SIOT_UI=0)" >&2; exit 1; }
		[ web/node_modules -nt web/package-lock.json ] || npm ci --prefix web --no-audit --no-fund >&2
		node web/scripts/build-bench.mjs >&2
		SIOT_UI_RUNS=${SIOT_UI_RUNS:-$COUNT} node web/.build/bench/ui.bench.js
		# The store alone: a one-point write to a node of many registers
		# (web/bench/store.bench.ts, about 20 s).
		node web/.build/bench/store.bench.js
	fi
} | tee bench.out
