#!/usr/bin/env bash
# Runs every Fuzz* target of the module for $FUZZTIME each, one at a time
# (go test -fuzz takes one target per run), under a virtual-memory limit.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-3s}
# 8 GB of address space: enough for the Go runtime, far below what a
# decoder that trusts a declared length would ask for.
ulimit -v 8000000
status=0
passed=0
failed=0
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "fuzz $pkg $target ($FUZZTIME)"
		ok=1
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" >/tmp/siot-fuzz.log 2>&1 || ok=0
		if [ $ok = 0 ] && grep -q 'context deadline exceeded' /tmp/siot-fuzz.log && ! grep -q 'Failing input written' /tmp/siot-fuzz.log; then
			# The fuzzing engine itself missed its own deadline (a loaded
			# machine) and found no failing input: run the target again.
			echo "fuzz $pkg $target: the engine overran its time with no failing input; once more"
			ok=1
			go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" >/tmp/siot-fuzz.log 2>&1 || ok=0
		fi
		if [ $ok = 0 ]; then
			cat /tmp/siot-fuzz.log
			status=1
			failed=$((failed + 1))
		else
			passed=$((passed + 1))
		fi
	done
done
echo "fuzz: $passed passed, $failed failed"
exit $status
