#!/usr/bin/env bash
# Install, update or remove coral-classifier on a Raspberry Pi. Idempotent.
#   sudo systemd/install-device.sh install     (make install-device)
#   sudo systemd/install-device.sh uninstall   (make uninstall-device; PURGE=1 also removes
#                                               config, models, counts and the user)
# DESTDIR stages everything under another root and skips creating users, udev and systemctl
# (the tests use it; run as root, it still sets owners when the accounts exist); PIP_ARGS is
# passed to pip.
#
# Who may deploy: models/ belongs to the service user and the group $DEPLOY_GROUP
# (setgid, group-writable), so a deploy user in that group copies versions and switches
# links without root; /etc/sudoers.d/coral-classifier-deploy lets the group run exactly
# `systemctl reload coral-classifier` and nothing else. DEPLOY_USERS (default: the user
# who ran sudo) are added to the group.
set -euo pipefail
umask 022

SRC=$(cd "$(dirname "$0")/.." && pwd)
ACTION=${1:-install}
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/coral-classifier}
SERVICE_USER=${SERVICE_USER:-coral-classifier}
DEPLOY_GROUP=${DEPLOY_GROUP:-coral-classifier-deploy}
DEPLOY_USERS=${DEPLOY_USERS-${SUDO_USER:-}}
PYTHON=${PYTHON:-/usr/bin/python3}
PIP_ARGS=${PIP_ARGS:-}
STATE=/var/lib/coral-classifier
ETC=/etc/coral-classifier
UNIT=/etc/systemd/system/coral-classifier.service
RULES=/etc/udev/rules.d/99-coral-edgetpu.rules
SUDOERS=/etc/sudoers.d/coral-classifier-deploy
MARKER=.installed-by-coral-classifier  # in $PREFIX: what uninstall may remove is ours
if [ -n "$DESTDIR" ]; then SYSTEMCTL=${SYSTEMCTL:-true}; else SYSTEMCTL=${SYSTEMCTL:-systemctl}; fi

say() { echo "install-device: $*"; }
die() { echo "install-device: $*" >&2; exit 1; }

# PREFIX must be a folder of its own: uninstall removes only $PREFIX/venv and the marker,
# then the folder if it is empty; never the prefix itself (PREFIX=/usr/local is refused).
check_prefix() {
    case "$PREFIX" in
        /*) ;;
        *) die "PREFIX=$PREFIX must be an absolute path" ;;
    esac
    case "${PREFIX%/}" in
        ""|/usr|/usr/local|/opt|/var|/etc|/home|/root|/srv|/bin|/sbin|/lib|/boot|/tmp)
            die "PREFIX=$PREFIX is a system folder: give a folder of its own such as /opt/coral-classifier" ;;
    esac
    [[ "$PREFIX" != *..* ]] || die "PREFIX=$PREFIX must not contain '..'"
}

have_accounts() {
    id -u "$SERVICE_USER" >/dev/null 2>&1 && getent group "$DEPLOY_GROUP" >/dev/null
}

# Owners and modes of the state: the service's folder (traversable, not listable, by the
# deploy group) and models/ (service user : deploy group, setgid, group-writable).
set_owners() {
    local state="$DESTDIR$STATE"
    chmod 0751 "$state"
    chmod 2775 "$state/models"
    if [ "$(id -u)" = 0 ] && have_accounts; then
        chown "$SERVICE_USER:$SERVICE_USER" "$state"
        chown "$SERVICE_USER:$DEPLOY_GROUP" "$state/models"
        # versions already there become the group's, so any deploy user can prune them
        find "$state/models" -mindepth 1 \( -type d -o -type f \) -exec chgrp -h "$DEPLOY_GROUP" {} + \
            -exec chmod g+w {} +
        chgrp "$SERVICE_USER" "$DESTDIR$ETC" "$DESTDIR$ETC/config.toml"
    else
        say "owners not set (not root, or $SERVICE_USER / $DEPLOY_GROUP do not exist here)"
    fi
}

install_sudoers() {
    local tmp
    tmp=$(mktemp)
    sed -e "s|@DEPLOY_GROUP@|$DEPLOY_GROUP|g" "$SRC/systemd/coral-classifier-deploy.sudoers" > "$tmp"
    if command -v visudo >/dev/null 2>&1 && ! visudo -cqf "$tmp"; then
        rm -f "$tmp"; die "the sudoers rule does not validate (visudo -c): not installed"
    fi
    install -D -m 0440 "$tmp" "$DESTDIR$SUDOERS"
    rm -f "$tmp"
}

# Pull updates are signed by default: UPDATE_PUBLIC_KEY (the keys/update.pub that `make keys`
# wrote on the workstation, copied here) becomes $ETC/update.pub and update.public_key.
# Without it a new config opts out explicitly (update.allow_unsigned = true), which
# `coral-classifier doctor` warns about; a kept config is left as it is.
configure_update_key() {
    local cfg="$DESTDIR$ETC/config.toml" fresh=$1 key="${UPDATE_PUBLIC_KEY:-}"
    if [ -n "$key" ]; then
        [ -f "$key" ] || die "UPDATE_PUBLIC_KEY=$key is not a file: copy keys/update.pub from the workstation (make keys)"
        if grep -q "PRIVATE KEY" "$key"; then
            die "UPDATE_PUBLIC_KEY=$key is a private key: give keys/update.pub and keep update.pem on the workstation"
        fi
        grep -q "BEGIN PUBLIC KEY" "$key" || die "UPDATE_PUBLIC_KEY=$key is not a PEM public key (keys/update.pub from make keys)"
        install -m 0644 "$key" "$DESTDIR$ETC/update.pub"
        local line="public_key = \"$ETC/update.pub\"  # installed from UPDATE_PUBLIC_KEY (make keys)"
        if grep -q '^public_key *=' "$cfg"; then
            sed -i -e "s|^public_key *=.*|$line|" -e 's|^allow_unsigned *=.*|allow_unsigned = false|' "$cfg"
        elif grep -q '^\[update\]' "$cfg"; then
            sed -i "/^\[update\]/a $line" "$cfg"
        else
            printf '\n[update]\n%s\n' "$line" >> "$cfg"
        fi
        say "pull updates must be signed with the key matching $ETC/update.pub"
    elif [ "$fresh" = 1 ]; then
        sed -i 's|^allow_unsigned *=.*|allow_unsigned = true    # no UPDATE_PUBLIC_KEY at install: unsigned updates accepted (doctor warns)|' "$cfg"
        say "no UPDATE_PUBLIC_KEY: unsigned pull updates are accepted (update.allow_unsigned = true)."
        say "  To require signatures: make keys (workstation), copy keys/update.pub here, then"
        say "  sudo make install-device UPDATE_PUBLIC_KEY=/path/to/update.pub"
    elif ! grep -q '^allow_unsigned *= *true' "$cfg" && ! grep -q '^public_key *= *"[^"]' "$cfg"; then
        say "pull updates are refused until update.public_key is set (UPDATE_PUBLIC_KEY=) or"
        say "  update.allow_unsigned = true opts out of signing"
    fi
}

install_device() {
    check_prefix
    if [ -z "$DESTDIR" ]; then
        [ "$(id -u)" = 0 ] || { echo "run as root (sudo make install-device)" >&2; exit 1; }
        for g in video plugdev apex "$DEPLOY_GROUP"; do
            getent group "$g" >/dev/null || groupadd --system "$g"
        done
        id -u "$SERVICE_USER" >/dev/null 2>&1 || useradd --system --home-dir "$STATE" \
            --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
        usermod -a -G video,plugdev,apex "$SERVICE_USER"
        for u in $DEPLOY_USERS; do
            [ "$u" = root ] && continue
            usermod -a -G "$DEPLOY_GROUP" "$u" && say "$u may deploy (group $DEPLOY_GROUP; log in again)"
        done
    fi
    # --system-site-packages: Raspberry Pi OS's picamera2/libcamera and Coral's pycoral
    # come from apt and must stay visible inside the venv.
    if [ ! -x "$DESTDIR$PREFIX/venv/bin/python" ]; then
        "$PYTHON" -m venv --system-site-packages "$DESTDIR$PREFIX/venv"
    fi
    echo "coral-classifier venv; uninstall-device removes $PREFIX/venv and this file only" \
        > "$DESTDIR$PREFIX/$MARKER"
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
        configure_update_key 1
    else
        say "kept the existing $ETC/config.toml"
        configure_update_key 0
    fi
    install -D -m 0644 "$SRC/systemd/coral-classifier.service" "$DESTDIR$UNIT"
    install -D -m 0644 "$SRC/systemd/99-coral-edgetpu.rules" "$DESTDIR$RULES"
    install_sudoers
    set_owners
    if [ -z "$DESTDIR" ]; then
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
    check_prefix
    local prefix="$DESTDIR$PREFIX"
    if [ -d "$prefix" ] && [ ! -e "$prefix/$MARKER" ] && [ -n "$(ls -A "$prefix")" ]; then
        die "$PREFIX was not made by install-device (no $MARKER): nothing removed"
    fi
    $SYSTEMCTL disable --now coral-classifier.service 2>/dev/null || true
    rm -f "$DESTDIR$UNIT" "$DESTDIR$RULES" "$DESTDIR$SUDOERS"
    if [ -f "$prefix/venv/pyvenv.cfg" ]; then rm -rf -- "$prefix/venv"; fi
    rm -f -- "$prefix/$MARKER"
    rmdir -- "$prefix" 2>/dev/null || true
    $SYSTEMCTL daemon-reload || true
    if [ "${PURGE:-0}" = 1 ]; then
        rm -rf -- "$DESTDIR$ETC" "$DESTDIR$STATE"
        [ -n "$DESTDIR" ] || userdel "$SERVICE_USER" 2>/dev/null || true
        [ -n "$DESTDIR" ] || groupdel "$DEPLOY_GROUP" 2>/dev/null || true
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
