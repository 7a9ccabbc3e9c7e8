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
#   - runs the docker compose end-to-end test (scripts/e2e-compose.sh);
#   - prints a phase table (phase, seconds) at the end, also after a failure,
#     and a loud warning (not a failure) naming the slowest phases when the
#     total passes TEST_BUDGET_WARN seconds (default 1500 = 25 min; CI's guard
#     is 30 min).
#
# The tools that are only Go builds (ignite CLI, Kubernetes tools, the
# compose plugin: minutes each on a fresh machine, mostly module downloads)
# build in the background while prepare.sh installs packages, fetches the
# kernel and makes the base images (network and disk bound); nothing boots
# a VM until they are done. Their output is in .cache/tool-builds.log and is
# printed when one fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log() { printf '[test] %s %s\n' "$(date +%H:%M:%S)" "$*"; }

# --- phase timings -------------------------------------------------------------
budget_warn=${TEST_BUDGET_WARN:-1500}
phase_names=()
phase_secs=()
t_suite=$SECONDS
# phase NAME CMD...: runs CMD as one timed phase of the table.
phase() {
  local name=$1 start=$SECONDS rc=0
  shift
  log "$name"
  "$@" || rc=$?
  [ "$rc" -eq 0 ] || name="$name (FAILED, exit $rc)"
  phase_names+=("$name")
  phase_secs+=($((SECONDS - start)))
  return "$rc"
}
report() {
  local rc=$? total=$((SECONDS - t_suite)) i
  [ ${#phase_names[@]} -gt 0 ] || return 0
  printf '\n[test] phase table (exit %d)\n' "$rc"
  printf '  %-58s %7s\n' phase seconds
  for i in "${!phase_names[@]}"; do
    printf '  %-58s %7d\n' "${phase_names[$i]}" "${phase_secs[$i]}"
  done
  printf '  %-58s %7d\n' total "$total"
  if [ -s "$root/.cache/go-test.out" ]; then
    printf '  slowest Go packages (go test):\n'
    awk '$1 == "ok" || $1 == "FAIL" { if ($3 ~ /s$/) { t = $3; sub(/s$/, "", t); printf "    %-54s %7.0f\n", $2, t } }' \
      "$root/.cache/go-test.out" | sort -k2,2nr | head -n 5
  fi
  if [ "$total" -gt "$budget_warn" ]; then
    local slow
    slow=$(for i in "${!phase_names[@]}"; do printf '%s\t%s\n' "${phase_secs[$i]}" "${phase_names[$i]}"; done |
      sort -nr | head -n 3 | awk -F'\t' '{ printf "%s%s (%d s)", (NR > 1 ? ", " : ""), $2, $1 }')
    printf '\n'
    printf '[test] ##################################################################\n'
    printf '[test] WARNING: the suite took %d s (%d min), over the %d s budget\n' "$total" $((total / 60)) "$budget_warn"
    printf '[test] WARNING: (CI stops a run at 30 min). Slowest phases: %s.\n' "$slow"
    printf '[test] WARNING: shorten those before adding tests (see the table above).\n'
    printf '[test] ##################################################################\n'
  fi
}
trap report EXIT

# --- Go-only tool builds, in the background while prepare.sh runs --------------
mkdir -p "$root/.cache/bin"
rm -f "$root/.cache/go-test.out"
tools_log=$root/.cache/tool-builds.log
build_tools() {
  local start=$SECONDS
  printf '[tools] %s ignite CLI (for the ignite engine contract tests)\n' "$(date +%H:%M:%S)"
  bash scripts/build-ignite.sh "$root/.cache/bin" || return 1
  printf '[tools] %s Kubernetes tools (for the export tests: kubecheck, registry, kube-apiserver)\n' "$(date +%H:%M:%S)"
  bash scripts/kube-tools.sh "$root/.cache/bin" || return 1
  printf '[tools] %s compose plugin build (installed by the compose end-to-end test)\n' "$(date +%H:%M:%S)"
  COMPOSE_BUILD_ONLY=1 bash scripts/compose-plugin.sh || return 1
  printf '[tools] all built in %d s\n' $((SECONDS - start))
}
tools_pid=
if command -v go >/dev/null 2>&1; then
  log "building the Go-only tools in the background (log: $tools_log)"
  build_tools >"$tools_log" 2>&1 &
  tools_pid=$!
fi
# wait_tools: the tool builds' result; their log when they failed.
wait_tools() {
  if [ -z "$tools_pid" ]; then # go was missing at the start: prepare.sh said how to install it
    build_tools
    return
  fi
  if ! wait "$tools_pid"; then
    cat "$tools_log" >&2
    echo "test: building the tools above failed (ignite CLI, kube tools or compose plugin); the log is $tools_log" >&2
    return 1
  fi
  grep -E '^\[tools\]|built in|up to date|already' "$tools_log" || true
}

prep_start=$SECONDS
log "prepare (packages, kernel, agent, docker engine, base images)"
source scripts/prepare.sh
phase_names+=("prepare (packages, kernel, agent, docker, base images)")
phase_secs+=($((SECONDS - prep_start)))

phase "tools: ignite CLI, kube tools, compose plugin (wait for background)" wait_tools
export FAAS_IGNITE_BIN="$root/.cache/bin/ignite"

phase "lint" make -s lint

phase "go test -race -short (packages without real VMs)" \
  go test -race -short -count=1 -timeout 10m ./internal/controller ./internal/gateway ./internal/metrics ./guest/agent/...

# -p 1: the real-VM packages boot many TCG guests each; run side by side on
# two cores they starve each other (boots 5-10x slower). -timeout is per
# package: the slowest (cmd/appliance) takes about 10 min on a quiet machine.
go_test() {
  set -o pipefail
  go test -count=1 -p 1 -timeout 20m ./... 2>&1 | tee "$root/.cache/go-test.out"
}
phase "go test (every package, real microVMs included)" go_test

phase "fuzz (2 s per target; make fuzz for long runs)" bash scripts/fuzz.sh -time 2s

phase "dashboard in a real browser (chromium + playwright-core)" bash scripts/browser-test.sh

phase "docker compose end to end" bash scripts/e2e-compose.sh
log "all tests passed"
