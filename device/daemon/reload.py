"""The lifecycle's model reload (SIGHUP, `systemctl reload`, cmd/reload, cmd/update):
load and self-test the configured bundle in the inference worker and swap it in, or keep
serving the old one; reply to every waiting request with its nonce (what `make deploy`
and pull updates wait for in the retained status)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from device.daemon.worker import LoadRequest, WorkerDied
from device.errors import CoralError

if TYPE_CHECKING:
    from device.daemon.lifecycle import Daemon

log = logging.getLogger(__name__)


def reload_model(d: Daemon) -> None:
    """Load and self-test the configured bundle in the worker; keep the old on failure."""
    d.reload_event.clear()
    nonces, d._reload_nonces = d._reload_nonces, []
    if not nonces:  # SIGHUP: `make deploy` leaves its nonce beside the model link
        from device.daemon.update import read_deploy_nonce

        nonces = [n for n in (read_deploy_nonce(d.cfg.model.path),) if n]
    d.notifier.reloading()
    old = d.spec.info()
    for done in d.slot.drain():
        d.results.put(done)
    try:
        d.spec = d.slot.load(LoadRequest.from_config(d.cfg.model))
    except WorkerDied as exc:
        d._worker_died(exc)
        result = {"ok": False, "error": str(exc), "model": d.spec.info()}
    except CoralError as exc:
        d.stats.error("inference", f"reload failed, still serving {old['name']} "
                      f"v{old['version']}: {exc}", logging.ERROR)
        result = {"ok": False, "error": str(exc), "model": old}
    else:
        d.stats.clear_error(d.stats.last_error)
        d.reload_nonce = next((n for n in reversed(nonces) if n), d.reload_nonce)
        log.info("reloaded: now %s v%s (sha256 %s…)", d.spec.name, d.spec.version,
                 d.spec.sha256[:12])
        result = {"ok": True, "model": d.spec.info(), "previous": old}
    d.notifier.ready(f"serving {d.spec.name} v{d.spec.version}")
    d.publish_status()
    for nonce in nonces:
        d.publisher.reply("reload", {**result, **({"nonce": nonce} if nonce else {})})
    if d.updater is not None:
        d.updater.reloaded(nonces, result)
