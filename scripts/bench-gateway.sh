#!/usr/bin/env bash
# Gateway benchmark, loopback only, bounded (~1 min with the defaults):
# nginx (Debian's nginx-light, 1 worker) and the appliance's gateway (real
# metrics observer) in front of the same tiny Go backend, wrk -t1 at 1 and
# 32 connections, runs interleaved; prints req/s, p50/p99 and the ratios
# gateway/nginx (medians). Arguments go to the tool, e.g.
#   scripts/bench-gateway.sh -reps 5 -duration 5s -conns 32
# With BENCH_GATEWAY_BEFORE=<commit> the gateway of that commit runs as a
# fourth target ("before"), interleaved with the others: this tool's main.go
# is built inside a temporary git worktree of that commit (its gateway and
# controller APIs must be the ones this tool uses; 0614d97 qualifies).
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
before=()
cleanup() {
  if [ -d "$bin/before-tree" ]; then git worktree remove --force "$bin/before-tree" >/dev/null 2>&1 || true; fi
  rm -rf "$bin"
}
trap cleanup EXIT
go build -o "$bin/bench-gateway" ./scripts/bench-gateway
if [ -n "${BENCH_GATEWAY_BEFORE:-}" ]; then
  echo "bench-gateway: building the gateway of ${BENCH_GATEWAY_BEFORE} as \"before\"" >&2
  git worktree add --detach --quiet "$bin/before-tree" "$BENCH_GATEWAY_BEFORE"
  mkdir -p "$bin/before-tree/scripts/bench-gateway"
  cp scripts/bench-gateway/main.go "$bin/before-tree/scripts/bench-gateway/main.go"
  (cd "$bin/before-tree" && go build -o "$bin/bench-gateway-before" ./scripts/bench-gateway) ||
    { echo "bench-gateway: ${BENCH_GATEWAY_BEFORE} does not build with this tool (its gateway API differs); run without BENCH_GATEWAY_BEFORE" >&2; exit 1; }
  before=(-before "$bin/bench-gateway-before")
fi
"$bin/bench-gateway" "${before[@]}" "$@"
