"""The FrameSource interface and the registry of camera backends.

Every source yields RGB uint8 frames. Backends live in their own modules and import
their hardware libraries only when created, so `import device` needs no camera stack.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from device.config import CameraConfig


@dataclass(frozen=True)
class Frame:
    """One captured frame: RGB pixels, the wall-clock time it was taken, its number."""

    image: np.ndarray
    ts: float
    seq: int
    capture_ms: float
    t_captured: float = 0.0  # time.perf_counter() when the frame was ready (for latency)
    prepared: np.ndarray | None = None  # resized for the model by the capture thread
    prepare_ms: float = 0.0
    roi: str = ""  # the region this frame was cut to ('' = the whole frame)
    roi_index: int = 0  # its place among the regions (0 also for the whole frame)
    gated: bool = False  # the trigger passed on it: seen, not classified
    origin: Literal["camera", "upload"] = "camera"  # an upload: the web page's photo

    @property
    def from_camera(self) -> bool:
        """A camera frame: counted, watched, shown; an upload proves no camera works."""
        return self.origin == "camera"

    def __post_init__(self) -> None:
        if not self.t_captured:
            object.__setattr__(self, "t_captured", time.perf_counter())


class FrameSource(Protocol):
    name: str
    live: bool  # a live camera drops stale frames under load; a replay never does

    def read(self) -> Frame | None:
        """The next frame; None when the source has ended (a replay without loop)."""

    def close(self) -> None: ...


# The registry: config `camera.type` -> "module:Class". Imported lazily (hardware!).
SOURCES = {
    "replay": "device.cameras.replay:ReplaySource",
    "opencv": "device.cameras.opencv:OpenCVSource",
    "picamera2": "device.cameras.picamera2:Picamera2Source",
}


def create_frame_source(cfg: CameraConfig, model_size: tuple[int, int] | None = None,
                        resize_policy: str = "stretch"):
    """Build the frame source named by cfg.type.

    model_size (width, height) and the bundle's resize policy let a camera that scales in
    hardware deliver frames (nearly) at the model's input size with the same framing the
    model was trained on, so the CPU does little or no resizing.
    """
    if cfg.type not in SOURCES:
        raise ValueError(f"unknown camera type {cfg.type!r}: choose one of {', '.join(SOURCES)}")
    module_name, cls_name = SOURCES[cfg.type].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(cfg, model_size, resize_policy)


class Pacer:
    """Sleeps so that frames come at most `fps` times a second, without drift."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps
        self.next = time.monotonic()

    def wait(self) -> None:
        now = time.monotonic()
        if self.next > now:
            time.sleep(self.next - now)
            self.next += self.period
        else:  # running late: do not try to catch up with a burst
            self.next = now + self.period
