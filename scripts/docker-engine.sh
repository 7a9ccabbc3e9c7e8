#!/usr/bin/env bash
# docker-engine.sh: make sure a Docker engine answers on this machine.
#
# Installs Debian's docker.io when dockerd is missing, and starts dockerd in
# the background when `docker info` fails. Safe to run again: it does nothing
# when the engine already answers. Needs root for the install and the start.
#
# Environment:
#   DOCKERD_LOG      dockerd's log file (default /var/log/dockerd.log)
#   DOCKERD_TIMEOUT  seconds to wait for the engine to answer (default 60)
set -euo pipefail

log() { printf '%s docker-engine: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

log_file=${DOCKERD_LOG:-/var/log/dockerd.log}
timeout=${DOCKERD_TIMEOUT:-60}

engine_answers() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_answers; then
	log "engine already answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
	exit 0
fi

[[ $(id -u) -eq 0 ]] || die "the engine does not answer and starting it needs root"

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
	log "dockerd or docker missing: installing docker.io with apt"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi

# A dockerd that is running but not (yet) answering is left alone and
# awaited; only start one when none runs.
if pid=$(pgrep -x dockerd); then
	log "dockerd already runs (pid ${pid//$'\n'/ }); waiting for it to answer"
else
	mkdir -p "$(dirname "$log_file")"
	log "starting dockerd in the background (log: $log_file)"
	# setsid detaches it from this script's session so it outlives the caller.
	# Close every inherited descriptor above stderr first: a caller's lock
	# (flock /tmp/faas-vm.lock make test) must not live on in the daemon.
	(
		for fd in $(ls /proc/$BASHPID/fd); do
			[ "$fd" -gt 2 ] && eval "exec $fd>&-"
		done 2>/dev/null
		exec setsid dockerd >>"$log_file" 2>&1 </dev/null
	) &
	log "dockerd started (pid $!)"
fi

deadline=$((SECONDS + timeout))
until engine_answers; do
	if ((SECONDS >= deadline)); then
		log "last lines of $log_file:"
		tail -n 20 "$log_file" >&2 || true
		die "the Docker engine did not answer within ${timeout}s (see $log_file)"
	fi
	if ! pgrep -x dockerd >/dev/null; then
		log "last lines of $log_file:"
		tail -n 20 "$log_file" >&2 || true
		die "dockerd exited before answering (see $log_file)"
	fi
	sleep 0.5
done
log "engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'), after ${SECONDS}s)"
