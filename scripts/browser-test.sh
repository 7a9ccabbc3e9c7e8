#!/usr/bin/env bash
# browser-test.sh: the dashboard in a real browser against a live appliance
# with real VMs (called by scripts/test.sh; needs scripts/prepare.sh's FAAS_*).
#
# Installs what is missing: Debian's chromium (apt; never a downloaded
# browser) and playwright-core (npm, pinned, into .cache/browser-test). Builds
# and starts the appliance on a free loopback port with FAAS_API_TOKEN set and
# functions/echo mounted, then runs scripts/browser-test.mjs: the page asks for
# the token and then works, the table lists the functions, a row opens its
# details, a function deployed through the New function form answers at
# /invoke/<name>, the invoke form shows the answer, the chart shows points
# after requests, the VM start-time chart has a boot point once a VM booted,
# and at 420px nothing scrolls sideways. Stops the appliance.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
log() { printf '[browser-test] %s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
PLAYWRIGHT_VERSION=1.65.1
: "${FAAS_STATE_DIR:?source scripts/prepare.sh first}"

if [[ ! -x /usr/bin/chromium ]]; then
	log "installing Debian's chromium"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
command -v node >/dev/null || die "node is missing: apt-get install nodejs npm"
pw=$root/.cache/browser-test
if [[ "$(node -p "require('$pw/node_modules/playwright-core/package.json').version" 2>/dev/null)" != "$PLAYWRIGHT_VERSION" ]]; then
	log "installing playwright-core@$PLAYWRIGHT_VERSION (npm) into $pw"
	mkdir -p "$pw"
	(cd "$pw" && npm install --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT_VERSION")
fi

work=$(mktemp -d /tmp/fb.XXXXXX)
app_pid=
cleanup() {
	local rc=$?
	if [[ -n $app_pid ]] && kill -0 "$app_pid" 2>/dev/null; then
		kill -TERM "$app_pid"
		wait "$app_pid" || true
	fi
	if [[ $rc -ne 0 && -f $work/appliance.log ]]; then
		log "appliance log (last 60 lines):"
		tail -n 60 "$work/appliance.log" >&2
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT

log "building the appliance"
go build -o "$work/appliance" ./cmd/appliance
mkdir -p "$work/functions" "$work/state"
cp -r functions/echo "$work/functions/echo"
ln -s "$FAAS_STATE_DIR/images" "$work/state/images"
token=browser-test-$RANDOM$RANDOM
FAAS_LISTEN=127.0.0.1:0 FAAS_FUNCTIONS_DIR=$work/functions FAAS_STATE_DIR=$work/state \
	FAAS_VM_TEMPLATE=$root/config/func-handler.yml FAAS_CONFIG=$root/config/appliance.yaml \
	FAAS_ACCEL=tcg FAAS_DEBOUNCE=300ms FAAS_BOOT_WAIT=90s FAAS_API_TOKEN=$token \
	"$work/appliance" >"$work/appliance.log" 2>&1 &
app_pid=$!
addr=
for _ in $(seq 1 240); do
	addr=$(sed -n 's/.*msg=serving addr=\([^ ]*\).*/\1/p' "$work/appliance.log" | head -n1)
	[[ -n $addr ]] && break
	kill -0 "$app_pid" 2>/dev/null || die "the appliance exited"
	sleep 0.5
done
[[ -n $addr ]] || die "the appliance did not start serving"
log "appliance at http://$addr; running the browser"
NODE_PATH=$pw/node_modules BASE=http://$addr TOKEN=$token node scripts/browser-test.mjs
log "browser test passed"
