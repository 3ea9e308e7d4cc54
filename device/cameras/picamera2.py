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
_NUMPY_HELP = (
    "picamera2 cannot be imported ({exc}): numpy {numpy} in the daemon's venv shadows "
    "Raspberry Pi OS's numpy 1.24, which python3-simplejpeg (used by picamera2) is built "
    "against. Fix: `venv/bin/pip install 'numpy<2' 'opencv-python-headless<4.12'` (make "
    "install-device pins these), or remove numpy from the venv so the system one is used."
)


def import_picamera2():
    """picamera2's class, or CameraError with the one fix that applies; never a traceback
    (a numpy 2 wheel in the venv breaks Bookworm's simplejpeg with a ValueError)."""
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]
    except ImportError as exc:
        raise CameraError(_IMPORT_HELP.format(exc=exc)) from None
    except Exception as exc:  # ValueError: numpy.dtype size changed, and friends
        if "numpy" in str(exc) or "dtype size changed" in str(exc):
            raise CameraError(_NUMPY_HELP.format(exc=exc, numpy=np.__version__)) from None
        raise CameraError(f"picamera2 fails to import ({type(exc).__name__}: {exc}); "
                          "reinstall python3-picamera2 and run `coral-classifier doctor`") \
            from None
    return Picamera2


def sub_rect(area: Rect, roi) -> Rect:
    """A region of interest (fractions) as a sensor rectangle inside `area`."""
    if roi is None:
        return area
    x, y, w, h = area
    return (x + round(roi.x * w), y + round(roi.y * h), max(2, round(roi.width * w)),
            max(2, round(roi.height * h)))


def _covers(limits, full: Rect) -> bool:
    """A sensor mode's crop_limits cover the whole active area."""
    try:
        x, y, w, h = (int(v) for v in limits)
    except (TypeError, ValueError):
        return False
    fx, fy, fw, fh = full
    return x <= fx and y <= fy and x + w >= fx + fw and y + h >= fy + fh


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
    """Frames from a Raspberry Pi camera, framed like the model's training images.

    Two libcamera facts shape this (checked against picamera2's picamera2.py and
    libcamera's Raspberry Pi IPA): before configure() the IPA reports ScalerCrop with a
    placeholder maximum (65535 x 4), real only after configuring, so the field of view is
    taken from the PixelArrayActiveAreas property at start and the crop is set from
    ScalerCropMaximum after configure(); and libcamera picks the sensor mode nearest the
    requested raw size, which for a 224 px model can be a cropped mode, so a full
    field-of-view mode is pinned through the raw stream.
    """

    live = True

    def __init__(self, cfg: CameraConfig, model_size: tuple[int, int] | None = None,
                 resize_policy: str = "stretch"):
        Picamera2 = import_picamera2()
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
        size, full = (cfg.width, cfg.height), None
        isp = cfg.isp_resize and model_size is not None
        # one region: the ISP crops it (ScalerCrop), so the CPU never cuts a full frame
        roi = cfg.roi[0] if isp and len(cfg.roi) == 1 else None
        self.roi_applied = roi is not None
        if isp:
            full = self._active_area()
            if full is not None:
                size, _ = isp_request(tuple(model_size), sub_rect(full, roi), resize_policy)
        extra = {}
        mode = self._full_fov_mode(full) if full is not None else None
        if mode is not None:
            extra["raw"] = {"size": tuple(mode["size"]), "format": str(mode["format"])}
        config = self.cam.create_video_configuration(
            main={"size": tuple(size), "format": self.format}, buffer_count=4,
            controls={"FrameRate": float(cfg.fps)}, **extra)
        self.cam.align_configuration(config)
        self.cam.configure(config)
        actual = tuple(config["main"]["size"])
        if actual != tuple(size):
            log.info("picamera2 aligned %s to %s; the CPU resizes the rest", size, actual)
        if isp:
            maximum = self._crop_maximum() or full
            if maximum is not None:
                _, crop = isp_request(tuple(model_size), sub_rect(maximum, roi),
                                      resize_policy)
                self.cam.set_controls({"ScalerCrop": crop})
        self.cam.start()
        self.pacer = Pacer(cfg.fps)
        self.seq = 0

    def _active_area(self) -> Rect | None:
        """The sensor's active pixel area (valid before configure, unlike ScalerCrop)."""
        props = getattr(self.cam, "camera_properties", {}) or {}
        try:
            areas = props.get("PixelArrayActiveAreas")
            if areas:
                return tuple(int(v) for v in areas[0])
            w, h = props.get("PixelArraySize") or self.cam.sensor_resolution
            return (0, 0, int(w), int(h))
        except (AttributeError, TypeError, ValueError, IndexError):
            log.warning("picamera2 reports no sensor area: asking for %dx%d, CPU resizes",
                        self.cfg.width, self.cfg.height)
            return None

    def _full_fov_mode(self, full: Rect) -> dict | None:
        """The smallest (fastest) sensor mode that sees the whole active area."""
        try:
            modes = list(self.cam.sensor_modes)
        except (AttributeError, RuntimeError) as exc:
            log.warning("picamera2 cannot list sensor modes (%s): libcamera picks one", exc)
            return None
        whole = [m for m in modes if _covers(m.get("crop_limits"), full)]
        if not whole:
            log.warning("no sensor mode sees the whole sensor: libcamera picks one")
            return None
        return min(whole, key=lambda m: m["size"][0] * m["size"][1])

    def _crop_maximum(self) -> Rect | None:
        """ScalerCrop's real maximum for the configured mode (after configure only)."""
        props = getattr(self.cam, "camera_properties", {}) or {}
        value = props.get("ScalerCropMaximum")
        if value is None:
            limits = (getattr(self.cam, "camera_controls", {}) or {}).get("ScalerCrop")
            value = limits[1] if limits else None
        if value is None or 65535 in tuple(value)[2:]:  # the pre-configure placeholder
            return None
        return tuple(int(v) for v in value)

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
