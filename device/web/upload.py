"""The upload page's classifier: a photo goes through the daemon's own inference worker.

Not a second in-process classifier: an Edge TPU is opened by one process at a time (a
second interpreter in the daemon would fail, or fight the worker for the USB device), and
the daemon process must never load the runtime itself (a native crash there would take
MQTT and the outbox with it). So the photo is resized here, in the request's thread, by
the bundle's policy, and handed to the frame loop like a camera frame with a negative
sequence number; the results thread routes that answer back here instead of to the sink,
so it never becomes an event or a result message. The reply is the JSON of
`coral-classifier classify --json`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from device import messages, processing
from device.cameras.base import Frame
from device.web.imagesize import image_size
from device.web.live import verdict_fields

MAX_SIDE = 4096  # larger photos are scaled down first (memory, time)
MAX_PIXELS = 40_000_000  # web.max_pixels' default


class UploadError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def decode_photo(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An uploaded file to RGB uint8 (EXIF orientation applied), bounded in size: the
    header's width x height is checked before the decoder allocates anything."""
    size = image_size(data)
    if size is None:
        raise UploadError(400, "not an image file the page reads: send a JPEG, PNG or WebP "
                          "(or its header is damaged)")
    kind, w, h = size
    if w * h > max_pixels or not w or not h:
        raise UploadError(413, f"the {kind} is {w} x {h} pixels; at most {max_pixels:,} "
                          "pixels are decoded (web.max_pixels): scale it down first")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if bgr is None:
        raise UploadError(400, "not an image file OpenCV can read (JPEG, PNG, WebP, ...)")
    h, w = bgr.shape[:2]
    if max(h, w) > MAX_SIDE:
        s = MAX_SIDE / max(h, w)
        bgr = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class Uploads:
    def __init__(self, inject: Callable[[Frame], None], spec: Callable[[], Any],
                 paused: Callable[[], bool], timeout: float = 10.0):
        self.inject, self.spec, self.paused, self.timeout = inject, spec, paused, timeout
        self.pending: dict[int, list] = {}
        self.numbers = itertools.count(1)
        self.lock = threading.Lock()
        self.turn = threading.Lock()  # held by the web server: one upload at a time

    def classify(self, data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> dict[str, Any]:
        """The photo's classification (a request thread; UploadError when it cannot be)."""
        if self.paused():
            raise UploadError(409, "the daemon is paused (cmd/pause): resume it to classify")
        t0 = time.perf_counter()
        image = decode_photo(data, max_pixels)
        spec = self.spec()
        prepared = processing.resize(image, spec.width, spec.height, spec.resize)
        decode_ms = (time.perf_counter() - t0) * 1e3
        seq = next(self.numbers)  # the uploads' own numbers (origin "upload")
        waiter: list = [threading.Event(), None, name, t0, decode_ms]
        with self.lock:
            self.pending[seq] = waiter
        try:
            # a live camera's buffer drops its oldest frame when full: hand it in again
            for _ in range(3):
                self.inject(Frame(image, time.time(), seq, decode_ms, prepared=prepared,
                                  origin="upload"))
                if waiter[0].wait(self.timeout / 3):
                    return waiter[1]
        finally:
            with self.lock:
                self.pending.pop(seq, None)
        raise UploadError(503, f"no answer from the inference worker within {self.timeout:g} s")

    def answer(self, done, c, verdict) -> None:
        """The results thread: an uploaded photo's inference is back."""
        with self.lock:
            waiter = self.pending.get(done.frame.seq)
        if waiter is None:
            return
        _, _, name, t0, decode_ms = waiter
        total = (time.perf_counter() - t0) * 1e3
        result = messages.Result(1, done.frame.ts, c, decode_ms, total)
        payload = messages.result_message(
            result, done.spec.info(), done.spec.backend).model_dump()
        waiter[1] = {"image": name, **payload, "ood_score": verdict.ood_score,
                     **verdict_fields(verdict)}
        waiter[0].set()
