#!/usr/bin/env bash
# fuzz.sh: run every native Go fuzz target of the parsers that read user
# input, each for a bounded time. Crashers land in the package's
# testdata/fuzz/<Target>/ and then run as regression cases in go test.
# Usage: scripts/fuzz.sh [-time 5m]   (make fuzz; make test runs -time 3s)
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=5m
if [ "${1:-}" = "-time" ]; then fuzztime=$2; fi
targets=(
	"./internal/config FuzzParseSize"
	"./internal/gateway FuzzSplitInvokePath"
)
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	printf '[fuzz] %s %s %s for %s\n' "$(date +%H:%M:%S)" "$pkg" "$name" "$fuzztime"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"
done
