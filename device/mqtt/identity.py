"""The daemon's MQTT client id: `coral-classifier-<device_id>-<install suffix>`, so two
devices given the same device_id (a copied config, a cloned SD card with its own state)
never take each other's connection over on a broker that does not derive client ids
from user names (mosquitto's `use_username_as_clientid`).

The suffix is random, made once per install and kept in the state folder, so the id is
stable across restarts (the broker's session and its queued messages follow it)."""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX_FILE = "client-id-suffix"
SUFFIX = re.compile(r"^[0-9a-f]{8,32}$")


def install_suffix(state_dir: Path) -> str:
    """This install's random suffix, made on first use; a per-run one (logged) when the
    state folder cannot be written, so a read-only state never makes ids collide."""
    path = state_dir / SUFFIX_FILE
    try:
        text = path.read_text().strip()
        if SUFFIX.match(text):
            return text
    except OSError:
        pass
    suffix = secrets.token_hex(4)
    tmp = path.with_name(f".{SUFFIX_FILE}.{os.getpid()}")
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(suffix + "\n")
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written suffix
    except OSError as exc:
        log.warning("cannot keep the MQTT client id suffix in %s (%s): using %s for this "
                    "run only", path, exc, suffix)
    return suffix


def client_id(configured: str, device_id: str, state_dir: Path) -> str:
    """mqtt.client_id when set, else one no other device can have."""
    if configured:
        return configured
    return f"coral-classifier-{device_id}-{install_suffix(state_dir)}"
