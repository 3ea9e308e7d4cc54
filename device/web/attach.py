"""Wiring the capture recorder and the web page into the daemon (only what is configured).

The daemon calls its `taps` with every classified frame on the results thread; nothing
is added there unless [capture] keep_doubtful is on, a capture is running, or [web] is
enabled, so a daemon without them does no per-frame work for them at all.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from device.daemon.capture import Recorder

if TYPE_CHECKING:
    from device.daemon.lifecycle import Daemon
    from device.web.server import WebServer

log = logging.getLogger(__name__)


def attach_recorder(d: Daemon) -> Recorder:
    """The recorder for cmd/capture; tapped now only when doubtful frames are kept."""
    rec = Recorder(d.cfg.capture, d.cfg.state.resolved_dir(), d.device_id,
                   getattr(d.cfg.camera, "roi", ()))
    if d.cfg.capture.keep_doubtful:
        d.taps += (rec.tap,)
        listeners = getattr(d.sink, "on_event", None)
        if listeners is not None:
            listeners.append(rec.event)
    return rec


def start_capture(d: Daemon, label: str, frames: int, every: float) -> dict[str, Any]:
    """cmd/capture and the labelling page: tap the recorder while it captures."""
    reply = d.recorder.start(label, frames, every)
    if reply["ok"]:
        if d.recorder.tap not in d.taps:
            d.taps += (d.recorder.tap,)
        if d.paused.is_set():
            reply["note"] = "the daemon is paused: frames are saved once it resumes"
    return reply


def attach_web(d: Daemon) -> WebServer:
    """Build and start the web server over the daemon's parts."""
    from device.web.frames import FrameStore
    from device.web.live import LiveHub
    from device.web.server import Backend, WebServer
    from device.web.upload import UploadError, Uploads

    hub = LiveHub(d.cfg.web.stream_width, getattr(d.cfg.camera, "roi", ()),
                  connected=d.publisher.connected.is_set,
                  broker=f"{d.cfg.mqtt.host}:{d.cfg.mqtt.port}")

    def inject(frame) -> None:
        if d.buffer is None:
            raise UploadError(503, "the daemon is still starting")
        d.buffer.put(frame)

    def events() -> dict[str, Any]:
        counts, since = d.outbox.counts_snapshot()
        return {"mode": d.cfg.decision.mode, "counts": counts, "since": since,
                "events": list(reversed(hub.events))}

    def capture(label: Any, frames: Any, every: Any) -> dict[str, Any]:
        from device.mqtt.commands import PayloadError, capture_args

        try:
            label, frames, every = capture_args({"label": label, "frames": frames,
                                                 "every": every})
        except PayloadError as exc:
            raise ValueError(str(exc)) from None
        return start_capture(d, label, frames, every)

    uploads = Uploads(inject, lambda: d.spec, d.paused.is_set,
                      max(10.0, 2 * d.cfg.model.inference_timeout))
    store = FrameStore(d.cfg.state.resolved_dir(), labels=lambda: list(d.spec.labels))
    backend = Backend(hub, store, uploads,
                      status=lambda: {**d.status().model_dump(),
                                      "capture": d.recorder.progress()},
                      events=events, labels=lambda: list(d.spec.labels), capture=capture)
    server = WebServer(d.cfg.web, backend)
    d.taps += (hub.tap,)
    listeners = getattr(d.sink, "on_event", None)
    if listeners is not None:
        listeners.append(hub.event)
    server.start()
    return server


def attach(d: Daemon) -> tuple[Recorder, WebServer | None]:
    """The daemon's recorder (always: cmd/capture) and web page (when enabled).

    The page is optional: when its address cannot be bound (the port taken since
    check-config, the address gone) the daemon classifies and publishes on without it,
    and says so in status (last_error, errors["web"]) instead of exiting.
    """
    recorder = attach_recorder(d)
    if not d.cfg.web.enabled:
        return recorder, None
    try:
        return recorder, attach_web(d)
    except OSError as exc:
        w = d.cfg.web
        d.stats.error("web", f"web page not started: cannot listen on {w.address}:{w.port} "
                      f"({exc.strerror or exc}); the daemon runs on without it",
                      logging.ERROR)
        return recorder, None


def close(d: Daemon) -> None:
    if d.web is not None:
        d.web.close()
    d.recorder.close()
