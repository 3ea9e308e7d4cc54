"""The daemon's lifecycle: build once, READY, run the frame loop, stop cleanly.

A thin shell over its parts: the model slot (the inference worker process), the capture
thread, the results thread with a sink (stream or events), the MQTT publisher with its
outbox and event sender, and the command runner. SIGTERM/SIGINT set a stop event, SIGHUP
or cmd/reload ask for a model reload. The systemd watchdog is fed only while the whole
daemon is healthy: frames flowing *and* the MQTT side alive (connected, or reconnecting
for less than mqtt.max_disconnected).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from typing import Any

import cv2

from device.cameras.base import Frame, FrameSource, create_frame_source
from device.config import Config
from device.daemon import status as status_mod
from device.daemon.mqttside import build_mqtt
from device.daemon.notify import Notifier
from device.daemon.pipeline import END, CaptureThread, FrameBuffer, ResultThread, StageTimes
from device.daemon.reload import Reloader
from device.daemon.results import ResultHandler
from device.daemon.sinks import EventSink, Sink, make_sink
from device.daemon.slot import ModelSlot
from device.daemon.spill import open_spill
from device.daemon.stats import CameraFailures, Stats
from device.daemon.worker import LoadRequest, ModelSpec, WorkerDied
from device.errors import CameraError, CoralError
from device.mqtt.outbox import Outbox
from device.policy import DecisionEngine
from device.triggers import create_trigger
from device.web import attach as web_attach

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
        self.reloader: Reloader | None = None
        self.updater = self.web = self.metrics = None
        self.device_id = cfg.mqtt.resolved_device_id()
        self.stats = Stats()
        self.times = StageTimes()
        self.state = "starting"
        self.last_frame: Frame | None = None
        self.closing = contextlib.ExitStack()  # what setup opened, closed at the stop
        self.engine = DecisionEngine(cfg.decision, cfg.camera.roi)

    # -- setup ---------------------------------------------------------------------------
    def setup(self) -> None:
        # OpenCV's thread pool would split each small resize across cores and spin against
        # the interpreter's threads: measured, one thread costs ~1.3 ms less CPU per frame.
        cv2.setNumThreads(1)
        m = self.cfg.model
        self.slot = ModelSlot(LoadRequest.from_config(m), m.inference_timeout, m.load_timeout)
        self.slot.start()  # loads and self-tests the model in the worker
        st = self.cfg.state
        self.outbox = Outbox(st.resolved_dir() / f"outbox-{self.device_id}.sqlite",
                             st.outbox_max_events, st.outbox_max_bytes)
        self.spill = open_spill(st.resolved_dir() / f"spill-{self.device_id}.bin",
                                st.spill_bytes, self.outbox, self.device_id)
        self.source: FrameSource = create_frame_source(
            self.cfg.camera, (self.spec.width, self.spec.height), self.spec.resize)
        self.trigger = create_trigger(self.cfg.trigger, self.cfg.camera.roi)
        for part in (self.slot, self.outbox, self.spill, self.source, self.trigger):
            if part is not None:  # closed at the stop, last opened first
                self.closing.callback(part.close)
        self.buffer = FrameBuffer(size=2 * max(1, len(self.cfg.camera.roi)),
                                  drop_oldest=getattr(self.source, "live", True),
                                  on_drop=self.slot.give_frame)
        mq = build_mqtt(self.cfg, self.device_id, self.outbox, self, self.stats)
        self.publisher, self.topics, self.sender = mq.publisher, mq.topics, mq.sender
        self.counts, self.commands, self.presence = mq.counts, mq.commands, mq.presence
        self._wire_outputs()
        for part in (self.sender, self.commands, self.publisher):
            part.start()

    def _wire_outputs(self) -> None:
        """Sink, status, extras, results handler, web page, recorder, reloads, updates."""
        self.sink: Sink = make_sink(self.cfg, self.engine, self.outbox, self.sender,
                                    self.publisher, self.topics, self.counts.publish,
                                    self.stats, self.presence)
        if isinstance(self.sink, EventSink):
            self.sink.spill = self.spill
        self.status_parts = status_mod.StatusParts(
            self.device_id, self.source.name, self.cfg.trigger.mode, self.stats,
            self.publisher, self.outbox, self.slot, self.sink, lambda: self.results.dropped,
            self.spill, lambda: self.commands.dropped)
        self.metrics = status_mod.attach_extras(
            self.cfg, self.publisher, self.status, lambda: self.spec, self.device_id,
            lambda: getattr(self.web, "server_port", None))
        self.handler = ResultHandler(self.engine, self.sink, self.times, self.metrics
                                     and self.metrics.inference.observe)
        self.results = ResultThread(self.handler, tick=self.sink.tick)
        self.wiring = web_attach.Wiring(
            self.cfg, self.device_id, self.handler, getattr(self.sink, "on_event", None),
            self.publisher.connected.is_set, self.buffer.put, self.outbox.counts_snapshot,
            self.status, lambda: self.spec, self.paused.is_set, self.stats.error)
        self.recorder, self.web = web_attach.attach(self.wiring)  # [capture], [web]
        self.closing.callback(web_attach.close, self.web, self.recorder)
        if self.metrics is not None:
            self.closing.callback(self.metrics.close)
        from device.daemon.update import Updater, read_deploy_nonce

        self.reloader = Reloader(self.cfg.model, self.slot, self.stats, self.notifier,
                                 lambda r: self.publisher.reply("reload", r),
                                 self.publish_status)
        # a first deploy starts the service: its nonce confirms the model loaded at start
        self.reloader.nonce = read_deploy_nonce(self.cfg.model.path)
        self.updater = Updater(self.cfg.update, self.cfg.model.path, self.request_reload,
                               lambda r: self.publisher.reply("update", r),
                               self.publish_status, self.cfg.model.load_timeout + 30,
                               device_id=self.device_id)
        self.reloader.listeners.append(self.updater.reloaded)

    # -- Controls (the command runner's view of the daemon) --------------------------------
    def publish_status(self) -> None:
        self.publisher.publish(self.topics.status, self.status(), qos=1, retain=True)

    def set_paused(self, paused: bool) -> None:
        (self.paused.set if paused else self.paused.clear)()
        self.publish_status()

    def reset_counts(self) -> dict[str, Any]:
        return self.counts.reset()

    @property
    def spec(self) -> ModelSpec:
        """The model serving now (the slot's; a reload or a worker restart changes it)."""
        return self.slot.spec

    def request_reload(self, nonce: str = "", reply: bool = True) -> None:
        if self.reloader is not None:
            self.reloader.request(nonce, reply)

    def update(self, args: dict[str, Any]) -> dict[str, Any] | None:
        return self.updater.start(args)

    def capture(self, label: str, frames: int, every: float) -> dict[str, Any]:
        return web_attach.start_capture(self.wiring, self.recorder, label, frames, every)

    def snapshot(self, quality: int) -> dict[str, Any]:
        return status_mod.snapshot(self.last_frame, quality, self.publisher,
                                   self.topics["snapshot"])

    def status(self):
        updating = self.updater is not None and self.updater.state["state"] != "idle"
        state = "paused" if self.paused.is_set() and self.state == "running" else self.state
        return status_mod.snapshot_status(self.status_parts, status_mod.Moment(
            state, self.spec, self.buffer.dropped,
            self.reloader.nonce if self.reloader else "",
            self.updater.status() if updating else None))

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        self.state = "running"
        # a replay is decided frame by frame: back-pressure instead of dropping frames
        live = self.buffer.drop_oldest = getattr(self.source, "live", True)
        self.results.buffer.drop_oldest = live
        capture = CaptureThread(self.source, self.buffer, self.stop_event,
                                prepare=self.slot.prepare, shape=lambda: self.slot.shape,
                                pool=self.slot, rois=self.cfg.camera.roi,
                                trigger=self.trigger)
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
            with contextlib.suppress(WorkerDied):  # a hung worker: its frames are lost
                for done in self.slot.drain(self.cfg.model.inference_timeout):
                    if done.inference is not None:  # classified: counted like any other
                        self._counted(done, time.monotonic())
            self.results.stop()  # flush queued results before announcing the stop
            self.shutdown()

    def _loop(self) -> int:
        """The frame loop: frames to the worker (two in flight), results back."""
        next_status = time.monotonic() + self.cfg.mqtt.status_interval
        camera = CameraFailures(MAX_CAMERA_FAILURES)
        inference_failures = 0
        while not self.stop_event.is_set():
            if self.reloader.event.is_set():
                self.reloader.run(self.results.put, self._worker_died)
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
                if got is END:  # a replay or a video file: its last frames, still in the
                    log.info("frame source ended")  # worker, are waited for in run()
                    return 0
                if isinstance(got, CameraError):
                    self.stats.error("camera", str(got))
                    if camera.failed():
                        return CameraError.exit_code
                    self.stop_event.wait(camera.backoff)
                elif got is not None:
                    camera.count = 0
                    self.stats.seen_frame(got)
                    if got.roi_index == 0 and got.from_camera:
                        self.last_frame = got
                    if self.paused.is_set() or got.gated:
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
            self._counted(done, now)
        return 0

    def _counted(self, done, now: float) -> None:
        if done.frame.from_camera:  # an upload proves no camera works
            self.stats.frame(now)
            self._feed_watchdog()
        self.results.put(done)

    def _feed_watchdog(self) -> None:
        if self.publisher.healthy(self.cfg.mqtt.max_disconnected):
            self.notifier.watchdog()

    def _worker_died(self, exc: WorkerDied) -> int | None:
        """Restart the worker; an exit code when that is not possible or too frequent."""
        self.stats.error("worker", f"{exc}; restarting it", logging.ERROR)
        try:
            self.slot.restart()
        except CoralError as err:
            log.error("the inference worker cannot be restarted: %s", err)
            return err.exit_code
        self.publish_status()
        return None

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
            try:
                self.closing.close()
            finally:
                self.notifier.close()
            log.info("stopped after %d frames, %d events", self.stats.frames, self.stats.events)

    def request_stop(self, signum: int | None = None, _frame=None) -> None:
        if signum is not None:
            log.info("received %s, stopping", signal.Signals(signum).name)
        self.stop_event.set()
