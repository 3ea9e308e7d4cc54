"""trigger.mode = "motion": classify while something moves in the regions, plus
`hold_frames` after, by frame differencing on a downscaled grey copy.

Costs a strided slice of one channel (every `motion_step`-th pixel of the regions' box:
~5,000 of a 640x480 frame's 307,200) and one comparison with the previous sample, so a
gated frame costs a few microseconds, not an inference. Green stands in for grey: it
carries most of the luminance (0.59 of Y) and needs no colour conversion.
"""

from __future__ import annotations

import numpy as np

from device.regions import RoiConfig, TriggerConfig, union_box


class Motion:
    def __init__(self, cfg: TriggerConfig, rois: tuple[RoiConfig, ...] = ()):
        self.cfg = cfg
        self.rois = rois
        self.previous: np.ndarray | None = None
        self.box: tuple[int, int, int, int] | None = None
        self.hold = 0
        self.moving_fraction = 0.0  # of the last frame, for status and tests

    def sample(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if self.box is None:
            self.box = union_box(self.rois, w, h)
        x0, y0, x1, y1 = self.box
        s = self.cfg.motion_step
        return image[y0:y1:s, x0:x1:s, 1].astype(np.int16)

    def wants(self, image: np.ndarray, ts: float) -> bool:
        now = self.sample(image)
        before, self.previous = self.previous, now
        if before is None or before.shape != now.shape:
            self.box = None if before is not None else self.box
            return True  # the first frame: classify, there is no reference yet
        moved = np.count_nonzero(np.abs(now - before) > self.cfg.motion_pixel_delta)
        self.moving_fraction = moved / now.size
        if self.moving_fraction >= self.cfg.motion_threshold:
            self.hold = self.cfg.hold_frames
            return True
        if self.hold > 0:
            self.hold -= 1
            return True
        return False

    def close(self) -> None:
        pass
