#!/usr/bin/env bash
# The whole test suite, from a fresh machine (run as root: apt, dockerd).
# Usage: make test. It
#   - checks go, make and git, installs missing apt packages, fetches the
#     guest kernel, builds the guest agent, starts dockerd when none runs and
#     makes the local base images (scripts/prepare.sh);
#   - builds the ignite CLI for the ignite engine's contract tests, and the
#     Kubernetes tools the export tests check manifests with (kubecheck, an
#     in-memory registry, kube-apiserver on etcd; scripts/kube-tools.sh);
#   - runs gofmt and go vet, then every Go test, real microVMs (TCG) included;
#   - runs the dashboard in headless chromium against a live appliance
#     (scripts/browser-test.sh);
#   - runs the docker compose end-to-end test (scripts/e2e-compose.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log() { printf '[test] %s %s\n' "$(date +%H:%M:%S)" "$*"; }

source scripts/prepare.sh

log "ignite CLI (for the ignite engine's contract tests)"
bash scripts/build-ignite.sh "$root/.cache/bin"
export FAAS_IGNITE_BIN="$root/.cache/bin/ignite"

log "Kubernetes tools (for the export tests: kubecheck, registry, kube-apiserver)"
bash scripts/kube-tools.sh "$root/.cache/bin"

log "lint"
make -s lint

log "go test -race (packages without real VMs, -short)"
go test -race -short -count=1 ./internal/controller ./internal/gateway ./internal/metrics ./guest/agent/...

log "go test"
# -p 1: the real-VM packages boot many TCG guests each; run side by side on
# two cores they starve each other (boots 5-10x slower).
go test -count=1 -p 1 -timeout 30m ./...

log "fuzz (short bounded runs; make fuzz for long ones)"
bash scripts/fuzz.sh -time 2s

log "dashboard in a real browser (chromium + playwright-core, live appliance)"
bash scripts/browser-test.sh

log "docker compose end to end"
bash scripts/e2e-compose.sh
log "all tests passed"
