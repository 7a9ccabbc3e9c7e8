#!/usr/bin/env bash
# Benchmarks of real microVMs, loopback only: boot-to-ready (median of 7
# boots) and the idle RSS of one VM's qemu process; warm request latency,
# exec vs http mode; folder copy to first 200 through the appliance (median
# of 5); asynchronous calls accepted per second and completed per second
# (scripts/bench-async); restore vs boot and clone vs booted PSS
# (scripts/bench-snapshot.sh); a burst deploy with and without the boot
# limit (scripts/bench-deploy.sh). Prepares what it needs like `make test`
# (scripts/prepare.sh). Boots VMs: run it as `flock /tmp/faas-vm.lock make bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh >/dev/null
go test -run '^$' -bench '^BenchmarkBoot$' -benchtime 7x ./internal/vm/qemu
# Where a cold start's time goes, bash exec vs python exec vs python http,
# and the python http bootstrap's imports in a booted guest vs at its start.
go test -run '^$' -bench '^(BenchmarkBootBreakdown|BenchmarkPythonImports)$' -benchtime 1x ./internal/vm/qemu
go test -run '^$' -bench 'BenchmarkWarm' -benchtime 50x ./internal/vm/qemu
go test -run '^$' -bench 'BenchmarkFolderToFirst200' -benchtime 5x ./cmd/appliance
# Snapshot restore vs boot, idle PSS of clones vs booted VMs (issue 11).
bash scripts/bench-snapshot.sh engine
# The first request after scale-to-zero through the gateway, boot vs restore.
bash scripts/bench-snapshot.sh gateway
# Asynchronous calls: accepted/s at the gateway, completions/s end to end.
go run ./scripts/bench-async
# Gateway vs nginx in front of the same tiny backend (no VM; ~1 min).
bash scripts/bench-gateway.sh
# Six exec-mode functions copied in at once, boot limit off vs default (~2 min).
bash scripts/bench-deploy.sh
