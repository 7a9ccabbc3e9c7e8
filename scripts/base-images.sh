#!/usr/bin/env bash
# base-images.sh: make the local base images the runtime Dockerfiles build FROM.
#
# No image registry is reachable here, so debian:bookworm-slim is made from
# Debian's packages: debootstrap --variant=minbase, trimmed like the official
# slim image, then `docker import`. Its apt sources point at the Debian
# mirror this machine uses, so `RUN apt-get install ...` works in builds.
# Idempotent: an image that already exists is left alone. Needs root.
#
# Environment:
#   BASE_IMAGE       image to make (default debian:bookworm-slim)
#   DEBIAN_MIRROR    Debian mirror (default: the bookworm one apt is configured with)
#   DEBIAN_SECURITY  security mirror (default: the bookworm-security one apt is configured with)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
image=${BASE_IMAGE:-debian:bookworm-slim}
suite=bookworm

log() { printf '%s base-images: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

"$here/docker-engine.sh"

if docker image inspect "$image" >/dev/null 2>&1; then
	log "$image already exists ($(docker image inspect -f '{{.Id}}' "$image")): nothing to do"
	exit 0
fi
[[ $(id -u) -eq 0 ]] || die "making $image with debootstrap needs root"

if ! command -v debootstrap >/dev/null; then
	log "installing debootstrap"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# configured_uri RELEASE: the mirror apt on this machine uses for RELEASE.
configured_uri() {
	# shellcheck disable=SC2016 # $(...) are apt's format fields, not shell
	apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 'Created-By: Packages' 2>/dev/null |
		awk -v r="$1" '$1 == r { sub(/\/$/, "", $2); print $2; exit }'
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
