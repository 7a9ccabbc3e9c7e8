#!/usr/bin/env bash
# Bounded soak of the real appliance: mixed traffic (sync exec and http,
# async), a redeploy every few minutes, a VM killed now and then; reports
# requests, errors, p50/p99, and the appliance's RSS and open fds at start
# and end. Fails when any error is not an in-flight request of a killed VM.
#   scripts/soak.sh                  # 30 minutes
#   scripts/soak.sh -duration 3m -redeploy 1m -kill 70s
# Boots real VMs: run it under the shared lock on shared machines
# (flock /tmp/faas-vm.lock scripts/soak.sh ...). Prepares what it needs like
# `make test` (scripts/prepare.sh). Arguments go to the tool
# (go run ./scripts/soak -h lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prepare.sh >/dev/null
exec go run ./scripts/soak "$@"
