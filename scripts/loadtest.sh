#!/usr/bin/env bash
# Load test of a warm http-mode function (functions/echo), on loopback only:
# N requests from C clients through the gateway, then the same straight to
# the VM's forwarded port; prints throughput, p50/p99 latency and errors.
# Bounded: each run stops after -n requests or -duration. Arguments go to
# the tool (go run ./scripts/loadtest -h lists them), e.g.
#   scripts/loadtest.sh -n 2000 -c 16 -duration 60s
# Needs the assets scripts/test.sh prepares (run `make test` once, or this
# script prepares them the same way).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export FAAS_KERNEL_DIR="$root/.cache/kernel" FAAS_AGENT_BIN="$root/.cache/bin/agent"
export FAAS_STATE_DIR="$root/.cache/state" FAAS_RUNTIMES_DIR="$root/guest/runtimes"
export FAAS_VM_TEMPLATE="$root/config/func-handler.yml"
bash scripts/fetch-kernel.sh "$FAAS_KERNEL_DIR" >/dev/null
make -s agent
bash scripts/docker-engine.sh >/dev/null
bash scripts/base-images.sh >/dev/null
exec go run ./scripts/loadtest "$@"
