#!/usr/bin/env bash
# fetch-kernel.sh DEST: fetch Debian bookworm's cloud kernel into DEST.
#
# DEST ends up holding:
#   vmlinux                 the uncompressed kernel ELF (what qemu -kernel boots on microvm)
#   modules/*.ko            the modules the guest agent loads (uncompressed)
#   modules/modules.list    their file names, one a line, in load order (dependencies first)
#   SHA256SUMS              sha256sum manifest of vmlinux and modules/*
#   VERSION                 package=, version=, release= lines; written last
#
# Idempotent: when DEST/VERSION names the package version apt would fetch and
# SHA256SUMS still verifies, nothing is done. Needs apt (Debian), lz4, and
# xz/zstd only for compressed modules.
set -euo pipefail

META_PKG=linux-image-cloud-amd64
MODULES=(virtio_ring virtio virtio_mmio virtio_blk failover net_failover virtio_net overlay)

log() { printf '%s fetch-kernel: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -eq 1 ]] || die "usage: $0 DEST"
dest=$1

command -v apt-get >/dev/null || die "apt-get not found: this script needs a Debian host"
if ! command -v lz4 >/dev/null; then
	log "installing lz4"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lz4 >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lz4 >/dev/null; }
fi

# resolve_pkg prints the kernel image package the meta package depends on.
resolve_pkg() {
	apt-cache depends "$META_PKG" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'
}
pkg=$(resolve_pkg || true)
if [[ -z $pkg ]]; then
	log "apt lists do not know $META_PKG: running apt-get update"
	apt-get update -qq
	pkg=$(resolve_pkg || true)
fi
[[ -n $pkg ]] || die "cannot resolve the package $META_PKG depends on (apt-cache depends $META_PKG)"
version=$(apt-cache show --no-all-versions "$pkg" | awk '/^Version:/ { print $2; exit }')
[[ -n $version ]] || die "apt-cache show $pkg gives no version"
release=${pkg#linux-image-}
want_version=$(printf 'package=%s\nversion=%s\nrelease=%s\n' "$pkg" "$version" "$release")

if [[ -f $dest/VERSION && "$(cat "$dest/VERSION")" == "$want_version" ]] &&
	(cd "$dest" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1); then
	log "$dest already holds $pkg $version: nothing to do"
	exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fetch-kernel.XXXXXX")
trap 'rm -rf "$work"' EXIT

log "downloading $pkg $version"
# As root, apt warns that the download is unsandboxed: keep its chatter for failures.
if ! (cd "$work" && apt-get download -qq "$pkg=$version") >"$work/download.log" 2>&1; then
	cat "$work/download.log" >&2
	die "apt-get download $pkg=$version failed"
fi
deb=$(find "$work" -maxdepth 1 -name '*.deb' -print -quit)
[[ -n $deb ]] || die "apt-get download $pkg=$version produced no .deb"
log "unpacking $(basename "$deb") ($(du -h "$deb" | cut -f1))"
dpkg-deb -x "$deb" "$work/x"

vmlinuz=$work/x/boot/vmlinuz-$release
[[ -f $vmlinuz ]] || die "$pkg has no boot/vmlinuz-$release"

mkdir -p "$(dirname "$dest")"
stage=$(mktemp -d "$(dirname "$dest")/.$(basename "$dest").new.XXXXXX")
trap 'rm -rf "$work" "$stage"' EXIT
mkdir -p "$stage/modules"

# Extract vmlinux the way the kernel's scripts/extract-vmlinux does: try each
# LZ4 legacy frame magic (02 21 4c 18) in the bzImage and keep the first
# output that is an ELF. lz4 exits non-zero on the trailing data after the
# payload, so the ELF magic, not the exit code, tells success.
log "extracting vmlinux from $(basename "$vmlinuz")"
found=
while IFS=: read -r off _; do
	tail -c "+$((off + 1))" "$vmlinuz" | lz4 -dc >"$stage/vmlinux" 2>/dev/null || true
	if [[ "$(head -c4 "$stage/vmlinux" | od -An -tx1 | tr -d ' \n')" == 7f454c46 ]]; then
		found=$off
		break
	fi
done < <(LC_ALL=C grep -obUaP '\x02\x21\x4c\x18' "$vmlinuz")
[[ -n $found ]] || die "no LZ4 payload in $vmlinuz yields an ELF (is the kernel LZ4-compressed?)"
log "vmlinux: $(stat -c %s "$stage/vmlinux") bytes (LZ4 payload at offset $found)"

moddir=$work/x/lib/modules/$release
[[ -d $moddir ]] || moddir=$work/x/usr/lib/modules/$release
[[ -d $moddir ]] || die "$pkg has no lib/modules/$release"

# copy_module NAME: copy NAME.ko (decompressing .ko.xz/.ko.zst) into the stage.
copy_module() {
	local name=$1 src out=$stage/modules/$1.ko
	src=$(find "$moddir" \( -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" -o -name "$name.ko.gz" \) -print -quit)
	[[ -n $src ]] || die "module $name is not in $pkg"
	case $src in
	*.ko) cp "$src" "$out" ;;
	*.ko.xz) xz -dc "$src" >"$out" ;;
	*.ko.zst) zstd -qdc "$src" >"$out" ;;
	*.ko.gz) gzip -dc "$src" >"$out" ;;
	esac
}

# deps NAME: the modules NAME.ko depends on, from its .modinfo "depends=".
deps() {
	tr '\0' '\n' <"$stage/modules/$1.ko" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '
}

# Order the modules so that each comes after its dependencies. The wanted
# list must be closed under dependencies: the guest has nothing else.
declare -A placed=()
order=()
place() {
	local name=$1 dep
	[[ -n ${placed[$name]:-} ]] && return
	[[ -f $stage/modules/$name.ko ]] || die "module ${2:-?} depends on $name, which is not in the module list"
	placed[$name]=visiting
	for dep in $(deps "$name"); do
		dep=${dep//-/_}
		[[ ${placed[$dep]:-} == visiting ]] && die "module dependency cycle at $dep"
		place "$dep" "$name"
	done
	placed[$name]="done"
	order+=("$name.ko")
}
for m in "${MODULES[@]}"; do copy_module "$m"; done
for m in "${MODULES[@]}"; do place "$m"; done
printf '%s\n' "${order[@]}" >"$stage/modules/modules.list"
log "modules (load order): ${order[*]}"

(cd "$stage" && sha256sum vmlinux modules/* >SHA256SUMS)
printf '%s\n' "$want_version" >"$stage/VERSION"
chmod 0755 "$stage"

# Swap the finished stage in; VERSION is already inside, so a half-done run
# never looks complete.
if [[ -e $dest ]]; then
	old=$(mktemp -d "$(dirname "$dest")/.$(basename "$dest").old.XXXXXX")
	mv "$dest" "$old/d"
	mv "$stage" "$dest"
	rm -rf "$old"
else
	mv "$stage" "$dest"
fi
log "$dest holds $pkg $version (release $release)"
