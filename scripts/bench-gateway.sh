#!/usr/bin/env bash
# Gateway benchmark, loopback only, bounded (~1 min with the defaults):
# nginx (Debian's nginx-light, 1 worker) and the appliance's gateway (real
# metrics observer) in front of the same tiny Go backend, wrk -t1 at 1 and
# 32 connections, runs interleaved; prints req/s, p50/p99 and the ratios
# gateway/nginx (medians). Arguments go to the tool, e.g.
#   scripts/bench-gateway.sh -reps 5 -duration 5s -conns 32
# It needs a quiet CPU: run it under `flock /tmp/faas-vm.lock` (make bench is).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  echo "bench-gateway: installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/bench-gateway" ./scripts/bench-gateway
"$bin/bench-gateway" "$@"
