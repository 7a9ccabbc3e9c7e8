#!/usr/bin/env bash
# Builds the Ignite v0.10.0 CLI (ignite, and ignite-spawn for the sandbox image) from the Go module
# proxy into DEST (a directory; default .cache/bin). Idempotent: binaries that
# already answer `ignite version -o short` with the wanted version are kept.
#
# `go install github.com/weaveworks/ignite/cmd/ignite@v0.10.0` refuses to
# build (Ignite's go.mod has replace directives), so the wrapper module in
# build/ignite requires Ignite and repeats the replaces it needs (and pins
# reflect2 v1.0.2, as v1.0.1 crashes on current Go); build/Dockerfile builds
# from the same module.
# Needs only the Go toolchain and the module proxy. Cold build ~90 s.
#
# Usage: scripts/build-ignite.sh [DEST]
set -euo pipefail

version=v0.10.0
firecracker=v0.22.4 # hack/FIRECRACKER_VERSION of Ignite v0.10.0: what its sandbox image ships

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/.cache/bin}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

if [ -x "$dest/ignite" ] && [ -x "$dest/ignite-spawn" ] &&
  [ "$("$dest/ignite" version -o short 2>/dev/null)" = "$version" ]; then
  echo "ignite $version already in $dest"
  exit 0
fi

command -v go >/dev/null || { echo "build-ignite: the Go toolchain (go) is not on PATH" >&2; exit 1; }

# build/ignite is the wrapper module (pinned go.sum), shared with build/Dockerfile.
cd "$root/build/ignite"
pkg=github.com/weaveworks/ignite/pkg/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=0 -X $pkg.gitMinor=10 -X $pkg.gitTreeState=clean"
ldflags+=" -X $pkg.firecrackerVersion=$firecracker -X $pkg.sandboxImageTag=$version"
# ignite-spawn runs inside Ignite's sandbox image, not on the host: it is
# built for making that image where no registry serves it (docs/ignite.md).
for cmd in ignite ignite-spawn; do
  echo "building $cmd $version"
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dest/$cmd.tmp" \
    github.com/weaveworks/ignite/cmd/$cmd
  mv -f "$dest/$cmd.tmp" "$dest/$cmd"
done
got=$("$dest/ignite" version -o short)
if [ "$got" != "$version" ]; then
  echo "build-ignite: built ignite says $got, want $version" >&2
  exit 1
fi
echo "ignite $version in $dest"
