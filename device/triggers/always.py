"""trigger.mode = "always": every frame is classified (the default)."""

from __future__ import annotations

import numpy as np

from device.regions import RoiConfig, TriggerConfig


class Always:
    def __init__(self, cfg: TriggerConfig, rois: tuple[RoiConfig, ...] = ()):
        pass

    def wants(self, image: np.ndarray, ts: float) -> bool:
        return True

    def close(self) -> None:
        pass
