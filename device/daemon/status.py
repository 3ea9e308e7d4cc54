"""The status snapshot and the lifecycle's small helpers around it: the optional extras
(metrics, Home Assistant) fed from the snapshot, the snapshot JPEG, and draining the
outbox at a clean stop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2

from device import __version__, messages
from device.daemon.stats import Stats
from device.daemon.worker import ModelSpec

if TYPE_CHECKING:
    from device.config import Config
    from device.daemon.slot import ModelSlot
    from device.mqtt.outbox import Outbox
    from device.mqtt.publisher import MqttPublisher
    from device.mqtt.sender import EventSender

log = logging.getLogger(__name__)

OUTBOX_WARN = 0.8


def split_counts(counts: dict[str, int], rois: set[str]) -> dict[str, Any]:
    """Stored count keys ('<roi>/<label>' with regions) -> totals per label and per region."""
    totals: dict[str, int] = {}
    by_roi: dict[str, dict[str, int]] = {}
    for key, n in counts.items():
        roi, sep, label = key.partition("/")
        if not sep or roi not in rois:
            roi, label = "", key
        totals[label] = totals.get(label, 0) + n
        if roi:
            by_roi.setdefault(roi, {})[label] = n
    return {"counts": totals, "by_roi": by_roi}


@dataclass(frozen=True)
class StatusParts:
    """The parts the snapshot reads, passed once by the lifecycle (never the Daemon)."""

    device_id: str
    camera: str
    trigger: str
    stats: Stats
    publisher: MqttPublisher
    outbox: Outbox
    slot: ModelSlot
    sink: Any  # a Sink; an EventSink adds `unstored` and `failing`
    results_dropped: Callable[[], int]
    spill: Any = None  # the event sink's spill file (held events survive a stop)
    commands_dropped: Callable[[], int] = lambda: 0


@dataclass(frozen=True)
class Moment:
    """What changes under the lifecycle: its state, the model serving, the last deploy."""

    state: str
    spec: ModelSpec
    frames_dropped: int = 0  # the camera buffer's drops
    reload_nonce: str = ""
    update: dict[str, Any] | None = None  # the updater's status() when not idle


def snapshot_status(p: StatusParts, now: Moment) -> messages.StatusPayload:
    """Everything status, metrics and discovery show, read once (running totals only)."""
    pending, size = p.outbox.depth()
    fill = p.outbox.fill((pending, size))
    unstored = len(getattr(p.sink, "unstored", ()))
    warning = (getattr(p.sink, "failing", "")
               or (f"outbox {fill:.0%} full ({pending} events unsent)" if fill >= OUTBOX_WARN
                   else "") or p.outbox.recovered
               or (p.spill.broken or p.spill.note if p.spill is not None else ""))
    stats, pub, spec = p.stats, p.publisher, now.spec
    errors = stats.error_counts()
    errors["publish"] += pub.errors + pub.callback_errors
    update = None
    if now.update is not None:
        update = messages.UpdateStatus(**{k: v for k, v in now.update.items()
                                          if k in messages.UpdateStatus.model_fields})
    return messages.StatusPayload(
        ts=round(time.time(), 3), state=now.state, device_id=p.device_id,
        software=__version__, model=messages.ModelInfo(**spec.info()),
        backend=spec.backend, runtime=spec.runtime, camera=p.camera,
        fps=round(stats.fps, 2), uptime_s=round(stats.uptime, 1),
        frames=stats.frames, results_published=stats.published,
        dropped_frames=now.frames_dropped + p.results_dropped() + p.slot.dropped,
        errors=errors, last_error=stats.last_error or pub.last_error or warning,
        events=stats.events, reconnects=max(0, pub.reconnects - 1),
        worker_restarts=p.slot.restarts, reload_nonce=now.reload_nonce,
        commands_dropped=p.commands_dropped(),
        frames_seen=stats.seen, frames_gated=stats.gated, trigger=p.trigger,
        last_event_ts=round(stats.last_event_ts, 3), update=update,
        outbox=messages.OutboxStatus(pending=pending, bytes=size, fill=round(fill, 4),
                                     dropped=p.outbox.dropped, unstored=unstored,
                                     lost=p.outbox.lost, lost_seq=(
                                         list(p.outbox.lost_seq) if p.outbox.lost_seq
                                         else None),
                                     warning=warning))


def attach_extras(cfg: Config, publisher: MqttPublisher,
                  status: Callable[[], messages.StatusPayload],
                  spec: Callable[[], ModelSpec], device_id: str,
                  web_port: Callable[[], int | None] = lambda: None):
    """Prometheus metrics and Home Assistant discovery, when configured; the metrics
    server (to close at the stop) or None."""
    metrics = None
    if cfg.metrics.port:
        from device.daemon.metrics import Metrics

        metrics = Metrics(status, cfg.metrics.port, cfg.metrics.address)
    ha = cfg.homeassistant
    if ha.enabled:
        from device.mqtt.discovery import Labels, publish_discovery

        def announce() -> None:  # the bundle's roles, read at each announcement (reloads)
            point, dec = spec().point, cfg.decision
            labels = Labels(
                spec().labels,
                frozenset([*dec.background_labels, *(point.background_labels if point else ())]),
                frozenset(point.refused_labels if point else ()),
                frozenset([*dec.unknown_labels, *(point.unknown_labels if point else ())]))
            publish_discovery(publisher, status(), publisher.topics.base, labels,
                              ha.discovery_prefix, [r.name for r in cfg.camera.roi],
                              cfg.state.resolved_dir() / f"discovery-{device_id}.json",
                              dec.mode, web_url(cfg, web_port()))

        publisher.on_connected.append(announce)
        # Home Assistant forgets nothing retained, but re-announce when it restarts
        publisher.subscribe(f"{ha.discovery_prefix}/status",
                            lambda payload: announce() if payload.strip() == b"online"
                            else None)
    return metrics


def web_url(cfg: Config, port: int | None = None) -> str:
    """The web page's address for Home Assistant's "Visit" link ("" without [web])."""
    web = cfg.web
    if not web.enabled:
        return ""
    import socket

    port = port or web.port
    host = socket.gethostname() if web.address in ("0.0.0.0", "::", "") else web.address
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def snapshot(frame, quality: int, publisher: MqttPublisher, topic: str) -> dict[str, Any]:
    """The last frame as JPEG on <base>/snapshot, to see what the camera saw on a misread."""
    if frame is None:
        return {"ok": False, "error": "no frame captured yet"}
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return {"ok": False, "error": "the frame could not be encoded"}
    data = jpeg.tobytes()
    publisher.publish(topic, data, qos=0)
    return {"ok": True, "seq": frame.seq, "ts": round(frame.ts, 3), "bytes": len(data),
            "topic": topic}


def drain_outbox(outbox: Outbox, sender: EventSender, publisher: MqttPublisher,
                 seconds: float) -> bool:
    """At a clean stop, give the broker a bounded time to take what the outbox holds."""
    deadline = time.monotonic() + seconds
    sender.notify()
    while outbox.depth()[0] and publisher.connected.is_set() and time.monotonic() < deadline:
        sender.notify()
        time.sleep(0.02)
    left = outbox.depth()[0]
    if left:
        log.info("%d event(s) stay in the outbox for the next start", left)
    return left == 0
