"""The daemon's lifecycle: build once, READY, run the frame loop, stop cleanly.

A thin shell over its parts: the model slot (the inference worker process), the capture
thread, the results thread with a sink (stream or events), the MQTT publisher with its
outbox and event sender, and the command runner. SIGTERM/SIGINT set a stop event, SIGHUP
or cmd/reload ask for a model reload. The systemd watchdog is fed only while the whole
daemon is healthy: frames flowing *and* the MQTT side alive (connected, or reconnecting
for less than mqtt.max_disconnected).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import cv2

from device.cameras.base import Frame, FrameSource, create_frame_source
from device.config import Config
from device.daemon import status as status_mod
from device.daemon.notify import Notifier
from device.daemon.pipeline import END, CaptureThread, FrameBuffer, ResultThread, StageTimes
from device.daemon.sinks import EventSink, Sink, StreamSink
from device.daemon.slot import Done, ModelSlot
from device.daemon.stats import Stats
from device.daemon.worker import LoadRequest, ModelSpec, WorkerDied
from device.decision import Decider
from device.errors import CameraError, CoralError
from device.mqtt.commands import CommandRunner
from device.mqtt.outbox import Outbox
from device.mqtt.publisher import MqttPublisher
from device.mqtt.sender import EventSender
from device.openset import judge

log = logging.getLogger(__name__)

MAX_CAMERA_FAILURES = 10  # consecutive; then exit and let systemd restart us
MAX_INFERENCE_FAILURES = 5
DRAIN_SECONDS = 5.0  # a clean stop waits this long for the broker to take the outbox


class Daemon:
    """Wires the parts and runs the frame loop; also the Controls that commands use."""

    def __init__(self, cfg: Config, notifier: Notifier | None = None):
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        self.stop_event = threading.Event()
        self.paused = threading.Event()
        self.reload_event = threading.Event()
        self._reload_nonces: list[str] = []
        self.reload_nonce = ""
        self.device_id = cfg.mqtt.resolved_device_id()
        self.stats = Stats()
        self.times = StageTimes()
        self.state = "starting"
        self.buffer: FrameBuffer | None = None
        self.last_frame: Frame | None = None
        self._counts_lock = threading.Lock()
        self.metrics = None

    # -- setup ---------------------------------------------------------------------------
    def setup(self) -> None:
        # OpenCV's thread pool would split each small resize across cores and spin against
        # the interpreter's threads: measured, one thread costs ~1.3 ms less CPU per frame.
        cv2.setNumThreads(1)
        m = self.cfg.model
        self.slot = ModelSlot(LoadRequest.from_config(m), m.inference_timeout, m.load_timeout)
        self.spec: ModelSpec = self.slot.start()  # loads and self-tests in the worker
        log.info("model %s v%s (sha256 %s…) on %s via %s", self.spec.name, self.spec.version,
                 self.spec.sha256[:12], self.spec.backend, self.spec.runtime)
        st = self.cfg.state
        self.outbox = Outbox(st.resolved_dir() / f"outbox-{self.device_id}.sqlite",
                             st.outbox_max_events, st.outbox_max_bytes)
        self.source: FrameSource = create_frame_source(
            self.cfg.camera, (self.spec.width, self.spec.height), self.spec.resize)
        self.publisher = MqttPublisher(self.cfg.mqtt, self.device_id)
        self.topics = self.publisher.topics
        self.sender = EventSender(self.outbox, self.publisher.publish_qos1,
                                  self.publisher.connected)
        self.publisher.on_connected += [self.sender.reconnected, self.publish_counts]
        self.publisher.on_puback = self.sender.on_puback
        self.commands = CommandRunner(self, self.publisher.reply,
                                      lambda msg: self.stats.error("command", msg))
        if self.cfg.mqtt.commands:
            self.publisher.on_command = self.commands.submit
        d = self.cfg.decision
        self.sink: Sink = (
            EventSink(Decider(status_mod.decision_rules(d, self.spec)), self.outbox,
                      self.sender, self.publish_counts, self.topics, self.device_id,
                      self.stats, st.max_unstored)
            if d.mode == "event" else
            StreamSink(self.publisher, self.topics, self.cfg.mqtt.qos,
                       self.cfg.mqtt.result_max_rate, self.stats))
        self.results = ResultThread(self._handle_result, tick=self.sink.tick)
        status_mod.attach_extras(self)
        self.sender.start()
        self.commands.start()
        self.publisher.start()

    # -- Controls (the command runner's view of the daemon) --------------------------------
    def publish_status(self) -> None:
        self.publisher.publish(self.topics.status, self.status(), qos=1, retain=True)

    def set_paused(self, paused: bool) -> None:
        (self.paused.set if paused else self.paused.clear)()
        self.publish_status()

    def reset_counts(self) -> dict[str, Any]:
        with self._counts_lock:  # no event's counts can be published between the two
            counts, since = self.outbox.reset_counts()
            self._publish_counts(counts, since)
        return {"ok": True, "counts": counts}

    def publish_counts(self) -> None:
        with self._counts_lock:
            self._publish_counts(*self.outbox.counts_snapshot())

    def _publish_counts(self, counts: dict[str, int], since: float) -> None:
        self.publisher.publish(self.topics["counts"], {
            "ts": round(time.time(), 3), "since": round(since, 3), "counts": counts},
            qos=1, retain=True)

    def request_reload(self, nonce: str = "", reply: bool = True) -> None:
        if reply:
            self._reload_nonces.append(nonce)
        self.reload_event.set()

    def snapshot(self, quality: int) -> dict[str, Any]:
        return status_mod.snapshot(self.last_frame, quality, self.publisher,
                                   self.topics["snapshot"])

    def status(self):
        return status_mod.snapshot_status(self)

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        self.state = "running"
        live = getattr(self.source, "live", True)
        self.buffer = FrameBuffer(size=2, drop_oldest=live, on_drop=self.slot.give_frame)
        # a replay is decided frame by frame: back-pressure instead of dropping results
        self.results.buffer.drop_oldest = live
        capture = CaptureThread(self.source, self.buffer, self.stop_event,
                                prepare=self.slot.prepare, shape=lambda: self.slot.shape,
                                pool=self.slot)
        capture.start()
        self.results.start()
        self.notifier.ready(f"classifying with {self.spec.name} on {self.spec.backend}")
        self.publisher.wait_connected(2.0)  # a head start; we run without the broker too
        self.publish_status()
        try:
            return self._loop()
        finally:
            self.stop_event.set()
            self.buffer.close()
            capture.join(5)
            for done in self.slot.drain(2.0):
                self.results.put(done)
            self.results.stop()  # flush queued results before announcing the stop
            self.shutdown()

    def _loop(self) -> int:
        """The frame loop: frames to the worker (two in flight), results back."""
        next_status = time.monotonic() + self.cfg.mqtt.status_interval
        camera_failures = inference_failures = 0
        while not self.stop_event.is_set():
            if self.reload_event.is_set():
                self._reload()
            fatal = getattr(self.sink, "fatal", "")
            if fatal:
                return 1
            now = time.monotonic()
            if now >= next_status:
                self.publish_status()
                self.notifier.status(f"{self.stats.frames} frames, {self.stats.fps:.1f} fps")
                next_status = now + self.cfg.mqtt.status_interval
            got = None
            if self.slot.ready:
                got = self.buffer.get(timeout=0.0 if self.slot.inflight else 0.5)
            try:
                if got is END:
                    log.info("frame source ended")
                    return 0
                if isinstance(got, CameraError):
                    camera_failures += 1
                    self.stats.error("camera", str(got))
                    if camera_failures >= MAX_CAMERA_FAILURES:
                        log.error("camera failed %d times in a row; exiting for a restart",
                                  camera_failures)
                        return CameraError.exit_code
                    self.stop_event.wait(min(8.0, 0.25 * 2 ** camera_failures))
                elif got is not None:
                    camera_failures = 0
                    self.last_frame = got
                    if self.paused.is_set():
                        self.slot.give(got.prepared)
                        self._feed_watchdog()
                    else:
                        self.slot.submit(got)
                done = self.slot.collect(0.0 if got is not None else 0.005)
            except WorkerDied as exc:
                code = self._worker_died(exc)
                if code is not None:
                    return code
                continue
            if done is None:
                continue
            if done.inference is None:
                inference_failures += 1
                self.stats.error("inference", done.error)
                if inference_failures >= MAX_INFERENCE_FAILURES:
                    return 1
                continue
            inference_failures = 0
            self.stats.frame(now)
            self._feed_watchdog()
            self.results.put(done)
        return 0

    def _feed_watchdog(self) -> None:
        if self.publisher.healthy(self.cfg.mqtt.max_disconnected):
            self.notifier.watchdog()

    def _worker_died(self, exc: WorkerDied) -> int | None:
        """Restart the worker; an exit code when that is not possible or too frequent."""
        self.stats.error("worker", f"{exc}; restarting it", logging.ERROR)
        try:
            self.spec = self.slot.restart()
        except CoralError as err:
            log.error("the inference worker cannot be restarted: %s", err)
            return err.exit_code
        self.publish_status()
        return None

    def _reload(self) -> None:
        """Load and self-test the configured bundle in the worker; keep the old on failure."""
        self.reload_event.clear()
        nonces, self._reload_nonces = self._reload_nonces, []
        self.notifier.reloading()
        old = self.spec.info()
        for done in self.slot.drain():
            self.results.put(done)
        try:
            self.spec = self.slot.load(LoadRequest.from_config(self.cfg.model))
        except WorkerDied as exc:
            self._worker_died(exc)
            result = {"ok": False, "error": str(exc), "model": self.spec.info()}
        except CoralError as exc:
            self.stats.error("inference", f"reload failed, still serving {old['name']} "
                             f"v{old['version']}: {exc}", logging.ERROR)
            result = {"ok": False, "error": str(exc), "model": old}
        else:
            self.stats.clear_error(self.stats.last_error)
            self.reload_nonce = next((n for n in reversed(nonces) if n), self.reload_nonce)
            log.info("reloaded: now %s v%s (sha256 %s…)", self.spec.name, self.spec.version,
                     self.spec.sha256[:12])
            result = {"ok": True, "model": self.spec.info(), "previous": old}
        self.notifier.ready(f"serving {self.spec.name} v{self.spec.version}")
        self.publish_status()
        for nonce in nonces:
            self.publisher.reply("reload", {**result, **({"nonce": nonce} if nonce else {})})

    def _handle_result(self, done: Done) -> None:
        """The results thread: rank, decide or publish, and record where the time went."""
        frame, spec = done.frame, done.spec
        c = done.inference.classify()
        verdict = judge(spec.point, spec.labels, done.inference.outputs())
        t_pub = time.perf_counter()
        self.sink.handle(frame, c, spec, verdict)
        t_done = time.perf_counter()
        if self.metrics is not None:
            self.metrics.inference.observe(c.inference_ms / 1e3)
        self.times.add(frame.capture_ms, frame.prepare_ms + c.preprocess_ms, c.inference_ms,
                       c.postprocess_ms, (t_done - t_pub) * 1e3,
                       (t_done - frame.t_captured) * 1e3 + frame.capture_ms)

    def shutdown(self) -> None:
        self.notifier.stopping()
        self.state = "stopped"
        try:
            if isinstance(self.sink, EventSink):
                self.sink.flush()
            status_mod.drain_outbox(self.outbox, self.sender, self.publisher, DRAIN_SECONDS)
            self.publish_status()
            self.commands.stop()
            self.sender.stop()
            self.publisher.close("stopped")
        finally:
            self.sender.join(5)
            if self.metrics is not None:
                self.metrics.close()
            self.outbox.close()
            self.source.close()
            self.slot.close()
            self.notifier.close()
            log.info("stopped after %d frames, %d events", self.stats.frames, self.stats.events)

    def request_stop(self, signum: int | None = None, _frame=None) -> None:
        if signum is not None:
            log.info("received %s, stopping", signal.Signals(signum).name)
        self.stop_event.set()
