"""Pull updates (`cmd/update {envelope, signature, id}`): the device fetches a bundle
archive itself, then takes the same path as `make deploy`, under the same lock.

signed envelope checked (device/daemon/envelope.py: key, target, not_before, version only
forward) → download (fetch.py: bounded in size, time, rate and free space) → sha256 of the
archive → unpack into models/.update-<sha>.partial (archive.py: bounded) → the bundle's own
sha256s and version → rename → switch `current` (a rename) → reload with a nonce: the
inference worker loads and self-tests it → confirmed: `previous` moves, old versions are
pruned; refused or timed out: `current` switches back. Nothing is fetched before the
request is trusted, nothing unpacked before the archive's sha256 matches, and a failure
removes what it wrote. Progress and the result go to cmd/update/reply and to
status.update. It all runs on its own thread: the frame loop and paho's thread never wait.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from device.bundle import load_bundle, sha256_file
from device.config import UpdateConfig
from device.daemon.envelope import Request, is_older, parse_request, request_id
from device.daemon.fetch import Limits, UpdateError, fetch
from device.daemon.store import PENDING, Store, read_deploy_nonce
from device.errors import CoralError

log = logging.getLogger(__name__)

__all__ = ["Store", "UpdateError", "Updater", "read_deploy_nonce"]
Reply = dict[str, Any]


class Updater:
    """One update at a time, on its own thread; the daemon reports reloads back to it."""

    def __init__(self, cfg: UpdateConfig, model_path: str, reload: Callable[[str], None],
                 reply: Callable[[Reply], None], changed: Callable[[], None],
                 reload_timeout: float, device_id: str = ""):
        self.cfg = cfg
        self.device_id = device_id
        self.store = Store(Path(model_path))
        self.reload = reload
        self.reply = reply
        self.changed = changed
        self.reload_timeout = reload_timeout
        self.state: dict[str, Any] = {"state": "idle"}
        self._busy = threading.Lock()
        self._reloaded = threading.Condition()
        self._outcomes: dict[str, Reply] = {}
        if cfg.enabled:
            self.store.sweep()  # .part files and staging folders of an update that died

    # -- called by the command runner and the daemon --------------------------------------
    def start(self, args: dict[str, Any]) -> Reply | None:
        """Check the request (its signature first); run it on a thread. A reply at once
        only when refused, carrying the request's id when it has a valid one."""
        from device.mqtt.commands import PayloadError

        if not self.cfg.enabled:
            return {"ok": False, "error": "pull updates are off on this device (update."
                    "enabled = false)"}
        try:
            req = parse_request(args, self.cfg, self.device_id)
        except PayloadError as exc:
            try:
                rid = request_id(args)
            except PayloadError:
                rid = ""
            log.warning("cmd/update refused: %s", exc)
            return {"ok": False, "error": str(exc), **({"id": rid} if rid else {})}
        if not self._busy.acquire(blocking=False):
            return {"ok": False, "error": f"an update to {self.state.get('version')} is "
                    "already running: wait for its reply", **_rid(req)}
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
    def _progress(self, req: Request, state: str, **extra: Any) -> None:
        self._finish(req, True, state, **extra)

    def _finish(self, req: Request, ok: bool, state: str, **extra: Any) -> None:
        self.state = {"state": state, "version": req.version, "sha256": req.sha256,
                      "ts": round(time.time(), 3), **extra}
        self.reply({"ok": ok, **self.state, **_rid(req)})
        self.changed()

    def _run(self, req: Request) -> None:
        try:
            self._update(req)
        except CoralError as exc:
            log.error("update to %s failed: %s", req.version, exc)
            self._finish(req, False, "failed", error=str(exc))
        except Exception as exc:  # never let an update thread die silently
            log.exception("update to %s failed", req.version)
            self._finish(req, False, "failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._busy.release()

    def _update(self, req: Request) -> None:
        store = self.store
        self._progress(req, "waiting_for_lock")
        fd = store.lock(self.cfg.lock_wait)
        try:
            store.recover()
            if req.rollback:
                previous = store.read("previous")
                if not previous or not store.resolve("previous"):
                    raise UpdateError("no previous version to roll back to")
                self._switch(req, previous)
                return
            current = store.current_version()
            if is_older(req.version, current) and not (req.allow_downgrade or
                                                       self.cfg.allow_downgrade):
                raise UpdateError(f"version {req.version} is older than {current}, which is "
                                  "serving: versions only move forward (send "
                                  "{\"rollback\": true}, or allow_downgrade in the signed "
                                  "envelope, or set update.allow_downgrade). Nothing was "
                                  "fetched")
            part = store.dir / f".download-{req.sha256[:16]}.part"
            staged = None
            try:
                self._download(req, part)
                self._progress(req, "verifying")
                staged = self._stage(req, part)
            finally:  # never resume from, or leave, a partial or unverified file
                part.unlink(missing_ok=True)
            if staged is None:
                self._finish(req, True, "done", note="already serving this version")
                return
            self._switch(req, staged.name)
        finally:
            os.close(fd)  # releases the flock

    def _download(self, req: Request, part: Path) -> None:
        cfg = self.cfg
        limits = Limits(max_bytes=cfg.max_bytes, size=req.size, timeout=cfg.timeout,
                        min_rate=cfg.min_rate, deadline_s=cfg.deadline,
                        reserve=cfg.reserve_bytes, schemes=tuple(cfg.allowed_schemes))
        limits = replace(limits, deadline=time.monotonic() + cfg.deadline)
        part.unlink(missing_ok=True)
        self._progress(req, "downloading", bytes=0)
        fetch(req.url, part, limits,
              lambda n, total: self._progress(req, "downloading", bytes=n, total=total))
        # the digest of what was read is never echoed: with a file:// URL it would be an
        # oracle on any file the daemon can read
        if sha256_file(part) != req.sha256:
            raise UpdateError("corrupt download: its sha256 is not the one in the request; "
                              "nothing was changed")

    def _stage(self, req: Request, part: Path) -> Path | None:
        """Unpack and verify; the version's folder (named like `make deploy` names it:
        <version>-<model sha256[:12]>), or None when that is what already serves."""
        from device.daemon.archive import unpack

        store, cfg = self.store, self.cfg
        staging = store.dir / f".update-{req.sha256[:16]}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            unpack(part, staging, cfg.max_bytes * 4, cfg.max_files, cfg.reserve_bytes)
            part.unlink(missing_ok=True)  # its space is the unpacked copy's now
            try:
                bundle = load_bundle(staging)  # every file's sha256, the schema
            except CoralError as exc:
                raise UpdateError(f"the downloaded bundle is not valid: {exc}") from None
            if bundle.version != req.version:
                raise UpdateError(f"the bundle says version {bundle.version!r}, the request "
                                  f"{req.version!r}: nothing was changed")
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

    def _switch(self, req: Request, target: str) -> None:
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


def _rid(req: Request) -> dict[str, str]:
    return {"id": req.id} if req.id else {}
