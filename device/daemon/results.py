"""The results thread's work on each classified frame, in one place.

Judge the frame once (device.policy, the one decision path), answer a web upload on its
own path (an upload is no camera frame: no taps, no sink, no counters), feed the taps
(the web page's live view, the capture recorder), hand it to the sink (stream or events)
and record where the time went.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from device.daemon.pipeline import StageTimes
from device.daemon.slot import Done
from device.policy import DecisionEngine

Tap = Callable[..., None]  # (frame, classification, spec, verdict)


class ResultHandler:
    """Called by the ResultThread with every Done; taps and the upload path are added by
    the parts that need them (the daemon does no per-frame work for what is not set up)."""

    def __init__(self, engine: DecisionEngine, sink: Any, times: StageTimes,
                 observe_inference: Callable[[float], None] | None = None):
        self.engine, self.sink, self.times = engine, sink, times
        self.observe_inference = observe_inference
        self.taps: tuple[Tap, ...] = ()
        self.uploads: Tap | None = None  # answers frames of origin "upload"

    def add_tap(self, tap: Tap) -> None:
        if tap not in self.taps:
            self.taps += (tap,)

    def __call__(self, done: Done) -> None:
        frame, spec = done.frame, done.spec
        c = done.inference.classify()
        # the scene check learns the camera's empty slot: an upload is no view of it
        image = frame.image if frame.from_camera else None
        verdict = self.engine.judge(spec, frame.roi, done.inference.outputs(), image)
        if frame.origin == "upload":
            if self.uploads is not None:
                self.uploads(done, c, verdict)
            return
        for tap in self.taps:
            tap(frame, c, spec, verdict)
        t_pub = time.perf_counter()
        self.sink.handle(frame, c, spec, verdict)
        t_done = time.perf_counter()
        if self.observe_inference is not None:
            self.observe_inference(c.inference_ms / 1e3)
        self.times.add(frame.capture_ms, frame.prepare_ms + c.preprocess_ms, c.inference_ms,
                       c.postprocess_ms, (t_done - t_pub) * 1e3,
                       (t_done - frame.t_captured) * 1e3 + frame.capture_ms)
