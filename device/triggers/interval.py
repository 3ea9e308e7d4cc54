"""trigger.mode = "interval": one classified frame every `trigger.interval` seconds."""

from __future__ import annotations

import numpy as np

from device.regions import RoiConfig, TriggerConfig


class Interval:
    def __init__(self, cfg: TriggerConfig, rois: tuple[RoiConfig, ...] = ()):
        self.period = cfg.interval
        self.next = 0.0

    def wants(self, image: np.ndarray, ts: float) -> bool:
        if ts < self.next:
            return False
        # from this frame on, not from the missed schedule: no burst after a pause
        self.next = ts + self.period
        return True

    def close(self) -> None:
        pass
