"""Pull updates (`cmd/update {url, sha256, version, signature?}`): the device fetches a
bundle archive itself, then takes the same path as `make deploy`, under the same lock.

download (resume, size limit) → sha256 of the archive → unpack into
models/<version>-<sha12>.partial → Ed25519 signature over its manifest.json (required when
update.public_key is set) → the bundle's own sha256s and version → rename → switch
`current` (a rename) → reload with a nonce: the inference worker loads and self-tests it →
confirmed: `previous` moves, old versions are pruned; refused or timed out: `current`
switches back. Progress and the result go to cmd/update/reply and to status.update. It all
runs on its own thread: the frame loop and paho's thread never wait for it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device.bundle import load_bundle, sha256_file
from device.config import UpdateConfig
from device.daemon.fetch import UpdateError, check_signature, fetch, source_kind
from device.errors import CoralError

log = logging.getLogger(__name__)

VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
LOCK, PENDING, NONCE_FILE = ".deploy.lock", ".deploy-pending", ".reload-nonce"
Reply = dict[str, Any]


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


class Updater:
    """One update at a time, on its own thread; the daemon reports reloads back to it."""

    def __init__(self, cfg: UpdateConfig, model_path: str, reload: Callable[[str], None],
                 reply: Callable[[Reply], None], changed: Callable[[], None],
                 reload_timeout: float):
        self.cfg = cfg
        self.store = Store(Path(model_path))
        self.reload = reload
        self.reply = reply
        self.changed = changed
        self.reload_timeout = reload_timeout
        self.state: dict[str, Any] = {"state": "idle"}
        self._busy = threading.Lock()
        self._reloaded = threading.Condition()
        self._outcomes: dict[str, Reply] = {}

    # -- called by the command runner and the daemon --------------------------------------
    def start(self, args: dict[str, Any]) -> Reply | None:
        """Validate the request; run it on a thread. A reply at once only when refused."""
        if not self.cfg.enabled:
            return {"ok": False, "error": "pull updates are off on this device (update."
                    "enabled = false)"}
        req = self._validate(args)
        if not self._busy.acquire(blocking=False):
            return {"ok": False, "error": f"an update to {self.state.get('version')} is "
                    "already running: wait for its reply", **req.get("id", {})}
        threading.Thread(target=self._run, args=(req,), name="update", daemon=True).start()
        return None

    def reloaded(self, nonces: list[str], result: Reply) -> None:
        with self._reloaded:
            for n in nonces:
                if n:
                    self._outcomes[n] = result
            self._reloaded.notify_all()

    def status(self) -> dict[str, Any]:
        return dict(self.state)

    # -- the update -----------------------------------------------------------------------
    def _validate(self, args: dict[str, Any]) -> dict[str, Any]:
        from device.mqtt.commands import PayloadError

        url, sha, version = args.get("url"), args.get("sha256"), args.get("version")
        sig, rid = args.get("signature", ""), args.get("id", "")
        if not isinstance(rid, str) or len(rid) > 64:
            raise PayloadError("id must be a string of at most 64 characters")
        if args.get("rollback") is True:  # back to `previous` (a rollout's failed health)
            if set(args) - {"rollback", "id"}:
                raise PayloadError("rollback takes only an id")
            return {"rollback": True, "url": "", "sha256": "", "version": "previous",
                    "signature": "", "id": {"id": rid} if rid else {}}
        if not isinstance(url, str) or not url or len(url) > 2048:
            raise PayloadError("url must be an https:// URL or an absolute path on the device")
        try:
            kind = source_kind(url)
        except UpdateError as exc:
            raise PayloadError(str(exc)) from None
        if kind not in self.cfg.allowed_schemes:
            raise PayloadError(f"url scheme {kind!r} is not allowed here (update."
                               f"allowed_schemes = {list(self.cfg.allowed_schemes)})")
        if not isinstance(sha, str) or not SHA256.match(sha):
            raise PayloadError("sha256 must be the archive's sha256: 64 lowercase hex digits")
        if not isinstance(version, str) or not VERSION.match(version):
            raise PayloadError("version must be 1-64 letters, digits, '.', '_', '+' or '-', "
                               "starting with a letter or digit")
        if not isinstance(sig, str) or len(sig) > 200:
            raise PayloadError("signature must be base64 text (Ed25519, 88 characters)")
        if self.cfg.public_key and not sig:
            raise PayloadError("this device requires a signature (update.public_key is set): "
                               "sign the bundle's manifest.json with the matching key")
        if sig and not self.cfg.public_key:
            raise PayloadError("a signature was given but update.public_key is not set on "
                               "the device to check it")
        return {"url": url, "sha256": sha, "version": version, "signature": sig,
                "id": {"id": rid} if rid else {}}

    def _progress(self, req: dict[str, Any], state: str, **extra: Any) -> None:
        self.state = {"state": state, "version": req["version"], "sha256": req["sha256"],
                      "ts": round(time.time(), 3), **extra}
        self.reply({"ok": True, **self.state, **req["id"]})
        self.changed()

    def _finish(self, req: dict[str, Any], ok: bool, state: str, **extra: Any) -> None:
        self.state = {"state": state, "version": req["version"], "sha256": req["sha256"],
                      "ts": round(time.time(), 3), **extra}
        self.reply({"ok": ok, **self.state, **req["id"]})
        self.changed()

    def _run(self, req: dict[str, Any]) -> None:
        try:
            self._update(req)
        except CoralError as exc:
            log.error("update to %s failed: %s", req["version"], exc)
            self._finish(req, False, "failed", error=str(exc))
        except Exception as exc:  # never let an update thread die silently
            log.exception("update to %s failed", req["version"])
            self._finish(req, False, "failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._busy.release()

    def _update(self, req: dict[str, Any]) -> None:
        store, sha = self.store, req["sha256"]
        self._progress(req, "waiting_for_lock")
        fd = store.lock(self.cfg.lock_wait)
        try:
            store.recover()
            if req.get("rollback"):
                previous = store.read("previous")
                if not previous or not store.resolve("previous"):
                    raise UpdateError("no previous version to roll back to")
                self._switch(req, previous)
                return
            part = store.dir / f".download-{sha[:16]}.part"
            self._progress(req, "downloading", bytes=part.stat().st_size
                           if part.exists() else 0)
            fetch(req["url"], part, self.cfg.max_bytes, self.cfg.timeout,
                  lambda n, total: self._progress(req, "downloading", bytes=n, total=total))
            got = sha256_file(part)
            if got != sha:
                part.unlink(missing_ok=True)  # never resume from a corrupt file
                raise UpdateError(f"corrupt download: sha256 {got[:12]}… is not the expected "
                                  f"{sha[:12]}…; nothing was changed")
            self._progress(req, "verifying")
            try:
                staged = self._stage(req, part)
            finally:  # complete and checked: only an interrupted download is resumed
                part.unlink(missing_ok=True)
            if staged is None:
                self._finish(req, True, "done", note="already serving this version")
                return
            self._switch(req, staged.name)
        finally:
            os.close(fd)  # releases the flock

    def _stage(self, req: dict[str, Any], part: Path) -> Path | None:
        """Unpack and verify; the version's folder (named like `make deploy` names it:
        <version>-<model sha256[:12]>), or None when that is what already serves."""
        from device.daemon.fetch import unpack

        store = self.store
        staging = store.dir / f".update-{req['sha256'][:16]}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            unpack(part, staging, self.cfg.max_bytes * 4)
            if req["signature"]:
                manifest = (staging / "manifest.json").read_bytes()
                check_signature(self.cfg.public_key, manifest, req["signature"])
            try:
                bundle = load_bundle(staging)  # every file's sha256, the schema
            except CoralError as exc:
                raise UpdateError(f"the downloaded bundle is not valid: {exc}") from None
            if bundle.version != req["version"]:
                raise UpdateError(f"the bundle says version {bundle.version!r}, the request "
                                  f"{req['version']!r}: nothing was changed")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        final = store.dir / f"{bundle.version}-{bundle.sha256[:12]}"
        if store.resolve(store.link.name) == os.path.realpath(final):
            shutil.rmtree(staging)
            return None
        pinned = {store.resolve(store.link.name), store.resolve("previous")}
        if final.exists() and os.path.realpath(final) in pinned:
            shutil.rmtree(staging)  # the same version is `previous`: keep that copy
        else:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
        return final

    def _switch(self, req: dict[str, Any], target: str) -> None:
        """Point current at target (a version folder's name), reload with a nonce, wait
        for the worker's verdict; confirmed: previous = what served before."""
        store = self.store
        old = store.read(store.link.name)
        (store.dir / PENDING).write_text(old + "\n")
        nonce = secrets.token_hex(8)
        self._progress(req, "switching")
        store.set(store.link.name, target)
        self.reload(nonce)
        self._progress(req, "self_testing")
        with self._reloaded:
            self._reloaded.wait_for(lambda: nonce in self._outcomes, self.reload_timeout)
            result = self._outcomes.pop(nonce, None)
        if result is None or not result.get("ok"):
            why = (result or {}).get("error") or (f"no reload within {self.reload_timeout:.0f}"
                                                  " s")
            store.set(store.link.name, old)
            (store.dir / PENDING).unlink(missing_ok=True)
            if result is None:  # unknown state: make the daemon load `current` again
                self.reload("")
            self._finish(req, False, "rolled_back", error=f"reload failed: {why}",
                         model=(result or {}).get("model"), serving=old)
            return
        if old:
            store.set("previous", old)
        (store.dir / PENDING).unlink(missing_ok=True)
        store.prune(self.cfg.keep)
        self._finish(req, True, "done", model=result.get("model"))
