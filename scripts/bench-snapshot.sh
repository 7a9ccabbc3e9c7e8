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
#            vs restore: BenchmarkScaleFromZero in cmd/appliance, which
#            comes with the controller's restore path.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh >/dev/null

mode=${1:-engine}
case $mode in
engine)
  for tb in ${FAAS_BENCH_TB_SIZES:-0}; do
    echo "== snapshot vs boot (tb-size ${tb} MiB; 0: QEMU's default)"
    FAAS_BENCH_TB_SIZE=$tb go test -run '^$' -bench '^BenchmarkSnapshot$' -benchtime 1x -timeout 20m ./internal/vm/qemu |
      awk '/^BenchmarkSnapshot/ { for (i = 3; i < NF; i += 2) printf "  %-32s %s\n", $(i+1), $i; next } /^(FAIL|---|ok|panic)/ || /_test.go/ { print }'
  done
  ;;
gateway)
  if ! grep -q 'func BenchmarkScaleFromZero' cmd/appliance/*_test.go; then
    echo "bench-snapshot: no BenchmarkScaleFromZero in cmd/appliance: this mode needs the controller's restore path (branch snapctl) merged" >&2
    exit 1
  fi
  go test -run '^$' -bench '^BenchmarkScaleFromZero$' -benchtime 7x -timeout 20m ./cmd/appliance
  ;;
*)
  echo "usage: scripts/bench-snapshot.sh [engine|gateway]" >&2
  exit 2
  ;;
esac
