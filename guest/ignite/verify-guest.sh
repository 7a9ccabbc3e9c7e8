#!/usr/bin/env bash
# verify-guest.sh [RUNTIME]: boot the Ignite variant of a runtime image the
# way an Ignite VM boots it, as far as a host without KVM and Firecracker
# allows, and check that the guest half of the ignite engine works:
#
#   - guest/ignite/Dockerfile builds on faasvm/runtime-RUNTIME:latest;
#   - the image's root filesystem, with the three files the engine puts in
#     through Ignite's copyFiles (agent, agent.json, code.ext4), boots to
#     systemd, which mounts the code read-only (function.mount) and starts
#     the agent (faas-agent.service);
#   - the agent answers its health check and runs the function;
#   - POST /poweroff on the control port ends the agent, systemd reboots,
#     and the VM ends.
#
# What stands in for what: QEMU microvm under TCG for Firecracker, the
# appliance's Debian kernel (FAAS_KERNEL_DIR) for Ignite's 5.10 kernel, and a
# busybox initramfs for what Ignite's kernel does by itself: it has virtio
# and loop built in (here they are modules the initramfs loads) and takes
# its address by DHCP from ignite-spawn (ip=dhcp; here the initramfs sets
# QEMU's user-mode address). Writing the files into the root filesystem
# stands in for Ignite's copyFiles. Everything after the switch to the
# image's /sbin/init is the real thing.
#
# Needs: a Docker engine (faasvm/runtime-RUNTIME:latest is built from
# guest/runtimes/RUNTIME when missing), qemu-system-x86_64,
# mke2fs (e2fsprogs), cpio, curl, apt-get (downloads busybox-static and the
# kernel package for loop.ko into a temp dir; nothing is installed), and
# FAAS_KERNEL_DIR / FAAS_AGENT_BIN as for `make test` (defaults: .cache/...).
# VERIFY_KEEP=1 keeps the work directory (console log, images) for a look.
set -euo pipefail

runtime=${1:-python3}
root=$(cd "$(dirname "$0")/../.." && pwd)
kernel_dir=${FAAS_KERNEL_DIR:-$root/.cache/kernel}
agent_bin=${FAAS_AGENT_BIN:-$root/.cache/bin/agent}
base=faasvm/runtime-$runtime:latest
image=faasvm/runtime-$runtime-ignite:latest
log() { printf '[verify-guest] %s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

for f in "$kernel_dir/vmlinux" "$kernel_dir/VERSION" "$kernel_dir/modules/modules.list" "$agent_bin"; do
	[[ -e $f ]] || die "$f is missing (scripts/fetch-kernel.sh, make agent)"
done
for c in docker qemu-system-x86_64 mke2fs cpio curl apt-get dpkg-deb python3; do
	command -v "$c" >/dev/null || die "$c is not on PATH"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/verify-guest.XXXXXX")
qemu_pid=
cleanup() {
	if [[ -n $qemu_pid ]]; then kill "$qemu_pid" 2>/dev/null || true; fi
	if [[ -n ${VERIFY_KEEP:-} ]]; then
		log "kept $work (console.log, rootfs.ext4, initrd.cpio)"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

if ! docker image inspect "$base" >/dev/null 2>&1; then
	log "building $base from guest/runtimes/$runtime"
	docker build -q -t "$base" "$root/guest/runtimes/$runtime" >/dev/null
fi
log "building $image from $base"
docker build -q --build-arg "BASE=$base" -t "$image" "$root/guest/ignite" >/dev/null

log "exporting its root filesystem"
cid=$(docker create "$image")
mkdir "$work/rootfs"
docker export "$cid" | tar -x -C "$work/rootfs"
docker rm "$cid" >/dev/null

log "copying in what the engine's copyFiles bring: agent, agent.json, code.ext4"
secret=verify-$RANDOM$RANDOM
control=control-$RANDOM$RANDOM
mkdir -p "$work/code"
cat >"$work/code/handler.sh" <<'EOF'
# Runs in every runtime image: bash and coreutils only.
echo "body=$(cat)"
echo "pid1=$(cat /proc/1/comm)"
while read -r _ dir type opts _; do
	[ "$dir" = /function ] && echo "function_mount=$type $opts"
done </proc/self/mounts
if [ -w /function ]; then echo read_only=False; else echo read_only=True; fi
EOF
mke2fs -q -t ext4 -L faas-code -d "$work/code" "$work/code.ext4" 16M
install -D -m 0755 "$agent_bin" "$work/rootfs/usr/lib/faas/agent"
install -D -m 0600 /dev/stdin "$work/rootfs/etc/faas/agent.json" <<EOF
{"name":"verify","secret":"$secret","controlSecret":"$control","mode":"exec","runtime":"$runtime","handler":"handler.sh",
 "command":["bash","handler.sh"],"timeout":"30s","network":{"address":"","gateway":"","dns":""}}
EOF
install -D -m 0444 "$work/code.ext4" "$work/rootfs/var/lib/faas/code.ext4"
size_mb=$(( $(du -sm "$work/rootfs" | cut -f1) + 256 ))
mke2fs -q -t ext4 -d "$work/rootfs" "$work/rootfs.ext4" "${size_mb}M"

log "initramfs: busybox, virtio and loop modules"
kpkg=$(sed -n 's/^package=//p' "$kernel_dir/VERSION")
kver=$(sed -n 's/^version=//p' "$kernel_dir/VERSION")
(cd "$work" && apt-get download -qq busybox-static "$kpkg=$kver" >/dev/null 2>&1) ||
	die "apt-get download busybox-static $kpkg=$kver failed"
dpkg-deb -x "$work"/busybox-static_*.deb "$work/bb"
mkdir -p "$work/initrd"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$work/bb/bin/busybox" "$work/initrd/bin/busybox"
cp "$kernel_dir"/modules/*.ko "$work/initrd/lib/modules/"
cp "$kernel_dir/modules/modules.list" "$work/initrd/lib/modules/"
dpkg-deb --fsys-tarfile "$work"/linux-image-*.deb | tar -x -C "$work" --wildcards '*/kernel/drivers/block/loop.ko*'
loop=$(find "$work" -path '*/drivers/block/loop.ko*' -print -quit)
case $loop in
*.xz) xz -dc "$loop" >"$work/initrd/lib/modules/loop.ko" ;;
*.zst) zstd -qdc "$loop" >"$work/initrd/lib/modules/loop.ko" ;;
*) cp "$loop" "$work/initrd/lib/modules/loop.ko" ;;
esac
echo loop.ko >>"$work/initrd/lib/modules/modules.list"
cat >"$work/initrd/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/modules.list); do insmod /lib/modules/$m || echo "initramfs: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] || [ ! -e /sys/class/net/eth0 ]; do
	i=$((i + 1)); [ $i -gt 500 ] && { echo "initramfs: no /dev/vda or eth0"; reboot -f; }
	sleep 0.01
done
# What Ignite's kernel does with ip=dhcp, here with QEMU's user-mode address.
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
mount -o rw /dev/vda /newroot || { echo "initramfs: mounting the root failed"; reboot -f; }
umount /proc /sys
echo "initramfs: switching to the image's /sbin/init"
exec switch_root /newroot /sbin/init
EOF
chmod 0755 "$work/initrd/init"
(cd "$work/initrd" && find . | cpio -o -H newc --quiet >"$work/initrd.cpio")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
khz=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
log "booting under QEMU (TCG); console: $work/console.log"
begin=$(date +%s%N)
qemu-system-x86_64 -M microvm,x-option-roms=off,isa-serial=on,rtc=on -accel tcg -cpu max -m 512 -smp 1 \
	-nodefaults -no-user-config -nographic -no-reboot \
	-kernel "$kernel_dir/vmlinux" -initrd "$work/initrd.cpio" \
	-append "console=ttyS0 reboot=t panic=-1 tsc_early_khz=$khz tsc=reliable cryptomgr.notests" \
	-drive "file=$work/rootfs.ext4,format=raw,if=none,id=root,cache=unsafe" -device virtio-blk-device,drive=root \
	-netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-:8080,hostfwd=tcp:127.0.0.1:$cport-:8081" -device virtio-net-device,netdev=n0 \
	-chardev "file,id=con,path=$work/console.log" -serial chardev:con &
qemu_pid=$!

fail() {
	log "console (last 60 lines):"
	tail -n 60 "$work/console.log" >&2 || true
	die "$*"
}
url=http://127.0.0.1:$port
curl_control=http://127.0.0.1:$cport
for _ in $(seq 1 600); do
	kill -0 "$qemu_pid" 2>/dev/null || fail "the VM ended before its agent answered"
	if [[ $(curl -s -o /dev/null -w '%{http_code}' -m 2 -H "X-Faas-Control: $control" "$curl_control/health" || true) == 200 ]]; then
		break
	fi
	sleep 0.5
done
[[ $(curl -s -o /dev/null -w '%{http_code}' -m 2 -H "X-Faas-Control: $control" "$curl_control/health" || true) == 200 ]] ||
	fail "the agent did not answer its health check within 300 s"
log "agent healthy $(( ($(date +%s%N) - begin) / 1000000 )) ms after start"

out=$(curl -s -m 30 -H "X-Faas-Secret: $secret" --data-binary 'hello ignite' "$url/")
log "function answered: $(echo "$out" | tr '\n' ' ')"
for want in "body=hello ignite" "pid1=systemd" "function_mount=ext4 ro," "read_only=True"; do
	grep -q "$want" <<<"$out" || fail "the answer lacks '$want'"
done
[[ $(curl -s -o /dev/null -w '%{http_code}' -m 2 "$curl_control/health") == 403 ]] || fail "a control request without the control secret was not refused"
[[ $(curl -s -o /dev/null -w '%{http_code}' -m 2 "$url/") == 403 ]] || fail "a request without the secret was not refused"

log "powering off through the agent"
curl -s -m 5 -X POST -H "X-Faas-Control: $control" "$curl_control/poweroff" >/dev/null || true
for _ in $(seq 1 240); do
	kill -0 "$qemu_pid" 2>/dev/null || break
	sleep 0.5
done
kill -0 "$qemu_pid" 2>/dev/null && fail "the VM still runs 120 s after the poweroff request"
wait "$qemu_pid" || true
qemu_pid=
grep -q "Reached target.*Reboot\|reboot: Restarting system\|systemd-shutdown" "$work/console.log" ||
	fail "the console does not show systemd rebooting"
log "PASS: the Ignite variant of $base boots to systemd, mounts the code read-only, serves the function and ends on poweroff"
