#!/usr/bin/env bash
# e2e-compose.sh: the Docker appliance end to end, as a user runs it.
#
# Makes sure a Docker engine and the Compose v2 plugin exist (installing
# docker.io and building the plugin when missing), makes the local base
# images (no registry here), then `docker compose up -d --build` with a
# temporary, empty functions folder and FAAS_ACCEL=tcg, waits for the health
# check, copies functions/hello into the folder, and calls
# http://127.0.0.1:PORT/invoke/hello until it answers. It prints the time
# from `docker compose up` to the first good answer and the image size, then
# stops the stack (the appliance must stop its VMs and exit 0), runs
# `docker compose down -v`, and checks that no QEMU process of the container
# and no container or volume of the project is left. Tears down on failure.
#
# Run as root (apt, dockerd, plugin install). Called by scripts/test.sh.
#
# Environment:
#   E2E_PROJECT       compose project name (default faasvm-e2e)
#   E2E_FUNCTION      function folder under functions/ to deploy (default hello)
#   E2E_EXPECT        text the answer must contain (default "Hello, World!")
#   E2E_HEALTH_TIMEOUT  seconds to wait for the health check (default 600: covers a cold build)
#   E2E_INVOKE_TIMEOUT  seconds to wait for the first good answer (default 300)
#   E2E_NO_CACHE=1    build the image with --no-cache first (a cold build; timed
#                     as part of "up"). Runtime images the appliance builds
#                     through the engine still use the engine's cache.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
project=${E2E_PROJECT:-faasvm-e2e}
function=${E2E_FUNCTION:-hello}
expect=${E2E_EXPECT:-Hello, World!}
health_timeout=${E2E_HEALTH_TIMEOUT:-600}
invoke_timeout=${E2E_INVOKE_TIMEOUT:-300}

log() { printf '[e2e-compose] %s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "FAIL: $*"
	exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[[ -d functions/$function ]] || die "no functions/$function to deploy"

# --- tools -------------------------------------------------------------------
t_all=$(now)
bash scripts/docker-engine.sh
if ! command -v curl >/dev/null; then
	log "installing curl"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
fi
bash scripts/compose-plugin.sh
bash scripts/base-images.sh golang

# The build's Go stages trust build/certs/*.crt: give them this machine's
# CA bundle (it holds the extra CA the module proxy is reached through).
# Copied only when it changed, so Docker's layer cache keeps working.
if [[ -f /etc/ssl/certs/ca-certificates.crt ]] &&
	! cmp -s /etc/ssl/certs/ca-certificates.crt build/certs/host-ca-bundle.crt; then
	log "copying /etc/ssl/certs/ca-certificates.crt to build/certs/host-ca-bundle.crt"
	cp /etc/ssl/certs/ca-certificates.crt build/certs/host-ca-bundle.crt
fi

# --- the stack ---------------------------------------------------------------
# A free loopback port: connecting to it must fail.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=
for _ in $(seq 1 50); do
	p=$((20000 + RANDOM % 20000))
	if port_free "$p"; then
		port=$p
		break
	fi
done
[[ -n $port ]] || die "no free port found"

fdir=$(mktemp -d "${TMPDIR:-/tmp}/faas-e2e-functions.XXXXXX")
stage=$(mktemp -d "$fdir.stage.XXXXXX") # same file system: mv is a rename
chmod 0755 "$fdir"
uplog=$stage/up.log
export FAAS_FUNCTIONS_HOST_DIR=$fdir FAAS_HOST_PORT=$port FAAS_HOST_ADDR=127.0.0.1 FAAS_ACCEL=tcg
compose=(docker compose -p "$project" -f compose.yaml)

cid=
teardown() {
	local rc=$?
	trap - EXIT
	if [[ $rc -ne 0 ]]; then
		log "failed (exit $rc); last appliance logs:"
		"${compose[@]}" logs --no-color --tail 60 >&2 2>&1 || true
	fi
	"${compose[@]}" down -v --remove-orphans --timeout 30 >/dev/null 2>&1 || true
	rm -rf "$fdir" "$stage"
	exit "$rc"
}
trap teardown EXIT

# Leftovers of an aborted earlier run would hold the volume and the name.
"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true

log "docker compose -p $project up -d --build (port $port, functions $fdir, FAAS_ACCEL=tcg)"
t_up=$(now)
# The build is long when cold: show its steps as they come, keep the rest.
set +e
{
	if [[ ${E2E_NO_CACHE:-} == 1 ]]; then
		"${compose[@]}" build --no-cache || exit
	fi
	"${compose[@]}" up -d --build
} 2>&1 | tee "$uplog" |
	grep --line-buffered -E '^Step [0-9]+/[0-9]+ : (FROM|RUN|COPY)|^Successfully|Container .* (Started|Error)|ERROR|[Ee]rror( response|:)' >&2
up_rc=${PIPESTATUS[0]}
set -e
if [[ $up_rc -ne 0 ]]; then
	tail -n 40 "$uplog" >&2
	die "docker compose up failed (exit $up_rc; output above)"
fi
up_s=$(since "$t_up")
log "build: $(grep -c '^ ---> Using cache' "$uplog" || true) layer cache hits in $(grep -c '^Step ' "$uplog" || true) steps"
log "docker compose up returned after ${up_s}s"
cid=$("${compose[@]}" ps -q appliance)
[[ -n $cid ]] || die "no appliance container after up"

deadline=$((SECONDS + health_timeout))
while :; do
	status=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$cid")
	[[ $status == "running healthy" ]] && break
	[[ $status == running* ]] || die "the appliance container is $status"
	((SECONDS < deadline)) || die "not healthy within ${health_timeout}s (status: $status)"
	sleep 1
done
healthy_s=$(since "$t_up")
log "healthy ${healthy_s}s after up"

# A user drops a function folder in: copy it whole next to the folder,
# then rename it into place, so the watcher never sees half a function.
cp -r "functions/$function" "$stage/$function"
mv "$stage/$function" "$fdir/$function"
t_copy=$(now)
log "copied functions/$function into the mounted folder; calling /invoke/$function"

url=http://127.0.0.1:$port/invoke/$function
deadline=$((SECONDS + invoke_timeout))
attempts=0
while :; do
	attempts=$((attempts + 1))
	code=$(curl -sS -m 30 -o "$stage/answer" -w '%{http_code}' "$url" 2>/dev/null) || code=000
	if [[ $code == 200 ]] && grep -qF "$expect" "$stage/answer"; then
		break
	fi
	# The appliance rejected the folder: waiting longer cannot help.
	if grep -qs '"error":"function unavailable: .*invalid function' "$stage/answer"; then
		die "the appliance rejects functions/$function: HTTP $code: $(head -c 400 "$stage/answer")"
	fi
	((SECONDS < deadline)) || die "no good answer from $url within ${invoke_timeout}s (last: HTTP $code: $(head -c 300 "$stage/answer" 2>/dev/null))"
	sleep 1
done
first_s=$(since "$t_up")
deploy_s=$(since "$t_copy")
log "HTTP 200 from $url after $attempts attempt(s)"
# (Logs go to a file first: grep -q closing the pipe early would fail it.)
"${compose[@]}" logs --no-color --no-log-prefix >"$stage/logs" 2>&1
grep -qE 'msg="(building image|image built)"' "$stage/logs" ||
	die "the runtime image build is not visible in docker compose logs"

# QEMU processes of the container, seen from the host (cgroup names the container).
container_qemus() {
	local p
	for p in $(pgrep -f qemu-system || true); do
		grep -qs "$cid" "/proc/$p/cgroup" && echo "$p"
	done
	return 0
}
qemus=$(container_qemus | wc -l)
((qemus > 0)) || die "no QEMU process of the container is visible on the host: the leak check below would prove nothing"

image=$(docker inspect -f '{{.Image}}' "$cid")
size=$(docker image inspect -f '{{.Size}}' "$image")

# The CLI in the image exports the function through the host's engine, with
# the appliance's own config, agent and runtimes.
"${compose[@]}" exec -T appliance faasvm export -q --json "/functions/$function" >"$stage/export.json" 2>"$stage/export.err" ||
	die "faasvm export in the container failed: $(tail -c 400 "$stage/export.err")"
tag=$(sed -n 's/^ *"tag": "\(.*\)",$/\1/p' "$stage/export.json" | head -n1)
[[ -n $tag ]] || die "faasvm export printed no tag: $(head -c 400 "$stage/export.json")"
grep -q 'runtimeClassName: kata-fc' "$stage/export.json" || die "the exported manifest has no runtimeClassName"
[[ $(docker image inspect -f '{{index .Config.Labels "org.faasvm.function"}}' "$tag") == "$function" ]] ||
	die "the exported image $tag lacks its labels"
docker image rm "$tag" >/dev/null
log "faasvm export in the container built $tag"

# --- shutdown ----------------------------------------------------------------
t_stop=$(now)
"${compose[@]}" stop >/dev/null 2>&1 || die "docker compose stop failed"
stop_s=$(since "$t_stop")
exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$cid")
[[ $exit_code == 0 ]] || die "the appliance exited with $exit_code on SIGTERM (137 = killed after stop_grace_period)"
docker logs "$cid" >"$stage/logs" 2>&1
grep -q 'msg="all VMs stopped"' "$stage/logs" || die "the appliance did not log \"all VMs stopped\""
"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || die "docker compose down -v failed"

left=$(container_qemus)
[[ -z $left ]] || die "QEMU processes of the container left on the host: $left"
left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
[[ -z $left ]] || die "containers of $project left: $left"
left=$(docker volume ls -q --filter "label=com.docker.compose.project=$project")
[[ -z $left ]] || die "volumes of $project left: $left"
left=$(docker ps -aq --filter "ancestor=faasvm/runtime-python3:latest" --filter status=created)
[[ -z $left ]] || log "warning: created containers of faasvm/runtime-python3 exist ($left): the appliance's or a concurrent test's"

trap - EXIT
rm -rf "$fdir" "$stage"
log "PASS"
printf '%s\n' \
	"e2e-compose: docker compose up -d --build returned   ${up_s}s" \
	"e2e-compose: up -> healthy                           ${healthy_s}s" \
	"e2e-compose: up -> first good /invoke/$function         ${first_s}s" \
	"e2e-compose: function copied -> first good answer    ${deploy_s}s" \
	"e2e-compose: docker compose stop (VMs stopped)       ${stop_s}s" \
	"e2e-compose: QEMU processes seen while running       ${qemus}" \
	"e2e-compose: image faasvm/appliance                  $((size / 1000000)) MB ($size bytes)" \
	"e2e-compose: whole script                            $(since "$t_all")s"
