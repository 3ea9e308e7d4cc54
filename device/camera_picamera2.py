"""Raspberry Pi camera through picamera2 (libcamera).

The ISP scales the frame to the model's input size, so the CPU does no resize. Note
picamera2's format names follow DRM fourcc: "RGB888" is B,G,R in memory and
"BGR888" is R,G,B. We ask for "BGR888" by default and swap when "RGB888" is configured.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from device.camera import Frame, Pacer
from device.config import CameraConfig
from device.errors import CameraError

log = logging.getLogger(__name__)

_IMPORT_HELP = (
    "picamera2 cannot be imported ({exc}). On Raspberry Pi OS: `sudo apt install "
    "python3-picamera2`, and create the venv with --system-site-packages so libcamera's "
    "Python bindings are visible (`make install-device` does this)."
)


def to_rgb(array: np.ndarray, pixel_format: str) -> np.ndarray:
    """picamera2 array -> RGB view (no copy): swap for "RGB888", drop X of 4-channel."""
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    if pixel_format.startswith("RGB") or pixel_format.startswith("XRGB"):
        return array[..., ::-1]
    return array


class Picamera2Source:
    live = True
    def __init__(self, cfg: CameraConfig, model_size: tuple[int, int] | None = None):
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError as exc:
            raise CameraError(_IMPORT_HELP.format(exc=exc)) from None
        self.cfg = cfg
        self.format = cfg.pixel_format
        num = int(cfg.source) if cfg.source.isdigit() else 0
        self.name = f"picamera2:{num}"
        size = model_size if (cfg.isp_resize and model_size) else (cfg.width, cfg.height)
        try:
            self.cam = Picamera2(num)
        except (IndexError, RuntimeError) as exc:
            raise CameraError(
                f"camera {num} not found ({exc}): is the ribbon cable seated and "
                "`rpicam-hello --list-cameras` listing it?") from None
        config = self.cam.create_video_configuration(
            main={"size": tuple(size), "format": self.format},
            buffer_count=4,
            controls={"FrameRate": float(cfg.fps)},
        )
        self.cam.align_configuration(config)
        self.cam.configure(config)
        actual = tuple(config["main"]["size"])
        if actual != tuple(size):
            log.info("picamera2 aligned %s to %s; the CPU resizes the rest", size, actual)
        self.cam.start()
        self.pacer = Pacer(cfg.fps)
        self.seq = 0

    def read(self) -> Frame | None:
        self.pacer.wait()
        t0 = time.perf_counter()
        try:
            array = self.cam.capture_array("main")
        except RuntimeError as exc:
            raise CameraError(f"{self.name}: capture failed: {exc}") from None
        self.seq += 1
        return Frame(to_rgb(array, self.format), time.time(), self.seq,
                     (time.perf_counter() - t0) * 1e3)

    def close(self) -> None:
        try:
            self.cam.stop()
        finally:
            self.cam.close()
