"""The model slot: the model being served, behind the inference worker process.

It owns the worker, the shared-memory frame slots the capture thread resizes into, and
the frames in flight (at most two, so the worker always has the next frame waiting while
it invokes). A frame that takes longer than `inference_timeout`, or a worker that dies,
raises WorkerDied; `restart()` then starts a new worker with the same model, and the
frames that were in flight are counted as dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from device import processing
from device.cameras.base import Frame
from device.daemon.worker import (
    LoadRequest,
    ModelSpec,
    RuntimeCrash,
    WorkerDied,
    WorkerProcess,
)
from device.inference import Inference

log = logging.getLogger(__name__)

DEPTH = 2  # frames in flight: one invoking, one waiting in the pipe
MAX_RESTARTS = (5, 300.0)  # worker restarts within seconds; more: exit for systemd


@dataclass(frozen=True)
class Done:
    """A frame back from the worker: its inference, or why it failed."""

    frame: Frame
    spec: ModelSpec  # the model that produced it (not the one serving now)
    inference: Inference | None
    error: str = ""


class SharedSlots:
    """Frame buffers in one shared-memory block, handed out like BufferPool's arrays.

    take() gives a free slot (or a plain array when all are in flight or the size is
    not the model's: the frame loop then copies it into a slot)."""

    def __init__(self, shape: tuple[int, int, int], count: int = 8):
        self.shape = shape
        self.count = count
        self.nbytes = int(np.prod(shape))
        self.shm = SharedMemory(create=True, size=self.nbytes * count)
        self.array = np.ndarray((count, *shape), np.uint8, buffer=self.shm.buf)
        self.free: deque[int] = deque(range(count))
        self.lock = threading.Lock()
        self.allocated = 0

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        if tuple(shape) == self.shape:
            with self.lock:
                if self.free:
                    return self.array[self.free.popleft()]
        self.allocated += 1
        return np.empty(shape, np.uint8)

    def index(self, arr: np.ndarray | None) -> int | None:
        """The slot an array lives in, or None for a plain array."""
        if arr is None or arr.base is not self.array:
            return None
        return (arr.ctypes.data - self.array.ctypes.data) // self.nbytes

    def give(self, arr: np.ndarray | None) -> None:
        i = self.index(arr)
        if i is not None:
            with self.lock:
                if i not in self.free:
                    self.free.append(i)

    def give_frame(self, item: object) -> None:
        """FrameBuffer's on_drop: a dropped frame's slot comes back."""
        self.give(getattr(item, "prepared", None))

    def retire(self) -> None:
        """Unlink the block; the mapping lives on while old views still point into it."""
        with contextlib.suppress(FileNotFoundError):
            self.shm.unlink()


class ModelSlot:
    def __init__(self, request: LoadRequest, inference_timeout: float = 5.0,
                 load_timeout: float = 120.0):
        self.request = request
        self.inference_timeout = inference_timeout
        self.worker = WorkerProcess(load_timeout)
        self.spec: ModelSpec | None = None
        self.slots: SharedSlots | None = None
        self._retired: list[SharedSlots] = []
        self._tickets = itertools.count(1)
        self.inflight: dict[int, tuple[Frame, ModelSpec, float]] = {}
        self.dropped = 0
        self._restart_times: list[float] = []

    @property
    def restarts(self) -> int:
        return max(0, self.worker.restarts)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.spec.height, self.spec.width, 3)

    def start(self) -> ModelSpec:
        """Start the worker and load the configured model (ModelError/BackendError).

        With backend "auto" and allow_cpu_fallback, an Edge TPU runtime that crashes the
        worker (libedgetpu built for another TensorFlow) falls back to the CPU like a
        missing TPU does: the crash happened in the worker, not in the daemon."""
        self.worker.start()
        try:
            spec = self.worker.load(self.request)
        except RuntimeCrash as exc:
            if self.request.backend != "auto" or not self.request.allow_cpu_fallback:
                raise
            log.error("%s; falling back to the CPU (model.allow_cpu_fallback)", exc)
            self.request = dataclasses.replace(self.request, backend="cpu")
            self.worker.start()
            spec = self.worker.load(self.request)
        log.info("model %s v%s (sha256 %s…) on %s via %s", spec.name, spec.version,
                 spec.sha256[:12], spec.backend, spec.runtime)
        return self._install(spec)

    def _install(self, spec: ModelSpec) -> ModelSpec:
        shape = (spec.height, spec.width, 3)
        if self.slots is None or self.slots.shape != shape:
            if self.slots is not None:
                self.slots.retire()
                self._retired.append(self.slots)  # the capture thread may hold old views
            self.slots = SharedSlots(shape)
        self.worker.attach(self.slots.shm.name, self.slots.array.shape)
        self.spec = spec
        return spec

    def load(self, request: LoadRequest) -> ModelSpec:
        """Swap in another model; the old one keeps serving when this raises. The caller
        drains the frames in flight first (their results still count)."""
        self.dropped += len(self.inflight)
        for frame, _, _ in self.inflight.values():
            self.give(frame.prepared)
        self.inflight.clear()
        spec = self.worker.load(request)
        self.request = request
        return self._install(spec)

    def restart(self) -> ModelSpec:
        """After WorkerDied: a new worker with the current model. WorkerDied again when
        it keeps dying (more than MAX_RESTARTS): systemd should restart everything."""
        now = time.monotonic()
        self._restart_times = [t for t in self._restart_times
                               if now - t < MAX_RESTARTS[1]] + [now]
        if len(self._restart_times) > MAX_RESTARTS[0]:
            raise WorkerDied(f"inference worker restarted {MAX_RESTARTS[0]} times in "
                             f"{MAX_RESTARTS[1]:.0f} s; giving up")
        self.dropped += len(self.inflight)
        for frame, _, _ in self.inflight.values():
            self.give(frame.prepared)
        self.inflight.clear()
        self.worker.start()
        return self._install(self.worker.load(self.request))

    # -- frames ----------------------------------------------------------------------------
    def prepare(self, image: np.ndarray, out: np.ndarray | None, scratch: dict) -> np.ndarray:
        """The capture thread's resize, straight into a shared slot."""
        spec = self.spec
        return processing.resize(image, spec.width, spec.height, spec.resize, out=out,
                                 scratch=scratch)

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.slots.take(shape)

    def give(self, arr: np.ndarray | None) -> None:
        for pool in (self.slots, *self._retired):
            if pool is not None and pool.index(arr) is not None:
                pool.give(arr)
                return

    def give_frame(self, item: object) -> None:
        self.give(getattr(item, "prepared", None))

    @property
    def ready(self) -> bool:
        return len(self.inflight) < DEPTH

    def submit(self, frame: Frame) -> None:
        """Send a frame to the worker (WorkerDied when it is gone)."""
        index = self.slots.index(frame.prepared)
        if index is None:  # prepared for another size, or no slot was free: copy in
            image = frame.prepared if frame.prepared is not None and \
                frame.prepared.shape == self.shape else None
            slot = self.slots.take(self.shape)
            if self.slots.index(slot) is None:
                raise RuntimeError("no free frame slot: frames are not being given back")
            if image is None:
                self.prepare(frame.image, slot, {})
            else:
                slot[...] = image
            self.give(frame.prepared)
            frame = dataclasses.replace(frame, prepared=slot)
            index = self.slots.index(slot)
        ticket = next(self._tickets)
        self.inflight[ticket] = (frame, self.spec, time.monotonic())
        self.worker.infer(index, ticket)

    def collect(self, timeout: float) -> Done | None:
        """The next finished frame, None if none within timeout; WorkerDied when the
        worker is gone or the oldest frame is past its deadline."""
        if not self.inflight:
            return None
        oldest = min(t for _, _, t in self.inflight.values())
        left = oldest + self.inference_timeout - time.monotonic()
        reply = self.worker.recv(max(0.0, min(timeout, left)))
        if reply is None:
            if time.monotonic() - oldest >= self.inference_timeout:
                self.worker.kill()
                raise WorkerDied(f"inference worker gave no answer within "
                                 f"{self.inference_timeout:g} s (a hung accelerator?); "
                                 "killed")
            return None
        kind, ticket = reply[0], reply[1]
        entry = self.inflight.pop(ticket, None)
        if entry is None:
            return None  # a late answer from before a reload: its frame is gone
        frame, spec, _ = entry
        self.give(frame.prepared)
        if kind == "fail":
            return Done(frame, spec, None, reply[2])
        _, _, pre_ms, inf_ms, raw, extra = reply
        return Done(frame, spec, Inference(raw, pre_ms, inf_ms, spec.postprocess, extra))

    def drain(self, timeout: float = 10.0) -> list[Done]:
        """Wait for everything in flight (before a reload or a stop)."""
        done = []
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            d = self.collect(0.1)
            if d is not None:
                done.append(d)
        return done

    def close(self) -> None:
        self.worker.stop()
        for pool in (self.slots, *self._retired):
            if pool is not None:
                pool.retire()
