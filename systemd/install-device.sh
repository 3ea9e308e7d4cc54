#!/usr/bin/env bash
# Install, update or remove coral-classifier on a Raspberry Pi. Idempotent.
#   sudo systemd/install-device.sh install     (make install-device)
#   sudo systemd/install-device.sh uninstall   (make uninstall-device; PURGE=1 also removes
#                                               config, models, counts and the user)
# DESTDIR stages everything under another root and skips users, udev and systemctl
# (the tests use it); PIP_ARGS is passed to pip.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
ACTION=${1:-install}
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/coral-classifier}
SERVICE_USER=${SERVICE_USER:-coral-classifier}
PYTHON=${PYTHON:-/usr/bin/python3}
PIP_ARGS=${PIP_ARGS:-}
STATE=/var/lib/coral-classifier
ETC=/etc/coral-classifier
UNIT=/etc/systemd/system/coral-classifier.service
RULES=/etc/udev/rules.d/99-coral-edgetpu.rules
if [ -n "$DESTDIR" ]; then SYSTEMCTL=${SYSTEMCTL:-true}; else SYSTEMCTL=${SYSTEMCTL:-systemctl}; fi

say() { echo "install-device: $*"; }

install_device() {
    if [ -z "$DESTDIR" ]; then
        [ "$(id -u)" = 0 ] || { echo "run as root (sudo make install-device)" >&2; exit 1; }
        for g in video plugdev apex; do
            getent group "$g" >/dev/null || groupadd --system "$g"
        done
        id -u "$SERVICE_USER" >/dev/null 2>&1 || useradd --system --home-dir "$STATE" \
            --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
        usermod -a -G video,plugdev,apex "$SERVICE_USER"
    fi
    # --system-site-packages: Raspberry Pi OS's picamera2/libcamera and Coral's pycoral
    # come from apt and must stay visible inside the venv.
    if [ ! -x "$DESTDIR$PREFIX/venv/bin/python" ]; then
        "$PYTHON" -m venv --system-site-packages "$DESTDIR$PREFIX/venv"
    fi
    # On a Pi keep Bookworm's numpy 1.24 (simplejpeg/picamera2 are built against it) and
    # never pull TensorFlow: device/constraints-pi.txt pins numpy<2, opencv<4.12.
    local constraints=""
    case "$(uname -m)" in aarch64|armv7l) constraints="-c $SRC/device/constraints-pi.txt" ;; esac
    # shellcheck disable=SC2086
    "$DESTDIR$PREFIX/venv/bin/pip" install --quiet $PIP_ARGS $constraints "$SRC[device]"
    # The Edge TPU runtime pairing (device/tools/pairing.py, README): a libedgetpu built
    # for a TensorFlow and the tflite-runtime wheel of that same TensorFlow, from files or
    # URLs the user gives (e.g. libedgetpu1-std 16.0tf2.17.1 + tflite_runtime 2.17.1).
    if [ -n "${TFLITE_WHEEL:-}" ]; then
        # shellcheck disable=SC2086
        "$DESTDIR$PREFIX/venv/bin/pip" install --quiet $PIP_ARGS $constraints "$TFLITE_WHEEL"
    fi
    if [ -n "${LIBEDGETPU_DEB:-}" ] && [ -z "$DESTDIR" ]; then
        local deb="$LIBEDGETPU_DEB"
        case "$deb" in
            http://*|https://*) deb=$(mktemp --suffix=.deb); curl -fsSL -o "$deb" "$LIBEDGETPU_DEB" ;;
        esac
        apt-get install -y "$(realpath "$deb")"
    fi
    install -d -m 0750 "$DESTDIR$ETC" "$DESTDIR$STATE" "$DESTDIR$STATE/models"
    if [ ! -e "$DESTDIR$ETC/config.toml" ]; then
        sed -e 's|^type = "replay".*|type = "picamera2"      # picamera2 \| opencv \| replay|' \
            -e 's|^source = ".demo/replay".*|source = ""|' \
            -e "s|^path = \"compiled_models/demo-notes\".*|path = \"$STATE/models/current\"  # make deploy switches this link|" \
            -e "s|^dir = \"\" .*|dir = \"$STATE\"|" \
            "$SRC/device/example.toml" > "$DESTDIR$ETC/config.toml"
        chmod 0640 "$DESTDIR$ETC/config.toml"
        say "wrote $ETC/config.toml: set mqtt.host and the rest, then check it with"
        say "  $PREFIX/venv/bin/coral-classifier check-config $ETC/config.toml"
    else
        say "kept the existing $ETC/config.toml"
    fi
    install -D -m 0644 "$SRC/systemd/coral-classifier.service" "$DESTDIR$UNIT"
    install -D -m 0644 "$SRC/systemd/99-coral-edgetpu.rules" "$DESTDIR$RULES"
    if [ -z "$DESTDIR" ]; then
        chown -R "$SERVICE_USER:$SERVICE_USER" "$STATE"
        chgrp "$SERVICE_USER" "$ETC" "$ETC/config.toml"
        udevadm control --reload-rules && udevadm trigger || true
    fi
    $SYSTEMCTL daemon-reload
    $SYSTEMCTL enable coral-classifier.service
    if [ -e "$DESTDIR$STATE/models/current" ]; then
        $SYSTEMCTL restart coral-classifier.service
        say "service (re)started"
    else
        say "no model yet: from your workstation run"
        say "  make deploy HOST=<user>@<this-pi> MODEL=compiled_models/<name>"
    fi
}

uninstall_device() {
    $SYSTEMCTL disable --now coral-classifier.service 2>/dev/null || true
    rm -f "$DESTDIR$UNIT" "$DESTDIR$RULES"
    rm -rf "$DESTDIR$PREFIX"
    $SYSTEMCTL daemon-reload || true
    if [ "${PURGE:-0}" = 1 ]; then
        rm -rf "$DESTDIR$ETC" "$DESTDIR$STATE"
        [ -n "$DESTDIR" ] || userdel "$SERVICE_USER" 2>/dev/null || true
        say "removed, with config, models, counts and the service user"
    else
        say "removed; kept $ETC and $STATE (models, counts, outbox): PURGE=1 removes them"
    fi
}

case "$ACTION" in
    install) install_device ;;
    uninstall) uninstall_device ;;
    *) echo "usage: $0 install|uninstall" >&2; exit 2 ;;
esac
