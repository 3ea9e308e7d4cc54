"""Wiring the capture recorder and the web page into the daemon (only what is configured).

The results handler calls its taps with every classified frame on the results thread;
nothing is added there unless [capture] keep_doubtful is on, a capture is running, or [web]
is enabled, so a daemon without them does no per-frame work for them at all. What the
page and the recorder use of the daemon is handed over in one `Wiring`, never the Daemon.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from device.config import Config
from device.daemon.capture import Recorder
from device.daemon.results import ResultHandler

if TYPE_CHECKING:
    from device.cameras.base import Frame
    from device.daemon.worker import ModelSpec
    from device.messages import StatusPayload
    from device.web.server import WebServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wiring:
    """What the recorder and the web page use of the daemon."""

    cfg: Config
    device_id: str
    results: ResultHandler  # taps and the upload path
    on_event: list[Callable[[Any], None]] | None  # the event sink's listeners (event mode)
    connected: Callable[[], bool]  # the MQTT session is up
    inject: Callable[[Frame], None]  # an upload into the frame loop
    counts: Callable[[], tuple[dict[str, int], float]]
    status: Callable[[], StatusPayload]
    spec: Callable[[], ModelSpec]
    paused: Callable[[], bool]
    error: Callable[[str, str, int], None]  # stats.error(kind, message, level)


def attach_recorder(w: Wiring) -> Recorder:
    """The recorder for cmd/capture; tapped now only when doubtful frames are kept."""
    rec = Recorder(w.cfg.capture, w.cfg.state.resolved_dir(), w.device_id,
                   getattr(w.cfg.camera, "roi", ()))
    if w.cfg.capture.keep_doubtful:
        w.results.add_tap(rec.tap)
        if w.on_event is not None:
            w.on_event.append(rec.event)
    return rec


def start_capture(w: Wiring, recorder: Recorder, label: str, frames: int,
                  every: float) -> dict[str, Any]:
    """cmd/capture and the labelling page: tap the recorder while it captures."""
    reply = recorder.start(label, frames, every)
    if reply["ok"]:
        w.results.add_tap(recorder.tap)
        if w.paused():
            reply["note"] = "the daemon is paused: frames are saved once it resumes"
    return reply


def attach_web(w: Wiring, recorder: Recorder) -> WebServer:
    """Build and start the web server over the daemon's parts."""
    from device.web.frames import FrameStore
    from device.web.live import LiveHub
    from device.web.server import Backend, WebServer
    from device.web.upload import Uploads

    cfg = w.cfg
    hub = LiveHub(cfg.web.stream_width, getattr(cfg.camera, "roi", ()),
                  connected=w.connected, broker=f"{cfg.mqtt.host}:{cfg.mqtt.port}")

    def events() -> dict[str, Any]:
        counts, since = w.counts()
        return {"mode": cfg.decision.mode, "counts": counts, "since": since,
                "events": list(reversed(hub.events))}

    def capture(label: Any, frames: Any, every: Any) -> dict[str, Any]:
        from device.mqtt.commands import PayloadError, capture_args

        try:
            label, frames, every = capture_args({"label": label, "frames": frames,
                                                 "every": every})
        except PayloadError as exc:
            raise ValueError(str(exc)) from None
        return start_capture(w, recorder, label, frames, every)

    uploads = Uploads(w.inject, w.spec, w.paused, max(10.0, 2 * cfg.model.inference_timeout))
    store = FrameStore(cfg.state.resolved_dir(), labels=lambda: list(w.spec().labels))
    backend = Backend(hub, store, uploads,
                      status=lambda: {**w.status().model_dump(),
                                      "capture": recorder.progress()},
                      events=events, labels=lambda: list(w.spec().labels), capture=capture)
    server = WebServer(cfg.web, backend)
    w.results.add_tap(hub.tap)
    w.results.uploads = uploads.answer
    if w.on_event is not None:
        w.on_event.append(hub.event)
    server.start()
    return server


def attach(w: Wiring) -> tuple[Recorder, WebServer | None]:
    """The daemon's recorder (always: cmd/capture) and web page (when enabled).

    The page is optional: when its address cannot be bound (the port taken since
    check-config, the address gone) the daemon classifies and publishes on without it,
    and says so in status (last_error, errors["web"]) instead of exiting.
    """
    recorder = attach_recorder(w)
    if not w.cfg.web.enabled:
        return recorder, None
    try:
        return recorder, attach_web(w, recorder)
    except OSError as exc:
        web = w.cfg.web
        w.error("web", f"web page not started: cannot listen on {web.address}:{web.port} "
                f"({exc.strerror or exc}); the daemon runs on without it", logging.ERROR)
        return recorder, None


def close(web: WebServer | None, recorder: Recorder) -> None:
    if web is not None:
        web.close()
    recorder.close()
