"""models/ as a store of versions: the `current` and `previous` links, the deploy lock that
`make deploy` and pull updates share, and the sweep of what an interrupted update left."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import time
from pathlib import Path

from device.daemon.fetch import UpdateError

log = logging.getLogger(__name__)

VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
LOCK, PENDING, NONCE_FILE = ".deploy.lock", ".deploy-pending", ".reload-nonce"


def read_deploy_nonce(model_path: str | Path) -> str:
    """The nonce `make deploy` leaves beside the `current` link before it sends SIGHUP."""
    try:
        text = (Path(model_path).parent / NONCE_FILE).read_text()[:64].strip()
    except OSError:
        return ""
    return text if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text) else ""


class Store:
    """models/: version folders, the `current` and `previous` links, the deploy lock."""

    def __init__(self, link: Path):
        self.link = link
        self.dir = link.parent

    def lock(self, wait: float) -> int:
        fd = os.open(self.dir / LOCK, os.O_RDONLY | os.O_CREAT, 0o664)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise UpdateError(f"{self.dir / LOCK} is held by a deploy or another "
                                      f"update for {wait:.0f} s: try again later") from None
                time.sleep(0.2)

    def read(self, name: str) -> str:
        try:
            return os.readlink(self.dir / name)
        except OSError:
            return ""

    def resolve(self, name: str) -> str:
        p = self.dir / name
        return os.path.realpath(p) if p.is_symlink() else ""

    def set(self, name: str, target: str) -> None:
        """Point a link at target with one rename ('' removes it)."""
        if not target:
            (self.dir / name).unlink(missing_ok=True)
            return
        tmp = self.dir / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, self.dir / name)

    def recover(self) -> None:
        """Undo a switch whose deploy or update died before its confirmation."""
        pending = self.dir / PENDING
        if pending.exists():
            before = pending.read_text().strip()
            if before and self.read(self.link.name) != before:
                log.warning("an earlier deploy did not finish; restoring current -> %s", before)
                self.set(self.link.name, before)
            pending.unlink()

    def prune(self, keep: int) -> None:
        pinned = {self.resolve(self.link.name), self.resolve("previous")}
        dirs = sorted((p for p in self.dir.iterdir() if p.is_dir() and not p.is_symlink()
                       and VERSION.match(p.name) and not p.name.endswith(".partial")),
                      key=lambda p: p.stat().st_mtime, reverse=True)
        kept = sum(1 for p in dirs if os.path.realpath(p) in pinned)
        for p in dirs:
            if os.path.realpath(p) in pinned:
                continue
            if kept < keep:
                kept += 1
                continue
            shutil.rmtree(p, ignore_errors=True)
            log.info("removed old version %s", p.name)

    def sweep(self) -> None:
        """Remove what an update that died mid-way left: `.download-*.part` files and
        `.update-*.partial` folders (an update resumes only within its own attempts)."""
        try:
            names = [p for p in self.dir.iterdir() if p.name.startswith((".download-",
                                                                          ".update-"))]
        except OSError:
            return
        for p in names:
            try:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
                log.info("removed %s, left by an interrupted update", p.name)
            except OSError as exc:  # never stop the daemon from starting over it
                log.warning("cannot remove %s (%s): remove it by hand", p, exc)

    def current_version(self) -> str:
        """The version in the manifest of what `current` points at ('' when unknown)."""
        import json

        try:
            manifest = json.loads((self.link / "manifest.json").read_text())
        except (OSError, ValueError):
            return ""
        version = manifest.get("version") if isinstance(manifest, dict) else None
        return version if isinstance(version, str) else ""
