"""The lifecycle's model reload (SIGHUP, `systemctl reload`, cmd/reload, cmd/update):
load and self-test the configured bundle in the inference worker and swap it in, or keep
serving the old one; reply to every waiting request with its nonce (what `make deploy`
and pull updates wait for in the retained status)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from device.config import ModelConfig
from device.daemon.notify import Notifier
from device.daemon.slot import ModelSlot
from device.daemon.stats import Stats
from device.daemon.worker import LoadRequest, WorkerDied
from device.errors import CoralError

log = logging.getLogger(__name__)

Reply = Callable[[dict[str, Any]], None]


class Reloader:
    """Reload requests from any thread; the frame loop runs them between frames.

    Each request may carry a nonce; the reload's result is replied once per request with
    its nonce (a SIGHUP has none: the deploy leaves its nonce beside the model link).
    """

    def __init__(self, model: ModelConfig, slot: ModelSlot, stats: Stats, notifier: Notifier,
                 reply: Reply, publish_status: Callable[[], None]):
        self.model, self.slot, self.stats, self.notifier = model, slot, stats, notifier
        self.reply, self.publish_status = reply, publish_status
        self.event = threading.Event()
        self.nonce = ""  # of the last successful reload: the status echoes it
        self.listeners: list[Callable[[list[str], dict[str, Any]], None]] = []  # updater
        self._nonces: list[str] = []
        self._lock = threading.Lock()

    def request(self, nonce: str = "", reply: bool = True) -> None:
        if reply:
            with self._lock:
                self._nonces.append(nonce)
        self.event.set()

    def run(self, requeue: Callable[[Any], None],
            worker_died: Callable[[WorkerDied], Any]) -> None:
        """Load and self-test the configured bundle in the worker; the slot serves it, or
        the old one when the new bundle is refused. Frames in flight are drained to
        `requeue` first: they were classified by the old model and say so."""
        self.event.clear()
        with self._lock:
            nonces, self._nonces = self._nonces, []
        if not nonces:  # SIGHUP: `make deploy` leaves its nonce beside the model link
            from device.daemon.update import read_deploy_nonce

            nonces = [n for n in (read_deploy_nonce(self.model.path),) if n]
        self.notifier.reloading()
        old = self.slot.spec.info()
        for done in self.slot.drain():
            requeue(done)
        try:
            spec = self.slot.load(LoadRequest.from_config(self.model))
        except WorkerDied as exc:
            worker_died(exc)  # restarts the worker on the model it served
            spec = self.slot.spec
            result = {"ok": False, "error": str(exc), "model": spec.info()}
        except CoralError as exc:
            spec = self.slot.spec
            self.stats.error("inference", f"reload failed, still serving {old['name']} "
                             f"v{old['version']}: {exc}", logging.ERROR)
            result = {"ok": False, "error": str(exc), "model": old}
        else:
            self.stats.clear_error(self.stats.last_error)
            self.nonce = next((n for n in reversed(nonces) if n), self.nonce)
            log.info("reloaded: now %s v%s (sha256 %s…)", spec.name, spec.version,
                     spec.sha256[:12])
            result = {"ok": True, "model": spec.info(), "previous": old}
        self.notifier.ready(f"serving {spec.name} v{spec.version}")
        self.publish_status()
        for nonce in nonces:
            self.reply({**result, **({"nonce": nonce} if nonce else {})})
        for listener in self.listeners:
            listener(nonces, result)
