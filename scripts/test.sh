#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, fetches
# the guest kernel, builds the guest agent, starts a Docker engine, creates the
# local base images, then runs lint and every Go test (real microVMs under TCG
# included). Run as root (apt, dockerd). Usage: make test
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log() { printf '[test] %s %s\n' "$(date +%H:%M:%S)" "$*"; }

need_pkgs=()
for pair in qemu-system-x86_64:qemu-system-x86 passt:passt cpio:cpio debootstrap:debootstrap \
            dockerd:docker.io lz4:lz4 mke2fs:e2fsprogs debugfs:e2fsprogs python3:python3 node:nodejs \
            curl:curl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_pkgs+=("${pair#*:}")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

export FAAS_KERNEL_DIR="$root/.cache/kernel"
export FAAS_AGENT_BIN="$root/.cache/bin/agent"
export FAAS_STATE_DIR="$root/.cache/state"
export FAAS_RUNTIMES_DIR="$root/guest/runtimes"
mkdir -p "$FAAS_STATE_DIR"

log "kernel assets"
bash scripts/fetch-kernel.sh "$FAAS_KERNEL_DIR"
log "guest agent"
make -s agent
log "ignite CLI (for the ignite engine's contract tests)"
bash scripts/build-ignite.sh "$root/.cache/bin"
export FAAS_IGNITE_BIN="$root/.cache/bin/ignite"
log "docker engine and base images"
bash scripts/docker-engine.sh
bash scripts/base-images.sh

log "lint"
bad=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$bad" ]; then echo "gofmt would change: $bad" >&2; exit 1; fi
go vet ./...

log "go test"
# -p 1: the real-VM packages boot many TCG guests each; run side by side on
# two cores they starve each other (boots 5-10x slower).
go test -count=1 -p 1 -timeout 30m ./...

log "docker compose end to end"
bash scripts/e2e-compose.sh
log "all tests passed"
