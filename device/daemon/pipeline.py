"""Capture, inference and results run in their own threads, so camera, model and MQTT
overlap: the frame loop (inference) only fills the input tensor and invokes.

A live camera fills tiny drop-oldest buffers: under overload the newest frame wins and
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

from device import regions
from device.errors import CameraError
from device.triggers import Trigger

log = logging.getLogger(__name__)

END = object()  # the source has ended


class FrameBuffer:
    """A bounded hand-off between the capture thread and the frame loop."""

    def __init__(self, size: int = 2, drop_oldest: bool = True,
                 on_drop: Callable[[object], None] | None = None):
        self.on_drop = on_drop
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
                old = self.items.popleft()
                self.dropped += 1
                if self.on_drop is not None:
                    self.on_drop(old)
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


class BufferPool:
    """Arrays for resized frames, reused: the capture thread takes one per frame and the
    frame loop gives it back once it is copied into the input tensor (a dropped frame's
    goes back too). A new array is made only while every one is in flight or after a
    reload changed the size, so the steady state allocates nothing."""

    def __init__(self, keep: int = 8):
        self.free: deque[np.ndarray] = deque()  # append/pop are atomic: no lock needed
        self.keep = keep
        self.allocated = 0

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        while True:
            try:
                buf = self.free.pop()
            except IndexError:
                self.allocated += 1
                return np.empty(shape, np.uint8)
            if buf.shape == shape:
                return buf  # else: a size from before a reload, let it go

    def give(self, arr: np.ndarray | None) -> None:
        while isinstance(arr, np.ndarray) and isinstance(arr.base, np.ndarray):
            arr = arr.base  # a channel-swapped view: keep the buffer under it
        if arr is not None and len(self.free) < self.keep:
            self.free.append(arr)

    def give_frame(self, item: object) -> None:
        """FrameBuffer's on_drop: a dropped frame's buffer comes back."""
        prepared = getattr(item, "prepared", None)
        if prepared is not None:
            self.give(prepared)


class CaptureThread(threading.Thread):
    """Reads the source and resizes each frame for the model until stopped; errors travel
    through the buffer as values.

    `prepare(image, out, scratch)` resizes into `out`; `shape()` is the model's input
    shape now (it changes on a reload)."""

    def __init__(self, source, buffer: FrameBuffer, stop: threading.Event,
                 prepare: Callable[..., np.ndarray] | None = None,
                 shape: Callable[[], tuple[int, ...]] | None = None,
                 pool: BufferPool | None = None, rois: tuple = (),
                 trigger: Trigger | None = None):
        super().__init__(name="capture", daemon=True)
        # each region becomes its own frame (same seq and time); a source that already
        # delivers the single region (picamera2's ScalerCrop) sets `roi_applied`
        self.rois = () if getattr(source, "roi_applied", False) and len(rois) == 1 else rois
        self.roi_names = tuple(r.name for r in rois)
        self.trigger = trigger
        self.prepare = prepare
        self.shape = shape
        self.pool = pool or BufferPool()
        self.scratch: dict = {}  # halved images, reused frame after frame
        self.source = source
        self.buffer = buffer
        self.stop_event = stop

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
            if self.trigger is not None and not self.trigger.wants(frame.image, frame.ts):
                self.buffer.put(dataclasses.replace(frame, gated=True))
                continue
            if self.prepare is None:
                self.buffer.put(frame)
                continue
            if not self.rois:
                name = self.roi_names[0] if self.roi_names else ""
                self.buffer.put(self._prepared(frame, frame.image, name, 0))
                continue
            for i, roi in enumerate(self.rois):
                self.buffer.put(self._prepared(frame, regions.crop(frame.image, roi),
                                               roi.name, i))

    def _prepared(self, frame, image: np.ndarray, roi: str, index: int):
        t0 = time.perf_counter()
        out = self.pool.take(self.shape()) if self.shape is not None else None
        prepared = self.prepare(image, out, self.scratch)
        return dataclasses.replace(frame, prepared=prepared, roi=roi, roi_index=index,
                                   prepare_ms=(time.perf_counter() - t0) * 1e3)


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

    def percentiles(self, q=(50, 95, 99), since: int = 0) -> dict[str, dict[str, float]]:
        """Per-stage percentiles over the frames from number `since` on (as many of
        them as the ring still holds)."""
        k = min(self.n - since, self.size)
        if k <= 0:
            return {}
        cols = np.arange(self.n - k, self.n) % self.size
        pct = np.percentile(self.data[:, cols], q, axis=1)
        return {s: {f"p{p}": round(float(pct[j, i]), 3) for j, p in enumerate(q)}
                for i, s in enumerate(self.STAGES)}


class ResultThread(threading.Thread):
    """Handles each inference off the frame loop: ranking, the decision, JSON and paho's
    packet work all overlap the next invoke. A small drop-oldest buffer for a live camera:
    when this thread falls behind, the oldest unhandled frame goes (counted; events are
    made here and stored in the outbox before anything is sent, so none is lost that way).
    A replay sets `buffer.drop_oldest = False` and waits instead."""

    def __init__(self, handle: Callable[[object], None], size: int = 8,
                 tick: Callable[[], None] | None = None):
        super().__init__(name="results", daemon=True)
        self.handle = handle
        self.tick = tick  # housekeeping (retries) between items, and at least every 0.2 s
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
            try:
                if item is not None:
                    self.handle(item)
                if self.tick is not None:
                    self.tick()
            except Exception:  # a bad result must not stop the stream
                log.exception("handling a result failed")
            if item is None and self.stopping.is_set():
                return  # stopped and drained

    def stop(self, timeout: float = 5.0) -> None:
        """Handle what is queued, then end."""
        self.stopping.set()
        self.join(timeout)
