#!/usr/bin/env bash
# Load test of a warm http-mode function (functions/echo), on loopback only:
# N requests from C clients through the gateway, then the same straight to
# the VM's forwarded port; prints throughput, p50/p99 latency and errors.
# Bounded: each run stops after -n requests or -duration. Arguments go to
# the tool (go run ./scripts/loadtest -h lists them), e.g.
#   scripts/loadtest.sh -n 2000 -c 16 -duration 60s
# Prepares what it needs like `make test` (scripts/prepare.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh >/dev/null
exec go run ./scripts/loadtest "$@"
