#!/usr/bin/env bash
# Build the device image (container/Dockerfile) with buildah, or podman, whichever exists.
#   container/build.sh [amd64|arm64|x86_64|aarch64]     (make container CONTAINER_ARCH=arm64)
# BASE=image overrides the base. When the registry cannot be reached (an offline builder)
# and the arch is this machine's, the base is made here from Debian's own packages with
# debootstrap (DEBIAN_MIRROR, default deb.debian.org) and committed as localhost/bookworm-base.
# PIP_CA=/path/ca.pem is mounted for pip while building (a TLS-inspecting proxy's CA); it
# defaults to pip's own `cert` setting on this machine, if any. WITH_PICAMERA=0 leaves out
# picamera2 (Raspberry Pi's repository) from an arm64 image. Another arch is emulated
# (qemu-user-static, binfmt) when the base has to be made here.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-$(uname -m)}" in
    x86_64|amd64) ARCH=amd64 ;;
    aarch64|arm64) ARCH=arm64 ;;
    *) echo "usage: $0 [amd64|arm64]" >&2; exit 2 ;;
esac
TAG=${TAG:-localhost/coral-classifier:$ARCH}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if command -v buildah >/dev/null; then B=buildah; elif command -v podman >/dev/null; then B=podman
else echo "neither buildah nor podman: sudo apt-get install buildah" >&2; exit 1; fi
NATIVE=$(dpkg --print-architecture 2>/dev/null || echo amd64)

if [ -z "${BASE:-}" ]; then
    BASE=docker.io/library/debian:bookworm-slim
    if ! $B pull --arch "$ARCH" "$BASE" >/dev/null 2>&1; then
        BASE=localhost/bookworm-base:$ARCH
        if ! $B inspect "$BASE" >/dev/null 2>&1; then
            if [ "$ARCH" != "$NATIVE" ] && ! grep -qs enabled /proc/sys/fs/binfmt_misc/qemu-aarch64; then
                echo "the registry is unreachable and $ARCH is not this machine's arch: give BASE=" \
                     "an $ARCH Debian bookworm image, build on the Pi, or install qemu-user-static" \
                     "(binfmt) to emulate it" >&2
                exit 1
            fi
            command -v debootstrap >/dev/null || { echo "sudo apt-get install debootstrap" >&2; exit 1; }
            echo "build: registry unreachable; making $BASE with debootstrap from $MIRROR"
            rootfs=$(mktemp -d)
            trap 'rm -rf "$rootfs"' EXIT
            debootstrap --variant=minbase --arch "$ARCH" bookworm "$rootfs" "$MIRROR" >/dev/null
            echo "deb $MIRROR bookworm main" > "$rootfs/etc/apt/sources.list"
            rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
            ctr=$(buildah from scratch)
            buildah copy "$ctr" "$rootfs" / >/dev/null
            buildah config --arch "$ARCH" --os linux \
                --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
                --cmd /bin/bash "$ctr"
            buildah commit --rm "$ctr" "$BASE" >/dev/null
        fi
    fi
fi
PIP_CA=${PIP_CA-$(python3 -m pip config get global.cert 2>/dev/null || true)}
ca_args=()
if [ -n "$PIP_CA" ] && [ -f "$PIP_CA" ]; then
    ca_args=(--volume "$PIP_CA:/run/build-ca.pem:ro" --build-arg PIP_CA=/run/build-ca.pem)
fi
echo "build: $TAG from $BASE"
$B build --layers --arch "$ARCH" --build-arg "BASE=$BASE" --build-arg "TARGETARCH=$ARCH" \
    "${ca_args[@]}" \
    ${LIBEDGETPU_DEB:+--build-arg "LIBEDGETPU_DEB=$LIBEDGETPU_DEB"} \
    ${TFLITE_WHEEL:+--build-arg "TFLITE_WHEEL=$TFLITE_WHEEL"} \
    ${WITH_PICAMERA:+--build-arg "WITH_PICAMERA=$WITH_PICAMERA"} \
    -f container/Dockerfile -t "$TAG" .
echo "build: done: $TAG"
