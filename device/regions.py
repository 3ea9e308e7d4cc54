"""Where and when to look: regions of interest and the trigger that gates inference.

A vending machine's camera sees a wider view than the slot, and nothing happens most of
the time. `[[camera.roi]]` entries classify fixed regions, each as its own stream with its
own decider, events and counts; `[trigger]` decides which frames are worth an inference
(always, on motion, at an interval, or after a GPIO edge). Pure config and geometry here;
the triggers themselves live in device/triggers/.
"""

from __future__ import annotations

import numpy as np

from device.config.camera import RoiConfig, TriggerConfig

__all__ = ["RoiConfig", "TriggerConfig", "crop", "roi_pixels", "union_box"]


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
