#!/usr/bin/env bash
# up.sh (`make up`): the appliance in Docker on any machine, including one with
# no image registry and a TLS-intercepting proxy, in one command.
#
# Steps, each skipped when already done:
#   1. a Docker engine (scripts/docker-engine.sh installs docker.io and starts
#      dockerd when none answers) and the Compose v2 plugin
#      (scripts/compose-plugin.sh builds it when `docker compose` is missing);
#   2. base images: when a registry answers, `docker pull` them; when none does,
#      make them locally (scripts/base-images.sh golang: debootstrap + import);
#   3. the CA step: the build's Go stages trust build/certs/*.crt, so this
#      machine's CA bundle (UP_CA_BUNDLE, default /etc/ssl/certs/ca-certificates.crt,
#      which holds a TLS-intercepting proxy's CA once the host trusts it) is
#      copied to build/certs/host-ca-bundle.crt;
#   4. `docker compose up -d --build`, then waits for the health check and for
#      every shipped example in functions/ to answer at /invoke/<name>.
# It leaves the stack running: `docker compose logs -f`, `docker compose down`.
#
# Run as root (apt, dockerd, plugin install). Environment: FAAS_HOST_PORT
# (default 8080), FAAS_HOST_ADDR (127.0.0.1), any FAAS_* compose passes on,
# UP_TIMEOUT seconds for health + examples (default 900: a cold build).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { printf '[up] %s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
timeout_s=${UP_TIMEOUT:-900}
port=${FAAS_HOST_PORT:-8080}
addr=${FAAS_HOST_ADDR:-127.0.0.1}
[[ $addr == 0.0.0.0 ]] && probe=127.0.0.1 || probe=$addr

# --- 1. engine and compose ------------------------------------------------------
log "step 1/4: Docker engine and Compose plugin"
bash scripts/docker-engine.sh
bash scripts/compose-plugin.sh
command -v curl >/dev/null || {
	log "installing curl"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
}

# --- 2. base images -------------------------------------------------------------
log "step 2/4: base images"
need=(debian:bookworm-slim golang:1.26-bookworm)
missing=()
for img in "${need[@]}"; do
	docker image inspect "$img" >/dev/null 2>&1 || missing+=("$img")
done
if ((${#missing[@]})); then
	pulled=1
	for img in "${missing[@]}"; do
		log "pulling $img"
		if ! timeout 120 docker pull -q "$img" >/dev/null 2>&1; then
			pulled=0
			break
		fi
	done
	if ((!pulled)); then
		log "no registry answers: making the base images locally (debootstrap, ~1 min)"
		bash scripts/base-images.sh golang
	fi
else
	log "base images present: ${need[*]}"
fi

# --- 3. CA bundle for the build -------------------------------------------------
log "step 3/4: CA bundle for the build's downloads"
bundle=${UP_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [[ -f $bundle ]]; then
	if ! cmp -s "$bundle" build/certs/host-ca-bundle.crt; then
		log "copying $bundle to build/certs/host-ca-bundle.crt"
		cp "$bundle" build/certs/host-ca-bundle.crt
	fi
else
	log "warning: no CA bundle at $bundle: behind a TLS-intercepting proxy, put its CA in build/certs/*.crt"
fi

# --- 4. the stack -----------------------------------------------------------------
log "step 4/4: docker compose up -d --build (http://$addr:$port)"
set +e
docker compose up -d --build 2>&1 |
	grep --line-buffered -E '^Step [0-9]+/[0-9]+ : (FROM|RUN|COPY)|^Successfully|Container .* (Started|Error|Running)|ERROR|[Ee]rror( response|:)' >&2
up_rc=${PIPESTATUS[0]}
set -e
[[ $up_rc -eq 0 ]] || die "docker compose up failed (exit $up_rc): run 'docker compose up --build' to see why"
cid=$(docker compose ps -q appliance)
[[ -n $cid ]] || die "no appliance container after up: see 'docker compose logs'"

deadline=$((SECONDS + timeout_s))
while :; do
	status=$(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$cid")
	[[ $status == "running healthy" ]] && break
	[[ $status == running* ]] || die "the appliance container is $status: see 'docker compose logs appliance'"
	((SECONDS < deadline)) || die "not healthy within ${timeout_s}s ($status): see 'docker compose logs appliance'"
	sleep 2
done
log "healthy; waiting for the examples (the first run builds their runtime images)"

examples=()
for d in functions/*/; do
	n=$(basename "$d")
	[[ $n == .* ]] || examples+=("$n")
done
for n in "${examples[@]}"; do
	last=
	while :; do
		code=$(curl -sS -m 30 -o /dev/null -w '%{http_code}' "http://$probe:$port/invoke/$n" 2>/dev/null) || code=000
		[[ $code == 200 ]] && break
		if [[ $code != "$last" ]]; then
			log "$n: HTTP $code, waiting"
			last=$code
		fi
		((SECONDS < deadline)) || die "$n did not answer within ${timeout_s}s (HTTP $code): see 'docker compose logs appliance'"
		sleep 2
	done
	log "$n answers: http://$addr:$port/invoke/$n"
done
log "up: dashboard http://$addr:$port/ui/ — 'docker compose logs -f' to follow, 'docker compose down' to stop"
