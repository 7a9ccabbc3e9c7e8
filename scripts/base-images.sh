#!/usr/bin/env bash
# base-images.sh: make the local base images the runtime Dockerfiles build FROM.
#
# No image registry is reachable here, so debian:bookworm-slim is made from
# Debian's packages: debootstrap --variant=minbase, trimmed like the official
# slim image, then `docker import`. Its apt sources point at the Debian
# mirror this machine uses, so `RUN apt-get install ...` works in builds.
# Idempotent: an image that already exists is left alone. Needs root.
#
# With the argument `golang` it then also makes golang:1.26-bookworm, the
# build image of build/Dockerfile: debian:bookworm-slim plus the Go toolchain
# this machine has (GOROOT, e.g. /usr/local/go), laid out like the official
# image (/usr/local/go, GOPATH=/go, PATH, GOTOOLCHAIN=local, ca-certificates,
# curl, git). It is remade when the local Go version differs from the one it
# was made with; a golang image that was not made here (pulled) is kept.
#
# Usage: base-images.sh [golang]
#
# Environment:
#   BASE_IMAGE       image to make (default debian:bookworm-slim)
#   GOLANG_IMAGE     Go image to make with `golang` (default golang:1.26-bookworm)
#   GOROOT_SRC       Go toolchain to copy into it (default: `go env GOROOT`)
#   DEBIAN_MIRROR    Debian mirror (default: the bookworm one apt is configured with)
#   DEBIAN_SECURITY  security mirror (default: the bookworm-security one apt is configured with)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
image=${BASE_IMAGE:-debian:bookworm-slim}
golang_image=${GOLANG_IMAGE:-golang:1.26-bookworm}
suite=bookworm

log() { printf '%s base-images: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

want_golang=
for arg in "$@"; do
	case $arg in
	golang) want_golang=1 ;;
	*) die "unknown argument $arg (usage: base-images.sh [golang])" ;;
	esac
done

# make_golang: golang_image FROM image, with the local Go toolchain copied in.
make_golang() {
	local goroot go_version have gwork start=$SECONDS
	goroot=${GOROOT_SRC:-$(go env GOROOT 2>/dev/null || true)}
	[[ -n $goroot && -x $goroot/bin/go ]] || die "no Go toolchain to copy into $golang_image (set GOROOT_SRC)"
	go_version=$("$goroot/bin/go" env GOVERSION)
	go_version=${go_version#go}
	if docker image inspect "$golang_image" >/dev/null 2>&1; then
		have=$(docker image inspect -f '{{index .Config.Labels "org.faasvm.go-version"}}' "$golang_image")
		if [[ -z $have || $have == "<no value>" ]]; then
			log "$golang_image already exists (not made here): nothing to do"
			return
		elif [[ $have == "$go_version" ]]; then
			log "$golang_image already exists with Go $go_version: nothing to do"
			return
		fi
		log "$golang_image holds Go $have, this machine has Go $go_version: remaking it"
	fi
	gwork=$(mktemp -d "${TMPDIR:-/var/tmp}/golang-image.XXXXXX")
	cat >"$gwork/Dockerfile" <<DOCKERFILE
FROM $image
LABEL org.faasvm.go-version="$go_version"
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl git \\
 && rm -rf /var/lib/apt/lists/*
COPY go /usr/local/go
ENV GOLANG_VERSION=$go_version GOTOOLCHAIN=local GOPATH=/go
ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /go/src /go/bin && chmod -R 1777 /go && go version
WORKDIR /go
DOCKERFILE
	log "making $golang_image from $image and the Go $go_version toolchain in $goroot"
	# The build context (this Dockerfile + GOROOT renamed go/) is streamed
	# as one tar, so the toolchain is not copied on disk first.
	local base
	base=$(basename "$goroot")
	if ! tar --numeric-owner --owner=0 --group=0 -c -C "$gwork" Dockerfile \
		-C "$(dirname "$goroot")" --exclude="$base/test" --transform "s,^$base,go," "$base" |
		docker build -t "$golang_image" - >"$gwork/build.log" 2>&1; then
		tail -n 30 "$gwork/build.log" >&2
		rm -rf "$gwork"
		die "building $golang_image failed (output above)"
	fi
	rm -rf "$gwork"
	log "$golang_image is $(docker image inspect -f '{{.Id}}' "$golang_image") (made in $((SECONDS - start))s)"
}

# finish: the optional images, once the Debian one exists.
finish() {
	if [[ -n $want_golang ]]; then
		make_golang
	fi
	exit 0
}

"$here/docker-engine.sh"

if docker image inspect "$image" >/dev/null 2>&1; then
	log "$image already exists ($(docker image inspect -f '{{.Id}}' "$image")): nothing to do"
	finish
fi
[[ $(id -u) -eq 0 ]] || die "making $image with debootstrap needs root"

if ! command -v debootstrap >/dev/null; then
	log "installing debootstrap"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# configured_uri RELEASE: the mirror apt on this machine uses for RELEASE,
# when it is a plain http(s) address (not, say, the mirror+file: lists of
# cloud images, which debootstrap cannot use).
configured_uri() {
	# shellcheck disable=SC2016 # $(...) are apt's format fields, not shell
	apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 'Created-By: Packages' 2>/dev/null |
		awk -v r="$1" '$1 == r && $2 ~ /^https?:\/\// { sub(/\/$/, "", $2); print $2; exit }'
}
mirror=${DEBIAN_MIRROR:-$(configured_uri "$suite")}
mirror=${mirror:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY:-$(configured_uri "$suite-security")}
security=${security:-http://deb.debian.org/debian-security}

work=$(mktemp -d "${TMPDIR:-/var/tmp}/base-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

log "debootstrap --variant=minbase $suite from $mirror"
start=$SECONDS
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
	tail -n 20 "$work/debootstrap.log" >&2
	die "debootstrap failed (log above)"
}
log "debootstrap done in $((SECONDS - start))s"

# apt sources for builds inside the image: the same mirrors this machine uses.
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# Slim like the official image: no docs, man pages or locales, no apt caches.
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
DPKG
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/{man,info,groff,lintian,linda,locale}/* \
	"$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
	"$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/tmp/* "$root/debootstrap"
: >"$root/etc/hostname"
: >"$root/etc/resolv.conf"

log "importing $root as $image ($(du -sh "$root" | cut -f1))"
id=$(tar --numeric-owner -C "$root" -c . | docker import -c 'CMD ["bash"]' -m "debootstrap --variant=minbase $suite $mirror" - "$image")
log "$image is $id (made in $((SECONDS - start))s)"

# Prove apt works inside: the runtime Dockerfiles rely on it.
if ! docker run --rm "$image" sh -c 'apt-get update -qq && apt-cache policy bash | grep -q Candidate' >"$work/check.log" 2>&1; then
	cat "$work/check.log" >&2
	die "apt-get update fails inside $image (output above)"
fi
log "apt works inside $image"
finish
