"""The daemon's lifecycle and frame loop: build once, READY, loop, stop cleanly.

Camera, classifier and MQTT client are built once; SIGTERM/SIGINT set a stop event and
SIGHUP asks for a model reload; the frame loop feeds the systemd watchdog only while
frames really flow, so a stuck camera or TPU gets the process restarted by systemd.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import cv2

from device import __version__, messages
from device.bundle import load_bundle
from device.cameras.base import Frame, create_frame_source
from device.config import Config
from device.daemon.notify import Notifier
from device.daemon.pipeline import (
    END,
    BufferPool,
    CaptureThread,
    FrameBuffer,
    ResultThread,
    StageTimes,
)
from device.decision import Decider, DecisionRules, Event
from device.errors import CameraError, CoralError, ModelError
from device.inference import Inference, create_classifier
from device.mqtt import commands
from device.mqtt.outbox import Outbox
from device.mqtt.publisher import MqttPublisher
from device.mqtt.sender import EventSender

log = logging.getLogger(__name__)

MAX_CAMERA_FAILURES = 10  # consecutive; then exit and let systemd restart us
MAX_INFERENCE_FAILURES = 5
OUTBOX_WARN = 0.8


class Daemon:
    def __init__(self, cfg: Config, notifier: Notifier | None = None):
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        self.stop_event = threading.Event()
        self.paused = threading.Event()
        self.reload_event = threading.Event()
        self.reload_reply = False
        self.device_id = cfg.mqtt.resolved_device_id()
        self.errors = {"camera": 0, "inference": 0, "publish": 0}
        self.last_error = ""
        self.frames = self.published = self.events = 0
        self.started = time.monotonic()
        self._fps_window = (time.monotonic(), 0)
        self.fps = 0.0
        self.state = "starting"
        self.times = StageTimes()
        self.buffer: FrameBuffer | None = None
        self.last_frame: Frame | None = None
        self.results = ResultThread(self._handle_result)
        rate = cfg.mqtt.result_max_rate
        self._min_gap = 1.0 / rate if rate else 0.0
        self.pool = BufferPool()
        self._last_result = 0.0

    # -- setup ---------------------------------------------------------------------------
    def _load_classifier(self):
        m = self.cfg.model
        bundle = load_bundle(m.path, m.labels or None)
        clf = create_classifier(bundle, m.backend, allow_cpu_fallback=m.allow_cpu_fallback,
                                device=m.device, num_threads=m.num_threads, top_k=m.top_k,
                                min_score=m.min_score)
        return bundle, clf

    def setup(self) -> None:
        # OpenCV's thread pool would split each small resize across cores and spin against
        # the interpreter's threads: measured, one thread costs ~1.3 ms less CPU per frame.
        cv2.setNumThreads(1)
        self.bundle, self.classifier = self._load_classifier()
        self.model_info = messages.model_info(self.classifier.bundle)
        log.info("model %s v%s (sha256 %s…) on %s via %s", self.bundle.name, self.bundle.version,
                 self.bundle.sha256[:12], self.classifier.backend, self.classifier.runtime)
        st = self.cfg.state
        self.outbox = Outbox(st.resolved_dir() / f"outbox-{self.device_id}.sqlite",
                             st.outbox_max_events, st.outbox_max_bytes)
        d = self.cfg.decision
        self.decider = Decider(DecisionRules(
            d.threshold, tuple(d.background_labels), d.min_frames, d.window, d.empty_frames,
            d.margin, tuple(d.unknown_labels), dict(d.class_thresholds))) \
            if d.mode == "event" else None
        self.source = create_frame_source(self.cfg.camera,
                                          (self.classifier.width, self.classifier.height),
                                          self.classifier.resize_policy)
        self.publisher = MqttPublisher(self.cfg.mqtt, self.device_id,
                                       lambda name, args: commands.handle(self, name, args))
        self.topics = self.publisher.topics
        self.sender = EventSender(self.outbox, self.publisher.client, self.publisher.connected)
        self.publisher.on_connected += [self.sender.reconnected, self.publish_counts]
        self.publisher.on_puback = self.sender.on_puback
        self.sender.start()
        self.metrics = None
        if self.cfg.metrics.port:
            from device.daemon.metrics import Metrics

            self.metrics = Metrics(self, self.cfg.metrics.port, self.cfg.metrics.address)
        ha = self.cfg.homeassistant
        if ha.enabled:
            from device.daemon.metrics import publish_discovery

            announce = lambda: publish_discovery(self, ha.discovery_prefix)  # noqa: E731
            self.publisher.on_connected.append(announce)
            # Home Assistant forgets nothing retained, but re-announce when it restarts
            self.publisher.subscriptions[f"{ha.discovery_prefix}/status"] = \
                lambda payload: announce() if payload.strip() == b"online" else None
        self.publisher.start()

    # -- model reload (SIGHUP or cmd/reload) ---------------------------------------------
    def request_reload(self, reply: bool = False, *_: Any) -> None:
        self.reload_reply = self.reload_reply or reply
        self.reload_event.set()

    def reload(self) -> dict[str, Any]:
        """Load and check the configured bundle; swap it in, or keep serving the old one."""
        self.reload_event.clear()
        self.notifier.reloading()
        old = self.model_info
        try:
            bundle, clf = self._load_classifier()
            self_test(clf, bundle)
        except CoralError as exc:
            self.last_error = f"reload failed, still serving {old['name']} v{old['version']}: {exc}"
            log.error("%s", self.last_error)
            result = {"ok": False, "error": str(exc), "model": old}
        else:
            previous, self.classifier, self.bundle = self.classifier, clf, bundle
            self.model_info = messages.model_info(clf.bundle)
            previous.close()
            self.last_error = ""
            log.info("reloaded: now %s v%s (sha256 %s…)", bundle.name, bundle.version,
                     bundle.sha256[:12])
            result = {"ok": True, "model": self.model_info, "previous": old}
        self.notifier.ready(f"serving {self.model_info['name']} v{self.model_info['version']}")
        self.publish_status()
        if self.reload_reply:
            self.reload_reply = False
            self.publisher.reply("reload", result)
        return result

    # -- status, counts, events ----------------------------------------------------------
    def status(self) -> messages.Status:
        pending, size = self.outbox.depth()
        fill = self.outbox.fill((pending, size))
        warning = f"outbox {fill:.0%} full ({pending} events unsent)" if fill >= OUTBOX_WARN \
            else ""
        return messages.Status(
            state="paused" if self.paused.is_set() and self.state == "running" else self.state,
            device_id=self.device_id, software=__version__,
            model=self.model_info, backend=self.classifier.backend,
            runtime=self.classifier.runtime, camera=self.source.name, fps=self.fps,
            uptime_s=time.monotonic() - self.started, frames=self.frames,
            results_published=self.published,
            dropped_frames=(self.buffer.dropped if self.buffer else 0) + self.results.dropped,
            errors={**self.errors, "publish": self.errors["publish"] + self.publisher.errors},
            last_error=self.last_error or self.publisher.last_error or warning,
            events=self.events, reconnects=max(0, self.publisher.reconnects - 1),
            outbox={"pending": pending, "bytes": size, "fill": round(fill, 4),
                    "dropped": self.outbox.dropped, "warning": warning})

    def publish_status(self) -> None:
        self.publisher.publish(self.topics.status,
                               messages.status_payload(self.status(), time.time()),
                               qos=1, retain=True)

    def publish_counts(self) -> None:
        self.publisher.publish(self.topics["counts"], {
            "ts": round(time.time(), 3), "since": round(self.outbox.counts_since(), 3),
            "counts": self.outbox.counts()}, qos=1, retain=True)

    def emit(self, event: Event) -> None:
        """Store first (outbox + count in one transaction), then let the sender publish."""
        def payload(seq: int) -> bytes:
            return messages.dumps(messages.event_payload(event, self.model_info, self.device_id,
                                                         seq))

        self.outbox.add(self.topics["event"], payload, event.label)
        self.events += 1
        self.sender.notify()
        self.publish_counts()

    def _handle_result(self, item: tuple[Frame, Inference, dict[str, str], str]) -> None:
        """The results thread: rank, decide or publish, and record where the time went."""
        frame, inference, model, backend = item
        c = inference.classify()
        t_pub = time.perf_counter()
        if self.decider is not None:
            event = self.decider.update(c.top_k, frame.ts)
            if event is not None:
                self.emit(event)
        elif not self._min_gap or t_pub - self._last_result >= self._min_gap:
            total = frame.capture_ms + (t_pub - frame.t_captured) * 1e3
            result = messages.Result(frame.seq, frame.ts, c, frame.capture_ms, total,
                                     frame.prepare_ms)
            self.publisher.publish(self.topics.result,
                                   messages.result_payload(result, model, backend),
                                   qos=self.cfg.mqtt.qos)
            self.published += 1
            self._last_result = t_pub
        t_done = time.perf_counter()
        if self.metrics is not None:
            self.metrics.inference.observe(c.inference_ms / 1e3)
        self.times.add(frame.capture_ms, frame.prepare_ms + c.preprocess_ms, c.inference_ms,
                       c.postprocess_ms, (t_done - t_pub) * 1e3,
                       (t_done - frame.t_captured) * 1e3 + frame.capture_ms)

    def _update_fps(self, now: float) -> None:
        t0, n0 = self._fps_window
        if now - t0 >= 1.0:
            self.fps = (self.frames - n0) / (now - t0)
            self._fps_window = (now, self.frames)

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        self.state = "running"
        live = getattr(self.source, "live", True)
        self.buffer = FrameBuffer(size=2, drop_oldest=live, on_drop=self.pool.give_frame)
        # a replay is decided frame by frame: back-pressure instead of dropping results
        self.results.buffer.drop_oldest = live
        # the resize runs in the capture thread, overlapping the previous frame's invoke
        capture = CaptureThread(
            self.source, self.buffer, self.stop_event,
            prepare=self._prepare,
            shape=lambda: (self.classifier.height, self.classifier.width, 3), pool=self.pool)
        capture.start()
        self.results.start()
        self.notifier.ready(f"classifying with {self.bundle.name} on {self.classifier.backend}")
        self.publisher.wait_connected(2.0)  # a head start; we run without the broker too
        self.publish_status()
        try:
            return self._loop()
        finally:
            self.stop_event.set()
            self.buffer.close()
            capture.join(5)
            self.results.stop()  # flush queued results before announcing the stop
            self.shutdown()

    def _prepare(self, image, out, scratch):
        return self.classifier.prepare(image, out, scratch)  # through self: reload-proof

    def _loop(self) -> int:
        """The inference thread: frame in, invoke, hand over. Nothing else on this path."""
        next_status = time.monotonic() + self.cfg.mqtt.status_interval
        camera_failures = inference_failures = 0
        while not self.stop_event.is_set():
            if self.reload_event.is_set():
                self.reload()
            item = self.buffer.get(timeout=0.5)
            now = time.monotonic()
            if now >= next_status:
                self.publish_status()
                self.notifier.status(f"{self.frames} frames, {self.fps:.1f} fps")
                next_status = now + self.cfg.mqtt.status_interval
            if item is None:  # no frame yet: the watchdog is deliberately not fed
                continue
            if item is END:
                log.info("frame source ended")
                return 0
            if isinstance(item, CameraError):
                camera_failures += 1
                self._error("camera", str(item))
                if camera_failures >= MAX_CAMERA_FAILURES:
                    log.error("camera failed %d times in a row; exiting for a restart",
                              camera_failures)
                    return CameraError.exit_code
                self.stop_event.wait(min(8.0, 0.25 * 2 ** camera_failures))
                continue
            camera_failures = 0
            frame = self.last_frame = item
            self.notifier.watchdog()  # only here: frames really flow
            if self.paused.is_set():
                self.pool.give(frame.prepared)
                continue
            try:
                clf = self.classifier
                fresh = frame.prepared is not None and frame.prepared.shape[:2] == (
                    clf.height, clf.width)  # prepared before a reload to another size: redo
                inference = clf.infer(frame.prepared if fresh else frame.image, prepared=fresh)
                inference_failures = 0
            except (RuntimeError, ValueError) as exc:
                inference_failures += 1
                self._error("inference", f"inference failed: {exc}")
                if inference_failures >= MAX_INFERENCE_FAILURES:
                    return 1
                continue
            finally:
                self.pool.give(frame.prepared)  # copied into the input tensor (or stale)
            self.frames += 1
            self.results.put((frame, inference, self.model_info, clf.backend))
            self._update_fps(now)
        return 0

    def _error(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        self.last_error = message
        log.warning("%s", message)

    def shutdown(self) -> None:
        self.notifier.stopping()
        self.state = "stopped"
        try:
            self.publish_status()
            self.sender.stop()
            self.publisher.close("stopped")
        finally:
            self.sender.join(5)
            if self.metrics is not None:
                self.metrics.close()
            self.outbox.close()
            self.source.close()
            self.classifier.close()
            self.notifier.close()
            log.info("stopped after %d frames, %d events", self.frames, self.events)

    def request_stop(self, signum: int | None = None, _frame=None) -> None:
        if signum is not None:
            log.info("received %s, stopping", signal.Signals(signum).name)
        self.stop_event.set()


def self_test(clf, bundle) -> None:
    """The bundle's golden samples must give their expected top-1 on this backend."""
    for g in bundle.manifest.get("golden", []):
        path = bundle.root / g["file"]
        bgr = cv2.imread(str(path))
        if bgr is None:
            raise ModelError(f"golden sample {path} cannot be read")
        got = clf.classify(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).best
        if got is None or got.label != g["label"]:
            raise ModelError(f"self-test failed: golden sample {g['file']} gave "
                             f"{got.label if got else None!r}, expected {g['label']!r}")


def run_daemon(cfg: Config) -> int:
    """Build and run the daemon with signal handling; the CLI's `run`."""
    daemon = Daemon(cfg)
    daemon.setup()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, daemon.request_stop)
    signal.signal(signal.SIGHUP, lambda *_: daemon.request_reload())
    return daemon.run()
