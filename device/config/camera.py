"""Where frames come from and where to look in them: the camera, its regions of interest
(`[[camera.roi]]`, each classified as its own stream with its own decider, events and
counts) and the trigger that decides which frames are worth an inference."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from device.config.base import Section as _Section

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # an MQTT topic level (see base.py)


class RoiConfig(_Section):
    """One region, in fractions of the frame (0..1), classified as its own stream."""

    name: str = Field(description="Its name in topics and payloads: letters, digits, - _ .")
    x: float = Field(ge=0, lt=1, description="Left edge, fraction of the frame width.")
    y: float = Field(ge=0, lt=1, description="Top edge, fraction of the frame height.")
    width: float = Field(gt=0, le=1, description="Fraction of the frame width.")
    height: float = Field(gt=0, le=1, description="Fraction of the frame height.")
    threshold: float | None = Field(None, ge=0, le=1, description="This region's decision "
                                    "threshold (else decision.threshold / the bundle's).")
    class_thresholds: dict[str, float] = Field(default_factory=dict, description="This "
                                               "region's per-class thresholds.")
    accept: tuple[str, ...] | None = Field(None, description="The classes this region "
                                           "accepts (else decision.accept; unset: all).")

    @model_validator(mode="after")
    def _checks(self) -> RoiConfig:
        if not _NAME.match(self.name):
            raise ValueError(f"camera.roi name {self.name!r} must be 1-64 letters, digits, "
                             "'-', '_' or '.' (it becomes an MQTT topic level)")
        if self.x + self.width > 1.0 + 1e-9 or self.y + self.height > 1.0 + 1e-9:
            raise ValueError(f"camera.roi {self.name!r} reaches outside the frame: x + width "
                             "and y + height must be at most 1")
        return self


class TriggerConfig(_Section):
    """Which frames cost an inference. Gated frames are counted, never classified."""

    mode: Literal["always", "motion", "interval", "gpio"] = Field(
        "always", description="always | motion | interval | gpio")
    motion_threshold: float = Field(
        0.02, gt=0, le=1, description="motion: fraction of the sampled pixels (inside the "
        "regions, or the frame) whose grey level changed by more than motion_pixel_delta.")
    motion_pixel_delta: int = Field(25, ge=1, le=255, description="motion: grey levels a "
                                    "pixel must change by to count as moving.")
    motion_step: int = Field(8, ge=1, le=64, description="motion: sample every Nth pixel "
                             "in x and y (a cheap downscaled grey copy).")
    hold_frames: int = Field(10, ge=0, le=10_000, description="motion / gpio: keep "
                             "classifying this many frames after the motion or the edge.")
    interval: float = Field(1.0, gt=0, le=86_400, description="interval: seconds between "
                            "classified frames.")
    gpio_pin: str = Field("GPIO17", description="gpio: the input pin (gpiozero's names: "
                          "GPIO17, BOARD11, 17).")
    gpio_edge: Literal["rising", "falling"] = Field("rising", description="gpio: which edge "
                                                    "starts a burst.")
    gpio_pull_up: bool = Field(False, description="gpio: enable the pin's pull-up resistor.")
    burst_frames: int = Field(20, ge=1, le=10_000, description="gpio: frames classified "
                              "after each edge.")


class CameraConfig(_Section):
    """Where frames come from."""

    type: Literal["picamera2", "opencv", "replay"] = Field(
        "replay", description="Frame source backend: picamera2 | opencv | replay."
    )
    source: str = Field(
        "",
        description="replay: a folder of images or a video file; opencv: a device index "
        "('0') or a URL (rtsp://...); picamera2: the camera number ('' = 0).",
    )
    fps: float = Field(10.0, gt=0, le=1000, description="Frames per second to deliver.")
    loop: bool = Field(True, description="replay: start again at the end.")
    width: int = Field(640, ge=16, le=8192, description="Capture width (picamera2 / opencv).")
    height: int = Field(480, ge=16, le=8192, description="Capture height (picamera2 / opencv).")
    isp_resize: bool = Field(
        True,
        description="picamera2: let the ISP scale the sensor down to (about) the model's "
        "input size with the model's framing, so the CPU resizes little or nothing.",
    )
    roi: tuple[RoiConfig, ...] = Field(
        (), description="Regions of interest ([[camera.roi]]), each classified as its own "
        "stream; none = the whole frame.")
    pixel_format: Literal["BGR888", "RGB888"] = Field(
        "BGR888",
        description="picamera2 pixel format. picamera2's 'BGR888' is R,G,B in memory (what "
        "the model wants); 'RGB888' is B,G,R in memory and is swapped for you.",
    )
