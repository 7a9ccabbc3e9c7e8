#!/usr/bin/env bash
# The burst deploy, before/after the concurrent boot limit: N exec-mode
# functions (default 6; -n N or FAAS_BENCH_DEPLOY_N) copied into the
# functions folder at once, time from the copy to the first, the median and
# the last function answering 200 — once with the limit off
# (FAAS_MAX_CONCURRENT_BOOTS=1000) and once with the default for this host.
# Boots VMs: run it as `flock /tmp/faas-vm.lock bash scripts/bench-deploy.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "-n" ]]; then
	export FAAS_BENCH_DEPLOY_N="${2:?-n needs a number}"
fi
source scripts/prepare.sh >/dev/null
go test -c -o /tmp/bench-deploy.$$.test ./cmd/appliance
trap 'rm -f /tmp/bench-deploy.$$.test' EXIT
run() {
	echo "== FAAS_MAX_CONCURRENT_BOOTS=${1:-<default>}"
	(cd cmd/appliance && FAAS_MAX_CONCURRENT_BOOTS="$1" /tmp/bench-deploy.$$.test \
		-test.run '^$' -test.bench 'BenchmarkDeployBurst' -test.benchtime 1x -test.v 2>&1 |
		grep -E 'functions, FAAS_MAX|none of|BenchmarkDeployBurst|FAIL|ok') || echo "== that run failed (see above)"
}
run 1000 # the limit off: every VM boots at once
run ""   # the default (TCG: max(1, cores/2))
