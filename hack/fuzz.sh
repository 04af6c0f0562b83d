#!/usr/bin/env bash
# Runs every fuzz target in the module for a short time (a smoke run; the
# corpus under testdata/fuzz is replayed by plain `go test` too).
#
# A run that fails only with "context deadline exceeded" found nothing: on a
# loaded machine Go's fuzzing coordinator sometimes times out waiting for
# its workers to stop at the end of -fuzztime. Such a run is tried once
# more; a real finding ("Failing input written to …") fails at once.
set -euo pipefail
time=${1:-10s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for fn in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		for attempt in 1 2; do
			echo "fuzz $pkg $fn ($time)"
			if go test -run '^$' -fuzz "^$fn\$" -fuzztime "$time" "$pkg" >"$log" 2>&1; then
				tail -n 1 "$log"
				break
			fi
			cat "$log"
			if [ "$attempt" = 1 ] && grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
				echo "fuzz $pkg $fn: the fuzzing engine timed out stopping its workers (no finding); trying once more"
				continue
			fi
			exit 1
		done
	done
done
