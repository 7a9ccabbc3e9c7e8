#!/usr/bin/env bash
# Benchmark of asynchronous calls, loopback only, bounded: calls accepted
# per second at the gateway (202 once stored in the embedded JetStream),
# then the end-to-end completion rate of a warm http-mode function draining
# that backlog. Arguments go to the tool (go run ./scripts/bench-async -h),
# e.g. scripts/bench-async.sh -n 20000 -c 32 -duration 20s -window 30s
# It boots a VM: run it under `flock /tmp/faas-vm.lock` (make bench is).
# Prepares what it needs like `make test` (scripts/prepare.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh >/dev/null
exec go run ./scripts/bench-async "$@"
