#!/usr/bin/env bash
# Snapshot benchmark (issue 11), loopback only. Boots VMs: run it as
# `flock /tmp/faas-vm.lock scripts/bench-snapshot.sh [MODE]`.
#
#   engine   (default) the QEMU engine on its own, in one run, for the same
#            http-mode python function: boot-to-first-200 vs
#            restore-to-first-200 (median of FAAS_BENCH_STARTS, at least 7,
#            each), and the PSS (smaps_rollup) of the qemu processes of 5
#            idle booted VMs vs 5 idle clones of one snapshot.
#            FAAS_BENCH_TB_SIZES="0 32" repeats it per TCG translation
#            cache size (MiB; 0: QEMU's default).
#   gateway  the first request after scale-to-zero through the gateway, boot
#            vs restore: BenchmarkScaleFromZero in cmd/appliance runs two
#            appliances side by side (snapshots off, on) and measures them in
#            turns, FAAS_BENCH_ROUNDS (default 7) rounds, medians.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh >/dev/null

# summary prints a benchmark line's metrics one per line, and failures.
summary() {
  awk '/^Benchmark/ { for (i = 3; i < NF; i += 2) printf "  %-32s %s\n", $(i+1), $i; next } /^(FAIL|---|ok|panic)/ || /_test.go/ { print }'
}

mode=${1:-engine}
case $mode in
engine)
  for tb in ${FAAS_BENCH_TB_SIZES:-0}; do
    echo "== snapshot vs boot (tb-size ${tb} MiB; 0: QEMU's default)"
    FAAS_BENCH_TB_SIZE=$tb go test -run '^$' -bench '^BenchmarkSnapshot$' -benchtime 1x -timeout 20m ./internal/vm/qemu |
      summary
  done
  ;;
gateway)
  echo "== first request after scale-to-zero through the gateway: boot (FAAS_SNAPSHOTS=false) vs restore, side by side"
  go test -run '^$' -bench '^BenchmarkScaleFromZero$' -benchtime "${FAAS_BENCH_ROUNDS:-7}x" -timeout 30m ./cmd/appliance |
    summary
  ;;
*)
  echo "usage: scripts/bench-snapshot.sh [engine|gateway]" >&2
  exit 2
  ;;
esac
