"""The daemon's lifecycle and frame loop: build once, READY, loop, stop cleanly.

Camera, classifier and MQTT client are built once; SIGTERM/SIGINT set a stop event;
the frame loop feeds the systemd watchdog only while frames really flow, so a stuck
camera or TPU gets the process restarted by systemd.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from device import __version__, messages
from device.bundle import load_bundle
from device.camera import create_frame_source
from device.config import Config
from device.errors import CameraError
from device.inference import create_classifier
from device.notify import Notifier
from device.pipeline import END, CaptureThread, FrameBuffer, StageTimes
from device.publisher import MqttPublisher

log = logging.getLogger(__name__)

MAX_CAMERA_FAILURES = 10  # consecutive; then exit and let systemd restart us
MAX_INFERENCE_FAILURES = 5


class Daemon:
    def __init__(self, cfg: Config, notifier: Notifier | None = None):
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        self.stop_event = threading.Event()
        self.device_id = cfg.mqtt.resolved_device_id()
        self.errors = {"camera": 0, "inference": 0, "publish": 0}
        self.last_error = ""
        self.frames = 0
        self.published = 0
        self.started = time.monotonic()
        self._fps_window = (time.monotonic(), 0)
        self.fps = 0.0
        self.state = "starting"
        self.times = StageTimes()
        self.buffer: FrameBuffer | None = None

    # -- setup ---------------------------------------------------------------------------
    def setup(self) -> None:
        m = self.cfg.model
        self.bundle = load_bundle(m.path, m.labels or None)
        self.classifier = create_classifier(
            self.bundle, m.backend, allow_cpu_fallback=m.allow_cpu_fallback, device=m.device,
            num_threads=m.num_threads, top_k=m.top_k, min_score=m.min_score)
        self.model_info = messages.model_info(self.classifier.bundle)
        log.info("model %s v%s (sha256 %s…) on %s via %s", self.bundle.name, self.bundle.version,
                 self.bundle.sha256[:12], self.classifier.backend, self.classifier.runtime)
        self.model_size = (self.classifier.width, self.classifier.height)
        self.source = create_frame_source(self.cfg.camera, self.model_size)
        self.publisher = MqttPublisher(self.cfg.mqtt, self.device_id, self.handle_command)
        self.topics = self.publisher.topics
        self.publisher.start()

    # -- commands (paho's thread) --------------------------------------------------------
    def handle_command(self, name: str, args: Any) -> dict[str, Any]:
        if name == "status":
            self.publish_status()
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {name!r}: known commands: status"}

    # -- status --------------------------------------------------------------------------
    def status(self) -> messages.Status:
        return messages.Status(
            state=self.state, device_id=self.device_id, software=__version__,
            model=self.model_info, backend=self.classifier.backend,
            runtime=self.classifier.runtime, camera=self.source.name, fps=self.fps,
            uptime_s=time.monotonic() - self.started, frames=self.frames,
            results_published=self.published,
            dropped_frames=self.buffer.dropped if self.buffer else 0,
            errors={**self.errors, "publish": self.errors["publish"] + self.publisher.errors},
            last_error=self.last_error or self.publisher.last_error)

    def publish_status(self) -> None:
        self.publisher.publish(self.topics.status,
                               messages.status_payload(self.status(), time.time()),
                               qos=1, retain=True)

    def _update_fps(self, now: float) -> None:
        t0, n0 = self._fps_window
        if now - t0 >= 1.0:
            self.fps = (self.frames - n0) / (now - t0)
            self._fps_window = (now, self.frames)

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        self.state = "running"
        self.buffer = FrameBuffer(size=2, drop_oldest=getattr(self.source, "live", True))
        capture = CaptureThread(self.source, self.buffer, self.stop_event)
        capture.start()
        self.notifier.ready(f"classifying with {self.bundle.name} on {self.classifier.backend}")
        self.publisher.wait_connected(2.0)  # a head start; we run without the broker too
        self.publish_status()
        try:
            return self._loop()
        finally:
            self.stop_event.set()
            self.buffer.close()
            capture.join(5)
            self.shutdown()

    def _loop(self) -> int:
        next_status = time.monotonic() + self.cfg.mqtt.status_interval
        min_gap = 1.0 / self.cfg.mqtt.result_max_rate if self.cfg.mqtt.result_max_rate else 0.0
        last_result = 0.0
        camera_failures = inference_failures = 0
        model, backend, qos = self.model_info, self.classifier.backend, self.cfg.mqtt.qos
        result_topic = self.topics.result
        perf = time.perf_counter
        while not self.stop_event.is_set():
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
            frame = item
            try:
                c = self.classifier.classify(frame.image)
                inference_failures = 0
            except (RuntimeError, ValueError) as exc:
                inference_failures += 1
                self._error("inference", f"inference failed: {exc}")
                if inference_failures >= MAX_INFERENCE_FAILURES:
                    return 1
                continue
            self.frames += 1
            self.notifier.watchdog()  # only here: frames really flow
            t_pub = perf()
            publish_ms = 0.0
            if not min_gap or now - last_result >= min_gap:
                total = frame.capture_ms + (t_pub - frame.t_captured) * 1e3
                result = messages.Result(frame.seq, frame.ts, c, frame.capture_ms, total)
                self.publisher.publish(result_topic,
                                       messages.result_payload(result, model, backend), qos=qos)
                self.published += 1
                last_result = now
                publish_ms = (perf() - t_pub) * 1e3
            self.times.add(frame.capture_ms, c.preprocess_ms, c.inference_ms, c.postprocess_ms,
                           publish_ms, (perf() - frame.t_captured) * 1e3 + frame.capture_ms)
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
            self.publisher.close("stopped")
        finally:
            self.source.close()
            self.classifier.close()
            self.notifier.close()
            log.info("stopped after %d frames", self.frames)

    def request_stop(self, signum: int | None = None, _frame=None) -> None:
        if signum is not None:
            log.info("received %s, stopping", signal.Signals(signum).name)
        self.stop_event.set()


def run_daemon(cfg: Config) -> int:
    """Build and run the daemon with signal handling; the CLI's `run`."""
    daemon = Daemon(cfg)
    daemon.setup()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, daemon.request_stop)
    return daemon.run()
