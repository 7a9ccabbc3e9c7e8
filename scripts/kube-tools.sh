#!/usr/bin/env bash
# Builds the tools the export tests check manifests with, from the Go module
# proxy, into DEST (default .cache/bin), and copies Knative Serving's CRDs
# next to them:
#   kubecheck   strict decoding with the real Kubernetes and Knative API types,
#               and Knative's own Service validation (build/exportcheck)
#   registry    an in-memory OCI registry on loopback, for --push (build/exportcheck)
#   kubeapi     a real kube-apiserver v1.36 on an embedded etcd v3.6, for
#               server-side dry runs (build/kubeapi)
#   DEST/../knative-crds/*.yaml   the CRDs of the Knative Serving release
#               kubecheck validates with (knative.dev/serving v0.42.2 = Knative 1.15)
# Each lives in a module of its own: Knative and the API server need newer
# Kubernetes libraries than the appliance's module can take.
#
# Idempotent: a tool is rebuilt only when its module's files changed (a
# stamp of their hashes sits beside it). Cold: ~30 s for build/exportcheck,
# ~4 min for kubeapi on 2 cores (module downloads included).
#
# Usage: scripts/kube-tools.sh [DEST]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/.cache/bin}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
crds=$(dirname "$dest")/knative-crds
log() { printf '[kube-tools] %s %s\n' "$(date +%H:%M:%S)" "$*"; }

command -v go >/dev/null || { echo "kube-tools: the Go toolchain (go) is not on PATH" >&2; exit 1; }

# stamp prints a hash of a module folder's Go files, go.mod and go.sum.
stamp() {
  (cd "$1" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 |
    sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

# build MODULE_DIR PACKAGE BINARY: go build unless the stamp matches.
build() {
  local mod=$1 pkg=$2 bin=$3 want
  want="$(stamp "$mod") $(go env GOVERSION)"
  if [ -x "$dest/$bin" ] && [ "$(cat "$dest/$bin.stamp" 2>/dev/null)" = "$want" ]; then
    log "$bin up to date in $dest"
    return
  fi
  log "building $bin from $(basename "$mod")"
  local start=$SECONDS
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dest/$bin.tmp" "$pkg")
  mv -f "$dest/$bin.tmp" "$dest/$bin"
  echo "$want" > "$dest/$bin.stamp"
  log "$bin built in $((SECONDS - start)) s"
}

build "$root/build/exportcheck" ./kubecheck kubecheck
build "$root/build/exportcheck" ./registry registry
build "$root/build/kubeapi" . kubeapi

# The CRDs of the Knative release kubecheck is built against, from the
# module cache the build just filled.
serving=$(cd "$root/build/exportcheck" && go list -m -f '{{.Dir}}' knative.dev/serving)
mkdir -p "$crds"
cp -f "$serving"/config/core/300-resources/*.yaml "$crds"/
chmod 0644 "$crds"/*.yaml
log "Knative CRDs in $crds ($(ls "$crds" | wc -l) files)"
