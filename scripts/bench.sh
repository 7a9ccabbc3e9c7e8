#!/usr/bin/env bash
# Benchmarks of real microVMs: boot-to-ready (median of at least 5 boots),
# idle RSS of one VM's qemu process, warm request latency exec vs http mode.
# Loopback only. Needs the assets scripts/test.sh prepares (run `make test`
# once, or this script prepares them the same way).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export FAAS_KERNEL_DIR="$root/.cache/kernel" FAAS_AGENT_BIN="$root/.cache/bin/agent"
export FAAS_STATE_DIR="$root/.cache/state" FAAS_RUNTIMES_DIR="$root/guest/runtimes"
bash scripts/fetch-kernel.sh "$FAAS_KERNEL_DIR" >/dev/null
make -s agent
bash scripts/docker-engine.sh >/dev/null
bash scripts/base-images.sh >/dev/null
go test -run '^$' -bench 'BenchmarkBoot' -benchtime 7x ./internal/vm/qemu
go test -run '^$' -bench 'BenchmarkWarm' -benchtime 50x ./internal/vm/qemu
go test -run "^$" -bench BenchmarkFolderToFirst200 -benchtime 5x ./cmd/appliance
