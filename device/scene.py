"""Is the slot really empty? The scene against a learned empty-slot reference (pure).

A classifier's background class means "nothing I know": a cat, a phone or a crumpled
receipt in the slot can look more like the empty slot than like any note, and would be
counted as an empty slot (no event; the controller cannot tell it from nothing). The
camera of a vending machine looks at a fixed scene, so the empty slot has one look: a
small grey copy of the frames the model calls empty, learned as they come. A frame the
model calls empty that differs from it in many places is a foreign object, not an empty
slot (reason `foreign_object`: an `unknown` event).

The reference follows slow changes (light drifting over the day) through the empty frames
it agrees with. A scene that stays different but still for `relearn_frames` frames (the
camera was bumped, a lamp went out) becomes the new reference, with a warning: a permanent
change must not block the slot forever.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

log = logging.getLogger(__name__)

SIZE = (48, 36)  # the grey copy compared (width, height): cheap, blind to sensor noise


def small_grey(image: np.ndarray) -> np.ndarray:
    """A small grey copy at a fixed mean brightness: a camera's auto-exposure and the
    light's drift scale the whole scene, which says nothing about what is in the slot.

    The green channel stands for the grey (it carries most of the luma and half a Bayer
    sensor's pixels), taken every few pixels before the area average: 25 µs for a 640x480
    frame here, against 70 µs through a colour conversion and 800 µs on the whole frame."""
    step = max(1, min(image.shape[0] // SIZE[1], image.shape[1] // SIZE[0]) // 2)
    grey = np.ascontiguousarray(image[::step, ::step, 1] if image.ndim == 3
                                else image[::step, ::step])
    small = cv2.resize(grey, SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    return small * np.float32(128.0 / max(float(small.mean()), 1.0))


class EmptyScene:
    """One region's (or the frame's) empty-slot reference."""

    def __init__(self, threshold: float = 0.15, pixel_delta: int = 30, warmup: int = 3,
                 rate: float = 0.05, relearn_frames: int = 300):
        self.threshold, self.pixel_delta = threshold, pixel_delta
        self.warmup, self.rate, self.relearn_frames = warmup, rate, relearn_frames
        self.ref: np.ndarray | None = None
        self.learned = 0  # empty frames folded into the reference
        self.still_run = 0  # consecutive foreign frames that look alike
        self._last: np.ndarray | None = None

    def changed(self, image: np.ndarray) -> float:
        """The fraction of the scene that differs from the empty reference (0 before it
        is learned)."""
        if self.ref is None:
            return 0.0
        return float(np.mean(np.abs(small_grey(image) - self.ref) > self.pixel_delta))

    def is_foreign(self, image: np.ndarray) -> bool:
        """Feed a frame the model calls empty: True when something is in the slot after
        all. Learns the reference from the frames that are really empty."""
        small = small_grey(image)
        if self.ref is None or self.learned < self.warmup:
            self._learn(small, 1.0 / (self.learned + 1))
            return False
        diff = np.abs(small - self.ref) > self.pixel_delta
        if float(np.mean(diff)) <= self.threshold:
            self._learn(small, self.rate)
            self.still_run = 0
            return False
        self._track_still(small)
        return True

    def _learn(self, small: np.ndarray, rate: float) -> None:
        self.ref = small if self.ref is None else self.ref * (1 - rate) + small * rate
        self.learned += 1

    def _track_still(self, small: np.ndarray) -> None:
        last, self._last = self._last, small
        if last is not None and float(np.mean(np.abs(small - last) > self.pixel_delta)) \
                <= self.threshold / 3:
            self.still_run += 1
        else:
            self.still_run = 0
        if self.still_run >= self.relearn_frames:
            log.warning("the empty slot has looked different and still for %d frames: "
                        "taking it as the new empty scene (camera moved, light changed?)",
                        self.still_run)
            self.ref, self.learned, self.still_run = small, self.warmup, 0
