"""Raspberry Pi camera through picamera2 (libcamera).

The ISP does the heavy part of the resize (a 12 MP sensor down to a few hundred pixels),
with the framing the model was trained on (see isp_request). Note picamera2's format
names follow DRM fourcc: "RGB888" is B,G,R in memory and "BGR888" is R,G,B. We ask for
"BGR888" by default and swap when "RGB888" is configured.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from device.cameras.base import Frame, Pacer
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


Rect = tuple[int, int, int, int]  # x, y, width, height on the sensor


def isp_request(model: tuple[int, int], full: Rect, policy: str,
                align: int = 32) -> tuple[tuple[int, int], Rect | None]:
    """The main stream size and ScalerCrop to ask for: the model's framing, ISP-scaled.

    `full` is the sensor area (ScalerCrop's maximum). A `center_crop` model gets the
    centred crop of its own aspect ratio, scaled straight to its input size: no CPU work.
    A `stretch` or `letterbox` model must see the whole field of view, and how the ISP
    treats an output whose aspect ratio differs from the crop is not something to rely on
    (the Pi's pipeline crops to keep it); so it gets the whole sensor at the sensor's
    aspect ratio, at the smallest aligned size covering the model, and the CPU finishes
    with a small resize (e.g. 320x240 -> 224x224).
    """
    mw, mh = model
    x, y, w, h = full
    if policy == "center_crop":
        scale = min(w / mw, h / mh)
        cw, ch = round(mw * scale), round(mh * scale)
        return (mw, mh), (x + (w - cw) // 2, y + (h - ch) // 2, cw, ch)
    scale = max(mw / w, mh / h)
    sw = math.ceil(w * scale / align) * align
    sh = round(sw * h / w)
    return (sw, sh + sh % 2), full


class Picamera2Source:
    live = True
    def __init__(self, cfg: CameraConfig, model_size: tuple[int, int] | None = None,
                 resize_policy: str = "stretch"):
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError as exc:
            raise CameraError(_IMPORT_HELP.format(exc=exc)) from None
        self.cfg = cfg
        self.format = cfg.pixel_format
        num = int(cfg.source) if cfg.source.isdigit() else 0
        self.name = f"picamera2:{num}"
        try:
            self.cam = Picamera2(num)
        except (IndexError, RuntimeError) as exc:
            raise CameraError(
                f"camera {num} not found ({exc}): is the ribbon cable seated and "
                "`rpicam-hello --list-cameras` listing it?") from None
        size, crop = (cfg.width, cfg.height), None
        full = self._sensor_area() if cfg.isp_resize and model_size else None
        if full is not None:
            size, crop = isp_request(tuple(model_size), full, resize_policy)
        controls = {"FrameRate": float(cfg.fps)}
        if crop is not None:
            controls["ScalerCrop"] = crop
        config = self.cam.create_video_configuration(
            main={"size": tuple(size), "format": self.format},
            buffer_count=4,
            controls=controls,
        )
        self.cam.align_configuration(config)
        self.cam.configure(config)
        actual = tuple(config["main"]["size"])
        if actual != tuple(size):
            log.info("picamera2 aligned %s to %s; the CPU resizes the rest", size, actual)
        self.cam.start()
        self.pacer = Pacer(cfg.fps)
        self.seq = 0

    def _sensor_area(self) -> Rect | None:
        """ScalerCrop's maximum (the whole usable sensor), or the sensor resolution."""
        try:
            limits = self.cam.camera_controls.get("ScalerCrop")
            if limits:
                return tuple(int(v) for v in limits[1])  # (min, max, default)
            w, h = self.cam.sensor_resolution
            return (0, 0, int(w), int(h))
        except (AttributeError, TypeError, ValueError, IndexError):
            log.warning("picamera2 reports no sensor area: asking for %dx%d, CPU resizes",
                        self.cfg.width, self.cfg.height)
            return None

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
