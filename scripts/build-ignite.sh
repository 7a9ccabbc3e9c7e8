#!/usr/bin/env bash
# Builds the Ignite v0.10.0 CLI (ignite and ignite-spawn) from the Go module
# proxy into DEST (a directory; default .cache/bin). Idempotent: binaries that
# already answer `ignite version -o short` with the wanted version are kept.
#
# `go install github.com/weaveworks/ignite/cmd/ignite@v0.10.0` refuses to
# build (Ignite's go.mod has replace directives), so a throw-away wrapper
# module under .cache/ignite-build requires Ignite and repeats the replaces
# it needs (see ../shared/NOTES-deps.md). Needs only the Go toolchain and the
# module proxy. Cold build ~90 s.
#
# Usage: scripts/build-ignite.sh [DEST]
set -euo pipefail

version=v0.10.0
firecracker=v0.22.4 # hack/FIRECRACKER_VERSION of Ignite v0.10.0: what its sandbox image ships

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/.cache/bin}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
work=${IGNITE_BUILD_DIR:-$root/.cache/ignite-build}

if [ -x "$dest/ignite" ] && [ -x "$dest/ignite-spawn" ] &&
  [ "$("$dest/ignite" version -o short 2>/dev/null)" = "$version" ]; then
  echo "ignite $version already in $dest"
  exit 0
fi

command -v go >/dev/null || { echo "build-ignite: the Go toolchain (go) is not on PATH" >&2; exit 1; }

mkdir -p "$work"
cd "$work"
cat >tools.go <<'EOF'
//go:build tools

// Package tools pins the Ignite commands this module builds.
package tools

import (
	_ "github.com/weaveworks/ignite/cmd/ignite"
	_ "github.com/weaveworks/ignite/cmd/ignite-spawn"
)
EOF
if [ ! -f go.mod ] || ! grep -q "github.com/weaveworks/ignite $version" go.mod; then
  rm -f go.mod go.sum
  cat >go.mod <<EOF
module faasvm.local/ignite-build

go 1.16

require github.com/weaveworks/ignite $version

replace (
	github.com/docker/distribution => github.com/docker/distribution v0.0.0-20190711223531-1fb7fffdb266
	github.com/vishvananda/netlink => github.com/twelho/netlink v1.1.1-ageing
	vbom.ml/util => github.com/fvbommel/util v0.0.0-20160121211510-db5cfe13f5cc
)
EOF
  # reflect2 v1.0.1 (what Ignite pins) crashes inside json-iterator on new Go
  # releases; v1.0.2 with json-iterator v1.1.12 works.
  GOFLAGS=-mod=mod go get github.com/weaveworks/ignite@$version \
    github.com/modern-go/reflect2@v1.0.2 github.com/json-iterator/go@v1.1.12
fi

pkg=github.com/weaveworks/ignite/pkg/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=0 -X $pkg.gitMinor=10 -X $pkg.gitTreeState=clean"
ldflags+=" -X $pkg.firecrackerVersion=$firecracker -X $pkg.sandboxImageTag=$version"
for cmd in ignite ignite-spawn; do
  echo "building $cmd $version"
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$dest/$cmd.tmp" \
    github.com/weaveworks/ignite/cmd/$cmd
  mv -f "$dest/$cmd.tmp" "$dest/$cmd"
done
got=$("$dest/ignite" version -o short)
if [ "$got" != "$version" ]; then
  echo "build-ignite: built ignite says $got, want $version" >&2
  exit 1
fi
echo "ignite $version in $dest"
