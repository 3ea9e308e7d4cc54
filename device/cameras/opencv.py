"""OpenCV camera: a V4L2 device index (USB webcam) or a stream URL such as RTSP."""

from __future__ import annotations

import logging
import time

import cv2

from device.cameras.base import Frame, Pacer
from device.config import CameraConfig
from device.errors import CameraError

log = logging.getLogger(__name__)


class OpenCVSource:
    live = True
    def __init__(self, cfg: CameraConfig, model_size: tuple[int, int] | None = None,
                 resize_policy: str = "stretch"):
        src = cfg.source or "0"
        self.target = int(src) if src.isdigit() else src
        self.name = f"opencv:{src}"
        self.cfg = cfg
        self.pacer = Pacer(cfg.fps)
        self.seq = 0
        self.cap = cv2.VideoCapture(self.target)
        if not self.cap.isOpened():
            hint = (f"is the webcam plugged in, /dev/video{src} present, and the user in the "
                    "'video' group?") if isinstance(self.target, int) else \
                   "is the URL right and the stream reachable from this machine?"
            raise CameraError(f"cannot open camera {src!r}: {hint}")
        # Ask for the configured size and rate; drivers may pick the nearest they support.
        self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        self.cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        self.cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a stale backlog

    def read(self) -> Frame | None:
        self.pacer.wait()
        t0 = time.perf_counter()
        ok, bgr = self.cap.read()
        if not ok or bgr is None:
            raise CameraError(f"camera {self.name} returned no frame (disconnected?)")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self.seq += 1
        return Frame(rgb, time.time(), self.seq, (time.perf_counter() - t0) * 1e3)

    def close(self) -> None:
        self.cap.release()
