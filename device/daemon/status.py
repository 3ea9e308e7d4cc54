"""The status snapshot and the lifecycle's small helpers around it: the decision rules from
config and bundle, the optional extras (metrics, Home Assistant) fed from the snapshot,
the snapshot JPEG, and draining the outbox at a clean stop."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import cv2

from device import __version__, messages
from device.config import DecisionConfig
from device.daemon.worker import ModelSpec
from device.decision import DecisionRules
from device.regions import RoiConfig

if TYPE_CHECKING:
    from device.daemon.lifecycle import Daemon
    from device.mqtt.outbox import Outbox
    from device.mqtt.publisher import MqttPublisher
    from device.mqtt.sender import EventSender

log = logging.getLogger(__name__)

OUTBOX_WARN = 0.8


def decision_rules(d: DecisionConfig, spec: ModelSpec,
                   roi: RoiConfig | None = None) -> DecisionRules:
    """The decider's rules: a region's own thresholds, else the config's keys where it
    sets them, else the bundle's operating point (its `decision` section), else the
    config's defaults."""
    point = spec.manifest_decision or {}
    chosen = {k: getattr(d, k) if k in d.model_fields_set or k not in point else point[k]
              for k in ("threshold", "background_labels", "unknown_labels",
                        "class_thresholds")}
    if roi is not None:
        if roi.threshold is not None:
            chosen["threshold"] = roi.threshold
        chosen["class_thresholds"] = {**chosen["class_thresholds"], **roi.class_thresholds}
    return DecisionRules(float(chosen["threshold"]), tuple(chosen["background_labels"]),
                         d.min_frames, d.window, d.empty_frames, d.margin,
                         tuple(chosen["unknown_labels"]), dict(chosen["class_thresholds"]))


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


def snapshot_status(d: Daemon) -> messages.StatusPayload:
    """Everything status, metrics and discovery show, read once (running totals only)."""
    s = _snapshot(d)
    if d.updater is None or d.updater.state["state"] == "idle":
        return s
    u = d.updater.status()
    return s.model_copy(update={"update": messages.UpdateStatus(**{
        k: v for k, v in u.items() if k in messages.UpdateStatus.model_fields})})


def _snapshot(d: Daemon) -> messages.StatusPayload:
    pending, size = d.outbox.depth()
    fill = d.outbox.fill((pending, size))
    unstored = len(getattr(d.sink, "unstored", ()))
    warning = (getattr(d.sink, "failing", "")
               or (f"outbox {fill:.0%} full ({pending} events unsent)" if fill >= OUTBOX_WARN
                   else "") or d.outbox.recovered
               or (d.spill.broken or d.spill.note if getattr(d, "spill", None) else ""))
    errors = d.stats.error_counts()
    errors["publish"] += d.publisher.errors + d.publisher.callback_errors
    spec = d.spec
    dropped = ((d.buffer.dropped if d.buffer else 0) + d.results.dropped + d.slot.dropped)
    return messages.StatusPayload(
        ts=round(time.time(), 3),
        state="paused" if d.paused.is_set() and d.state == "running" else d.state,
        device_id=d.device_id, software=__version__, model=messages.ModelInfo(**spec.info()),
        backend=spec.backend, runtime=spec.runtime, camera=d.source.name,
        fps=round(d.stats.fps, 2), uptime_s=round(d.stats.uptime, 1),
        frames=d.stats.frames, results_published=d.stats.published, dropped_frames=dropped,
        errors=errors, last_error=d.stats.last_error or d.publisher.last_error or warning,
        events=d.stats.events, reconnects=max(0, d.publisher.reconnects - 1),
        worker_restarts=d.slot.restarts, reload_nonce=d.reload_nonce,
        commands_dropped=d.commands.dropped,
        frames_seen=d.stats.seen, frames_gated=d.stats.gated, trigger=d.cfg.trigger.mode,
        outbox=messages.OutboxStatus(pending=pending, bytes=size, fill=round(fill, 4),
                                     dropped=d.outbox.dropped, unstored=unstored,
                                     lost=d.outbox.lost, lost_seq=(
                                         list(d.outbox.lost_seq) if d.outbox.lost_seq
                                         else None),
                                     warning=warning))


def attach_extras(d: Daemon) -> None:
    """Prometheus metrics and Home Assistant discovery, when configured."""
    if d.cfg.metrics.port:
        from device.daemon.metrics import Metrics

        d.metrics = Metrics(d.status, d.cfg.metrics.port, d.cfg.metrics.address)
    ha = d.cfg.homeassistant
    if ha.enabled:
        from device.mqtt.discovery import publish_discovery

        background = set(d.cfg.decision.background_labels)

        def announce() -> None:
            publish_discovery(d.publisher, d.status(), d.topics.base, d.spec.labels,
                              background, ha.discovery_prefix,
                              [r.name for r in d.cfg.camera.roi],
                              d.cfg.state.resolved_dir() / f"discovery-{d.device_id}.json")

        d.publisher.on_connected.append(announce)
        # Home Assistant forgets nothing retained, but re-announce when it restarts
        d.publisher.subscribe(f"{ha.discovery_prefix}/status",
                              lambda payload: announce() if payload.strip() == b"online"
                              else None)


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
