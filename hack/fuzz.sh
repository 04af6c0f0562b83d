#!/usr/bin/env bash
# Runs every fuzz target in the module for a short time (a smoke run; the
# corpus under testdata/fuzz is replayed by plain `go test` too).
set -euo pipefail
time=${1:-10s}
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for fn in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "fuzz $pkg $fn ($time)"
		go test -run '^$' -fuzz "^$fn\$" -fuzztime "$time" "$pkg"
	done
done
