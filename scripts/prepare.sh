#!/usr/bin/env bash
# Sourced by test.sh, bench.sh and loadtest.sh: checks the tools that cannot
# be installed here, installs the apt packages that can, and prepares the
# assets real VMs need (guest kernel, guest agent, Docker engine, local base
# images), exporting the FAAS_* settings that point at them. Run as root.
# Each step is idempotent: a prepared machine only checks.
prep_log() { printf '[prepare] %s %s\n' "$(date +%H:%M:%S)" "$*"; }

for tool in go make git; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "prepare: $tool is not on PATH; install it (Go 1.26 or newer from go.dev, make and git from apt)" >&2
    exit 1
  }
done

need_pkgs=()
for pair in qemu-system-x86_64:qemu-system-x86 nft:nftables setpriv:util-linux debootstrap:debootstrap \
            dockerd:docker.io lz4:lz4 mke2fs:e2fsprogs debugfs:e2fsprogs pgrep:procps \
            python3:python3 node:nodejs curl:curl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_pkgs+=("${pair#*:}")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  prep_log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export FAAS_KERNEL_DIR="$root/.cache/kernel"
export FAAS_AGENT_BIN="$root/.cache/bin/agent"
export FAAS_STATE_DIR="$root/.cache/state"
export FAAS_RUNTIMES_DIR="$root/guest/runtimes"
mkdir -p "$FAAS_STATE_DIR"

prep_log "kernel assets"
bash "$root/scripts/fetch-kernel.sh" "$FAAS_KERNEL_DIR"
prep_log "guest agent"
make -s -C "$root" agent
prep_log "docker engine and base images"
bash "$root/scripts/docker-engine.sh"
bash "$root/scripts/base-images.sh"
