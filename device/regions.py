"""Where and when to look: regions of interest and the trigger that gates inference.

A vending machine's camera sees a wider view than the slot, and nothing happens most of
the time. `[[camera.roi]]` entries classify fixed regions, each as its own stream with its
own decider, events and counts; `[trigger]` decides which frames are worth an inference
(always, on motion, at an interval, or after a GPIO edge). Pure config and geometry here;
the triggers themselves live in device/triggers/.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # an MQTT topic level (see config.py)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


def roi_pixels(roi: RoiConfig, width: int, height: int) -> tuple[int, int, int, int]:
    """A region's pixel box (x0, y0, x1, y1) in a frame, at least 2x2, inside the frame."""
    x0 = min(round(roi.x * width), width - 2)
    y0 = min(round(roi.y * height), height - 2)
    x1 = max(x0 + 2, min(width, round((roi.x + roi.width) * width)))
    y1 = max(y0 + 2, min(height, round((roi.y + roi.height) * height)))
    return x0, y0, x1, y1


def crop(image: np.ndarray, roi: RoiConfig) -> np.ndarray:
    """The region of an RGB frame, as a view (no copy): the resize that follows copies."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = roi_pixels(roi, w, h)
    return image[y0:y1, x0:x1]


def union_box(rois: tuple[RoiConfig, ...], width: int, height: int
              ) -> tuple[int, int, int, int]:
    """The smallest box holding every region (the whole frame without regions)."""
    if not rois:
        return 0, 0, width, height
    boxes = [roi_pixels(r, width, height) for r in rois]
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))
