"""Replay camera: a folder of images (file-name order) or a video file, at a given fps.

Real product code, not a test hack: it runs the whole daemon without a camera, for
demos, regression checks on recorded sequences and benchmarks.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from device.cameras.base import Frame, Pacer
from device.config import CameraConfig
from device.errors import CameraError
from device.images import IMAGE_SUFFIXES, decode_image

log = logging.getLogger(__name__)

CACHE_BYTES = 256 << 20  # decoded frames kept in memory so replay costs no decoding


class ReplaySource:
    live = False
    name = "replay"

    def __init__(self, cfg: CameraConfig, model_size: tuple[int, int] | None = None,
                 resize_policy: str = "stretch"):
        self.cfg = cfg
        self.path = Path(cfg.source)
        self.pacer = Pacer(cfg.fps)
        self.seq = 0
        self.errors = 0
        self._video: cv2.VideoCapture | None = None
        self._files: list[Path] = []
        self._cache: dict[Path, np.ndarray] = {}
        self._cached_bytes = 0
        self._pos = 0
        if not cfg.source:
            raise CameraError("camera.source is empty: give a folder of images or a video file")
        if self.path.is_dir():
            self._files = sorted(p for p in self.path.iterdir()
                                 if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                kinds = ", ".join(sorted(IMAGE_SUFFIXES))
                raise CameraError(f"replay folder {self.path} holds no images ({kinds})")
            self.name = f"replay:{self.path}"
        elif self.path.is_file():
            self._open_video()
            self.name = f"replay:{self.path}"
        else:
            raise CameraError(f"replay source {self.path} does not exist")

    def _open_video(self) -> None:
        self._video = cv2.VideoCapture(str(self.path))
        if not self._video.isOpened():
            raise CameraError(f"replay source {self.path} is neither an image folder nor a "
                              "video OpenCV can open")

    def _next_image(self) -> np.ndarray | None:
        if self._video is not None:
            ok, bgr = self._video.read()
            if not ok:
                if not self.cfg.loop:
                    return None
                self._video.release()
                self._open_video()
                ok, bgr = self._video.read()
                if not ok:
                    raise CameraError(f"video {self.path} has no readable frames")
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        tried = 0
        while True:
            if self._pos >= len(self._files):
                if not self.cfg.loop:
                    return None
                self._pos = 0
            f = self._files[self._pos]
            self._pos += 1
            img = self._cache.get(f)
            if img is None:
                img = decode_image(f)
                if img is None:
                    self.errors += 1
                    log.warning("replay: skipping %s: not a readable image", f)
                    tried += 1
                    if tried >= len(self._files):
                        raise CameraError(f"replay folder {self.path}: no file is a readable image")
                    continue
                if self._cached_bytes + img.nbytes <= CACHE_BYTES:
                    self._cache[f] = img
                    self._cached_bytes += img.nbytes
            return img

    def read(self) -> Frame | None:
        self.pacer.wait()
        t0 = time.perf_counter()
        img = self._next_image()
        if img is None:
            return None
        self.seq += 1
        return Frame(img, time.time(), self.seq, (time.perf_counter() - t0) * 1e3)

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None
