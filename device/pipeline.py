"""Capture runs in its own thread, so the camera and the classifier overlap.

A live camera fills a tiny drop-oldest buffer: under overload the newest frame wins and
latency never builds up (drops are counted). A replay source blocks instead, because a
recorded sequence must be classified frame by frame.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from device.errors import CameraError

log = logging.getLogger(__name__)

END = object()  # the source has ended


class FrameBuffer:
    """A bounded hand-off between the capture thread and the frame loop."""

    def __init__(self, size: int = 2, drop_oldest: bool = True):
        self.items: deque = deque()
        self.size = size
        self.drop_oldest = drop_oldest
        self.dropped = 0
        self.cond = threading.Condition()
        self.closed = False

    def put(self, item) -> None:
        with self.cond:
            if not self.drop_oldest:
                while len(self.items) >= self.size and not self.closed:
                    self.cond.wait(0.1)
            elif len(self.items) >= self.size:
                self.items.popleft()
                self.dropped += 1
            self.items.append(item)
            self.cond.notify_all()

    def get(self, timeout: float):
        """The oldest buffered item, or None after timeout."""
        with self.cond:
            if not self.items:
                self.cond.wait(timeout)
            if not self.items:
                return None
            item = self.items.popleft()
            self.cond.notify_all()
            return item

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class CaptureThread(threading.Thread):
    """Reads the source until stopped; errors travel through the buffer as values."""

    def __init__(self, source, buffer: FrameBuffer, stop: threading.Event,
                 prepare: Callable[[np.ndarray], np.ndarray] | None = None):
        super().__init__(name="capture", daemon=True)
        self.prepare = prepare
        self.source = source
        self.buffer = buffer
        self.stop_event = stop
        self.paused = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                frame = self.source.read()
            except CameraError as exc:
                self.buffer.put(exc)
                self.stop_event.wait(0.05)
                continue
            except Exception as exc:  # a backend bug must reach the loop, not vanish
                log.exception("capture failed")
                self.buffer.put(CameraError(f"capture failed: {exc}"))
                self.stop_event.wait(0.5)
                continue
            if frame is None:
                self.buffer.put(END)
                return
            if self.prepare is not None:
                t0 = time.perf_counter()
                prepared = self.prepare(frame.image)
                frame = dataclasses.replace(frame, prepared=prepared,
                                            prepare_ms=(time.perf_counter() - t0) * 1e3)
            self.buffer.put(frame)


class StageTimes:
    """Per-stage milliseconds in preallocated rings (no per-frame allocation)."""

    STAGES = ("capture", "preprocess", "inference", "postprocess", "publish", "latency")

    def __init__(self, size: int = 4096):
        self.size = size
        self.data = np.zeros((len(self.STAGES), size), np.float64)
        self.n = 0

    def add(self, *values: float) -> None:
        self.data[:, self.n % self.size] = values
        self.n += 1

    def percentiles(self, q=(50, 95, 99)) -> dict[str, dict[str, float]]:
        k = min(self.n, self.size)
        if not k:
            return {}
        pct = np.percentile(self.data[:, :k], q, axis=1)
        return {s: {f"p{p}": round(float(pct[j, i]), 3) for j, p in enumerate(q)}
                for i, s in enumerate(self.STAGES)}



class PublishThread(threading.Thread):
    """Serialises and publishes results off the frame loop: JSON and paho's packet work
    overlap the next inference. A small drop-oldest buffer: when the broker path falls
    behind, the oldest unsent result goes (results are a stream; events use the outbox)."""

    def __init__(self, send: Callable[[object], None], size: int = 8):
        super().__init__(name="publish", daemon=True)
        self.send = send
        self.buffer = FrameBuffer(size=size, drop_oldest=True)
        self.stopping = threading.Event()

    @property
    def dropped(self) -> int:
        return self.buffer.dropped

    def put(self, item) -> None:
        self.buffer.put(item)

    def run(self) -> None:
        while True:
            item = self.buffer.get(timeout=0.2)
            if item is None:
                if self.stopping.is_set():
                    return  # stopped and drained
                continue
            try:
                self.send(item)
            except Exception:  # a bad result must not stop the stream
                log.exception("publishing a result failed")

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what is queued, then end."""
        self.stopping.set()
        self.join(timeout)
