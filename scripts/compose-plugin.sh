#!/usr/bin/env bash
# compose-plugin.sh: make sure `docker compose` (the Compose v2 CLI plugin) works.
#
# Debian bookworm packages only the old python docker-compose 1.29, and no
# release binary can be downloaded here, so the plugin is built from the Go
# module proxy: a throw-away wrapper module requires
# github.com/docker/compose/v5 and builds its cmd package (v5.7.0 does not
# build with our toolchain; v5.6.0 does and works against the Debian 20.10
# engine). The binary is cached under .cache/compose/ and installed as
# /usr/libexec/docker/cli-plugins/docker-compose, where the docker CLI looks
# for plugins. Idempotent: nothing is built when `docker compose version`
# already answers with a v2+ plugin, nothing is rebuilt when the cached
# binary exists. Needs Go (1.26) and, to install, root.
#
# Environment:
#   COMPOSE_VERSION     module version to build (default v5.6.0)
#   COMPOSE_PLUGIN_DIR  where to install (default /usr/libexec/docker/cli-plugins)
#   COMPOSE_FORCE=1     install the pinned build even if a plugin already answers
#   COMPOSE_BUILD_ONLY=1  build (or keep) the cached binary and stop before installing it
#                       (scripts/test.sh builds it in the background while apt may
#                       still be installing the docker CLI)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
version=${COMPOSE_VERSION:-v5.6.0}
plugin_dir=${COMPOSE_PLUGIN_DIR:-/usr/libexec/docker/cli-plugins}
cache=$root/.cache/compose
bin=$cache/docker-compose-$version
module=github.com/docker/compose/v5

log() { printf '%s compose-plugin: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ ${COMPOSE_FORCE:-} != 1 ]] && out=$(docker compose version --short 2>/dev/null); then
	log "docker compose already works (version $out): nothing to do"
	exit 0
fi

if [[ ! -x $bin ]]; then
	command -v go >/dev/null || die "go not found: building the compose plugin needs the Go toolchain"
	mkdir -p "$cache"
	work=$(mktemp -d "$cache/.build.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	cat >"$work/go.mod" <<MOD
module local/compose-plugin

go 1.24

require $module $version
MOD
	cat >"$work/tools.go" <<'GO'
//go:build tools

// Package tools only pins the compose module so that `go build` can build its cmd package.
package tools

import _ "github.com/docker/compose/v5/cmd"
GO
	log "building $module/cmd@$version from the Go module proxy (about 80 s cold)"
	start=$SECONDS
	(
		cd "$work"
		GOFLAGS=-mod=mod go mod tidy >"$work/tidy.log" 2>&1 || { cat "$work/tidy.log" >&2; exit 1; }
		CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
			-ldflags "-w -X $module/internal.Version=$version" \
			-o "$work/docker-compose" "$module/cmd"
	) || die "building the compose plugin failed (output above)"
	mv "$work/docker-compose" "$bin"
	log "built $bin in $((SECONDS - start))s ($(du -h "$bin" | cut -f1))"
else
	log "using the cached build $bin"
fi

if [[ ${COMPOSE_BUILD_ONLY:-} == 1 ]]; then
	log "build only: $bin is ready, not installed"
	exit 0
fi

[[ -w $plugin_dir || $(id -u) -eq 0 ]] || die "installing into $plugin_dir needs root"
mkdir -p "$plugin_dir"
install -m 0755 "$bin" "$plugin_dir/docker-compose"
got=$(docker compose version --short 2>&1) || die "docker compose does not answer after installing $plugin_dir/docker-compose: $got"
log "installed $plugin_dir/docker-compose ($got)"
