#!/usr/bin/env bash
# make test-pi: the device package on Raspberry Pi OS Bookworm's arm64 userland, emulated.
#
# A minimal Debian Bookworm arm64 root (debootstrap, Python 3.11, Bookworm's numpy 1.24)
# runs under qemu-user. The package is installed exactly as `make install-device` does
# (systemd/install-device.sh into a DESTDIR, so the same venv flags and constraints), then:
#   1. coral-classifier classify --backend cpu on the flagship bundle's golden images
#      (expected top-1s),
#   2. the daemon with a replay camera against a loopback mosquitto (results, status,
#      availability),
#   3. coral-classifier doctor.
# Emulation artefacts handled here: under qemu-user, LiteRT's cpuinfo reads the x86 host's
# CPU topology and crashes, so the root gets a Raspberry Pi 4's /proc/cpuinfo and
# /sys/devices/system/cpu through bind mounts in a private mount namespace; and qemu's
# default "max" CPU advertises features a Pi 4's Cortex-A72 lacks, for which XNNPACK picks
# int8 kernels that give wrong scores under emulation (the flagship's first golden image:
# 200000_vnd 0.29 instead of 100000_vnd 1.00; without XNNPACK, or with the A72's features,
# the right answer), so qemu emulates a Cortex-A72 (QEMU_CPU).
# The root is cached in $PI_ROOT (first run ~6 min to build; later runs reuse it).
set -euo pipefail

SRC=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/coral-classifier
PI_ROOT=${PI_ROOT:-$CACHE/bookworm-arm64}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
say() { printf '\n== test-pi: %s\n' "$*"; }

need_tools() {
    local missing=""
    command -v debootstrap >/dev/null || missing="$missing debootstrap"
    [ -x /usr/bin/qemu-aarch64-static ] || missing="$missing qemu-user-static binfmt-support"
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
    if [ -n "$missing" ]; then
        say "installing$missing (apt)"
        $SUDO apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || $SUDO update-binfmts --enable qemu-aarch64
    grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || {
        echo "test-pi: qemu-aarch64 is not registered with binfmt_misc; cannot run arm64 code" >&2
        exit 1; }
}

build_root() {
    [ -x "$PI_ROOT/usr/bin/python3" ] && return
    say "building the Bookworm arm64 root in $PI_ROOT (once; cached)"
    mkdir -p "$CACHE"
    rm -rf "$PI_ROOT.partial"
    $SUDO debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-numpy,python3-pip,ca-certificates \
        bookworm "$PI_ROOT.partial" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || {
        tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    mv "$PI_ROOT.partial" "$PI_ROOT"
}

pi4_views() {
    # What a Raspberry Pi 4 (BCM2711, 4x Cortex-A72 at 1.8 GHz) shows in /proc and /sys.
    local v=$1
    rm -rf "$v" && mkdir -p "$v/cpu"
    for i in 0 1 2 3; do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n'
        printf 'CPU part\t: 0xd08\nCPU revision\t: 3\n\n'
    done >"$v/cpuinfo"
    printf 'Revision\t: d03115\nModel\t\t: Raspberry Pi 4 Model B Rev 1.5\n' >>"$v/cpuinfo"
    for f in possible present online; do echo 0-3 >"$v/cpu/$f"; done
    echo 3 >"$v/cpu/kernel_max"
    for i in 0 1 2 3; do
        mkdir -p "$v/cpu/cpu$i/topology" "$v/cpu/cpu$i/cpufreq"
        echo 1 >"$v/cpu/cpu$i/online"
        echo "$i" >"$v/cpu/cpu$i/topology/core_id"
        echo 0 >"$v/cpu/cpu$i/topology/physical_package_id"
        echo 0-3 >"$v/cpu/cpu$i/topology/core_siblings_list"
        echo "$i" >"$v/cpu/cpu$i/topology/thread_siblings_list"
        echo 1800000 >"$v/cpu/cpu$i/cpufreq/cpuinfo_max_freq"
        echo 600000 >"$v/cpu/cpu$i/cpufreq/cpuinfo_min_freq"
    done
}

need_tools
build_root
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
pi4_views "$WORK/pi4"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$PORT" >"$WORK/mosquitto.conf"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
"$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null; rm -rf "$WORK"' EXIT

# The source as a clean copy (no venv, no caches), and the checks to run inside.
mkdir -p "$WORK/src"
git -C "$SRC" ls-files -z | (cd "$SRC" && xargs -0 tar -cf - --no-recursion) | tar -xf - -C "$WORK/src"
cp "$SRC/tests/pi/inside.sh" "$WORK/inside.sh"
cp /etc/resolv.conf "$WORK/resolv.conf"
# pip inside the root trusts what the host's pip trusts (a proxy's CA, if there is one)
HOST_CA=$(python3 -m pip config get global.cert 2>/dev/null || true)
cp "${PIP_CERT:-${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}}" "$WORK/ca.crt"

say "entering the arm64 root (qemu-user) with a Pi 4's cpuinfo; broker on 127.0.0.1:$PORT"
$SUDO unshare -m --propagation private bash -euo pipefail -c '
    R=$1 W=$2
    mount -t proc proc "$R/proc"
    mount --bind "$W/pi4/cpuinfo" "$R/proc/cpuinfo"
    mount -t sysfs sysfs "$R/sys"
    mount --bind "$W/pi4/cpu" "$R/sys/devices/system/cpu"
    mount --rbind /dev "$R/dev"
    mkdir -p "$R/work" "$R/etc"
    mount --bind "$W" "$R/work"
    mount --bind "$W/resolv.conf" "$R/etc/resolv.conf"
    chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        PIP_CERT=/work/ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
        QEMU_CPU=cortex-a72 \
        bash /work/inside.sh "$3"
' test-pi "$PI_ROOT" "$WORK" "$PORT"
say "passed"
# golden images, the daemon on a broker, doctor: each above exits non-zero when it fails
echo "test-pi: 3 passed, 0 failed"
